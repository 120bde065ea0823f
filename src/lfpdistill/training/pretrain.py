"""Masked-autoencoding objective: pretraining (spike teacher, SS-LFP, MS-LFP) and session
adaptation (only the new sessions' embeddings trained)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..config import TrainConfig
from ..models import NeuralTransformer, masked_loss, model_meta, spike_null_nll
from .base import BaseModule, batch_input


class PretrainModule(BaseModule):
    """Masked autoencoding of one modality across one or more sessions.

    With ``train_only`` set to session names, only those sessions' patch embeddings are trained
    (the first step of adapting a pretrained model to new sessions).
    """

    stage = "pretrain"
    shard_validation = True
    #: the validation sums of each modality (:func:`~lfpdistill.models.masked_loss`)
    VAL_SUMS = {"spikes": ("n", "nll_sum", "spikes_sum", "null_sum"),
                "lfp": ("n", "sse", "y_sum", "y2_sum")}

    def __init__(self, model: NeuralTransformer, train_cfg: TrainConfig, bin_size: float,
                 train_only: Sequence[str] | None = None, extra_meta: dict[str, Any] | None = None):
        super().__init__(train_cfg)
        self.model = model
        self.bin_size = bin_size
        self.train_only = list(train_only) if train_only else None
        if self.train_only:
            for p in self.model.parameters():
                p.requires_grad_(False)
            for p in self.model.tokenizer.session_parameters(self.train_only):
                p.requires_grad_(True)
        self.extra_meta = extra_meta or {}
        self._val: dict[str, float] = {}

    def export_meta(self) -> dict[str, Any]:
        return model_meta(self.model, self.bin_size, self.stage, **self.extra_meta)

    def _step(self, batch: dict[str, Any], generator: torch.Generator | None = None):
        x, widths = batch_input(batch, self.model.modality)
        out = self.model.forward_masked(x, batch["session"], widths, generator=generator)
        loss, stats = masked_loss(out, self.model.modality)
        return loss, stats, out

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._step(batch)
        self.check_finite(loss, batch_idx)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["session"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # the same masks every epoch, and whichever rank validates the batch
        gen = torch.Generator().manual_seed(1000 + self.val_batch_index(batch_idx))
        loss, stats, out = self._step(batch, gen)
        for k, v in stats.items():
            self._val[k] = self._val.get(k, 0.0) + float(v)
        if self.model.modality == "spikes":
            self._val["null_sum"] = self._val.get("null_sum", 0.0) + float(spike_null_nll(out))

    def on_validation_epoch_end(self) -> None:
        # metrics of the pooled validation data: sums over every rank, then the ratios (the
        # values are the same on every rank, so they are logged without sync_dist)
        v = self.pooled_sums(self._val, self.VAL_SUMS[self.model.modality])
        if not v["n"]:
            return
        if self.model.modality == "spikes":
            loss = v["nll_sum"] / max(v["n"], 1)
            bps = (v["null_sum"] - v["nll_sum"]) / max(v["spikes_sum"], 1) / math.log(2)
            self.log("val_bits_per_spike", bps, prog_bar=True)
        else:
            loss = v["sse"] / max(v["n"], 1)
            var = v["y2_sum"] / max(v["n"], 1) - (v["y_sum"] / max(v["n"], 1)) ** 2
            self.log("val_r2_masked", 1 - loss / max(var, 1e-12), prog_bar=True)
        self.log("val_loss", loss, prog_bar=True)
