"""The command line's malloc settings: set on glibc, left alone when the user opts out."""

import platform
import sys

import pytest

from lfpdistill import allocator

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="glibc only")


@pytest.fixture
def clean_env(monkeypatch):
    for k in ("LFPDISTILL_MALLOC", *allocator._ENV_OWN):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


@glibc
def test_thresholds_are_set_on_glibc(clean_env):
    assert allocator.tune_cpu_allocator() is True


@pytest.mark.parametrize(("key", "value"), [("LFPDISTILL_MALLOC", "default"),
                                            ("LFPDISTILL_MALLOC", " Default "),
                                            ("MALLOC_MMAP_THRESHOLD_", "65536"),
                                            ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])
def test_the_users_choice_is_left_alone(clean_env, key, value):
    clean_env.setenv(key, value)
    assert allocator.tune_cpu_allocator() is False


def test_nothing_is_set_off_glibc(clean_env):
    clean_env.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.tune_cpu_allocator() is False
