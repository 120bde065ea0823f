"""Latents for whole sessions (stitched windows) and the linear probe.

Stitching: inside each contiguous run of one split, windows of ``L`` bins are placed with stride
``L/2`` (the last one shifted to end at the run's end) and every bin takes its latent from the
window whose centre is nearest — a *centre crop*: each bin gets exactly one latent, computed with
context on both sides wherever the run allows. Runs shorter than ``L`` are encoded as one shorter
window. No window crosses a split boundary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from .data.windows import split_runs
from .errors import ConfigError, DataValidationError
from .session import SPLITS, Session


def stitch_plan(a: int, b: int, L: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(start, stop, keep_from, keep_to)`` covering run ``[a, b)`` with centre crops.

    >>> stitch_plan(0, 10, 4)
    [(0, 4, 0, 3), (2, 6, 3, 5), (4, 8, 5, 7), (6, 10, 7, 10)]
    >>> stitch_plan(0, 3, 4)
    [(0, 3, 0, 3)]
    """
    if b - a <= L:
        return [(a, b, a, b)]
    stride = max(1, L // 2)
    starts = list(range(a, b - L + 1, stride))
    if starts[-1] + L < b:
        starts.append(b - L)
    centres = np.array(starts, dtype=float) + L / 2
    # boundaries between consecutive windows' regions: midpoints of their centres
    mids = [int(np.ceil((centres[i] + centres[i + 1]) / 2 - 0.5)) for i in range(len(starts) - 1)]
    bounds = [a, *mids, b]
    return [(s, s + L, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def compute_latents(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray,
                    segments: np.ndarray, window: int, batch_size: int = 64,
                    device: torch.device | None = None) -> np.ndarray:
    """Apply ``fn([B, L, C]) -> [B, L, D]`` over a whole session with centre-crop stitching.

    ``x`` is ``[T, C]``; returns ``[T, D]`` float32 (every bin of every split filled once).
    """
    T = x.shape[0]
    plans: list[tuple[int, int, int, int]] = []
    for split in SPLITS:
        for a, b in split_runs(segments, split):
            plans.extend(stitch_plan(a, b, window))
    out: np.ndarray | None = None
    filled = np.zeros(T, dtype=bool)
    # group windows of equal length into batches
    by_len: dict[int, list[tuple[int, int, int, int]]] = {}
    for p in plans:
        by_len.setdefault(p[1] - p[0], []).append(p)
    for _, group in sorted(by_len.items()):
        for k in range(0, len(group), batch_size):
            chunk = group[k:k + batch_size]
            xb = torch.from_numpy(np.stack([x[s:e] for s, e, _, _ in chunk]).astype(np.float32))
            if device is not None:
                xb = xb.to(device)
            z = fn(xb).float().cpu().numpy()
            if out is None:
                out = np.zeros((T, z.shape[-1]), dtype=np.float32)
            for (s, _, kf, kt), zb in zip(chunk, z, strict=True):
                out[kf:kt] = zb[kf - s:kt - s]
                filled[kf:kt] = True
    if out is None or not filled.all():
        raise DataValidationError("session segments do not cover every bin; re-create the store")
    return out


def session_latents(model: Any, session: Session, window_s: float, as_session: str | None = None,
                    batch_size: int = 64, readout: str | None = None) -> np.ndarray:
    """Per-timestep latents ``[T, d]`` of a NeuralTransformer for every bin of ``session``.

    ``as_session`` reads the data with another session's embeddings (generalisation mode a);
    ``readout`` overrides the model's read-out (``visible`` or ``held_out``).
    """
    modality = model.modality
    x = getattr(session, modality)
    if x is None:
        raise DataValidationError(f"session '{session.name}' has no {modality} for a {modality} model")
    name = as_session or session.name
    window = max(1, int(round(window_s / session.bin_size)))
    model.eval()
    dev = _model_device(model)

    def fn(xb: torch.Tensor) -> torch.Tensor:
        widths = torch.full((xb.shape[0],), xb.shape[2], dtype=torch.long)
        return model.encode(xb, [name] * xb.shape[0], widths, readout=readout)

    assert session.segments is not None
    return compute_latents(fn, x, session.segments, window, batch_size, dev)


def r2_xy(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R² per velocity component and their mean.

    >>> r = r2_xy(np.array([[0., 1.], [1., 0.], [2., 1.]]), np.array([[0., 1.], [1., 0.], [2., 1.]]))
    >>> r["r2"]
    1.0
    """
    rx = float(r2_score(y_true[:, 0], y_pred[:, 0]))
    ry = float(r2_score(y_true[:, 1], y_pred[:, 1]))
    return {"r2": (rx + ry) / 2, "r2_x": rx, "r2_y": ry}


def lag_latents(latents: np.ndarray, lag_bins: int) -> np.ndarray:
    """Latents delayed by ``lag_bins``: row ``t`` holds ``latents[t - lag_bins]`` (the first rows
    repeat row 0), so a probe reads velocity at ``t`` from the neural state ``lag`` earlier.

    >>> lag_latents(np.arange(5.0)[:, None], 2).ravel().tolist()
    [0.0, 0.0, 0.0, 1.0, 2.0]
    """
    if lag_bins < 0:
        raise ConfigError(f"probe lag must be >= 0 bins (got {lag_bins})")
    if lag_bins == 0:
        return latents
    if lag_bins >= latents.shape[0]:
        raise ConfigError(f"probe lag of {lag_bins} bins is longer than the session "
                          f"({latents.shape[0]} bins)")
    return np.concatenate([np.repeat(latents[:1], lag_bins, axis=0), latents[:-lag_bins]])


def linear_probe(latents: np.ndarray, velocity: np.ndarray, train_mask: np.ndarray,
                 test_mask: np.ndarray, lag_bins: int = 0) -> dict[str, Any]:
    """Fit linear regression latents -> velocity on train bins, score R² on test bins.

    ``lag_bins`` > 0 reads velocity at ``t`` from the latent at ``t - lag_bins`` (motor cortex
    leads movement by ~100 ms); 0 is the paper's protocol (same bin).
    """
    if latents.shape[0] != velocity.shape[0]:
        raise DataValidationError(
            f"latents have {latents.shape[0]} bins but velocity has {velocity.shape[0]}")
    if not np.isfinite(latents).all():
        raise DataValidationError("latents contain NaN/inf; the model diverged — retrain it")
    latents = lag_latents(latents, lag_bins)
    reg = LinearRegression().fit(latents[train_mask], velocity[train_mask])
    pred = reg.predict(latents)
    return {**r2_xy(velocity[test_mask], pred[test_mask]), "pred": pred.astype(np.float32)}


def wiener_probe(latents: np.ndarray, velocity: np.ndarray, train_mask: np.ndarray,
                 test_mask: np.ndarray, n_lags: int = 10, lag_step: int = 2) -> dict[str, Any]:
    """The classic Wiener filter (:class:`~lfpdistill.decoders.WienerDecoder`: ridge on
    ``n_lags`` causal lags ``lag_step`` bins apart, penalty by contiguous CV on train bins) fit on
    frozen latents instead of hand-made features.

    The decoder-matched comparison with the classic decoders: same lags, same penalty search,
    same splits; only the features differ. Lags stay inside each run of a split. ``pred`` is
    NaN outside the test bins.
    """
    from .decoders import WienerDecoder

    if latents.shape[0] != velocity.shape[0]:
        raise DataValidationError(
            f"latents have {latents.shape[0]} bins but velocity has {velocity.shape[0]}")
    if not np.isfinite(latents).all():
        raise DataValidationError("latents contain NaN/inf; the model diverged — retrain it")
    if (np.asarray(train_mask) & np.asarray(test_mask)).any():
        raise DataValidationError("train and test bins overlap; the Wiener probe needs disjoint splits")
    dec = WienerDecoder(n_lags=n_lags, lag_step=lag_step).fit(latents, velocity, train_mask)
    test_pred = dec.predict(latents, test_mask)  # scored in float64, as the classic decoders
    pred = np.full(velocity.shape, np.nan, dtype=np.float32)
    pred[test_mask] = test_pred
    return {**r2_xy(velocity[test_mask], test_pred), "pred": pred}


def wiener_fits(jobs: Sequence[tuple[np.ndarray, Session]], n_lags: int = 10, lag_step: int = 2,
                workers: int | None = None, split: str = "test") -> list[dict[str, float]]:
    """:func:`wiener_probe` of many ``(latents, session)`` pairs; returns their R² dicts in order.

    The fits run ``workers`` at a time (default: one per usable core, at most 4) with
    single-threaded BLAS:
    a ~1000-feature Cholesky factorisation gains little from a second BLAS thread, two of them
    side by side nearly twice as much (measured: 4 fits 6.4 s -> 3.7 s on 2 cores).
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    def one(job: tuple[np.ndarray, Session]) -> dict[str, float]:
        z, s = job
        res = wiener_probe(z, s.velocity, s.split_mask("train"), s.split_mask(split), n_lags,
                           lag_step)
        return {k: v for k, v in res.items() if k != "pred"}

    if workers is None:  # usable cores, at most 4 (a 16 000-bin x 1280-feature design is 80 MB)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = min(4, cores or 1)
    workers = max(1, min(len(jobs), workers))
    if workers == 1:
        return [one(j) for j in jobs]
    with threadpool_limits(1), ThreadPoolExecutor(workers) as ex:
        return list(ex.map(one, jobs))


def check_probe_options(decoder: str, lag_s: float = 0.0) -> None:
    """Refuse an unknown probe decoder, or a lag given to the Wiener probe."""
    if decoder not in ("linear", "wiener"):
        raise ConfigError(f"unknown probe decoder '{decoder}'; expected 'linear' or 'wiener'")
    if decoder == "wiener" and lag_s:
        raise ConfigError("a lag applies to the linear probe only; the Wiener probe already "
                          "reads n_lags earlier bins")


def probe_sessions(latents: dict[str, np.ndarray], sessions: Sequence[Session],
                   split: str = "test", lag_s: float = 0.0, decoder: str = "linear",
                   n_lags: int = 10, lag_step: int = 2) -> list[dict[str, Any]]:
    """Probe per session; rows with session, split, decoder, lag_s, r2, r2_x, r2_y.

    ``decoder``: ``linear`` (the paper's per-timestep linear probe, optionally read ``lag_s``
    earlier) or ``wiener`` (:func:`wiener_probe` with ``n_lags`` x ``lag_step`` bins).
    """
    check_probe_options(decoder, lag_s)
    if decoder == "wiener":
        fits = wiener_fits([(latents[s.name], s) for s in sessions], n_lags, lag_step, split=split)
        return [{"session": s.name, "split": split, "decoder": decoder, "lag_s": 0.0, **res}
                for s, res in zip(sessions, fits, strict=True)]
    rows = []
    for s in sessions:
        lag = int(round(lag_s / s.bin_size))
        res = linear_probe(latents[s.name], s.velocity, s.split_mask("train"),
                           s.split_mask(split), lag_bins=lag)
        rows.append({"session": s.name, "split": split, "decoder": decoder,
                     "lag_s": lag * s.bin_size, **{k: v for k, v in res.items() if k != "pred"}})
    return rows
