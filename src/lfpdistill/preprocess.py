"""Broadband (or wide-band LFP) recordings -> processed LFP on the bin grid.

The chain (the paper's LFP chain; docs/real_data.md):

1. **anti-alias + decimate** to ``intermediate_fs`` (about 1 kHz) with a polyphase FIR
   (rational factor ``up/down``; Kaiser-window design, cut-off ``fi / 2``, 80 dB stop band from
   ``fi - f_keep`` so that ``[0, f_keep]``, ``f_keep = min(fi / 4, 2 * lowpass_hz)``, is free of
   aliases -- what lands above ``f_keep`` is removed by the low-pass anyway);
2. **60 Hz notch and harmonics** (``iirnotch``, quality ``notch_q``) and **low-pass**
   ``lowpass_hz`` (Butterworth), zero-phase (``sosfiltfilt``) at the intermediate rate;
3. **common average reference** (per time sample, mean over channels subtracted);
4. **resample to the bin rate** ``1 / bin_size``: a windowed-sinc anti-alias kernel (cut-off at
   the bin-rate Nyquist) evaluated at the exact centre time of every bin;
5. **high-pass** ``highpass_hz`` (Butterworth, zero-phase) at the bin rate;
6. **z-score** per channel over the whole output.

All steps are linear and time-invariant except the z-score, so the order of 2, 3 and 5 only
matters within the filters' edge transients; the high-pass is applied last, at the bin rate,
because its very long impulse response (tens of seconds at 0.05 Hz) makes it the one filter that
cannot be streamed in overlapping chunks, while the bin-rate signal of a whole session fits in
memory easily (30 min x 96 channels at 100 Hz is 138 MB in float64).

Time convention
---------------
Input sample ``n`` is at time ``t0 + n / fs``. Output row ``k`` is the LFP at the *centre* of
bin ``k``, i.e. at ``grid_start + (k + 0.5) * bin_size`` where ``grid_start`` defaults to ``t0``.
With the default grid, ``n_bins = floor(duration / bin_size)`` whole bins are returned
(``duration = n_samples / fs``).

Streaming
---------
:func:`broadband_to_lfp_chunked` reads the input through ``read(start, stop) -> [stop-start, C]``
(an ``h5py`` dataset slice works) and keeps memory bounded: step 1 is an FIR filter and is
computed *exactly* in blocks (each block reads the few input samples its kernel needs on either
side); steps 2-4 run on windows of the ~1 kHz signal that overlap by :attr:`ChainPlan.margin`
samples on each side -- long enough for the notch/low-pass impulse responses to decay below
1e-9 -- and only the window's core is kept; steps 5-6 run on the whole bin-rate signal.
:func:`broadband_to_lfp` is the same code with a single window, so the two cannot drift;
their results agree to about 1e-7 in z-units.

Edges: nothing is trimmed, so the ends carry filter transients as in any zero-phase chain.
Beyond the recording, step 1 holds the first/last sample value; steps 2 and 5 use a short odd
extension. The notch/low-pass transients last well under a second; the 0.05 Hz high-pass rings
for longer, so step 5 starts each pass from the steady state of the local mean (not of the edge
sample, as ``sosfiltfilt`` does), which keeps the error to ~10 % of a channel's standard deviation
in the first/last 5 s and ~1 % beyond 20 s (versus ~80 % and ~3 % with ``sosfiltfilt``).

Why one module of ~500 lines: the in-memory chain and its bounded-memory streamed twin must
stay step-for-step identical (a test compares them to 6e-8); they are kept side by side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pydantic
from scipy import signal

from .errors import ConfigError, DataValidationError

__all__ = [
    "ChainPlan",
    "LfpChainConfig",
    "Reader",
    "bin_spike_times",
    "broadband_to_lfp",
    "broadband_to_lfp_chunked",
    "plan_chain",
    "sample_at_bins",
]

#: ``read(start, stop)`` returns samples ``[start, stop)`` as an ``[stop - start, C]`` array.
Reader = Callable[[int, int], np.ndarray]

_AA_STOP_DB = 80.0  # stop-band attenuation of the decimation FIR
_SINC_ZEROS = 10  # zero crossings per side of the bin-rate resampling kernel
_SINC_BETA = 5.0  # Kaiser window beta of that kernel
_DECAY_TOL = 1e-9  # impulse-response decay the stage-2 overlap must reach
_MAX_DEN = 10000  # largest decimation denominator for the rational factor
_T_BLOCK = 4096  # rows per block when transposing input blocks
_FINISH_CHANNELS = 8  # channels per block in the bin-rate steps


class LfpChainConfig(pydantic.BaseModel, extra="forbid"):
    """Options of the broadband -> LFP chain (all frequencies in Hz).

    ``n_harmonics=None`` notches every multiple of ``line_freq`` below the intermediate Nyquist
    frequency; ``0`` disables the notch. ``filter_order`` is the Butterworth order of the high-
    and low-pass filters (doubled by zero-phase filtering).
    """

    line_freq: float = pydantic.Field(60.0, gt=0)
    notch_q: float = pydantic.Field(30.0, gt=0)
    n_harmonics: int | None = pydantic.Field(None, ge=0)
    intermediate_fs: float = pydantic.Field(1000.0, gt=0)
    highpass_hz: float = pydantic.Field(0.05, ge=0)
    lowpass_hz: float = pydantic.Field(50.0, gt=0)
    filter_order: int = pydantic.Field(4, ge=1, le=10)
    car: bool = True
    zscore: bool = True


@dataclass(frozen=True)
class ChainPlan:
    """Everything the chain needs, derived once from the input rate, bin size and config."""

    fs: float  # input rate
    up: int  # decimation factor up/down (1/1: no decimation)
    down: int
    fi: float  # intermediate rate = fs * up / down
    fir: np.ndarray | None  # decimation kernel at rate fs*up (gain up), odd length
    fir_delay: int  # (len(fir) - 1) // 2
    sos_mid: np.ndarray | None  # notches + low-pass at the intermediate rate
    sos_hp: np.ndarray | None  # high-pass at the bin rate
    bin_size: float
    sinc_half: float  # half-width of the resampling kernel in intermediate samples
    margin: int  # stage-2 overlap in intermediate samples (each side)
    notch_freqs: tuple[float, ...]
    cfg: LfpChainConfig


# ---------------------------------------------------------------------------------- planning
def plan_chain(fs: float, bin_size: float = 0.01, cfg: LfpChainConfig | None = None) -> ChainPlan:
    """Design the filters of the chain for input rate ``fs`` (Hz) and ``bin_size`` (s).

    Raises :class:`ConfigError` if the requested bands do not fit the rates.

    >>> p = plan_chain(24414.0625)
    >>> (p.up, p.down, p.fi)
    (128, 3125, 1000.0)
    """
    cfg = cfg or LfpChainConfig()
    if not (np.isfinite(fs) and fs > 0):
        raise ConfigError(f"sampling rate {fs} Hz is invalid; expected a positive number")
    if not (np.isfinite(bin_size) and bin_size > 0):
        raise ConfigError(f"bin_size {bin_size} s is invalid; expected a positive number")
    fb = 1.0 / bin_size
    if fs < fb:
        raise ConfigError(f"sampling rate {fs} Hz is below the bin rate {fb:g} Hz")

    if fs > cfg.intermediate_fs * (1 + 1e-9):
        ratio = Fraction(cfg.intermediate_fs / fs).limit_denominator(_MAX_DEN)
        up, down = ratio.numerator, ratio.denominator
        if up == 0:
            raise ConfigError(f"intermediate_fs {cfg.intermediate_fs} Hz is far below {fs} Hz")
        fi = fs * up / down
        # only [0, band_top] must stay alias-free: everything above is removed by the low-pass,
        # so the transition band band_top .. fi - band_top can be wide (few taps)
        band_top = min(fi / 4.0, 2.0 * cfg.lowpass_hz)
        if cfg.lowpass_hz >= band_top:
            raise ConfigError(
                f"lowpass_hz {cfg.lowpass_hz} Hz must be below {fi / 4:g} Hz (a quarter of the "
                f"{fi:g} Hz intermediate rate); raise intermediate_fs"
            )
        width = fi - 2.0 * band_top
        ntaps, beta = signal.kaiserord(_AA_STOP_DB, width / (0.5 * fs * up))
        ntaps |= 1
        fir = signal.firwin(ntaps, fi / 2.0, window=("kaiser", beta), fs=fs * up) * up
        fir_delay = (ntaps - 1) // 2
    else:
        up = down = 1
        fi = fs
        fir, fir_delay = None, 0
        band_top = fs / 2.0
    if cfg.lowpass_hz >= band_top:
        raise ConfigError(
            f"lowpass_hz {cfg.lowpass_hz} Hz must be below {band_top:g} Hz "
            f"(the alias-free band at the {fi:g} Hz intermediate rate)"
        )
    if cfg.highpass_hz and cfg.highpass_hz >= min(cfg.lowpass_hz, fb / 2):
        raise ConfigError(
            f"highpass_hz {cfg.highpass_hz} Hz must be below lowpass_hz and the bin-rate Nyquist"
        )

    n_max = int(math.ceil(fi / 2.0 / cfg.line_freq)) - 1  # harmonics strictly below Nyquist
    n_h = n_max if cfg.n_harmonics is None else min(cfg.n_harmonics, n_max)
    freqs = tuple(cfg.line_freq * (i + 1) for i in range(max(n_h, 0)))
    sections = []
    for f in freqs:
        b, a = signal.iirnotch(f, cfg.notch_q, fs=fi)
        sections.append(signal.tf2sos(b, a))
    sections.append(signal.butter(cfg.filter_order, cfg.lowpass_hz, "low", fs=fi, output="sos"))
    sos_mid = np.concatenate(sections, axis=0)

    sos_hp = None
    if cfg.highpass_hz > 0:
        sos_hp = signal.butter(cfg.filter_order, cfg.highpass_hz, "high", fs=fb, output="sos")

    poles = np.concatenate([np.roots(np.r_[1.0, s[4:6]]) for s in sos_mid])
    r_max = float(np.max(np.abs(poles)))
    decay = math.log(_DECAY_TOL) / math.log(r_max) if r_max > 0 else 1.0
    sinc_half = _SINC_ZEROS * fi * bin_size
    margin = int(math.ceil(1.5 * decay + sinc_half + 8))
    return ChainPlan(
        fs=float(fs), up=up, down=down, fi=float(fi), fir=fir, fir_delay=fir_delay,
        sos_mid=sos_mid, sos_hp=sos_hp, bin_size=float(bin_size), sinc_half=float(sinc_half),
        margin=margin, notch_freqs=freqs, cfg=cfg,
    )


# ---------------------------------------------------------------------------- stage 1: FIR
def _n_intermediate(plan: ChainPlan, n: int) -> int:
    return -(-n * plan.up // plan.down)


def _read_checked(read: Reader, a: int, b: int, n_channels: int, what: str) -> np.ndarray:
    x = np.asarray(read(a, b))
    if x.ndim != 2 or x.shape != (b - a, n_channels):
        raise DataValidationError(
            f"{what}: reading samples [{a}, {b}) gave shape {list(x.shape)}; "
            f"expected [{b - a}, {n_channels}]"
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataValidationError(f"{what}: samples have dtype {x.dtype}; expected real numbers")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            i, c = np.argwhere(bad)[0].tolist()
            raise DataValidationError(
                f"{what}: {int(bad.sum())} non-finite value(s) (NaN/inf) in samples [{a}, {b}), "
                f"first at sample {a + i} channel {c}; clean or interpolate them first"
            )
    return x


def _decimate_block(read: Reader, n: int, c: int, plan: ChainPlan, j0: int, j1: int,
                    what: str) -> np.ndarray:
    """Intermediate samples ``[j0, j1)`` as ``[j1 - j0, C]`` float64, exactly as if the whole
    input had been filtered at once (input held constant beyond its ends)."""
    if plan.fir is None:
        return _read_checked(read, j0, j1, c, what).astype(np.float64)
    up, down, h, d = plan.up, plan.down, plan.fir, plan.fir_delay
    # output j = sum_n x[n] h[j*down + d - n*up]; needs n in [n_min, n_max]
    n_min = -((-(j0 * down + d - (len(h) - 1))) // up)
    n_max = ((j1 - 1) * down + d) // up
    # a block starting at n_a maps onto upfirdn's output grid iff n_a*up = d (mod down)
    a0 = (d * pow(up, -1, down)) % down
    n_a = n_min - ((n_min - a0) % down)
    lo, hi = max(n_a, 0), min(n_max + 1, n)  # lo < hi always: the block overlaps the input
    core = _read_checked(read, lo, hi, c, what)
    # channel-major float64 copy, transposed in row blocks (a plain .T copy is cache-hostile)
    xt = np.empty((c, n_max + 1 - n_a), dtype=np.float64)
    xt[:, : lo - n_a] = core[0][:, None]  # before the input: hold its first sample (lo == 0)
    for r in range(0, hi - lo, _T_BLOCK):
        xt[:, lo - n_a + r: lo - n_a + min(r + _T_BLOCK, hi - lo)] = core[r: r + _T_BLOCK].T
    xt[:, hi - n_a:] = core[-1][:, None]  # after the input: hold its last sample (hi == n)
    y = signal.upfirdn(h, xt, up, down, axis=-1)
    off = (d - n_a * up) // down
    return np.ascontiguousarray(y[:, j0 + off: j1 + off].T)


# -------------------------------------------------------------- stage 2: filters, CAR, bins
def _bin_grid(plan: ChainPlan, grid_offset: float, n_bins: int) -> tuple[np.ndarray, np.ndarray,
                                                                           int]:
    """Bin centres in intermediate-sample units (relative to input sample 0), split into an
    integer ``base`` and a fractional ``frac`` part. Returns ``(base, frac, step)`` where
    ``step > 0`` is the integer number of intermediate samples per bin when that number is an
    integer (all bins then share one ``frac``), else ``0``."""
    m = plan.fi * plan.bin_size
    k = np.arange(n_bins, dtype=np.int64)
    u0 = (grid_offset + 0.5 * plan.bin_size) * plan.fi
    step = int(round(m))
    if step >= 1 and abs(m - step) <= 1e-9 * m:
        b0 = math.floor(u0)
        f0 = u0 - b0
        if f0 > 1.0 - 1e-9:
            b0, f0 = b0 + 1, 0.0
        return b0 + k * step, np.full(n_bins, f0), step
    u = (grid_offset + (k + 0.5) * plan.bin_size) * plan.fi
    base = np.floor(u).astype(np.int64)
    return base, u - base, 0


def _sinc_weights(plan: ChainPlan, frac: np.ndarray) -> tuple[np.ndarray, int]:
    """``[len(frac), 2*hw+1]`` resampling weights on offsets ``-hw..hw`` (rows sum to 1)."""
    half = plan.sinc_half
    hw = int(math.ceil(half))
    tau = np.arange(-hw, hw + 1)[None, :] - frac[:, None]
    inside = np.abs(tau) < half
    win = np.i0(_SINC_BETA * np.sqrt(np.clip(1.0 - (tau / half) ** 2, 0.0, None)))
    w = np.where(inside, np.sinc(tau / (plan.fi * plan.bin_size)) * win, 0.0)
    return w / w.sum(axis=1, keepdims=True), hw


def _stage2(v: np.ndarray, v_lo: int, n_int: int, plan: ChainPlan, base: np.ndarray,
            frac: np.ndarray, step: int) -> np.ndarray:
    """Filter the intermediate window ``v`` (samples ``[v_lo, v_lo+len)``), reference it and
    evaluate it at the bin centres ``base + frac`` (absolute intermediate positions; samples
    outside the recording are taken as its first/last sample). Returns ``[K, C]`` float64."""
    if plan.sos_mid is not None and len(plan.sos_mid):
        v = signal.sosfiltfilt(plan.sos_mid, v, axis=0)
    if plan.cfg.car:
        v = v - v.mean(axis=1, keepdims=True)
    n_k = len(base)
    if step:  # one phase for all bins: a decimating FIR (polyphase, only the needed outputs)
        w, hw = _sinc_weights(plan, frac[:1])
        q = -(-2 * hw // step)
        s = int(base[0]) - q * step + hw
        idx = np.arange(s, s + (q + n_k - 1) * step + 1)
        x = v[np.clip(idx, 0, n_int - 1) - v_lo]
        return signal.upfirdn(w[0, ::-1], x, 1, step, axis=0)[q: q + n_k]
    w, hw = _sinc_weights(plan, frac)
    out = np.zeros((n_k, v.shape[1]), dtype=np.float64)
    for i in range(-hw, hw + 1):
        idx = np.clip(base + i, 0, n_int - 1) - v_lo
        out += w[:, i + hw, None] * v[idx]
    return out


# ------------------------------------------------------------------- stage 3 and the driver
def _highpass(sos: np.ndarray, y: np.ndarray, fb: float, f_hp: float) -> np.ndarray:
    """Zero-phase high-pass along axis 0 whose edge states start from the local *mean*.

    ``sosfiltfilt`` starts each pass in the steady state of the first (padded) sample; for a
    0.05 Hz high-pass the mismatch between that single sample and the signal's local level
    rings for tens of seconds. Starting from the steady state of the mean over the first (and,
    backwards, the last) ``1 / f_hp`` seconds removes most of that edge transient.
    """
    n = y.shape[0]
    pad = min(n - 1, 3 * (2 * len(sos) + 1))
    ext = np.concatenate([2 * y[:1] - y[pad:0:-1], y, 2 * y[-1:] - y[-2:-pad - 2:-1]], axis=0)
    w = max(1, min(n, int(round(fb / f_hp))))
    zi = signal.sosfilt_zi(sos)[:, :, None]
    fwd, _ = signal.sosfilt(sos, ext, axis=0, zi=zi * ext[:w].mean(axis=0))
    bwd, _ = signal.sosfilt(sos, fwd[::-1], axis=0, zi=zi * fwd[::-1][:w].mean(axis=0))
    return np.ascontiguousarray(bwd[::-1][pad: pad + n])


def _finish(y: np.ndarray, plan: ChainPlan, scale: float) -> np.ndarray:
    """Scale, high-pass and z-score the bin-rate signal, a few channels at a time (the steps
    are per channel) to keep the temporaries small. Returns float32."""
    out = np.empty(y.shape, dtype=np.float32)
    for c0 in range(0, y.shape[1], _FINISH_CHANNELS):
        blk = y[:, c0: c0 + _FINISH_CHANNELS] * scale
        peak = np.abs(blk).max(axis=0)
        if plan.sos_hp is not None:
            blk = _highpass(plan.sos_hp, blk, 1.0 / plan.bin_size, plan.cfg.highpass_hz)
        if plan.cfg.zscore:
            mu = blk.mean(axis=0)
            sd = blk.std(axis=0)
            sd[~(sd > 1e-9 * peak)] = 1.0  # flat (or all-zero) channel: not blown up to unit sd
            blk = (blk - mu) / sd
        out[:, c0: c0 + _FINISH_CHANNELS] = blk
    return out


def _default_n_bins(n_samples: int, fs: float, bin_size: float, offset: float) -> int:
    return int(math.floor((n_samples / fs - offset) / bin_size + 1e-9))


def _run(read: Reader, n_samples: int, n_channels: int, fs: float, bin_size: float,
         cfg: LfpChainConfig | None, t0: float, grid_start: float | None,
         n_bins: int | None, window_bins: int | None, what: str,
         scale: float = 1.0) -> np.ndarray:
    plan = plan_chain(fs, bin_size, cfg)
    n_samples, n_channels = int(n_samples), int(n_channels)
    if n_channels < 1:
        raise DataValidationError(f"{what}: has 0 channels; expected at least 1")
    if plan.cfg.car and n_channels < 2:
        raise DataValidationError(
            f"{what}: common average reference needs at least 2 channels, got 1; set car=False"
        )
    offset = 0.0 if grid_start is None else float(grid_start) - float(t0)
    if n_bins is None:
        n_bins = _default_n_bins(n_samples, fs, bin_size, offset)
    n_bins = int(n_bins)
    min_bins = 1 if plan.sos_hp is None else 3 * (2 * len(plan.sos_hp) + 1) + 1
    if n_samples < 2 or n_bins < min_bins:
        raise DataValidationError(
            f"{what}: {n_samples} samples ({n_samples / fs:.3g} s at {fs:g} Hz) give {n_bins} "
            f"bin(s) of {bin_size:g} s; expected at least {min_bins} bins"
        )
    last_centre = offset + (n_bins - 0.5) * bin_size
    tol = 0.5 / fs
    if offset + 0.5 * bin_size < -tol or last_centre > (n_samples - 1) / fs + tol:
        raise DataValidationError(
            f"{what}: bin grid [{t0 + offset:.6f}, {t0 + offset + n_bins * bin_size:.6f}) s "
            f"is not inside the signal [{t0:.6f}, {t0 + n_samples / fs:.6f}) s"
        )
    n_int = _n_intermediate(plan, n_samples)
    base, frac, step = _bin_grid(plan, offset, n_bins)
    hw = int(math.ceil(plan.sinc_half)) + 1
    y = np.empty((n_bins, n_channels), dtype=np.float64)
    raw_block = max(plan.down, (1 << 17) // plan.down * plan.down)  # ~0.13M input samples
    int_block = max(1, raw_block * plan.up // plan.down)

    def intermediate(j0: int, j1: int) -> np.ndarray:
        parts = [
            _decimate_block(read, n_samples, n_channels, plan, a, min(a + int_block, j1), what)
            for a in range(j0, j1, int_block)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    if window_bins is None or window_bins >= n_bins:
        v = intermediate(0, n_int)
        y[:] = _stage2(v, 0, n_int, plan, base, frac, step)
        return _finish(y, plan, scale)

    cache_lo, cache = 0, np.empty((0, n_channels))
    for k0 in range(0, n_bins, window_bins):
        k1 = min(n_bins, k0 + window_bins)
        lo = max(0, int(base[k0]) - hw - plan.margin)
        hi = min(n_int, int(base[k1 - 1]) + hw + plan.margin + 2)
        if k0 == 0:
            lo = 0
        if k1 == n_bins:
            hi = n_int
        cache_hi = cache_lo + len(cache)
        if cache_lo <= lo < cache_hi:
            keep = cache[lo - cache_lo:]
            new = intermediate(cache_hi, hi) if hi > cache_hi else np.empty((0, n_channels))
            v = np.concatenate([keep, new], axis=0)[: hi - lo]
        else:
            v = intermediate(lo, hi)
        cache_lo, cache = lo, v
        y[k0:k1] = _stage2(v, lo, n_int, plan, base[k0:k1], frac[k0:k1], step)
    return _finish(y, plan, scale)


# ---------------------------------------------------------------------------------- public
def broadband_to_lfp(x: np.ndarray, fs: float, bin_size: float = 0.01,
                     cfg: LfpChainConfig | None = None, t0: float = 0.0, *,
                     grid_start: float | None = None, n_bins: int | None = None,
                     scale: float = 1.0) -> np.ndarray:
    """Process an in-memory recording ``x`` ``[n, C]`` sampled at ``fs`` Hz into LFP.

    ``x`` may have any real dtype and is used as is (scaling to volts/uV is the caller's).
    Returns ``[n_bins, C]`` float32; row ``k`` is the LFP at ``grid_start + (k + 0.5) *
    bin_size`` (``grid_start`` defaults to ``t0``, the time of ``x[0]``). Raises
    :class:`DataValidationError` for NaN/inf samples or too-short input. ``scale`` multiplies
    the result before the high-pass/z-score (every earlier step is linear), so integer ADC
    counts can be passed as they are with ``scale`` = volts per count.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataValidationError(f"signal has shape {list(x.shape)}; expected [n_samples, C]")
    return _run(lambda a, b: x[a:b], x.shape[0], x.shape[1], fs, bin_size, cfg, t0,
                grid_start, n_bins, None, "signal", scale)


def broadband_to_lfp_chunked(read: Reader, n_samples: int, n_channels: int, fs: float,
                             bin_size: float = 0.01, cfg: LfpChainConfig | None = None,
                             t0: float = 0.0, chunk_s: float = 60.0, *,
                             grid_start: float | None = None, n_bins: int | None = None,
                             what: str = "signal", scale: float = 1.0) -> np.ndarray:
    """Streaming version of :func:`broadband_to_lfp` with bounded memory.

    ``read(start, stop)`` must return input samples ``[start, stop)`` as ``[stop - start,
    n_channels]`` (e.g. ``lambda a, b: dset[a:b] * conversion`` for an h5py dataset).
    Reading integer counts and passing ``scale`` (e.g. volts per count) is cheapest.
    ``chunk_s`` is the output span processed per window; memory grows with it and with the
    number of channels, not with the recording length (apart from the ``[n_bins, C]`` bin-rate
    result). ``what`` names the source in error messages. Same output and conventions as
    :func:`broadband_to_lfp`, to within ~1e-7 z-units.
    """
    if not chunk_s > 0:
        raise ConfigError(f"chunk_s {chunk_s} must be positive")
    window_bins = max(1, int(round(chunk_s / bin_size)))
    return _run(read, n_samples, n_channels, fs, bin_size, cfg, t0, grid_start, n_bins,
                window_bins, what, scale)


# ------------------------------------------------------------------ spikes and behaviour
def bin_spike_times(spike_times: list[np.ndarray], grid_start: float, n_bins: int,
                    bin_size: float = 0.01) -> np.ndarray:
    """Count spikes per bin: bin ``k`` is ``[grid_start + k*bin_size, grid_start + (k+1)*bin_size)``.

    ``spike_times`` holds one array of times (s) per unit/channel; spikes outside the grid are
    dropped. Returns ``[n_bins, len(spike_times)]`` int32.

    >>> bin_spike_times([np.array([0.001, 0.004, 0.012, 0.5]), np.array([])], 0.0, 3)
    array([[2, 0],
           [1, 0],
           [0, 0]], dtype=int32)
    """
    out = np.zeros((int(n_bins), len(spike_times)), dtype=np.int32)
    for i, times in enumerate(spike_times):
        t = np.asarray(times, dtype=np.float64).ravel()
        if t.size == 0:
            continue
        if not np.isfinite(t).all():
            raise DataValidationError(f"spike times of unit {i} contain NaN/inf")
        k = np.floor((t - grid_start) / bin_size).astype(np.int64)
        k = k[(k >= 0) & (k < n_bins)]
        out[:, i] = np.bincount(k, minlength=int(n_bins))
    return out


def sample_at_bins(t: np.ndarray, values: np.ndarray, grid_start: float, n_bins: int,
                   bin_size: float = 0.01) -> np.ndarray:
    """Linearly interpolate ``values`` ``[n, D]`` sampled at increasing times ``t`` ``[n]`` at
    the bin centres ``grid_start + (k + 0.5) * bin_size``. Returns ``[n_bins, D]`` float64.

    >>> sample_at_bins(np.array([0.0, 1.0]), np.array([[0.0], [10.0]]), 0.0, 2, 0.5)
    array([[2.5],
           [7.5]])
    """
    t = np.asarray(t, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    centres = grid_start + (np.arange(int(n_bins)) + 0.5) * bin_size
    return np.stack([np.interp(centres, t, v[:, d]) for d in range(v.shape[1])], axis=1)
