"""What every training stage shares: the optimiser and its schedule, the non-finite loss guard,
the checkpoint metadata, reading a batch's input, and validation metrics pooled over DDP ranks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch

from ..config import TrainConfig
from ..errors import LfpDistillError
from ..models import CKPT_KEY


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine to 0.05.

    >>> round(warmup_cosine(0, 100, 10), 3), warmup_cosine(10, 100, 10), round(warmup_cosine(100, 100, 10), 3)
    (0.1, 1.0, 0.05)
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


class BaseModule(L.LightningModule):
    """Optimiser/schedule, non-finite loss guard and checkpoint metadata for every stage."""

    stage = "base"
    #: Whether :func:`~lfpdistill.training.loop.fit` may split the validation windows across DDP
    #: ranks (each window validated by one rank): only for modules whose validation metrics are
    #: computed from sums pooled over the ranks (:meth:`pooled_sums`), not averaged per rank.
    shard_validation = False

    def __init__(self, train_cfg: TrainConfig):
        super().__init__()
        self.train_cfg = train_cfg
        self.ckpt_meta: dict[str, Any] = {}

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        params = self.trainable_parameters()
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.train_cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=self.train_cfg.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = max(1, int(self.train_cfg.warmup_frac * total))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def check_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        if not torch.isfinite(loss):
            raise LfpDistillError(
                f"{self.stage}: loss became {loss.item()} at step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); training stopped, the last good "
                "checkpoint is kept — lower --lr or check the data for extreme values"
            )

    def pooled_sums(self, sums: Mapping[str, float], keys: Sequence[str]) -> dict[str, float]:
        """``sums`` (missing keys: 0) added over every DDP rank; unchanged on one process.

        A ratio of pooled sums (loss per entry, R², bits/spike) is the metric of all the
        validation data; the mean of the ranks' ratios, what ``self.log(..., sync_dist=True)``
        gives, is not. A collective: every rank must call it, with the same ``keys``.
        """
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        t = torch.tensor([float(sums.get(k, 0.0)) for k in keys], dtype=dtype, device=self.device)
        t = self.trainer.strategy.reduce(t, reduce_op="sum")
        return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}

    def val_batch_index(self, batch_idx: int) -> int:
        """The index of this rank's validation batch ``batch_idx`` in the whole validation set
        (they differ when the validation windows are split across ranks)."""
        sampler = getattr(self.trainer.val_dataloaders, "batch_sampler", None)
        global_index = getattr(sampler, "global_index", None)
        return int(global_index(batch_idx)) if callable(global_index) else batch_idx

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = self.export_meta()

    def export_meta(self) -> dict[str, Any]:
        return {**self.ckpt_meta, "stage": self.stage}


def batch_input(batch: dict[str, Any], modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    if modality not in batch:
        raise LfpDistillError(f"batch has no {modality}; the sessions must carry {modality}")
    return batch[modality], batch[f"n_{modality}"]
