"""The shared fit loop: one Lightning ``Trainer`` set-up for every training stage.

AdamW with linear warm-up and cosine decay (:mod:`.base`), gradient clipping, early stopping on
the validation loss, best / last / periodic checkpoints (an interrupted run resumes), CSV metrics
log, a progress bar (or one line per epoch when stdout is not a terminal), bf16 autocast on GPUs
and Lightning's DDP strategy for several devices or nodes (training batches and, for modules that
pool their validation sums, validation windows split across the ranks).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, Sampler

from ..config import TrainConfig, check_devices
from ..data.store import atomic_path, write_json_atomic
from ..data.windows import SessionBatchSampler, WindowDataset, collate_windows
from ..errors import CheckpointMismatchError, ConfigError
from ..models.checkpoint import read_checkpoint_file
from .base import BaseModule


def resolve_precision(cfg: TrainConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


class ValidationShards(Sampler[list[int]]):
    """Validation batches of ``batch_size`` consecutive windows, in order, dealt across the
    ranks of a ``torch.distributed`` run: rank ``r`` of ``w`` validates batches ``r, r + w, ...``,
    so every window is validated once, by one rank. With fewer batches than ranks every rank
    validates all of them (ratios of sums pooled over the ranks are unchanged by that). One
    process: all batches. :meth:`global_index` maps a rank's batch index to the whole set's."""

    def __init__(self, n_windows: int, batch_size: int) -> None:
        self.batches = [list(range(a, min(a + batch_size, n_windows)))
                        for a in range(0, n_windows, batch_size)]

    def _rank_world(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if len(self.batches) >= world:
                return torch.distributed.get_rank(), world
        return 0, 1

    def global_index(self, batch_idx: int) -> int:
        rank, world = self._rank_world()
        return batch_idx * world + rank

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._rank_world()
        return iter(self.batches[rank::world])

    def __len__(self) -> int:
        rank, world = self._rank_world()
        return len(self.batches[rank::world])


def make_loader(ds: WindowDataset, cfg: TrainConfig, train: bool, shard: bool = False
                ) -> DataLoader:
    """Training batches (shuffled, sharded across ranks by the sampler) or validation batches
    in order; ``shard=True`` splits the validation windows across ranks
    (:class:`ValidationShards`; only for modules that pool their validation sums)."""
    if train:
        sampler = SessionBatchSampler(ds, cfg.batch_size, cfg.batch_mode, shuffle=True,
                                      seed=cfg.seed)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_windows,
                          num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    if shard:
        return DataLoader(ds, batch_sampler=ValidationShards(len(ds), cfg.batch_size),
                          collate_fn=collate_windows, num_workers=cfg.num_workers)
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
        return DDPStrategy(find_unused_parameters=True)
    return name


def quiet_lightning() -> None:
    """Keep Lightning's informational chatter (device lists, tips) out of the user's terminal."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # pooled validation metrics (BaseModule.pooled_sums) are logged without sync_dist on purpose
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('val_(loss|"
                                              r"bits_per_spike|r2_masked)', \.\.\., sync_dist")


# what a run folder holds besides its checkpoints, written once training has finished (the
# training commands' outputs and embed's default latents), removed when a new run starts there
_RUN_OUTPUTS = ("model.ckpt", "summary.json", "result.json", "predictions.npz", "latents.npz")


def check_devices_here(cfg: TrainConfig) -> None:
    """The device options against this machine: a GPU asked for must be there, and CPU
    training (asked for, or what 'auto' falls back to) gets at most one process per usable
    core. The config checks what it can without torch (:class:`TrainConfig`)."""
    gpu = torch.cuda.is_available()
    mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if cfg.accelerator in ("gpu", "cuda") and not gpu:
        raise ConfigError(f"accelerator={cfg.accelerator} but this machine has no usable CUDA "
                          "GPU; use --set accelerator=cpu (or auto)")
    if cfg.accelerator == "mps" and not mps:
        raise ConfigError("accelerator=mps but Apple's MPS is not available here; use "
                          "--set accelerator=cpu (or auto)")
    on_cpu = cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not (gpu or mps))
    if on_cpu:
        try:
            check_devices(cfg.devices, "cpu")
        except ValueError as e:
            raise ConfigError(f"{e} (training runs on the CPU here)") from None
        if cfg.precision in ("16-mixed", "16-true"):
            raise ConfigError(f"precision '{cfg.precision}' needs a GPU and training runs on the "
                              "CPU here; use --set precision=32-true (or auto)")


def _same_run_config(cfg_path: Path, run_config: dict[str, Any] | None) -> bool:
    try:
        old = json.loads(cfg_path.read_text())
    except (OSError, ValueError):  # missing or damaged: not the same run
        return False
    return bool(old == json.loads(json.dumps(run_config or {}, default=str)))


def _readable_newest(candidates: list[Path]) -> str | None:
    """The newest resume checkpoint that can be read (a run killed while Lightning wrote one
    leaves it truncated; resuming from it would fail on every later attempt)."""
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            read_checkpoint_file(path)
        except CheckpointMismatchError:
            continue
        return str(path)
    return None


def fit(module: BaseModule, train_ds: WindowDataset, val_ds: WindowDataset, run_dir: Path,
        cfg: TrainConfig, run_config: dict[str, Any] | None = None, resume: bool = True
        ) -> dict[str, Any]:
    """Train ``module``; write ``run_dir/model.ckpt`` (best by val loss) and ``summary.json``.

    If ``run_dir/checkpoints/last.ckpt`` exists from an interrupted run with the same
    ``run_config``, training resumes from it.
    """
    check_devices_here(cfg)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "run_config.json"
    resume_from = None
    candidates = [p for p in (ckpt_dir / "last.ckpt", ckpt_dir / "step.ckpt") if p.exists()]
    if candidates:
        if resume and _same_run_config(cfg_path, run_config):
            resume_from = _readable_newest(candidates)
        if resume_from is None:
            shutil.rmtree(ckpt_dir)
    if resume_from is None:
        # a new run: outputs of an earlier run in this folder must not survive next to the new
        # run_config.json (a run killed before it writes its own would leave them to be loaded)
        for name in _RUN_OUTPUTS:
            (run_dir / name).unlink(missing_ok=True)
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
        try:
            trainer.fit(module, make_loader(train_ds, cfg, True),
                        make_loader(val_ds, cfg, False, shard=module.shard_validation),
                        ckpt_path=resume_from, weights_only=True)
        except OSError as e:
            if e.filename is None:  # checkpoints and the metrics log go through nameless streams
                e.filename = str(run_dir)
            raise
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
    """Whether this is the first process of the run: Lightning's global rank, read from the
    launcher's environment (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``, ``JSM_NAMESPACE_RANK``)
    and set by the strategy once training has started (multi-node runs included)."""
    return getattr(rank_zero_only, "rank", 0) == 0
