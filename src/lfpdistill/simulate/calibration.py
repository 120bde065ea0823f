"""Calibration of the simulator: how well the classic decoders read hand velocity from it.

The default simulator is tuned so that, per session, a Wiener filter decodes velocity from spikes,
from the raw LFP and from LMP + band power within the *calibration bands*
(:data:`CALIBRATION_BANDS`, docs/simulator.md). A *calibrated variant* (``variant="calibrated"``)
draws every generative parameter like a random variant, then moves three amplitudes until one
session of it lands in the same bands: the task tuning depth of the spiking population (spike
decoding), the local motor potential (raw LFP) and the firing-modulated broadband power
(LMP + band power). The variant keeps everything else it drew (population, turnover, drift, lead,
task, beta, 1/f background, noise): different structure, the decodability reported for real
recordings. See :func:`calibrate` for the search.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..config import SimConfig
from ..session import Session

#: Test R² bands of the calibration decoders (docs/simulator.md, "Calibration").
CALIBRATION_BANDS: dict[str, tuple[float, float]] = {
    "spikes": (0.60, 0.80), "raw_lfp": (0.25, 0.40), "lmp_bp": (0.45, 0.60)}
#: Which amplitude a calibrated variant moves for which band.
CALIBRATION_KNOBS: dict[str, str] = {"spikes": "tuning_depth", "raw_lfp": "lfp.lmp",
                                     "lmp_bp": "lfp.broadband"}
#: Length of the one session a calibrated variant is measured on (s).
CALIBRATION_SECONDS = 200.0
#: Every column :func:`calibration_r2` can compute.
CALIBRATION_COLUMNS = ("spikes", "raw_lfp", "lmp_bp", "latents", "lmp_only", "power_only")


def calibration_r2(session: Session, columns: Sequence[str] = tuple(CALIBRATION_BANDS)
                   ) -> dict[str, float]:
    """Test R² (mean over x, y) of the calibration decoders on one session: a Wiener filter
    (ridge on 10 causal lags x 2 bins, penalty by contiguous CV on the training bins) trained on
    the first 80 % of the bins and tested on the last 20 %, from each of ``columns``: ``spikes``
    (counts summed between lags), ``raw_lfp``, ``lmp_bp`` (LMP + log band power), ``latents``
    (the simulator's ground truth: the ceiling), ``lmp_only``, ``power_only``."""
    from ..evaluation import WienerDecoder, band_power_features, r2_mean

    unknown = [c for c in columns if c not in CALIBRATION_COLUMNS]
    if unknown:
        raise ValueError(f"unknown calibration column(s) {unknown}; expected {CALIBRATION_COLUMNS}")
    T = session.n_bins
    train = np.arange(T) < int(0.8 * T)
    Y = session.velocity
    bp = None
    if {"lmp_bp", "lmp_only", "power_only"} & set(columns):
        bp = band_power_features(session.lfp, fs=1.0 / session.bin_size)
    C = session.n_channels
    inputs: dict[str, tuple[Any, bool]] = {
        "spikes": (session.spikes, True), "raw_lfp": (session.lfp, False),
        "lmp_bp": (bp, False), "latents": (session.latents, False),
        "lmp_only": (None if bp is None else bp[:, :C], False),
        "power_only": (None if bp is None else bp[:, C:], False)}
    out = {}
    for key in columns:
        X, integrate = inputs[key]
        dec = WienerDecoder(n_lags=10, lag_step=2, integrate=integrate).fit(X, Y, train)
        out[key] = float(r2_mean(Y[~train], dec.predict(X, ~train)))
    return out


def scaled(cfg: SimConfig, factors: dict[str, float]) -> SimConfig:
    """``cfg`` with the calibration amplitudes multiplied by ``factors`` (keys of
    :data:`CALIBRATION_BANDS`; a missing key is 1)."""
    lo, hi = cfg.tuning_depth
    d = factors.get("spikes", 1.0)
    lfp = {**cfg.lfp.model_dump(), "lmp": cfg.lfp.lmp * factors.get("raw_lfp", 1.0),
           "broadband": cfg.lfp.broadband * factors.get("lmp_bp", 1.0)}
    return SimConfig(**{**cfg.model_dump(), "tuning_depth": (lo * d, hi * d), "lfp": lfp})


def calibrate(measure: Callable[[dict[str, float]], dict[str, float]],
              bands: dict[str, tuple[float, float]] = CALIBRATION_BANDS, max_iter: int = 8,
              step: float = 2.0, max_factor: float = 8.0, stale_ratio: float = 1.1,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Search the factors that put every measure inside its band.

    ``measure(factors)`` returns one R² per band key. All factors start at 1 and move together,
    each by its own band: multiplied (or divided) by ``step`` while its measure is below (above)
    the band and nothing brackets it yet, then by geometric bisection between the last factors
    seen below and above. Factors stay within ``[1 / max_factor, max_factor]``. Stops when every
    measure is inside its band, when no factor can move (those outside their bands all at a
    limit) or after ``max_iter`` measurements. Returns ``factors``, ``r2`` (of those factors),
    ``inside`` and ``iterations``.

    A bracket is kept while the other factors move, so coupled measures can shift a band past an
    old bracket; the search would then only creep towards it. A bracket narrower than
    ``stale_ratio``, with the measure still outside the band and its far side seen when another
    factor had another value, is therefore taken as stale: the far side is dropped and the
    factor steps by ``step`` again.
    """
    f = {k: 1.0 for k in bands}
    below: dict[str, float | None] = {k: None for k in bands}
    above: dict[str, float | None] = {k: None for k in bands}
    seen_with: dict[tuple[str, str], dict[str, float]] = {}  # (key, side) -> the factors then
    r2: dict[str, float] = {}

    def stale(k: str, side: str, far: float | None, now: dict[str, float]) -> bool:
        if far is None or max(far, now[k]) / min(far, now[k]) >= stale_ratio:
            return False
        then = seen_with[(k, side)]
        return any(then[j] != now[j] for j in now if j != k)

    for it in range(1, max_iter + 1):
        r2 = {k: float(v) for k, v in measure(dict(f)).items()}
        inside = all(a <= r2[k] <= b for k, (a, b) in bands.items())
        if log is not None:
            log(f"calibration {it}: " + ", ".join(f"{k} {r2[k]:.3f} (x{f[k]:.2f})" for k in bands))
        if inside or it == max_iter:
            return {"factors": f, "r2": r2, "inside": inside, "iterations": it}
        before = dict(f)
        for k, (a, b) in bands.items():
            if r2[k] < a:
                below[k], seen_with[(k, "below")] = f[k], dict(before)
                up = above[k]
                if stale(k, "above", up, before):
                    above[k] = up = None
                nxt = f[k] * step if up is None or up <= f[k] else math.sqrt(f[k] * up)
            elif r2[k] > b:
                above[k], seen_with[(k, "above")] = f[k], dict(before)
                down = below[k]
                if stale(k, "below", down, before):
                    below[k] = down = None
                nxt = f[k] / step if down is None or down >= f[k] else math.sqrt(f[k] * down)
            else:
                continue
            f[k] = float(min(max(nxt, 1.0 / max_factor), max_factor))
        if f == before:  # every factor out of its band sits at a limit: measuring again repeats
            return {"factors": f, "r2": r2, "inside": False, "iterations": it}
    raise AssertionError("unreachable")  # pragma: no cover


def calibrate_variant(cfg: SimConfig, simulate: Callable[[SimConfig], list[Session]],
                      seconds: float = CALIBRATION_SECONDS, max_iter: int = 8,
                      progress: bool = True) -> SimConfig:
    """The calibrated variant of ``cfg`` (already resolved into its random draws): its tuning
    depth, LMP and broadband amplitudes scaled (:func:`calibrate`) until one ``seconds``-long
    session (fast path, the variant's seed, simulated by ``simulate``) decodes within
    :data:`CALIBRATION_BANDS`. The result records the factors, the R² reached and whether every
    band was reached in ``calibration``; a variant that does not reach them keeps the last
    factors tried (``inside`` false)."""
    probe = SimConfig(**{**cfg.model_dump(), "n_sessions": 1, "seconds": seconds, "path": "fast",
                         "segment_s": None})

    def measure(factors: dict[str, float]) -> dict[str, float]:
        return calibration_r2(simulate(scaled(probe, factors))[0])

    def log(line: str) -> None:
        if progress:
            print(f"{cfg.drawn_from}: {line}", file=sys.stderr, flush=True)

    res = calibrate(measure, max_iter=max_iter, log=log)
    out = scaled(cfg, res["factors"])
    record = {"factors": {CALIBRATION_KNOBS[k]: round(v, 4) for k, v in res["factors"].items()},
              "r2": {k: round(v, 4) for k, v in res["r2"].items()}, "inside": res["inside"],
              "iterations": res["iterations"],
              "bands": {k: list(v) for k, v in CALIBRATION_BANDS.items()}, "seconds": seconds}
    return SimConfig(**{**out.model_dump(), "calibration": record})
