"""Training: the shared Lightning fit loop and one LightningModule per objective.

- :mod:`.base` -- optimiser, LR schedule, non-finite guard, checkpoint metadata;
- :mod:`.pretrain` -- masked autoencoding (pretraining and session adaptation);
- :mod:`.distill` -- alignment of an LFP student to a frozen spike teacher;
- :mod:`.finetune` -- model + velocity head trained end-to-end;
- :mod:`.loop` -- :func:`fit`: trainer, callbacks, checkpoints, resume, DDP.

Reading a checkpoint needs none of this (:func:`lfpdistill.models.load_model`).
"""

from .base import BaseModule, batch_input, warmup_cosine
from .distill import DistillModule, alignment_loss, check_teacher_sessions, teacher_pca, teacher_target_stats
from .finetune import FinetuneModule
from .loop import fit, is_rank_zero, make_loader, resolve_precision, resolve_strategy
from .pretrain import PretrainModule

__all__ = [
    "BaseModule", "DistillModule", "FinetuneModule", "PretrainModule", "alignment_loss",
    "batch_input", "check_teacher_sessions", "fit", "is_rank_zero", "make_loader",
    "resolve_precision", "resolve_strategy", "teacher_pca", "teacher_target_stats", "warmup_cosine",
]
