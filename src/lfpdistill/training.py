"""Lightning training: masked-autoencoding pretraining, session adaptation, shared fit loop.

Every stage (pretrain, adapt, distill, finetune) is a thin LightningModule on top of
:class:`~lfpdistill.models.NeuralTransformer`; :func:`fit` runs it with the same trainer set-up:
AdamW with linear warm-up and cosine decay, gradient clipping, early stopping on the validation
loss, best and last checkpoints (resume after interruption), CSV metrics log, progress bar,
bf16 autocast on GPUs and Lightning's DDP strategy for several devices.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader

from .data.store import atomic_path, write_json_atomic
from .data.windows import SessionBatchSampler, WindowDataset, collate_windows
from .errors import CheckpointMismatchError, LfpDistillError
from .models import ModelConfig, NeuralTransformer, masked_loss, spike_null_nll

CKPT_KEY = "lfpdistill"


class TrainConfig(BaseModel):
    """Optimisation and data-loading options shared by all training stages."""

    model_config = ConfigDict(extra="forbid")

    window_s: float = Field(1.0, gt=0, description="window length (s)")
    stride_s: float | None = Field(0.5, description="training window stride (s); None = window")
    batch_size: int = Field(32, ge=1)
    batch_mode: Literal["mixed", "per_session"] = "mixed"
    max_epochs: int = Field(30, ge=1)
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: no limit)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_frac: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    patience: int = Field(6, ge=1, description="early-stopping patience (validation epochs)")
    keep: Literal["best", "last"] = Field(
        "best", description="which weights become model.ckpt: the best validation loss, or the "
        "last (e.g. distillation, whose validation alignment is dominated by teacher dimensions "
        "the LFP cannot predict and so picks epochs by noise)")
    seed: int = 0
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = Field(1, description="number of devices (or 'auto')")
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="Lightning strategy, e.g. 'ddp' for several devices")
    precision: str = Field("auto", description="'auto' = bf16-mixed on GPU, 32-true on CPU")
    num_workers: int = Field(0, ge=0)
    checkpoint_every_steps: int = Field(200, ge=1, description="also save last.ckpt every N steps")
    progress: bool = True
    limit_val_batches: float | int = 1.0


def resolve_precision(cfg: TrainConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_KEY] = self.export_meta()

    def export_meta(self) -> dict[str, Any]:
        return {**self.ckpt_meta, "stage": self.stage}


def batch_input(batch: dict[str, Any], modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    if modality not in batch:
        raise LfpDistillError(f"batch has no {modality}; the sessions must carry {modality}")
    return batch[modality], batch[f"n_{modality}"]


class PretrainModule(BaseModule):
    """Masked autoencoding of one modality across one or more sessions.

    With ``train_only`` set to session names, only those sessions' patch embeddings are trained
    (the first step of adapting a pretrained model to new sessions).
    """

    stage = "pretrain"

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
        out = self.model(x, batch["session"], widths, mask=True, generator=generator)
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
        gen = torch.Generator().manual_seed(1000 + batch_idx)  # same masks every epoch
        loss, stats, out = self._step(batch, gen)
        for k, v in stats.items():
            self._val[k] = self._val.get(k, 0.0) + float(v)
        if self.model.modality == "spikes":
            self._val["null_sum"] = self._val.get("null_sum", 0.0) + float(spike_null_nll(out))

    def on_validation_epoch_end(self) -> None:
        v = self._val
        if not v:
            return
        if self.model.modality == "spikes":
            loss = v["nll_sum"] / max(v["n"], 1)
            bps = (v["null_sum"] - v["nll_sum"]) / max(v["spikes_sum"], 1) / math.log(2)
            self.log("val_bits_per_spike", bps, prog_bar=True, sync_dist=True)
        else:
            loss = v["sse"] / max(v["n"], 1)
            var = v["y2_sum"] / max(v["n"], 1) - (v["y_sum"] / max(v["n"], 1)) ** 2
            self.log("val_r2_masked", 1 - loss / max(var, 1e-12), prog_bar=True, sync_dist=True)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)


def model_meta(model: NeuralTransformer, bin_size: float, stage: str, **extra: Any) -> dict[str, Any]:
    return {"model_config": model.cfg.model_dump(), "vocab": model.vocab(), "bin_size": bin_size,
            "stage": stage, **extra}


def build_model(meta: dict[str, Any]) -> NeuralTransformer:
    cfg = dict(meta["model_config"])
    # checkpoints written before the held-out read-out existed were trained, aligned and
    # evaluated on one-pass latents: keep that read-out rather than the new default
    cfg.setdefault("readout", "visible")
    return NeuralTransformer(ModelConfig(**cfg), dict(meta["vocab"]))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint file written by lfpdistill (a Lightning checkpoint + our metadata)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.ckpt"
    if not path.exists():
        raise CheckpointMismatchError(
            f"no model checkpoint at '{path}'; pass a run directory made by lfpdistill pretrain/"
            "distill (it contains model.ckpt)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CheckpointMismatchError(f"checkpoint '{path}' is unreadable ({type(e).__name__}); "
                                      "re-run the training stage") from None
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt:
        raise CheckpointMismatchError(f"'{path}' is not an lfpdistill checkpoint")
    return ckpt


def load_model(path: Path, modality: str | None = None
               ) -> tuple[NeuralTransformer, dict[str, Any]]:
    """Load the transformer of any stage's checkpoint (every stage names it ``model``)."""
    ckpt = load_checkpoint(path)
    meta = ckpt[CKPT_KEY]
    model = build_model(meta)
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"checkpoint '{path}' does not match its own model description "
            f"(missing {len(missing)}, unexpected {len(unexpected)} weights); re-run the stage")
    model.eval()
    if modality is not None and model.modality != modality:
        raise CheckpointMismatchError(
            f"checkpoint '{path}' is a {model.modality} model but a {modality} model is needed here")
    return model, meta


def make_loader(ds: WindowDataset, cfg: TrainConfig, train: bool) -> DataLoader:
    if train:
        sampler = SessionBatchSampler(ds, cfg.batch_size, cfg.batch_mode, shuffle=True,
                                      seed=cfg.seed)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_windows,
                          num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, collate_fn=collate_windows,
                      num_workers=cfg.num_workers)


class _EpochSeed(Callback):
    """Give our batch sampler a new permutation each epoch (Lightning only does this for
    samplers it injects itself)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        if isinstance(sampler, SessionBatchSampler):
            sampler.set_epoch(trainer.current_epoch)


class EpochLines(Callback):
    """Progress for logs that are not a terminal (CI, ``make demo > log``): one line per epoch
    with the logged metrics, instead of a progress bar redrawn with carriage returns."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if np.ndim(v) == 0}
        text = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if k != "epoch")
        print(f"  {pl_module.__class__.__name__} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
              f" (step {trainer.global_step}): {text}", flush=True)


def _stdout_is_terminal() -> bool:
    try:
        return os.isatty(1)
    except OSError:  # pragma: no cover - closed stdout
        return False


def _merge_metric_parts(metrics_csv: Path) -> None:
    """Put the rows logged before an interruption back in front of the resumed run's rows."""
    parts = sorted(metrics_csv.parent.glob("metrics.part*.csv"))
    if not parts:
        return
    import csv

    rows: list[dict[str, str]] = []
    header: list[str] = []
    for path in [*parts, metrics_csv]:
        if not path.exists():
            continue
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header += [c for c in reader.fieldnames or [] if c not in header]
            rows.extend(reader)
    with atomic_path(metrics_csv, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    for path in parts:
        path.unlink()


def resolve_strategy(name: str) -> Any:
    """'ddp' with unused-parameter detection: a batch need not contain every session, so some
    session embeddings get no gradient in a step."""
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=True)
    return name


def quiet_lightning() -> None:
    """Keep Lightning's informational chatter (device lists, tips) out of the user's terminal."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def fit(module: BaseModule, train_ds: WindowDataset, val_ds: WindowDataset, run_dir: Path,
        cfg: TrainConfig, run_config: dict[str, Any] | None = None, resume: bool = True
        ) -> dict[str, Any]:
    """Train ``module``; write ``run_dir/model.ckpt`` (best by val loss) and ``summary.json``.

    If ``run_dir/checkpoints/last.ckpt`` exists from an interrupted run with the same
    ``run_config``, training resumes from it.
    """
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "run_config.json"
    resume_from = None
    candidates = [p for p in (ckpt_dir / "last.ckpt", ckpt_dir / "step.ckpt") if p.exists()]
    if candidates:
        old = json.loads(cfg_path.read_text()) if cfg_path.exists() else None
        if resume and old == json.loads(json.dumps(run_config or {}, default=str)):
            resume_from = str(max(candidates, key=lambda p: p.stat().st_mtime))
        else:
            shutil.rmtree(ckpt_dir)
    write_json_atomic(cfg_path, run_config or {})
    metrics_csv = run_dir / "logs" / "metrics.csv"
    if resume_from and metrics_csv.exists():
        # Lightning's CSV logger starts a new file; keep the rows logged before the interruption
        k = len(list(metrics_csv.parent.glob("metrics.part*.csv")))
        metrics_csv.rename(metrics_csv.parent / f"metrics.part{k}.csv")
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_loss", mode="min",
                           save_top_k=1, save_last=True, enable_version_counter=False)
    periodic = ModelCheckpoint(dirpath=ckpt_dir, filename="step", monitor=None,
                               every_n_train_steps=cfg.checkpoint_every_steps, save_top_k=1,
                               enable_version_counter=False)
    callbacks: list[Callback] = [best, periodic, _EpochSeed(),
                                 EarlyStopping(monitor="val_loss", patience=cfg.patience, mode="min",
                                               check_on_train_epoch_end=False)]
    bar = cfg.progress and _stdout_is_terminal()
    if bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, len(train_ds) // cfg.batch_size // 10)))
    elif cfg.progress:
        callbacks.append(EpochLines())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*is deprecated.*")
        trainer = L.Trainer(
            accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
            strategy=resolve_strategy(cfg.strategy), precision=resolve_precision(cfg),
            max_epochs=cfg.max_epochs,
            max_steps=cfg.max_steps, gradient_clip_val=cfg.grad_clip or None,
            callbacks=callbacks, logger=CSVLogger(run_dir, name="", version="logs"),
            enable_progress_bar=bar, enable_model_summary=False,
            log_every_n_steps=max(1, min(10, len(train_ds) // cfg.batch_size)),
            num_sanity_val_steps=0, deterministic=False,
            limit_val_batches=cfg.limit_val_batches, default_root_dir=run_dir,
            # our batch sampler shards itself across ranks (SessionBatchSampler._shard)
            use_distributed_sampler=False,
        )
        trainer.fit(module, make_loader(train_ds, cfg, True), make_loader(val_ds, cfg, False),
                    ckpt_path=resume_from)
    summary: dict[str, Any] = {"stage": module.stage, "epochs": trainer.current_epoch,
                               "steps": trainer.global_step, "global_rank": trainer.global_rank,
                               "kept": cfg.keep}
    final = ckpt_dir / "final.ckpt"
    if cfg.keep == "last":
        trainer.save_checkpoint(final)  # every rank calls it; rank 0 writes
    if trainer.global_rank == 0:
        _merge_metric_parts(metrics_csv)
        best_path = best.best_model_path or str(ckpt_dir / "last.ckpt")
        with atomic_path(run_dir / "model.ckpt") as tmp:
            shutil.copyfile(final if cfg.keep == "last" else best_path, tmp)
        score = best.best_model_score
        summary["best_val_loss"] = None if score is None else float(score)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if np.ndim(v) == 0}
        summary["last_metrics"] = metrics
        write_json_atomic(run_dir / "summary.json", summary)
    return summary


def is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
