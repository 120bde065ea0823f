"""What each command-line verb does, as a Python function taking a store, a session selection
and options and writing a run folder or a result file (``model.ckpt``, ``run_config.json``,
``summary.json``, ``logs/metrics.csv``, ``checkpoints/``; or JSON / npz). The CLI
(:mod:`lfpdistill.cli`) parses options and calls these; the study (:mod:`lfpdistill.study`) calls
them as cached units.

The functions are loaded on first use: importing one evaluation command (``embed``, ``probe``,
``classic``, ``export``, ``decode``) does not load Lightning, which only the training commands
need (it alone takes about 5 s to import on a 2-core CPU).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and the API reference; loaded lazily below
    from .distill import distill_run
    from .evaluate import classic_run, embed_run, probe_run
    from .finetune import finetune_run
    from .pretrain import pretrain_run

#: each public function and the module that defines it
_WHERE = {"classic_run": "evaluate", "distill_run": "distill", "embed_run": "evaluate",
          "finetune_run": "finetune", "pretrain_run": "pretrain", "probe_run": "evaluate"}

__all__ = ["classic_run", "distill_run", "embed_run", "finetune_run", "pretrain_run", "probe_run"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
