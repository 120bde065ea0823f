"""Stage functions behind the CLI: pretrain, adapt, embed, probe.

Each takes a store, a session selection and options, and writes a run directory:
``model.ckpt`` (best by validation loss), ``run_config.json``, ``summary.json``,
``logs/metrics.csv`` and ``checkpoints/`` (for resuming).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from .data import Store, WindowDataset, open_store, write_json_atomic
from .data.store import atomic_path
from .distill import (
    DistillConfig,
    DistillModule,
    check_teacher_sessions,
    teacher_pca,
    teacher_target_stats,
)
from .errors import ConfigError, DataValidationError
from .evaluation import (
    check_probe_options,
    compute_latents,
    lag_latents,
    probe_sessions,
    r2_xy,
    session_latents,
)
from .finetune import FinetuneModule
from .models import ModelConfig, NeuralTransformer
from .session import Session
from .training import PretrainModule, TrainConfig, fit, load_model


def apply_overrides(model_cfg: ModelConfig, train_cfg: TrainConfig, overrides: Sequence[str]
                    ) -> tuple[ModelConfig, TrainConfig]:
    """Apply ``key=value`` overrides to whichever config has the key (values parsed as JSON)."""
    m, t = model_cfg.model_dump(), train_cfg.model_dump()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (e.g. --set d_model=128)")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            val = json.loads(raw)
        except json.JSONDecodeError:
            val = raw
        if key in m:
            m[key] = val
        elif key in t:
            t[key] = val
        else:
            raise ConfigError(f"unknown option '{key}'; model options: {', '.join(m)}; "
                              f"training options: {', '.join(t)}")
    try:
        return ModelConfig(**m), TrainConfig(**t)
    except Exception as e:  # pydantic ValidationError -> one line
        raise ConfigError(f"invalid option: {_one_line(e)}") from None


def _one_line(e: Exception) -> str:
    errs = getattr(e, "errors", None)
    if callable(errs):
        parts = []
        for err in errs():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return "; ".join(parts)
    return str(e).splitlines()[0]


def load_selected(store: Store, pattern: str | Sequence[str] | None, modality: str | None = None
                  ) -> list[Session]:
    names = store.select(pattern)
    sessions = [store.session(n) for n in names]
    if modality is not None:
        missing = [s.name for s in sessions if not s.has(modality)]
        if missing:
            raise DataValidationError(
                f"session(s) {', '.join(missing)} in '{store.root}' have no {modality}; a {modality} "
                "model needs sessions with it (choose other --sessions)")
    bins = {s.bin_size for s in sessions}
    if len(bins) > 1:
        raise DataValidationError(f"selected sessions have different bin sizes {sorted(bins)}")
    return sessions


def windows(sessions: Sequence[Session], split: str, cfg: TrainConfig, modality: str,
            train: bool) -> WindowDataset:
    return WindowDataset(sessions, split, cfg.window_s, cfg.stride_s if train else None,
                         modalities=(modality,), require=(modality,))


def pretrain_run(store_dir: Path, sessions: str | Sequence[str] | None, modality: str, out: Path,
                 model_cfg: ModelConfig, train_cfg: TrainConfig, init_from: Path | None = None,
                 train_only_new: bool = False, resume: bool = True) -> dict[str, Any]:
    """Masked-autoencoding training of a spike or LFP model on the selected sessions.

    With ``init_from`` (a run dir), the pretrained model is extended with any new sessions and
    trained further — only the new sessions' embeddings if ``train_only_new``.
    """
    L.seed_everything(train_cfg.seed, verbose=False)
    store = open_store(store_dir)
    sel = load_selected(store, sessions, modality)
    vocab = {s.name: getattr(s, modality).shape[1] for s in sel}
    bin_size = sel[0].bin_size
    if init_from is not None:
        model, meta = load_model(Path(init_from), modality=modality)
        if abs(meta["bin_size"] - bin_size) > 1e-9:
            raise DataValidationError(
                f"model '{init_from}' was trained on {meta['bin_size']}s bins but the sessions use "
                f"{bin_size}s bins; prepare the data on the model's bin grid")
        new = model.tokenizer.extend(vocab)
        if train_only_new and not new:
            raise ConfigError("every selected session is already in the model; nothing to adapt "
                              "(drop --embeddings-only to fine-tune all weights)")
        model_cfg = model.cfg
        model.train()
    else:
        if model_cfg.modality != modality:
            model_cfg = model_cfg.model_copy(update={"modality": modality})
            model_cfg = ModelConfig(**model_cfg.model_dump())
        new = list(vocab)
        model = NeuralTransformer(model_cfg, vocab)
    train_ds = windows(sel, "train", train_cfg, modality, True)
    val_ds = windows(sel, "val", train_cfg, modality, False)
    run_config = {"stage": "pretrain", "store": str(store.root), "store_hash": store.options_hash,
                  "sessions": [s.name for s in sel], "modality": modality,
                  "model": model_cfg.model_dump(), "train": train_cfg.model_dump(),
                  "init_from": str(init_from) if init_from else None,
                  "train_only": new if train_only_new else None}
    module = PretrainModule(model, train_cfg, bin_size,
                            train_only=new if train_only_new else None,
                            extra_meta={"sessions_trained": [s.name for s in sel],
                                        "window_s": train_cfg.window_s})
    return fit(module, train_ds, val_ds, Path(out), train_cfg, run_config, resume=resume)


def embed_run(run_dir: Path, store_dir: Path, sessions: str | Sequence[str] | None = None,
              out: Path | None = None, as_session: str | None = None,
              window_s: float | None = None, readout: str | None = None) -> Path:
    """Write per-timestep latents of every selected session (all splits) to ``latents.npz``.

    ``readout`` (``visible`` or ``held_out``) overrides the model's own read-out.
    """
    if readout not in (None, "visible", "held_out"):
        raise ConfigError(f"unknown readout '{readout}'; use visible or held_out")
    model, meta = load_model(Path(run_dir))
    store = open_store(store_dir)
    sel = load_selected(store, sessions, model.modality)
    w = window_s or meta.get("window_s", 1.0)
    if as_session is not None:
        for s in sel:
            check_as_session(model, s, as_session)
    lat = {s.name: session_latents(model, s, w, as_session=as_session, readout=readout) for s in sel}
    out = Path(out) if out else Path(run_dir) / "latents.npz"
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **lat)
    return out


def probe_run(latents_path: Path, store_dir: Path, sessions: str | Sequence[str] | None = None,
              out: Path | None = None, lag_s: float = 0.0, decoder: str = "linear",
              n_lags: int = 10, lag_step: int = 2) -> list[dict[str, Any]]:
    """Probe latents -> velocity per session (fit on train, R² on test). ``decoder="linear"``:
    the paper's per-timestep linear regression; ``lag_s`` reads velocity from the latents that
    much earlier (0: same bin). ``decoder="wiener"``: ridge on ``n_lags`` lags ``lag_step`` bins
    apart, as the classic Wiener filter."""
    check_probe_options(decoder, lag_s)  # before reading anything
    store = open_store(store_dir)
    try:
        lat = dict(np.load(latents_path))
    except (OSError, ValueError) as e:
        raise DataValidationError(f"latents file '{latents_path}' is unreadable ({e}); run "
                                  "lfpdistill embed first") from None
    names = store.select(sessions) if sessions else [n for n in store.names if n in lat]
    missing = [n for n in names if n not in lat]
    if missing:
        raise DataValidationError(f"latents file '{latents_path}' has no latents for "
                                  f"{', '.join(missing)}; run lfpdistill embed on them")
    rows = probe_sessions(lat, [store.session(n) for n in names], lag_s=lag_s, decoder=decoder,
                          n_lags=n_lags, lag_step=lag_step)
    if out is not None:
        write_json_atomic(Path(out), rows)
    return rows


def classic_run(store_dir: Path, sessions: str | Sequence[str] | None = None,
                out: Path | None = None, n_lags: int = 10, lag_step: int = 2
                ) -> list[dict[str, Any]]:
    """The classic decoders a neuroscientist would fit (spike Wiener; raw-LFP, LMP+band-power
    Wiener; band-power Kalman) on each selected session: fit on train, R² on test."""
    from .decoders import classic_decoders

    store = open_store(store_dir)
    rows = []
    for s in load_selected(store, sessions):
        for r, _ in classic_decoders(s, n_lags, lag_step):
            rows.append({"session": s.name, "split": "test", **r})
    if out is not None:
        write_json_atomic(Path(out), rows)
    return rows


# ---------------------------------------------------------------------------- distillation
def distill_run(teacher_run: Path, store_dir: Path, sessions: str | Sequence[str] | None,
                out: Path, student_cfg: ModelConfig, train_cfg: TrainConfig,
                dcfg: DistillConfig | None = None, student_init: Path | None = None,
                resume: bool = True, teacher_latents: dict[str, np.ndarray] | None = None
                ) -> dict[str, Any]:
    """Distil the frozen spike teacher into an LFP student on paired sessions.

    ``teacher_latents`` (session -> stitched latents of this teacher, e.g. shared by several
    students of one study) skips recomputing them; they are checked against every session.
    """
    dcfg = dcfg or DistillConfig()
    L.seed_everything(train_cfg.seed, verbose=False)
    teacher, tmeta = load_model(Path(teacher_run), modality="spikes")
    store = open_store(store_dir)
    sel = load_selected(store, sessions, "spikes")
    load_selected(store, [s.name for s in sel], "lfp")  # paired data needed
    bin_size = sel[0].bin_size
    if abs(tmeta["bin_size"] - bin_size) > 1e-9:
        raise DataValidationError(
            f"teacher '{teacher_run}' was trained on {tmeta['bin_size']}s bins but the store uses "
            f"{bin_size}s bins; train the teacher on this store's bin grid")
    check_teacher_sessions(teacher, [s.name for s in sel], {s.name: s.n_units for s in sel})
    lfp_vocab = {s.name: s.n_channels for s in sel}
    if student_init is not None:
        model, smeta = load_model(Path(student_init), modality="lfp")
        if abs(smeta["bin_size"] - bin_size) > 1e-9:
            raise DataValidationError(f"student init '{student_init}' uses {smeta['bin_size']}s bins "
                                      f"but the store uses {bin_size}s bins")
        model.tokenizer.extend(lfp_vocab)
        model.train()
        # the student is aligned on its one-pass (nothing hidden) latents, so that is its read-out
        model.cfg = model.tokenizer.cfg = model.cfg.model_copy(update={"readout": "visible"})
        student_cfg = model.cfg
    else:
        student_cfg = ModelConfig(**{**student_cfg.model_dump(), "modality": "lfp",
                                     "readout": "visible"})
        model = NeuralTransformer(student_cfg, lfp_vocab)
    cache = None
    stats = basis = None
    if dcfg.target_lag_s and not dcfg.cache_teacher:
        raise ConfigError("target_lag_s needs cache_teacher: true (lagged targets come from the "
                          "stitched teacher latents of the whole session)")
    if dcfg.cache_teacher or dcfg.target_pcs or dcfg.target_norm == "standardize":
        # stitched teacher latents of every bin: the training targets when cached, and the
        # training-bin statistics of the target transform in any case
        tw = tmeta.get("window_s", train_cfg.window_s)
        given = teacher_latents or {}
        cache = {s.name: given[s.name] if s.name in given else session_latents(teacher, s, tw)
                 for s in sel}
        for s in sel:
            if cache[s.name].shape[0] != s.n_bins:
                raise DataValidationError(
                    f"teacher latents of '{s.name}' have {cache[s.name].shape[0]} bins but its LFP "
                    f"has {s.n_bins}; spikes and LFP must share one bin grid")
        lag = int(round(dcfg.target_lag_s / bin_size))
        if lag:
            cache = {n: lag_latents(z, lag) for n, z in cache.items()}
        train_bins = {s.name: s.split_mask("train") for s in sel}
        if dcfg.target_pcs:
            basis = teacher_pca(cache, train_bins, dcfg.target_pcs)
        stats = teacher_target_stats(cache, train_bins, basis)
        if not dcfg.cache_teacher:
            cache = None
    mods = ("lfp",) if cache is not None else ("spikes", "lfp")
    train_ds = WindowDataset(sel, "train", train_cfg.window_s, train_cfg.stride_s, mods,
                             require=("spikes", "lfp"))
    val_ds = WindowDataset(sel, "val", train_cfg.window_s, None, mods, require=("spikes", "lfp"))
    run_config = {"stage": "distill", "store": str(store.root), "store_hash": store.options_hash,
                  "teacher": str(teacher_run), "sessions": [s.name for s in sel],
                  "student": student_cfg.model_dump(), "train": train_cfg.model_dump(),
                  "distill": dcfg.model_dump(),
                  "student_init": str(student_init) if student_init else None}
    module = DistillModule(model, teacher, train_cfg, dcfg, bin_size, cache, stats, basis,
                           extra_meta={"sessions_trained": [s.name for s in sel],
                                       "window_s": train_cfg.window_s})
    return fit(module, train_ds, val_ds, Path(out), train_cfg, run_config, resume=resume)


# ---------------------------------------------------------------------------- supervised
def finetune_run(run_dir: Path, store_dir: Path, session: str, out: Path, train_cfg: TrainConfig,
                 as_session: str | None = None, resume: bool = True) -> dict[str, Any]:
    """Fine-tune a model + velocity head end-to-end on one session; R² on its test segments.

    Writes ``out/result.json`` (R² per split) and ``out/predictions.npz``.
    """
    L.seed_everything(train_cfg.seed, verbose=False)
    model, meta = load_model(Path(run_dir))
    store = open_store(store_dir)
    sel = load_selected(store, [session], model.modality)
    s = sel[0]
    name = as_session or s.name
    width = getattr(s, model.modality).shape[1]
    if name not in model.vocab():
        model.tokenizer.extend({name: width})
    model.tokenizer.check_sessions([name], [width])
    train_mask = s.split_mask("train")
    vel = s.velocity[train_mask]
    module = FinetuneModule(model, train_cfg, s.bin_size, vel.mean(0), vel.std(0), as_session,
                            extra_meta={"base_run": str(run_dir), "session": s.name,
                                        "window_s": train_cfg.window_s})
    mods = (model.modality,)
    train_ds = WindowDataset([s], "train", train_cfg.window_s, train_cfg.stride_s, mods, require=mods)
    val_ds = WindowDataset([s], "val", train_cfg.window_s, None, mods, require=mods)
    run_config = {"stage": "finetune", "store": str(store.root), "store_hash": store.options_hash,
                  "base_run": str(run_dir), "session": s.name, "as_session": as_session,
                  "train": train_cfg.model_dump()}
    summary = fit(module, train_ds, val_ds, Path(out), train_cfg, run_config, resume=resume)
    if summary.get("global_rank", 0) != 0:
        # under DDP only rank 0 writes model.ckpt and evaluates it; the other ranks stop here
        return {"session": s.name, "as_session": as_session, "global_rank": summary["global_rank"]}
    # evaluate the best checkpoint
    import torch

    from .training import load_checkpoint
    module.load_state_dict(load_checkpoint(Path(out) / "model.ckpt")["state_dict"])
    module.eval()
    module.to("cpu")
    x = getattr(s, model.modality)
    window = int(round(train_cfg.window_s / s.bin_size))

    def fn(xb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            widths = torch.full((xb.shape[0],), xb.shape[2], dtype=torch.long)
            return module.predict_windows(xb, [s.name] * xb.shape[0], widths)

    assert s.segments is not None
    pred = compute_latents(fn, x, s.segments, window)
    result = {"session": s.name, "as_session": as_session,
              **{f"{split}_{k}": v for split in ("val", "test")
                 for k, v in r2_xy(s.velocity[s.split_mask(split)], pred[s.split_mask(split)]).items()}}
    write_json_atomic(Path(out) / "result.json", result)
    with atomic_path(Path(out) / "predictions.npz", suffix=".npz") as tmp:
        np.savez(tmp, pred=pred, velocity=s.velocity)
    return result


# ---------------------------------------------------------------------------- generalization
def check_as_session(model: NeuralTransformer, target: Session, as_session: str) -> None:
    """Mode (a) reads ``target`` with the embeddings of a known session: channel counts must match."""
    vocab = model.vocab()
    if as_session not in vocab:
        raise DataValidationError(f"session '{as_session}' is not in the model's vocabulary; "
                                  f"known: {', '.join(vocab)}")
    width = getattr(target, model.modality).shape[1]
    if vocab[as_session] != width:
        raise DataValidationError(
            f"generalization mode (a) reads '{target.name}' as if it were '{as_session}', which needs "
            f"the same channel count ('{target.name}' has {width}, '{as_session}' has "
            f"{vocab[as_session]}); use mode (b) (adapt the session embeddings) instead")
