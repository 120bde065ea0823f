"""What each command-line verb does, as a Python function taking a store, a session selection
and options and writing a run folder or a result file (``model.ckpt``, ``run_config.json``,
``summary.json``, ``logs/metrics.csv``, ``checkpoints/``; or JSON / npz). The CLI
(:mod:`lfpdistill.cli`) parses options and calls these; the study (:mod:`lfpdistill.study`) calls
them as cached units.
"""

from .distill import distill_run
from .evaluate import classic_run, embed_run, probe_run
from .finetune import finetune_run
from .pretrain import pretrain_run

__all__ = ["classic_run", "distill_run", "embed_run", "finetune_run", "pretrain_run", "probe_run"]
