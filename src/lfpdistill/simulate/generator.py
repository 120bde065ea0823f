"""Built-in simulator of paired spike / LFP / behaviour recordings (docs/simulator.md).

Real data cannot be downloaded in CI, so this is the default dataset. It reproduces the problem
the paper solves: spikes decode hand velocity well, a linear read-out of the 0-50 Hz LFP decodes
it poorly, and the LFP still carries information a nonlinear model can extract (beta
suppression, firing-modulated broadband power), all below 50 Hz so it survives the 100 Hz
processed signal.

Generative model (one shared "brain", many sessions)
----------------------------------------------------
- **Behaviour** on the bin grid: random-target reaching (targets uniform in a square workspace,
  minimum-jerk reaches lasting ``0.35 + 0.35 * distance / 10 cm`` s, holds of 0.1-0.35 s) or
  center-out (8 targets on a circle, out-and-back), plus small slow (Ornstein-Uhlenbeck)
  velocity noise. Velocity is in **cm/s**.
- **Latents** ``[T, L]`` (names in ``meta["latent_names"]``): velocity x/y (per 10 cm/s),
  speed (per 10 cm/s), acceleration x/y (per 100 cm/s^2) -- all *leading* behaviour by
  ``lead_s`` (100 ms) --, a rotational pair (damped ~1.5 Hz oscillator driven by speed, unit
  variance) and ``n_slow_latents`` behaviour-irrelevant Ornstein-Uhlenbeck latents (time
  constants 0.2-2 s, unit variance).
- **Spikes**: ``n_hidden`` neurons spread over the array footprint (electrode grid + 0.2 mm);
  log-rate linear in the latents: cosine velocity tuning (depth ``tuning_depth``, preferred
  directions spatially clustered), speed gain, small acceleration / rotational loadings and
  loadings on the slow latents; baseline rates log-normal with median ``baseline_rate_hz``.
  A session records ``units_min..units_max`` neurons near electrodes; between consecutive
  sessions a fraction ``unit_turnover`` is replaced (the rest is carried over, same unit id),
  and carried-over units' preferred directions jitter by ``tuning_drift_deg``. Counts are
  Poisson per bin. ``degradation`` shrinks the unit yield and the task tuning depth of the
  *recorded* units by ``(1 - degradation) ** session_index``; the LFP is unaffected.
- **Chronic degradation** (``chronic``, zero by default, nothing on session 0): a fraction of
  the recorded units is lost per session, spike amplitudes fall so fewer spikes cross the
  detection threshold (Poisson thinning; units detected below ``min_detection`` drop out), and
  the LFP drifts slowly (electrode gain random walk, rotation of the motor potential's map).
- **LFP** per electrode (sum of): local motor potential (kinematic latents low-passed at
  ``lfp.lmp_hz``, spatially smooth loadings); aggregate local spiking of the hidden population
  (Gaussian distance kernel ``lfp.kernel_sigma_mm``, Poisson fluctuations, exponential synaptic
  filter ``lfp.synaptic_tau_s``); a ~20 Hz beta travelling wave (speed 10-35 cm/s) in bursts,
  suppressed 40-70 % from ~200 ms before movement onset; broadband (> 15 Hz) noise whose
  amplitude follows the local firing rate; 1/f background (exponent ~2, knee 5-20 Hz, spatially
  correlated over 1-2 mm plus a local part); common mode; line noise (raw path only: the notch
  and low-pass remove it) and white noise.
- **Paths.** ``path="fast"`` samples every component at the bin centres and applies the
  processing chain's pass-band response (low-pass 50 Hz + resampling kernel, 0.05 Hz
  high-pass), CAR and z-score directly. ``path="raw"`` synthesises a ``raw_fs`` broadband
  signal and runs the real chain (:func:`lfpdistill.preprocess.broadband_to_lfp_chunked`).
  Both paths share the behaviour, latents, spikes and every slow LFP component (same random
  streams); only the noise realisations differ.

Everything is deterministic from ``SimConfig.seed``: the same config gives bit-identical arrays.

Why one module of ~600 lines: it is one generative model, read top to bottom (geometry,
behaviour, latents, population, spikes, LFP parts, paths); its parts share random-stream ids and
helpers that mean nothing outside it.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from scipy import signal
from scipy.special import ndtr

from ..config import LATENT_NAMES_KINEMATIC, SimConfig
from ..preprocess import LfpChainConfig, broadband_to_lfp_chunked
from ..session import Session, make_segments
from .calibration import calibrate_variant
from .variants import resolve_random

_V_REF = 10.0  # cm/s per latent unit (velocity, speed)
_A_REF = 100.0  # cm/s^2 per latent unit (acceleration)
_PITCH_MM = 0.4
# Resampling kernel of the processing chain (windowed sinc, Kaiser window); the fast path uses
# it only to reproduce the chain's pass-band roll-off near the bin-rate Nyquist frequency.
_CHAIN_SINC_ZEROS = 10
_CHAIN_SINC_BETA = 5.0
_CHUNK = 16384  # samples per chunk when adding components in time chunks
_BLOCK = 8  # channels per block for channel-local noise components

# random stream ids (np.random.default_rng([seed, session, stream]))
_S_POP, _S_UNITS, _S_BEHAV, _S_LAT, _S_SPIKE, _S_TUNE = 1, 2, 3, 4, 5, 6
_S_LFPSLOW, _S_LFPNOISE = 7, 8
_S_CHRONIC = 9  # chronic degradation: its own streams, so zero degradation changes nothing


# ---------------------------------------------------------------------------------- geometry
def electrode_grid(n_channels: int = 96, pitch_mm: float = _PITCH_MM) -> np.ndarray:
    """Utah-like electrode positions ``[C, 2]`` in mm, row-major on a square grid whose four
    corners are left out (96 channels: the 10x10, 400 um pitch array).

    >>> pos = electrode_grid(96)
    >>> pos.shape, pos[0].tolist(), pos[-1].tolist()
    ((96, 2), [0.4, 0.0], [3.2, 3.6])
    """
    side = 2
    while side * side - 4 < n_channels:
        side += 1
    pos = [(c * pitch_mm, r * pitch_mm) for r in range(side) for c in range(side)
           if not ((r in (0, side - 1)) and (c in (0, side - 1)))]
    return np.asarray(pos[:n_channels], dtype=np.float64)


def _smooth_field(rng: np.random.Generator, xy: np.ndarray, length: float, n_out: int,
                  n_feat: int = 128) -> np.ndarray:
    """Stationary Gaussian random fields with squared-exponential correlation ``length``
    evaluated at ``xy`` ``[P, 2]``; ``[P, n_out]``, unit variance (random Fourier features)."""
    k = rng.normal(0.0, 1.0 / length, size=(n_feat, 2))
    ph = rng.uniform(0, 2 * np.pi, size=n_feat)
    a = rng.normal(size=(n_feat, n_out))
    return np.sqrt(2.0 / n_feat) * np.cos(xy @ k.T + ph) @ a


# ------------------------------------------------------------------------------- time series
def _ou(rng: np.random.Generator, n: int, dt: float, tau: np.ndarray | float) -> np.ndarray:
    """Unit-variance Ornstein-Uhlenbeck processes ``[n, len(tau)]`` (stationary start)."""
    tau = np.atleast_1d(np.asarray(tau, dtype=np.float64))
    a = np.exp(-dt / tau)
    w = rng.normal(size=(n, len(tau))) * np.sqrt(1 - a**2)
    w[0] = rng.normal(size=len(tau))
    out = np.empty_like(w)
    for j in range(len(tau)):
        out[:, j] = signal.lfilter([1.0], [1.0, -a[j]], w[:, j])
    return out


def _shaped_noise(rng: np.random.Generator, n: int, n_cols: int, fs: float, psd,
                  f_ref: float = 50.0, block: int = 8) -> np.ndarray:
    """Gaussian noise ``[n, n_cols]`` float32 with power spectral density proportional to
    ``psd(f)``, scaled so that its variance over 0..``f_ref`` Hz is 1 (same spectrum at any
    ``fs``)."""
    f = np.fft.rfftfreq(n, 1.0 / fs)
    s = np.asarray(psd(f), dtype=np.float64)
    fine = np.linspace(0.0, f_ref, 4001)
    ref = np.trapezoid(psd(fine), fine)
    # white noise of one-sided density 1 has variance fs/2 -> shaped density psd/ref
    amp = np.sqrt(s / ref)
    out = np.empty((n, n_cols), dtype=np.float32)
    for c0 in range(0, n_cols, block):
        c1 = min(n_cols, c0 + block)
        w = rng.normal(size=(n, c1 - c0)) * np.sqrt(fs / 2.0)
        out[:, c0:c1] = np.fft.irfft(np.fft.rfft(w, axis=0) * amp[:, None], n=n, axis=0)
    return out


def _fft_filter(x: np.ndarray, fs: float, h, block: int = 8) -> np.ndarray:
    """Apply the frequency response ``h(f)`` (complex or real) to the columns of ``x``."""
    n = x.shape[0]
    hf = np.asarray(h(np.fft.rfftfreq(n, 1.0 / fs)))
    out = np.empty(x.shape, dtype=np.float32)
    for c0 in range(0, x.shape[1], block):
        c1 = min(x.shape[1], c0 + block)
        out[:, c0:c1] = np.fft.irfft(np.fft.rfft(x[:, c0:c1], axis=0) * hf[:, None], n=n,
                                     axis=0)
    return out


def _chain_gain(f: np.ndarray, bin_size: float, lowpass_hz: float = 50.0, order: int = 4,
                fi: float = 1000.0) -> np.ndarray:
    """Approximate pass-band gain of the processing chain at the bin rate: zero-phase
    Butterworth low-pass times the windowed-sinc resampling kernel."""
    g = 1.0 / (1.0 + (f / lowpass_hz) ** (2 * order))
    step = fi * bin_size
    half = _CHAIN_SINC_ZEROS * step
    i = np.arange(-int(half), int(half) + 1, dtype=np.float64)
    w = np.sinc(i / step) * np.i0(_CHAIN_SINC_BETA * np.sqrt(np.clip(1 - (i / half) ** 2, 0, None)))
    w /= w.sum()
    return g * np.abs(np.cos(2 * np.pi * np.outer(f, i) / fi) @ w)


# --------------------------------------------------------------------------------- behaviour
def _behaviour(cfg: SimConfig, rng: np.random.Generator, n: int
               ) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """Velocity (cm/s) at times ``t`` = bin centres of ``n`` bins; also the times and the
    reach intervals (s)."""
    dt = cfg.bin_size
    total = n * dt + 1.0
    p_knots, reaches = [np.zeros(2)], []
    t, p = 0.0, np.zeros(2)
    half = cfg.workspace_cm / 2
    angles = np.arange(8) * np.pi / 4
    out_phase = True
    while t < total:
        hold = rng.uniform(0.1, 0.35)
        t += hold
        if cfg.task == "random_target":
            while True:
                q = rng.uniform(-half, half, size=2)
                if np.linalg.norm(q - p) >= 0.15 * cfg.workspace_cm:
                    break
        else:
            if out_phase:
                ang = angles[rng.integers(8)]
                q = cfg.center_out_radius_cm * np.array([np.cos(ang), np.sin(ang)])
            else:
                q = np.zeros(2)
            out_phase = not out_phase
        dur = 0.35 + 0.35 * float(np.linalg.norm(q - p)) / 10.0
        reaches.append((t, t + dur))
        p_knots += [p.copy(), q.copy()]
        t += dur
        p = q
    times = (np.arange(n) + 0.5) * dt
    vel = np.zeros((n, 2))
    starts = np.array([r[0] for r in reaches])
    k = np.searchsorted(starts, times, side="right") - 1
    ok = k >= 0
    kk = k[ok]
    t0 = starts[kk]
    dur = np.array([r[1] - r[0] for r in reaches])[kk]
    tau = (times[ok] - t0) / dur
    inside = tau < 1.0
    disp = np.array([p_knots[2 * j + 2] - p_knots[2 * j + 1] for j in range(len(reaches))])[kk]
    prof = 30 * tau**2 - 60 * tau**3 + 30 * tau**4
    v = disp / dur[:, None] * (prof * inside)[:, None]
    vel[ok] = v
    if cfg.velocity_noise_cm_s > 0:
        vel += cfg.velocity_noise_cm_s * _ou(rng, n, dt, np.array([0.3, 0.3]))
    return vel, times, reaches


def _make_latents(cfg: SimConfig, rng: np.random.Generator, vel_lead: np.ndarray
                  ) -> np.ndarray:
    dt = cfg.bin_size
    n = len(vel_lead)
    v = vel_lead / _V_REF
    speed = np.linalg.norm(vel_lead, axis=1) / _V_REF
    acc = np.gradient(vel_lead, dt, axis=0) / _A_REF
    # rotational pair: damped 1.5 Hz oscillator driven by speed
    w = 2 * np.pi * 1.5 * dt
    rho = np.exp(-dt / 0.4)
    R = rho * np.array([[np.cos(w), -np.sin(w)], [np.sin(w), np.cos(w)]])
    drive = speed - speed.mean()
    rot = np.zeros((n, 2))
    x = np.zeros(2)
    for t in range(n):
        x = R @ x
        x[0] += drive[t] * w
        rot[t] = x
    rot /= max(float(rot.std()), 1e-9)
    taus = np.geomspace(0.2, 2.0, cfg.n_slow_latents) if cfg.n_slow_latents else np.zeros(0)
    slow = _ou(rng, n, dt, taus) if cfg.n_slow_latents else np.zeros((n, 0))
    return np.column_stack([v, speed, acc, rot, slow])


# ----------------------------------------------------------------------------- population
class _Population:
    """The hidden neurons shared by all sessions (positions and tuning)."""

    def __init__(self, cfg: SimConfig, elec: np.ndarray) -> None:
        rng = np.random.default_rng([cfg.seed, 0, _S_POP])
        lo = elec.min(axis=0) - 0.2
        hi = elec.max(axis=0) + 0.2
        H = cfg.n_hidden
        self.pos = rng.uniform(lo, hi, size=(H, 2))
        # preferred directions: smooth spatial map + von Mises scatter
        field = _smooth_field(rng, self.pos, 0.6, 2)
        base = np.arctan2(field[:, 1], field[:, 0])
        if cfg.pd_clustering > 0:
            self.pd = base + rng.vonmises(0.0, cfg.pd_clustering, size=H)
        else:
            self.pd = rng.uniform(-np.pi, np.pi, size=H)
        self.depth = rng.uniform(*cfg.tuning_depth, size=H)
        self.log_base = np.log(cfg.baseline_rate_hz) + rng.normal(0, 0.7, size=H)
        self.speed = rng.normal(cfg.speed_gain, 0.15, size=H)
        self.acc = rng.normal(0, 0.05, size=(H, 2))
        self.rot = rng.normal(0, 0.1, size=(H, 2))
        self.slow = rng.normal(0, cfg.slow_loading, size=(H, cfg.n_slow_latents))
        # the unit-variance latents (rotational, slow) would inflate the mean rate by
        # exp(0.5 * |loading|^2): compensate, so the rate at rest averages the baseline
        self.log_base -= 0.5 * ((self.rot**2).sum(1) + (self.slow**2).sum(1))
        # LMP loadings on the kinematic latents: smooth over the array, shared by sessions;
        # spatial mean removed (CAR removes it) and columns orthonormalised so that every
        # kinematic variable has the same post-CAR footprint.
        lf = _smooth_field(rng, elec, cfg.lfp.lmp_length_mm, len(LATENT_NAMES_KINEMATIC))
        lf -= lf.mean(axis=0)
        q, _ = np.linalg.qr(lf)
        self.lmp_load = q * np.sqrt(len(elec))  # [C, 5], unit RMS per column
        d2 = ((elec[:, None, :] - self.pos[None, :, :]) ** 2).sum(-1)  # [C, H]
        self.nearest = np.argmin(d2, axis=0)
        self.dist = np.sqrt(d2[self.nearest, np.arange(H)])
        k = np.exp(-d2 / (2 * cfg.lfp.kernel_sigma_mm**2))
        self.kernel = k / k.sum(axis=1, keepdims=True)  # [C, H], rows sum to 1
        # background statistics belong to the array/brain: drawn once, jittered per session
        self.knee = rng.uniform(*cfg.lfp.knee_hz)
        self.ell = rng.uniform(*cfg.lfp.corr_length_mm)

    def loadings(self, pd: np.ndarray, task_scale: float = 1.0,
                 idx: np.ndarray | None = None) -> np.ndarray:
        """Latent loadings ``[n, L]``; the task columns (all but the slow latents) are scaled
        by ``task_scale``."""
        sl = slice(None) if idx is None else idx
        d = self.depth[sl]
        task = np.column_stack([d * np.cos(pd), d * np.sin(pd), self.speed[sl], self.acc[sl],
                                self.rot[sl]])
        return np.column_stack([task * task_scale, self.slow[sl]])


def _select_units(cfg: SimConfig, pop: _Population) -> list[np.ndarray]:
    """Recorded hidden-neuron indices per session (sorted by electrode, then index)."""
    rng = np.random.default_rng([cfg.seed, 0, _S_UNITS])
    order = np.argsort(pop.dist, kind="stable")
    n_pool = max(int((pop.dist < 0.12).sum()), 2 * cfg.units_max)
    pool = order[:n_pool]
    sets: list[np.ndarray] = []
    prev: np.ndarray | None = None
    for s in range(cfg.n_sessions):
        n_s = int(rng.integers(cfg.units_min, cfg.units_max + 1))
        n_s = max(1, int(round(n_s * ((1 - cfg.degradation) * (1 - cfg.chronic.unit_loss)) ** s)))
        if prev is None:
            cur = rng.choice(pool, size=n_s, replace=False)
        else:
            n_keep = int(round(min(len(prev), n_s) * (1 - cfg.unit_turnover)))
            keep = rng.choice(prev, size=n_keep, replace=False)
            avail = np.setdiff1d(pool, prev)
            new = rng.choice(avail, size=n_s - n_keep, replace=False)
            cur = np.concatenate([keep, new])
        cur = cur[np.lexsort((cur, pop.nearest[cur]))]
        sets.append(cur)
        prev = cur
    return sets


class _Chronic:
    """Chronic degradation (``cfg.chronic``): per-unit day-0 SNR, and per session the relative
    detection of each unit's spikes, the electrode gain drift and the LMP map rotation. Session 0
    is untouched."""

    def __init__(self, cfg: SimConfig, pop: _Population, elec: np.ndarray) -> None:
        ch = self.ch = cfg.chronic
        H, C = len(pop.pos), len(elec)
        rng = np.random.default_rng([cfg.seed, 0, _S_CHRONIC])
        self.snr = ch.snr_median * np.exp(ch.snr_spread * rng.standard_normal(H))
        steps = ch.lfp_gain_drift * rng.standard_normal((cfg.n_sessions, C))
        steps[0] = 0.0
        self.log_gain = np.cumsum(steps, axis=0)  # [sessions, C], 0 on session 0
        other = _smooth_field(rng, elec, cfg.lfp.lmp_length_mm, len(LATENT_NAMES_KINEMATIC))
        other -= other.mean(axis=0)
        # the part of the independent map orthogonal to the day-0 map, same column norms
        q0 = pop.lmp_load / np.sqrt(C)
        other -= q0 @ (q0.T @ other)
        q1, _ = np.linalg.qr(other)
        self.other_load = q1 * np.sqrt(C)

    def detection(self, s: int, units: np.ndarray) -> np.ndarray:
        """Fraction of each unit's day-0 spikes detected on session ``s``: the probability that
        a spike's peak (amplitude ``snr * (1 - amplitude_loss)^s`` in noise RMS) crosses the
        threshold, relative to day 0."""
        ch = self.ch
        if ch.amplitude_loss == 0 or s == 0:
            return np.ones(len(units))
        a0 = self.snr[units]
        p0 = ndtr(a0 - ch.threshold)
        ps = ndtr(a0 * (1 - ch.amplitude_loss) ** s - ch.threshold)
        return np.minimum(ps / np.maximum(p0, 1e-12), 1.0)

    def lmp_load(self, s: int, base: np.ndarray) -> np.ndarray:
        """The LMP map of session ``s``: rotated by ``s * lfp_map_drift_deg`` towards the
        independent map."""
        if self.ch.lfp_map_drift_deg == 0 or s == 0:
            return base
        th = np.deg2rad(min(90.0, s * self.ch.lfp_map_drift_deg))
        return np.cos(th) * base + np.sin(th) * self.other_load


def _rates(log_base: np.ndarray, W: np.ndarray, Z: np.ndarray, max_rate: float) -> np.ndarray:
    return np.minimum(np.exp(log_base + Z @ W.T), max_rate)


# ---------------------------------------------------------------------------------------- LFP
def _lfp_slow_parts(cfg: SimConfig, s: int, Z: np.ndarray, speed: np.ndarray,
                    elec: np.ndarray, pop: _Population, chronic: _Chronic) -> dict:
    """Everything of the LFP that is defined on the bin grid (slow signals and parameters)."""
    lc = cfg.lfp
    rng = np.random.default_rng([cfg.seed, s, _S_LFPSLOW])
    dt = cfg.bin_size
    n, C = len(Z), len(elec)
    # local motor potential: kinematic latents low-passed, smooth spatial loadings
    sos = signal.butter(2, lc.lmp_hz, "low", fs=1 / dt, output="sos")
    kin = signal.sosfilt(sos, Z[:, : len(LATENT_NAMES_KINEMATIC)], axis=0)
    load = chronic.lmp_load(s, pop.lmp_load) + 0.1 * rng.standard_normal(pop.lmp_load.shape)
    load[:, 2] *= lc.lmp_speed_weight
    lmp = kin @ load.T
    lmp *= lc.lmp / max(float((lmp - lmp.mean(axis=1, keepdims=True)).std()), 1e-12)
    # aggregate population rate (Hz) and Poisson variance (Hz^2 s) per electrode
    W = pop.loadings(pop.pd)
    agg = np.empty((n, C))
    var = np.empty((n, C))
    k2 = pop.kernel**2
    for a in range(0, n, 2048):
        lam = _rates(pop.log_base, W, Z[a:a + 2048], cfg.max_rate_hz)
        agg[a:a + 2048] = lam @ pop.kernel.T
        var[a:a + 2048] = lam @ k2.T
    mean_rate = agg.mean(axis=0)
    # beta: bursty envelope, suppression around movements, travelling-wave phase
    lead = int(round(lc.beta_lead_s / dt))
    # movement preparation/execution signal: the largest hand speed within the next
    # beta_lead_s, saturating at beta_speed_sat_cm_s -- beta drops from ~200 ms before
    # movement onset, stays low while the hand moves fast and recovers in slow phases/holds
    sat = np.minimum(np.r_[speed, np.full(lead, speed[-1])] / lc.beta_speed_sat_cm_s, 1.0)
    prep = np.lib.stride_tricks.sliding_window_view(sat, lead + 1)[:n].max(axis=1)
    g = signal.windows.gaussian(int(6 * 0.05 / dt) | 1, 0.05 / dt)
    prep = np.convolve(prep, g / g.sum(), mode="same")
    supp = rng.uniform(*lc.beta_suppression)
    burst = np.exp(0.6 * _ou(rng, n, dt, 0.15)[:, 0])
    env = burst / burst.mean() * (1 - supp * prep)
    # phase diffusion giving a Lorentzian line of half-width lc.beta_width_hz
    beta_phase = np.cumsum(rng.normal(0, np.sqrt(4 * np.pi * lc.beta_width_hz * dt), size=n))
    beta_f = lc.beta_hz * rng.uniform(0.9, 1.1)
    speed = rng.uniform(*lc.beta_speed_cm_s) * 10.0  # mm/s
    ang = rng.uniform(-np.pi, np.pi)
    kvec = 2 * np.pi * beta_f / speed * np.array([np.cos(ang), np.sin(ang)])
    spatial_phase = elec @ kvec
    knee = float(np.clip(pop.knee * np.exp(0.1 * rng.standard_normal()), *lc.knee_hz))
    ell = float(np.clip(pop.ell * np.exp(0.1 * rng.standard_normal()), *lc.corr_length_mm))
    gains = (1 + lc.gain_jitter * rng.standard_normal(C)) * np.exp(chronic.log_gain[s])
    cm_gain = 1 + 0.05 * rng.standard_normal(C)
    line_phase = rng.uniform(-np.pi, np.pi, size=C)
    line_gain = 1 + 0.3 * rng.standard_normal(C)
    return dict(lmp=lmp, agg=agg, var=var, mean_rate=mean_rate, env=env,
                beta_phase=beta_phase, beta_f=beta_f, spatial_phase=spatial_phase,
                knee=knee, ell=ell, gains=gains, cm_gain=cm_gain, supp=supp,
                line_phase=line_phase, line_gain=line_gain)


def _interp_rows(y: np.ndarray, t_src: np.ndarray, t_dst: np.ndarray) -> np.ndarray:
    """Linear interpolation of the columns of ``y`` (held constant beyond the ends)."""
    if len(t_src) == len(t_dst) and np.array_equal(t_src, t_dst):
        return y
    out = np.empty((len(t_dst), y.shape[1]), dtype=np.float64)
    for c in range(y.shape[1]):
        out[:, c] = np.interp(t_dst, t_src, y[:, c])
    return out


def _synthesise(cfg: SimConfig, s: int, parts: dict, elec: np.ndarray, fs: float,
                t: np.ndarray, t_bins: np.ndarray) -> np.ndarray:
    """LFP components summed at the sample times ``t`` (s; a regular grid at rate ``fs``)
    -> ``[len(t), C]``. Bin-grid signals (at ``t_bins``, the bin centres) are interpolated."""
    lc = cfg.lfp

    def stream(k: int) -> np.random.Generator:  # one stream per component and sample rate
        return np.random.default_rng([cfg.seed, s, _S_LFPNOISE, int(round(fs)), k])

    C = len(elec)
    n = len(t)
    x = np.zeros((n, C), dtype=np.float32)
    # 1/f background, spatially correlated + local
    knee, chi = parts["knee"], lc.exponent
    d2 = ((elec[:, None] - elec[None]) ** 2).sum(-1)
    cov = (lc.corr_fraction * np.exp(-d2 / (2 * parts["ell"] ** 2))
           + (1 - lc.corr_fraction) * np.eye(C))
    lam, V = np.linalg.eigh(cov)
    mix = ((V * np.sqrt(np.maximum(lam, 0))) @ V.T).astype(np.float32)
    if lc.background > 0:
        rng_bg = stream(0)
        mix_t = lc.background * mix.T
        for c0 in range(0, C, _BLOCK):  # independent sources, a block at a time, mixed
            cs = slice(c0, min(C, c0 + _BLOCK))
            src = _shaped_noise(rng_bg, n, cs.stop - cs.start, fs,
                                lambda f: 1.0 / (knee**chi + f**chi))
            for a in range(0, n, _CHUNK):
                x[a:a + _CHUNK] += src[a:a + _CHUNK] @ mix_t[cs]
            del src
    # common mode (1/f with a slow knee)
    if lc.common > 0:
        cm = _shaped_noise(stream(1), n, 1, fs, lambda f: 1.0 / (2.0**2 + f**2))
        x += lc.common * cm * parts["cm_gain"].astype(np.float32)[None, :]
        del cm
    # channel-local components, a block of channels at a time (bounded memory)
    rel = parts["agg"] / parts["mean_rate"]  # local population rate / its mean
    fh, tau = lc.broadband_hp_hz, lc.synaptic_tau_s
    rng_w, rng_bb, rng_sp = stream(2), stream(3), stream(4)
    for c0 in range(0, C, _BLOCK):
        cs = slice(c0, min(C, c0 + _BLOCK))
        nb = cs.stop - cs.start
        # white (amplifier) noise
        if lc.white > 0:
            x[:, cs] += lc.white * _shaped_noise(rng_w, n, nb, fs, np.ones_like)
        # broadband (> broadband_hp_hz) noise, amplitude following the local firing rate
        if lc.broadband > 0:
            bb = _shaped_noise(rng_bb, n, nb, fs, lambda f: (f / fh) ** 4 / (1 + (f / fh) ** 4))
            m = rel[:, cs] ** lc.broadband_gain
            m /= np.sqrt((m**2).mean(axis=0))
            x[:, cs] += lc.broadband * bb * _interp_rows(m, t_bins, t).astype(np.float32)
            del bb
        # aggregate local spiking (rate + Poisson fluctuation) through the synaptic filter
        if lc.spiking > 0:
            sd = np.sqrt(_interp_rows(parts["var"][:, cs], t_bins, t) * fs)
            drive = _interp_rows(rel[:, cs] - 1.0, t_bins, t)
            drive += rng_sp.standard_normal((n, nb)) * sd / parts["mean_rate"][cs]
            del sd
            x[:, cs] += lc.spiking * _fft_filter(
                drive, fs, lambda f: 1.0 / (1.0 + 2j * np.pi * f * tau))
            del drive
    # beta travelling wave and local motor potential (time chunks: bounded memory)
    env = np.interp(t, t_bins, parts["env"])
    ph = np.interp(t, t_bins, parts["beta_phase"]) + 2 * np.pi * parts["beta_f"] * t
    for a in range(0, n, _CHUNK):
        sl = slice(a, min(n, a + _CHUNK))
        if lc.beta > 0:
            x[sl] += lc.beta * np.sqrt(2) * env[sl, None] * np.cos(
                ph[sl, None] - parts["spatial_phase"][None, :])
        if lc.lmp > 0:
            x[sl] += _interp_rows(parts["lmp"], t_bins, t[sl])
    x *= parts["gains"].astype(np.float32)[None, :]
    return x


def _process_fast(x: np.ndarray, bin_size: float, highpass_hz: float = 0.05) -> np.ndarray:
    """Processed LFP from bin-centre samples: chain pass-band (low-pass, resampling kernel and
    0.05 Hz high-pass, as zero-phase gains applied in the frequency domain -- the synthetic
    noises are circular, so this has no edge transients), CAR, z-score."""
    fs = 1.0 / bin_size

    def gain(f: np.ndarray) -> np.ndarray:
        r = (f / highpass_hz) ** 8
        return _chain_gain(f, bin_size) * r / (1.0 + r)

    y = _fft_filter(x, fs, gain).astype(np.float64)
    y -= y.mean(axis=1, keepdims=True)
    y -= y.mean(axis=0)
    sd = y.std(axis=0)
    sd[sd <= 0] = 1.0
    return (y / sd).astype(np.float32)


def _process_raw(cfg: SimConfig, s: int, parts: dict, elec: np.ndarray, n_bins: int
                 ) -> np.ndarray:
    fs = cfg.raw_fs
    n = int(math.ceil(n_bins * cfg.bin_size * fs)) + 1
    t_bins = (np.arange(n_bins) + 0.5) * cfg.bin_size
    t = np.arange(n) / fs
    x = _synthesise(cfg, s, parts, elec, fs, t, t_bins)
    lc = cfg.lfp
    drift = np.linspace(0.0, 1.0, n)
    for a in range(0, n, _CHUNK):
        sl = slice(a, min(n, a + _CHUNK))
        # line noise with two harmonics (removed by the notch / low-pass)
        for h, amp in ((1, 1.0), (2, 0.2), (3, 0.1)):
            f = cfg.line_freq * h
            if lc.line > 0 and f < fs / 2:
                x[sl] += lc.line * amp * parts["line_gain"][None, :] * np.sin(
                    2 * np.pi * f * t[sl, None] + h * parts["line_phase"][None, :])
        # slow electrode drift (removed by the 0.05 Hz high-pass)
        x[sl] += drift[sl, None] * parts["gains"][None, :]
    chain = LfpChainConfig(line_freq=cfg.line_freq)
    return broadband_to_lfp_chunked(lambda a, b: x[a:b], n, x.shape[1], fs, cfg.bin_size, chain,
                                    n_bins=n_bins, what=f"simulated session {s}")


# -------------------------------------------------------------------------------- sessions
def _session(cfg: SimConfig, s: int, pop: _Population, units: np.ndarray, elec: np.ndarray,
             channel_ids: list[str], chronic: _Chronic) -> Session:
    n = cfg.n_bins
    dt = cfg.bin_size
    lead = int(round(cfg.lead_s / dt))
    rng_b = np.random.default_rng([cfg.seed, s, _S_BEHAV])
    vel_all, _, reaches = _behaviour(cfg, rng_b, n + lead)
    velocity = vel_all[:n]
    Z = _make_latents(cfg, np.random.default_rng([cfg.seed, s, _S_LAT]), vel_all)[lead:lead + n]
    times = (np.arange(n) + 0.5) * dt
    moving = np.zeros(n, dtype=bool)
    trials = []
    for a, b in reaches:
        i0, i1 = int(math.floor(a / dt)), int(math.ceil(b / dt))
        i0, i1 = max(i0, 0), min(i1, n)
        if i1 > i0:
            moving[i0:i1] = True
            trials.append((i0, i1))
    # recorded units: drifted preferred directions, degraded task tuning
    rng_t = np.random.default_rng([cfg.seed, s, _S_TUNE])
    pd = pop.pd[units] + np.deg2rad(cfg.tuning_drift_deg) * rng_t.standard_normal(len(units))
    scale = (1 - cfg.degradation) ** s
    W = pop.loadings(pd, scale, idx=units)
    lam = _rates(pop.log_base[units], W, Z, cfg.max_rate_hz)
    if cfg.private_noise > 0:
        sig = cfg.private_noise
        tau = np.full(len(units), cfg.private_tau_s)
        lam *= np.exp(sig * _ou(rng_t, n, dt, tau) - sig**2 / 2)
    detect = chronic.detection(s, units)
    if cfg.chronic.amplitude_loss > 0:  # smaller spikes: a fraction of them is missed
        lam *= detect[None, :]
    spikes = np.random.default_rng([cfg.seed, s, _S_SPIKE]).poisson(lam * dt).astype(np.int32)
    # LFP
    speed = np.linalg.norm(vel_all, axis=1)  # behaviour speed, cm/s (n + lead bins)
    parts = _lfp_slow_parts(cfg, s, Z, speed, elec, pop, chronic)
    if cfg.path == "fast":
        lfp = _process_fast(_synthesise(cfg, s, parts, elec, 1.0 / dt, times, times), dt)
    else:
        lfp = _process_raw(cfg, s, parts, elec, n)
    name = f"sim{s:02d}"
    meta = {
        "simulator": "lfpdistill.simulate",
        "task": cfg.task, "seed": cfg.seed, "path": cfg.path, "degradation": cfg.degradation,
        "session_index": s, "velocity_units": "cm/s", "latent_names": cfg.latent_names,
        "lead_s": cfg.lead_s, "n_hidden": cfg.n_hidden,
        "unit_channels": [channel_ids[i] for i in pop.nearest[units]],
        "tuning_scale": float(scale), "day": s * cfg.chronic.interval_days,
        "mean_detection": float(detect.mean()), "beta_suppression": float(parts["supp"]),
        "knee_hz": float(parts["knee"]), "corr_length_mm": float(parts["ell"]),
        "config": cfg.model_dump(mode="json"),
    }
    segments = None
    if cfg.segment_s is not None:
        segments = make_segments(n, dt, cfg.segment_s, seed=cfg.seed, session=name)
    return Session(
        name=name, subject="sim", velocity=velocity.astype(np.float32), spikes=spikes,
        lfp=lfp, bin_size=dt, unit_ids=[f"n{i:05d}" for i in units], channel_ids=channel_ids,
        electrode_positions=elec.astype(np.float32), trials=np.asarray(trials, dtype=np.int64),
        segments=segments, latents=Z.astype(np.float32), meta=meta,
    )


def resolve_variant(cfg: SimConfig, progress: bool = True) -> SimConfig:
    """``cfg`` itself for the default simulator; for ``variant="random"``, a config whose drawn
    fields are replaced by the draws of ``cfg.seed`` (``drawn_from`` records which,
    :func:`lfpdistill.simulate.variants.resolve_random`); for ``variant="calibrated"``, that
    config calibrated into the calibration bands (:func:`lfpdistill.simulate.calibration.
    calibrate_variant`: minutes; ``progress`` prints a line per step to stderr)."""
    if cfg.variant == "default":
        return cfg
    drawn = resolve_random(cfg)  # the ranges of cfg.family
    if cfg.variant == "random":
        return drawn
    return calibrate_variant(drawn, simulate_sessions, progress=progress)


def simulate_sessions(cfg: SimConfig | None = None, progress: bool = False) -> list[Session]:
    """Simulate ``cfg.n_sessions`` paired sessions ``sim00, sim01, ...`` (subject ``"sim"``).

    Sessions are generated one at a time (the raw path holds one session's broadband signal in
    memory). Deterministic: the same ``cfg`` gives bit-identical arrays. A ``variant="random"``
    or ``"calibrated"`` config is first resolved into its parameters (:func:`resolve_variant`).
    With ``progress=True`` a line per session (and per calibration step) goes to stderr.
    """
    cfg = resolve_variant(cfg or SimConfig(), progress=progress)
    if cfg.family == "recurrent":  # the second family (simulate/recurrent.py)
        from .recurrent import simulate_recurrent

        return simulate_recurrent(cfg, progress=progress)
    elec = electrode_grid(cfg.n_channels)
    channel_ids = [f"ch{i:03d}" for i in range(cfg.n_channels)]
    pop = _Population(cfg, elec)
    unit_sets = _select_units(cfg, pop)
    chronic = _Chronic(cfg, pop, elec)
    out = []
    for s in range(cfg.n_sessions):
        t0 = time.perf_counter()
        if cfg.chronic.amplitude_loss > 0:  # units whose spikes fell below threshold are gone
            det = chronic.detection(s, unit_sets[s])
            keep = det >= cfg.chronic.min_detection
            keep[np.argmax(det)] = True  # a session records at least one unit
            unit_sets[s] = unit_sets[s][keep]
        out.append(_session(cfg, s, pop, unit_sets[s], elec, channel_ids, chronic))
        if progress:
            print(f"simulated sim{s:02d} ({cfg.path} path, {len(unit_sets[s])} units, "
                  f"{time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    return out
