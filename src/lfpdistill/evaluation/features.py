"""Decoder inputs built from recordings: causal lags inside the runs of a split, and the classic
LFP features (local motor potential and log band power).

Conventions: arrays are time-major (features ``X`` ``[T, F]``, targets ``Y`` ``[T, D]``). Masks are
boolean ``[T]`` arrays such as ``Session.split_mask("train")``; a mask usually has several *runs*
(maximal stretches of consecutive ``True`` bins, e.g. 5 s segments), and every run is treated as
its own recording: lags are zero-padded at each run start, so no row sees another split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import signal

from ..errors import ConfigError, DataValidationError

#: Default log band-power bands in Hz (theta, alpha/mu, beta, low gamma).
DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((4.0, 8.0), (8.0, 13.0), (13.0, 30.0),
                                                  (30.0, 50.0))


def lagged(X: np.ndarray, n_lags: int = 10, lag_step: int = 2, integrate: bool = False
           ) -> np.ndarray:
    """Causal lagged copies of ``X`` ``[T, F]`` -> ``[T, n_lags * F]``.

    Block ``j`` (columns ``j*F:(j+1)*F``) holds ``X[t - j*lag_step]`` -- the current bin and
    ``n_lags - 1`` earlier ones, ``lag_step`` bins apart (20 ms at 10 ms bins) -- zero before
    the start. With ``integrate=True`` block ``j`` holds the *sum* of the ``lag_step`` bins
    ``t - j*lag_step - lag_step + 1 .. t - j*lag_step`` instead (spike counts re-binned causally
    into ``lag_step``-bin windows, so every bin of the history is used once).

    >>> lagged(np.arange(5.0)[:, None], n_lags=3, lag_step=1)[:, :].tolist()
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [3.0, 2.0, 1.0], [4.0, 3.0, 2.0]]
    """
    X = _lag_input(X, n_lags, lag_step)
    out = np.empty((X.shape[0], n_lags * X.shape[1]), dtype=np.result_type(X.dtype, np.float32))
    _lag_into(out, X, n_lags, lag_step, integrate)
    return out


def _lag_input(X: np.ndarray, n_lags: int, lag_step: int) -> np.ndarray:
    """``X`` as ``[T, F]`` (a 1-D ``X`` is one feature), with the lag options checked."""
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise DataValidationError(f"lagged: X has shape {list(X.shape)}; expected [T, F]")
    if n_lags < 1 or lag_step < 1:
        raise ConfigError(f"lagged: n_lags={n_lags} and lag_step={lag_step} must be >= 1")
    return X


def _lag_into(out: np.ndarray, X: np.ndarray, n_lags: int, lag_step: int, integrate: bool
              ) -> None:
    """Write :func:`lagged` of ``X`` ``[T, F]`` into ``out`` ``[T, n_lags * F]``."""
    T, F = X.shape
    base = X.astype(out.dtype, copy=False)
    if integrate and lag_step > 1:
        c = np.cumsum(base, axis=0, dtype=np.float64)
        s = c.copy()
        s[lag_step:] -= c[:-lag_step]
        base = s.astype(out.dtype)
    for j in range(n_lags):
        d = min(j * lag_step, T)
        out[:d, j * F:(j + 1) * F] = 0
        out[d:, j * F:(j + 1) * F] = base[: T - d]


def mask_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the maximal runs of ``True`` in a boolean ``[T]`` mask.

    >>> mask_runs(np.array([0, 1, 1, 0, 1], dtype=bool))
    [(1, 3), (4, 5)]
    """
    m = np.asarray(mask, dtype=bool).astype(np.int8)
    d = np.diff(np.r_[0, m, 0])
    starts = np.flatnonzero(d == 1)
    stops = np.flatnonzero(d == -1)
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def mask_groups(mask: np.ndarray) -> np.ndarray:
    """Run labels ``0, 1, ...`` of the ``True`` bins of a mask, one per masked bin: pass
    ``X[mask]`` with ``groups=mask_groups(mask)`` to a decoder and every run of the mask stays
    its own recording.

    >>> mask_groups(np.array([0, 1, 1, 0, 1], dtype=bool)).tolist()
    [0, 0, 1]
    """
    m = np.asarray(mask, dtype=bool)
    starts = np.diff(np.r_[False, m].astype(np.int8)) == 1
    return (np.cumsum(starts) - 1)[m]


def group_runs(groups: np.ndarray | None, n: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of ``n`` rows: a new run starts wherever the label in
    ``groups`` (one per row, any comparable type) differs from the previous row's; ``None`` is
    one run of all rows.

    >>> group_runs(np.array(["a", "a", "b", "a"]), 4)
    [(0, 2), (2, 3), (3, 4)]
    """
    if groups is None:
        return [(0, n)] if n else []
    g = np.asarray(groups)
    if g.shape != (n,):
        raise DataValidationError(f"groups has shape {list(g.shape)}; expected one label per "
                                  f"row, [{n}]")
    if n == 0:
        return []
    edges = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1, n]
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def lagged_in_runs(X: np.ndarray, runs: Sequence[tuple[int, int]], n_lags: int = 10,
                   lag_step: int = 2, integrate: bool = False) -> np.ndarray:
    """:func:`lagged` applied inside every ``(start, stop)`` run of the rows of ``X``; the
    rows of the runs, in order (zero-padded at each run start)."""
    X = _lag_input(X, n_lags, lag_step)
    # every run lagged straight into its rows of the output (no per-run arrays to concatenate)
    out = np.empty((sum(b - a for a, b in runs), n_lags * X.shape[1]),
                   dtype=np.result_type(X.dtype, np.float32))
    i = 0
    for a, b in runs:
        _lag_into(out[i:i + b - a], X[a:b], n_lags, lag_step, integrate)
        i += b - a
    return out


def lagged_runs(X: np.ndarray, mask: np.ndarray | None, n_lags: int = 10, lag_step: int = 2,
                integrate: bool = False) -> np.ndarray:
    """:func:`lagged` applied inside every run of ``mask``; rows of the masked bins only.

    Lags never reach outside a run (they are zero-padded at each run start), so the rows of
    one split never see another split's features. ``mask=None`` means the whole recording.
    """
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if mask is None:
        return lagged(X, n_lags, lag_step, integrate)
    mask = check_mask(mask, X.shape[0], "mask")
    return lagged_in_runs(X, mask_runs(mask), n_lags, lag_step, integrate)


def band_power_features(lfp: np.ndarray, fs: float = 100.0,
                        bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
                        lmp_hz: float = 4.0, smooth_s: float = 0.1, order: int = 4
                        ) -> np.ndarray:
    """Classic LFP features: local motor potential and log band power, per channel.

    All filters are **causal** (``sosfilt``, Butterworth of ``order``; started from rest), so a
    feature at bin ``t`` depends only on the LFP up to ``t`` -- the features are honest inputs
    for an online-style decoder, at the price of the filters' group delay (tens of ms).

    - LMP: the LFP low-passed at ``lmp_hz`` (order 2, to keep its delay short).
    - Band power: band-pass (``sosfilt``), square, causal moving average over ``smooth_s``,
      natural log (of ``max(p, 1e-30)``, so a flat channel stays finite).
      A band whose upper edge reaches 95 % of the Nyquist frequency ``fs/2`` becomes a
      *high-pass* at its lower edge (at ``fs = 100`` Hz the 30-50 Hz band is 30 Hz to Nyquist).

    Returns ``[T, C * (1 + len(bands))]`` float32 ordered feature-major: columns ``0:C`` are
    the LMP of channels 0..C-1, then ``C`` columns per band in the order given (see
    :func:`band_power_feature_names`).
    """
    x = np.asarray(lfp, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataValidationError(f"band_power_features: lfp has shape {list(x.shape)}; "
                                  "expected [T, C]")
    T, C = x.shape
    lmp_sos, band_sos, win = band_power_filters(fs, bands, lmp_hz, smooth_s, order)
    out = np.empty((T, C * (1 + len(bands))), dtype=np.float32)
    out[:, :C] = signal.sosfilt(lmp_sos, x, axis=0)
    for i, sos in enumerate(band_sos):
        p = signal.sosfilt(sos, x, axis=0) ** 2
        c = np.cumsum(p, axis=0)
        sm = c.copy()
        sm[win:] -= c[:-win]
        sm /= np.minimum(np.arange(1, T + 1), win)[:, None]
        out[:, C * (i + 1): C * (i + 2)] = np.log(np.maximum(sm, 1e-30))
    return out


def band_power_filters(fs: float = 100.0, bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
                       lmp_hz: float = 4.0, smooth_s: float = 0.1, order: int = 4
                       ) -> tuple[np.ndarray, list[np.ndarray], int]:
    """The filters of :func:`band_power_features`: the LMP low-pass and one band filter per
    band (second-order sections), and the moving average's length in bins — what a stream
    computing the same features bin by bin needs."""
    nyq = fs / 2.0
    if not 0 < lmp_hz < nyq:
        raise ConfigError(f"lmp_hz {lmp_hz} must be in (0, {nyq:g}) Hz at fs={fs:g} Hz")
    lmp = signal.butter(2, lmp_hz, "low", fs=fs, output="sos")
    win = max(1, int(round(smooth_s * fs)))
    out = []
    for lo, hi in bands:
        if not 0 < lo < hi:
            raise ConfigError(f"band ({lo}, {hi}) Hz is invalid; expected 0 < low < high")
        if lo >= 0.95 * nyq:
            raise ConfigError(f"band ({lo}, {hi}) Hz starts at or above Nyquist ({nyq:g} Hz)")
        if hi >= 0.95 * nyq:
            out.append(signal.butter(order, lo, "high", fs=fs, output="sos"))
        else:
            out.append(signal.butter(order, (lo, hi), "bandpass", fs=fs, output="sos"))
    return lmp, out, win


def band_power_feature_names(channel_ids: Sequence[str],
                             bands: Sequence[tuple[float, float]] = DEFAULT_BANDS) -> list[str]:
    """Column names of :func:`band_power_features` (``'lmp:ch'``, ``'4-8Hz:ch'``, ...).

    >>> band_power_feature_names(["a", "b"], ((13, 30),))
    ['lmp:a', 'lmp:b', '13-30Hz:a', '13-30Hz:b']
    """
    names = [f"lmp:{c}" for c in channel_ids]
    for lo, hi in bands:
        names += [f"{lo:g}-{hi:g}Hz:{c}" for c in channel_ids]
    return names


def check_mask(mask: np.ndarray | None, T: int, what: str) -> np.ndarray:
    """``mask`` as a boolean ``[T]`` array (``None``: every bin); anything else is an error."""
    if mask is None:
        return np.ones(T, dtype=bool)
    m = np.asarray(mask)
    if m.dtype != bool or m.shape != (T,):
        raise DataValidationError(f"{what} must be a boolean array of shape [{T}], got "
                                  f"{m.dtype} {list(m.shape)}")
    return m
