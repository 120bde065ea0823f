"""Cross-modal representational distillation: LFP student aligned to a frozen spike teacher.

Loss = ``w_align`` · alignment(student latent, teacher latent) + ``w_mae`` · masked LFP
reconstruction (+ ``w_anchor`` · alignment to a frozen LFP model's latents, with ``anchor_pcs``).
Latents are per-timestep (mean over that bin's patch tokens). The teacher is
frozen and in eval mode; by default its latents are computed once per session (centre-crop
stitched, as for the probe) and cached, so every student window is aligned to teacher latents of
exactly the same bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import DistillConfig, TrainConfig
from ..errors import DataValidationError
from ..models import NeuralTransformer, masked_loss, model_meta
from .base import BaseModule, batch_input


def alignment_loss(student: torch.Tensor, target: torch.Tensor, kind: str,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """Alignment of ``student`` to ``target`` (both ``[B, T, D]``), averaged over timesteps.

    ``mse``: mean squared error per element; ``cosine``: 1 − cosine similarity per timestep;
    ``mse+cosine``: their sum. Zero iff the two agree (cosine: up to positive scale).
    """
    if student.shape != target.shape:
        raise DataValidationError(
            f"student latents {list(student.shape)} and teacher latents {list(target.shape)} "
            "do not cover the same bins/width")
    parts = []
    if "mse" in kind:
        parts.append(((student - target) ** 2).mean(-1))
    if "cosine" in kind:
        parts.append(1 - F.cosine_similarity(student, target, dim=-1, eps=1e-6))
    per_t = sum(parts)
    if weight is None:
        return per_t.mean()
    return (per_t * weight).sum() / weight.sum().clamp_min(1)


class DistillModule(BaseModule):
    """Trains ``model`` (the LFP student) to match teacher latents."""

    stage = "distill"

    def __init__(self, model: NeuralTransformer, teacher: NeuralTransformer, train_cfg: TrainConfig,
                 dcfg: DistillConfig, bin_size: float,
                 teacher_cache: dict[str, np.ndarray] | None = None,
                 target_stats: tuple[np.ndarray, np.ndarray] | None = None,
                 target_basis: tuple[np.ndarray, np.ndarray] | None = None,
                 extra_meta: dict[str, Any] | None = None,
                 target_weights: np.ndarray | None = None,
                 anchor_targets: dict[str, np.ndarray] | None = None):
        super().__init__(train_cfg)
        if model.modality != "lfp" or teacher.modality != "spikes":
            raise DataValidationError("distillation needs an LFP student and a spike teacher")
        self.model = model
        self.dcfg = dcfg
        self.bin_size = bin_size
        # the teacher is deliberately not a registered sub-module: it is frozen, never saved with
        # the student and never touched by the optimiser
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.__dict__["teacher"] = teacher
        self.teacher_cache = teacher_cache
        d_s, d_t = model.cfg.d_model, teacher.cfg.d_model
        if target_basis is not None:
            # teacher latents -> (z - centre) @ components.T: the top principal components
            centre, comps = target_basis
            if comps.ndim != 2 or comps.shape[1] != d_t or centre.shape != (d_t,):
                raise DataValidationError(
                    f"target basis {list(comps.shape)} does not fit teacher latents of width {d_t}")
            self.register_buffer("t_centre", torch.as_tensor(centre, dtype=torch.float32))
            self.register_buffer("t_basis", torch.as_tensor(comps, dtype=torch.float32))
            d_t = comps.shape[0]
        else:
            self.t_basis = None
        if dcfg.projection == "linear":
            self.proj: nn.Module = nn.Linear(d_s, d_t)
        elif dcfg.projection == "mlp":
            self.proj = nn.Sequential(nn.Linear(d_s, d_s), nn.GELU(), nn.Linear(d_s, d_t))
        else:
            if d_s != d_t:
                raise DataValidationError(
                    f"projection 'none' needs equal widths (student d={d_s}, teacher d={d_t}); "
                    "use projection: linear")
            self.proj = nn.Identity()
        mean, std = target_stats if target_stats is not None else (np.zeros(d_t), np.ones(d_t))
        self.register_buffer("t_mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("t_std", torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))
        if target_weights is not None:
            w = np.asarray(target_weights, dtype=np.float32)
            if w.shape != (d_t,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise DataValidationError(f"target weights must be {d_t} finite non-negative numbers "
                                          "with a positive sum")
            # scaling both sides by sqrt(w) weights every dimension's squared error by w
            self.register_buffer("t_scale", torch.as_tensor(np.sqrt(w / w.mean())))
        else:
            self.t_scale = None
        # anchor: a frozen LFP model's latents (transformed, per session and bin) the student also
        # aligns to through its own head, so it keeps what the LFP alone already gives
        self.anchor_targets = anchor_targets
        self.anchor_proj: nn.Module | None = None
        if anchor_targets is not None:
            if teacher_cache is None:
                raise DataValidationError("anchor targets need cached teacher latents "
                                          "(cache_teacher: true)")
            widths = {z.shape[1] for z in anchor_targets.values()}
            if len(widths) != 1:
                raise DataValidationError(f"anchor targets of different widths {sorted(widths)}")
            self.anchor_proj = nn.Linear(d_s, widths.pop())
        self.extra_meta = extra_meta or {}

    def export_meta(self) -> dict[str, Any]:
        return model_meta(self.model, self.bin_size, self.stage, distill=self.dcfg.model_dump(),
                          teacher_vocab=self.teacher.vocab(), **self.extra_meta)

    def on_fit_start(self) -> None:
        self.teacher.to(self.device)

    def cached_rows(self, cache: dict[str, np.ndarray], batch: dict[str, Any], what: str
                    ) -> torch.Tensor:
        """The rows of per-session ``cache`` (``[bins, d]``) for the batch's windows: ``[B, T, d]``."""
        idx = batch["t_index"].cpu().numpy()
        z = []
        for name, ti in zip(batch["session"], idx, strict=True):
            rows = cache[name]
            if ti.max() >= rows.shape[0]:
                raise DataValidationError(
                    f"cached {what} latents of session '{name}' cover {rows.shape[0]} bins "
                    f"but the LFP window reaches bin {ti.max()}; rebuild the {what} cache")
            z.append(rows[ti])
        return torch.from_numpy(np.stack(z)).to(self.device)

    def teacher_latents(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.teacher_cache is not None:
            return self.cached_rows(self.teacher_cache, batch, "teacher")
        x, widths = batch_input(batch, "spikes")
        with torch.no_grad():
            return self.teacher.encode(x, batch["session"], widths).float()

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        if self.t_basis is not None:
            z = (z - self.t_centre) @ self.t_basis.T
        if self.dcfg.target_norm == "standardize":
            return (z - self.t_mean) / self.t_std
        if self.dcfg.target_norm == "layernorm":
            return F.layer_norm(z, z.shape[-1:])
        return z

    def drop_electrodes(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T, C]`` with ``input_dropout`` of each window's electrodes zeroed and the rest
        scaled by ``1 / (1 - p)`` (training only; validation and read-out see every electrode)."""
        p = self.dcfg.input_dropout
        if not self.training or p <= 0:
            return x
        keep = torch.rand(x.shape[0], 1, x.shape[2], device=x.device) >= p
        return x * keep.to(x.dtype) / (1 - p)

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, widths = batch_input(batch, "lfp")
        target = self.normalise(self.teacher_latents(batch))
        out = self.model(self.drop_electrodes(x), batch["session"], widths, reconstruct=False)
        student = self.proj(out.latents).float()
        if self.t_scale is not None:
            student, target = student * self.t_scale, target * self.t_scale
        align = alignment_loss(student, target, self.dcfg.align_loss)
        total = self.dcfg.w_align * align
        res = {"align": align}
        if self.anchor_proj is not None:
            assert self.anchor_targets is not None
            a = self.cached_rows(self.anchor_targets, batch, "anchor")
            anchor = alignment_loss(self.anchor_proj(out.latents).float(), a, self.dcfg.align_loss)
            total = total + self.dcfg.w_anchor * anchor
            res["anchor"] = anchor
        if self.dcfg.w_mae > 0:
            mae, _ = masked_loss(self.model.forward_masked(x, batch["session"], widths), "lfp")
            total = total + self.dcfg.w_mae * mae
            res["mae"] = mae
        res["loss"] = total
        return res

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        res = self.losses(batch)
        self.check_finite(res["loss"], batch_idx)
        bs = len(batch["session"])
        self.log("train_loss", res["loss"], prog_bar=True, batch_size=bs)
        self.log("train_align", res["align"], batch_size=bs)
        return res["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        with torch.random.fork_rng(devices=[]):  # same masks every epoch, training RNG untouched
            torch.manual_seed(1000 + batch_idx)
            res = self.losses(batch)
        bs = len(batch["session"])
        self.log("val_loss", res["loss"], prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val_align", res["align"], prog_bar=True, batch_size=bs, sync_dist=True)
        if "anchor" in res:
            self.log("val_anchor", res["anchor"], batch_size=bs, sync_dist=True)


def teacher_target_stats(cache: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                         basis: tuple[np.ndarray, np.ndarray] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean/std of teacher latents over the training bins of every session
    (after projection on ``basis`` when given)."""
    z = np.concatenate([cache[n][m] for n, m in masks.items()])
    if basis is not None:
        z = (z - basis[0]) @ basis[1].T
    return z.mean(0), z.std(0)


def teacher_pca(cache: dict[str, np.ndarray], masks: dict[str, np.ndarray], k: int,
                option: str = "target_pcs", source: str = "teacher"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``[d]`` and top-``k`` principal axes ``[k, d]`` of teacher latents (or those of
    another ``source``, whose count is the config ``option``) over the training bins of every
    session."""
    z = np.concatenate([cache[n][m] for n, m in masks.items()]).astype(np.float64)
    if k > min(z.shape):
        raise DataValidationError(
            f"{option}={k} but the {source} latents have {z.shape[1]} dimensions over {z.shape[0]} "
            f"training bins; use {option} <= {min(z.shape)}")
    centre = z.mean(0)
    _, _, vt = np.linalg.svd(z - centre, full_matrices=False)
    return centre.astype(np.float32), vt[:k].astype(np.float32)


def check_teacher_sessions(teacher: NeuralTransformer, names: Sequence[str],
                           widths: dict[str, int], who: str = "the teacher",
                           fix: str = "distil on sessions in its vocabulary or adapt the teacher "
                                      "to them first (lfpdistill adapt TEACHER ...)") -> None:
    """A frozen model that embeds the distillation sessions (the teacher; with ``who`` and
    ``fix``, an anchor) must know each of them, at the channel count it was trained on."""
    unknown = [n for n in names if n not in teacher.vocab()]
    if unknown:
        raise DataValidationError(f"{who} has not seen session(s) {', '.join(unknown)}; {fix}")
    teacher.tokenizer.check_sessions(list(names), [widths[n] for n in names])
