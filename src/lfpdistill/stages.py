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

import numpy as np

from .data import Store, WindowDataset, open_store, write_json_atomic
from .data.store import atomic_path
from .errors import ConfigError, DataValidationError
from .evaluation import probe_sessions, session_latents
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
              out: Path | None = None, as_session: str | None = None, prefix: str = "model.",
              window_s: float | None = None) -> Path:
    """Write per-timestep latents of every selected session (all splits) to ``latents.npz``."""
    model, meta = load_model(Path(run_dir), prefix=prefix)
    store = open_store(store_dir)
    sel = load_selected(store, sessions, model.modality)
    w = window_s or meta.get("window_s", 1.0)
    lat = {s.name: session_latents(model, s, w, as_session=as_session) for s in sel}
    out = Path(out) if out else Path(run_dir) / "latents.npz"
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **lat)
    return out


def probe_run(latents_path: Path, store_dir: Path, sessions: str | Sequence[str] | None = None,
              out: Path | None = None) -> list[dict[str, Any]]:
    """Linear probe latents -> velocity per session (fit on train, R² on test)."""
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
    rows = probe_sessions(lat, [store.session(n) for n in names])
    if out is not None:
        write_json_atomic(Path(out), rows)
    return rows
