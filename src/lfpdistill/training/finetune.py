"""Supervised evaluation: a pretrained/distilled model plus a behaviour head, trained end-to-end."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..models import NeuralTransformer, model_meta
from .base import BaseModule, batch_input


class FinetuneModule(BaseModule):
    """Encoder + linear velocity head; MSE on standardised velocity of the train segments."""

    stage = "finetune"
    shard_validation = True

    def __init__(self, model: NeuralTransformer, train_cfg: TrainConfig, bin_size: float,
                 vel_mean: np.ndarray, vel_std: np.ndarray, as_session: str | None = None,
                 extra_meta: dict[str, Any] | None = None):
        super().__init__(train_cfg)
        self.model = model
        self.model.train()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.head = nn.Linear(model.cfg.d_model, 2)
        self.bin_size = bin_size
        self.as_session = as_session
        self.register_buffer("v_mean", torch.as_tensor(vel_mean, dtype=torch.float32))
        self.register_buffer("v_std", torch.as_tensor(vel_std, dtype=torch.float32).clamp_min(1e-6))
        self.extra_meta = extra_meta or {}
        self._val: dict[str, float] = {}

    def export_meta(self) -> dict[str, Any]:
        return model_meta(self.model, self.bin_size, self.stage, **self.extra_meta)

    def predict_windows(self, x: torch.Tensor, sessions: list[str], widths: torch.Tensor
                        ) -> torch.Tensor:
        """Velocity ``[B, T, 2]`` (original units) for input windows."""
        if self.as_session:
            sessions = [self.as_session] * len(sessions)
        z = self.model(x, sessions, widths, reconstruct=False).latents
        return self.head(z) * self.v_std + self.v_mean

    def _sq_errors(self, batch: dict[str, Any]) -> torch.Tensor:
        x, widths = batch_input(batch, self.model.modality)
        pred = self.predict_windows(x, batch["session"], widths)
        return ((pred - batch["velocity"]) / self.v_std) ** 2

    def _loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return self._sq_errors(batch).mean()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.check_finite(loss, batch_idx)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["session"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        err = self._sq_errors(batch)
        self._val["sse"] = self._val.get("sse", 0.0) + float(err.sum())
        self._val["n"] = self._val.get("n", 0.0) + err.numel()

    def on_validation_epoch_end(self) -> None:
        # the mean squared error of all validation windows, over every rank (logged without
        # sync_dist: the pooled value is the same on every rank)
        v = self.pooled_sums(self._val, ("sse", "n"))
        if v["n"]:
            self.log("val_loss", v["sse"] / v["n"], prog_bar=True)
