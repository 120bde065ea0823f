# Two entry points (see README): `make demo` runs the study on the built-in simulator,
# `make test` runs the tests (`make docs` builds the documentation site). All create/refresh the
# virtual environment first, installing the CPU build of PyTorch before anything else (users with
# GPUs install their own torch first).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
# the tests run in TEST_WORKERS processes (pytest-xdist), one file per process at a time (its
# module fixtures stay in one process), each with one math thread: on the 2-core CI machine the
# fast tests take 2.5 minutes instead of 4.5; TEST_WORKERS=0 runs them in this process
TEST_WORKERS ?= 2
# CI runs the slow end-to-end tests too; locally `make test` stays fast.
ifeq ($(CI),)
MARK := -m "not slow"
else
MARK :=
endif

.PHONY: venv demo test test-all lint docs clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: venv
	$(VENV)/bin/lfpdistill run configs/demo.yaml

test: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest $(MARK) -q -p no:cacheprovider \
	  -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-all: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -p no:cacheprovider \
	  -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks

# the documentation site (mkdocs.yml) into site/, warnings as errors; CI builds it in tests/test_docs.py
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf results runs site .pytest_cache
