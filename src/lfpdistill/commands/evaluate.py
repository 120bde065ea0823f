"""``lfpdistill embed``, ``probe`` and ``classic``: latents of a trained model, and velocity
decoded from them or from classic features."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data import open_store, write_json_atomic
from ..data.guard import check_output_file
from ..data.store import atomic_path
from ..errors import ConfigError, DataValidationError
from ..evaluation import check_probe_options, classic_decoders, probe_sessions, session_latents
from ..evaluation.latents import load_latents
from ..models import load_model
from .common import check_as_session, load_selected


def embed_run(run_dir: Path, store_dir: Path, sessions: str | Sequence[str] | None = None,
              out: Path | None = None, as_session: str | None = None,
              window_s: float | None = None, readout: str | None = None) -> Path:
    """Write per-timestep latents of every selected session (all splits) to ``latents.npz``.

    ``readout`` (``visible`` or ``held_out``) overrides the model's own read-out.
    """
    if readout not in (None, "visible", "held_out"):
        raise ConfigError(f"unknown readout '{readout}'; use visible or held_out")
    if out is not None:
        check_output_file(out, (run_dir, store_dir), allow=(Path(run_dir) / "latents.npz",))
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
    if not math.isfinite(lag_s):
        raise ConfigError(f"probe lag must be a finite number of seconds (got {lag_s})")
    check_probe_options(decoder, lag_s)  # before reading anything
    if out is not None:
        check_output_file(out, (latents_path, store_dir))
    store = open_store(store_dir)
    lat = load_latents(Path(latents_path))
    if not lat:
        raise DataValidationError(f"latents file '{latents_path}' holds no latents; run "
                                  "lfpdistill embed first")
    names = store.select(sessions) if sessions else [n for n in store.names if n in lat]
    if not names:
        raise DataValidationError(
            f"latents file '{latents_path}' has latents of {', '.join(sorted(lat)[:8])}, none of "
            f"them a session of store '{store.root}'; probe the store the latents were embedded "
            "from")
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
    if out is not None:
        check_output_file(out, (store_dir,))
    store = open_store(store_dir)
    rows = []
    for s in load_selected(store, sessions):
        for r, _ in classic_decoders(s, n_lags, lag_step):
            rows.append({"session": s.name, "split": "test", **r})
    if out is not None:
        write_json_atomic(Path(out), rows)
    return rows
