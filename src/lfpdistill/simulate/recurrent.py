"""The second simulator family (``SimConfig.family = "recurrent"``, docs/simulator.md).

Structurally different from :mod:`.generator` (written separately, no code shared) so that
options chosen on one family can be checked on the other:

- **Behaviour.** Submovements with *log-normal* (asymmetric, bell-shaped) speed profiles, the
  velocity being the sum of the submovements in flight. ``random_target``: targets uniform in a
  *disk* of diameter ``workspace_cm``, Fitts-like durations, curved paths, submovements that
  start before the previous one ended, corrective submovements and exponential holds.
  ``center_out``: a centre hold of 0.4-0.9 s, a reach to one of 8 targets on a circle of radius
  ``center_out_radius_cm``, a hold, a return. Noise: slow (Ornstein-Uhlenbeck) drift plus an
  8-12 Hz physiological tremor, together ``velocity_noise_cm_s``.
- **Population.** A ``D``-dimensional random rate network (``tau dx/dt = -x + g J tanh(x) +
  B u + noise``; gain ``g`` > 1: chaotic without input) driven by the motor plan ``u`` (the
  velocity and speed ``lead_s`` ahead, and a go transient before each submovement). Its rates
  ``tanh(x)`` are ``Session.latents`` (``rnn00``...). ``n_hidden`` neurons over the array
  footprint have log-rates ``b + gain * w . tanh(x)``: loadings ``w`` (unit norm), gains drawn
  from ``tuning_depth`` (times :data:`_GAIN_REF`), baselines log-normal around
  ``baseline_rate_hz``, private log-rate noise ``private_noise``. A small readout of the network
  also moves the hand (motor noise that originates in the network).
- **Sessions of a chronic array.** The array moves relative to the tissue by a random walk
  (``array_shift_um`` per session): units farther than :data:`_DETECT_MM` from every electrode
  are lost, a fraction ``unit_turnover`` of the rest is replaced by neurons near the
  electrodes, and the recorded units' loadings rotate by ``tuning_drift_deg`` per session
  (cumulative). Electrode gains drift, and channels fail one after another (``bad_channel_rate``
  per session; a failed channel records mostly amplifier noise from then on).
- **LFP: current sources through a volume conductor.** Every hidden neuron is a current dipole
  (source at depth ``source_depth_mm`` below the electrode tips, sink ``dipole_mm`` deeper);
  an electrode sees ``1 / r_source - 1 / r_sink``. Sources: the neurons' synaptic input currents
  (the network's state ``x`` through smooth input maps, filtered at ``synaptic_tau_s``;
  ``lfp.spiking``) and fast currents whose amplitude follows each neuron's firing rate
  (``lfp.broadband``, exponent ``broadband_gain``). Background: 1/f^``exponent`` noise from
  independent sources around and below the array through the same kernel, plus a local part.
  A movement-evoked potential (the family's local motor potential, ``lfp.lmp``): a biphasic
  waveform from each submovement's go transient, its amplitude scaled by the submovement's peak
  speed and tuned to its direction by smooth maps over the array, low-passed at ``lmp_hz``.
  A standing beta rhythm (a noise-driven resonance at ``beta_hz``) suppressed by a fraction in
  ``beta_suppression`` while the network is active. Common mode, white noise, electrode gains.
  Processing: 0.05 Hz high-pass, roll-off towards 50 Hz, common average reference, z-score
  (only ``path="fast"``: the family synthesises the processed signal on the bin grid).

Every other parameter of the family (network size, chaos gain, time constant, input strength,
dipole geometry, array movement, channel failures, hand feed-through) is drawn once per brain
from :data:`BRAIN_RANGES`, seeded by ``seed``; the values are in each session's
``meta["brain"]``. Deterministic: the same config gives bit-identical arrays.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np

from ..config import SimConfig
from ..errors import ConfigError
from ..session import Session, make_segments

_STREAM = 31337  # family tag of every random stream: [seed, _STREAM, part, session]
_P_BRAIN, _P_BEHAV, _P_NET, _P_UNITS, _P_SPIKES, _P_LFP, _P_ARRAY = 1, 2, 3, 4, 5, 6, 7
_V_REF = 10.0  # cm/s per unit of network input
_GAIN_REF = 3.0  # log-rate per unit of a unit's latent drive, per unit of tuning_depth
_DETECT_MM = 0.12  # a unit is recordable within this distance of an electrode
_EVOKED_REF = 1.0  # evoked potential per (10 cm/s of peak speed x lmp)

#: Parameters of the family's "brain", drawn once per seed: (low, high, kind).
BRAIN_RANGES: dict[str, tuple[float, float, str]] = {
    "network_dim": (16, 40, "int"),
    "chaos_gain": (1.3, 2.0, "uniform"),
    "network_tau_s": (0.03, 0.08, "uniform"),
    "input_gain": (1.5, 3.0, "uniform"),
    "network_noise": (0.1, 0.3, "uniform"),
    "source_depth_mm": (0.1, 0.4, "uniform"),
    "dipole_mm": (0.2, 0.5, "uniform"),
    "array_shift_um": (5.0, 40.0, "log"),
    "bad_channel_rate": (0.0, 0.03, "uniform"),
    "feedthrough_cm_s": (0.0, 1.5, "uniform"),
    "evoked_duration_s": (0.25, 0.45, "uniform"),
}


def _rng(cfg: SimConfig, part: int, session: int = 0, *extra: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, _STREAM, part, session, *extra])


def draw_brain(seed: int) -> dict[str, float]:
    """The family's per-brain parameters of ``seed`` (inside :data:`BRAIN_RANGES`)."""
    rng = np.random.default_rng([int(seed), _STREAM, _P_BRAIN])
    out: dict[str, float] = {}
    for name, (lo, hi, kind) in BRAIN_RANGES.items():
        if kind == "int":
            out[name] = int(rng.integers(int(lo), int(hi) + 1))
        elif kind == "log":
            out[name] = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
        else:
            out[name] = float(rng.uniform(lo, hi))
    return out


def array_positions(n_channels: int, pitch_mm: float = 0.4) -> np.ndarray:
    """Electrode positions ``[C, 2]`` (mm): a square grid of ``pitch_mm``, row by row, without
    its corners when that leaves enough sites (96 channels: the 10 x 10 Utah layout)."""
    side = max(2, math.ceil(math.sqrt(n_channels + 4)))
    sites = [(i * pitch_mm, j * pitch_mm) for j in range(side) for i in range(side)
             if (i, j) not in {(0, 0), (side - 1, 0), (0, side - 1), (side - 1, side - 1)}]
    return np.asarray(sites[:n_channels], dtype=np.float64)


# --------------------------------------------------------------------------------- spectra
def _spectral_noise(rng: np.random.Generator, n: int, k: int, fs: float, shape: Any
                    ) -> np.ndarray:
    """``[n, k]`` Gaussian noise, power spectrum ``shape(f)``, unit variance per column."""
    f = np.fft.rfftfreq(n, 1.0 / fs)
    amp = np.sqrt(np.asarray(shape(f), dtype=np.float64))
    amp[0] = 0.0
    spec = (rng.standard_normal((len(f), k)) + 1j * rng.standard_normal((len(f), k)))
    x = np.fft.irfft(spec * amp[:, None], n=n, axis=0)
    x /= np.maximum(x.std(axis=0), 1e-12)
    return x


def _filter(x: np.ndarray, fs: float, response: Any) -> np.ndarray:
    """Columns of ``x`` through the (zero-phase or complex) frequency ``response(f)``."""
    f = np.fft.rfftfreq(x.shape[0], 1.0 / fs)
    return np.fft.irfft(np.fft.rfft(x, axis=0) * np.asarray(response(f))[:, None],
                        n=x.shape[0], axis=0)


def _lowpass_causal(x: np.ndarray, dt: float, tau: float) -> np.ndarray:
    """First-order causal low-pass (time constant ``tau``) along axis 0."""
    a = math.exp(-dt / tau)
    out = np.empty_like(x, dtype=np.float64)
    acc = np.zeros(x.shape[1:])
    for t in range(x.shape[0]):
        acc = a * acc + (1 - a) * x[t]
        out[t] = acc
    return out


# -------------------------------------------------------------------------------- behaviour
def _lognormal_speed(t: np.ndarray, t0: float, mu: float, sigma: float) -> np.ndarray:
    """Log-normal speed profile (integrates to 1) starting at ``t0``."""
    out = np.zeros_like(t)
    u = t - t0
    ok = u > 1e-6
    out[ok] = np.exp(-(np.log(u[ok]) - mu) ** 2 / (2 * sigma**2)) / (
        sigma * math.sqrt(2 * math.pi) * u[ok])
    return out


def _plan(cfg: SimConfig, rng: np.random.Generator, total_s: float) -> list[dict[str, Any]]:
    """Submovements until ``total_s``: start, duration, displacement, curvature, log-normal
    shape."""
    subs: list[dict[str, Any]] = []
    pos = np.zeros(2)
    t = rng.uniform(0.2, 0.6)
    radius = cfg.workspace_cm / 2
    out_phase = True

    def add(start: float, disp: np.ndarray, curve: float) -> float:
        dist = float(np.linalg.norm(disp))
        dur = 0.3 + 0.11 * math.log2(1.0 + dist / 0.5)  # Fitts-like, ~0.6-0.8 s
        sigma = rng.uniform(0.2, 0.32)
        mu = math.log(dur / (math.exp(3 * sigma) - math.exp(-3 * sigma)))
        t0 = start - math.exp(mu - 3 * sigma)  # the speed is ~0 before `start`
        subs.append({"start": start, "dur": dur, "disp": disp, "t0": t0, "mu": mu,
                     "sigma": sigma, "curve": curve})
        return dur

    while t < total_s:
        if cfg.task == "center_out":
            if out_phase:
                ang = rng.integers(8) * math.pi / 4
                target = cfg.center_out_radius_cm * np.array([math.cos(ang), math.sin(ang)])
            else:
                target = np.zeros(2)
            dur = add(t, target - pos, rng.normal(0, 0.06))
            pos = target
            t += dur + (rng.uniform(0.2, 0.5) if out_phase else rng.uniform(0.4, 0.9))
            out_phase = not out_phase
            continue
        while True:  # a target in the disk, not too close
            r = radius * math.sqrt(rng.uniform())
            a = rng.uniform(-math.pi, math.pi)
            target = np.array([r * math.cos(a), r * math.sin(a)])
            if np.linalg.norm(target - pos) >= 0.2 * cfg.workspace_cm:
                break
        aim = target - pos
        if rng.uniform() < 0.3:  # undershoot, then a corrective submovement
            frac = rng.uniform(0.8, 0.92)
            dur = add(t, aim * frac, rng.normal(0, 0.12))
            t_corr = t + dur * rng.uniform(0.75, 1.0)
            dur2 = add(t_corr, aim * (1 - frac), rng.normal(0, 0.05))
            end = t_corr + dur2
        else:
            dur = add(t, aim, rng.normal(0, 0.12))
            end = t + dur
        pos = target
        # the next submovement overlaps this one, or follows an exponential hold
        t = end - dur * rng.uniform(0.05, 0.3) if rng.uniform() < 0.35 else (
            end + min(rng.exponential(0.3), 1.5))
    return subs


def _behaviour(cfg: SimConfig, rng: np.random.Generator, n: int
               ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Velocity (cm/s) ``[n, 2]`` at the bin centres and the submovements."""
    dt = cfg.bin_size
    times = (np.arange(n) + 0.5) * dt
    subs = _plan(cfg, rng, n * dt + 0.5)
    vel = np.zeros((n, 2))
    for s in subs:
        a = max(0, int((s["start"] - 0.2) / dt))
        b = min(n, int((s["start"] + 3 * s["dur"]) / dt) + 1)
        if b <= a:
            continue
        sp = _lognormal_speed(times[a:b], s["t0"], s["mu"], s["sigma"])
        # progress along the path (0..1) and a lateral bulge sin(pi * progress)
        prog = np.clip(np.cumsum(sp) * dt, 0, 1)
        d = s["disp"]
        perp = np.array([-d[1], d[0]])
        lateral = s["curve"] * math.pi * np.cos(math.pi * prog) * sp
        vel[a:b] += sp[:, None] * d[None, :] + lateral[:, None] * perp[None, :]
        s["peak_speed"] = float(np.linalg.norm(d) * sp.max()) if len(sp) else 0.0
        s["angle"] = math.atan2(d[1], d[0])
    if cfg.velocity_noise_cm_s > 0:
        slow = _spectral_noise(rng, n, 2, 1 / dt, lambda f: 1.0 / (1.0 + (f / 0.5) ** 2))
        tremor = _spectral_noise(rng, n, 2, 1 / dt,
                                 lambda f: np.exp(-0.5 * ((f - 10.0) / 1.2) ** 2))
        vel += cfg.velocity_noise_cm_s * (0.85 * slow + 0.5 * tremor)
    return vel, subs


def _go_signal(subs: list[dict[str, Any]], times: np.ndarray, lead: float) -> np.ndarray:
    """Go transients ``[n]``: a 60 ms bump ``lead`` before each submovement's start."""
    go = np.zeros(len(times))
    for s in subs:
        c = s["start"] - lead
        go += np.exp(-0.5 * ((times - c) / 0.06) ** 2)
    return go


# ---------------------------------------------------------------------------------- network
class _Brain:
    """Everything shared by the sessions: network, neurons, dipole geometry, LFP maps."""

    def __init__(self, cfg: SimConfig, elec: np.ndarray) -> None:
        self.p = draw_brain(cfg.seed)
        rng = _rng(cfg, _P_BRAIN, 0, 1)
        D = int(self.p["network_dim"])
        self.D = D
        self.J = rng.standard_normal((D, D)) / math.sqrt(D)
        np.fill_diagonal(self.J, 0.0)
        # plan input: vx, vy, speed, go -> network (columns orthonormal: every input as strong)
        q, _ = np.linalg.qr(rng.standard_normal((D, 4)))
        self.B = q * math.sqrt(D / 4.0)
        self.hand = rng.standard_normal((2, D)) / math.sqrt(D)  # network -> hand feed-through
        H = cfg.n_hidden
        lo, hi = elec.min(0) - 0.3, elec.max(0) + 0.3
        self.pos = rng.uniform(lo, hi, size=(H, 2))
        # loadings: a smooth functional map over the tissue (neighbours share their drive, so
        # the local population rate carries the network's state) + an individual part
        w = 0.8 * _bumps(rng, self.pos, D, 0.35, n_bumps=64) + 0.6 * rng.standard_normal((H, D))
        self.w = w / np.linalg.norm(w, axis=1, keepdims=True)
        self.gain = rng.uniform(*cfg.tuning_depth, size=H) * _GAIN_REF
        self.log_base = math.log(cfg.baseline_rate_hz) + 0.6 * rng.standard_normal(H)
        # synaptic input maps: smooth over the tissue (sum of Gaussian bumps) + individual
        self.inp = 0.7 * _bumps(rng, self.pos, D, 0.5) + 0.3 * rng.standard_normal((H, D))
        # evoked-potential maps over the array: offset, cos and sin of the reach direction
        self.evoked = _bumps(rng, elec, 3, 0.8)
        self.evoked[:, 0] += 0.5
        self.beta_map = 0.6 + 0.4 * _bumps(rng, elec, 1, 1.0)[:, 0]
        # background sources around and below the array
        nb = 160
        self.bg_pos = np.column_stack([rng.uniform(lo - 1.5, hi + 1.5, size=(nb, 2)),
                                       rng.uniform(0.3, 1.5, size=nb)])

    def dipole_kernel(self, elec: np.ndarray, pos: np.ndarray, depth: np.ndarray | float
                      ) -> np.ndarray:
        """``[C, P]`` potential at each electrode per unit dipole current of each source."""
        d2 = ((elec[:, None, :] - pos[None, :, :2]) ** 2).sum(-1)
        h = np.broadcast_to(np.asarray(depth, dtype=np.float64), (len(pos),))[None, :]
        dip = self.p["dipole_mm"]
        return 1.0 / np.sqrt(d2 + h**2 + 0.01) - 1.0 / np.sqrt(d2 + (h + dip) ** 2 + 0.01)

    def run_network(self, cfg: SimConfig, rng: np.random.Generator, u: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Network state ``x`` and rates ``tanh(x)`` ``[n, D]`` under the plan input ``u``."""
        dt = cfg.bin_size
        tau, g = self.p["network_tau_s"], self.p["chaos_gain"]
        a = dt / tau
        drive = self.p["input_gain"] * (u @ self.B.T)
        noise = self.p["network_noise"] * math.sqrt(2 * a) * rng.standard_normal(drive.shape)
        x = 0.5 * rng.standard_normal(self.D)
        xs = np.empty((len(u), self.D))
        gJ = g * self.J
        for _ in range(int(1.0 / dt)):  # burn-in from a random state
            x = x + a * (-x + gJ @ np.tanh(x))
        for t in range(len(u)):
            x = x + a * (-x + gJ @ np.tanh(x) + drive[t]) + noise[t]
            xs[t] = x
        return xs, np.tanh(xs)


def _bumps(rng: np.random.Generator, xy: np.ndarray, k: int, width: float,
           n_bumps: int = 24) -> np.ndarray:
    """``k`` smooth random maps over the points ``xy`` (sums of signed Gaussian bumps at random
    centres), zero mean and unit SD each."""
    lo, hi = xy.min(0) - width, xy.max(0) + width
    c = rng.uniform(lo, hi, size=(n_bumps, 2))
    amp = rng.standard_normal((n_bumps, k))
    d2 = ((xy[:, None, :] - c[None]) ** 2).sum(-1)
    m = np.exp(-d2 / (2 * width**2)) @ amp
    m -= m.mean(0)
    return m / np.maximum(m.std(0), 1e-12)


# ------------------------------------------------------------------------------- sessions
def _units_per_session(cfg: SimConfig, brain: _Brain, elec: np.ndarray
                       ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Recorded hidden-neuron indices and the array offset (mm) of every session."""
    rng = _rng(cfg, _P_UNITS)
    offset = np.zeros(2)
    sets, offsets = [], []
    prev: np.ndarray | None = None
    for s in range(cfg.n_sessions):
        if s:
            offset = offset + rng.normal(0, brain.p["array_shift_um"] / 1000.0, size=2)
        shifted = elec + offset
        d = np.sqrt(((shifted[:, None] - brain.pos[None]) ** 2).sum(-1)).min(0)  # [H]
        near = np.flatnonzero(d < _DETECT_MM)
        n = int(rng.integers(cfg.units_min, cfg.units_max + 1))
        keep = np.zeros(0, dtype=np.int64)
        if prev is not None:
            still = prev[d[prev] < _DETECT_MM]
            k = int(round(len(prev) * (1 - cfg.unit_turnover)))
            keep = np.sort(rng.permutation(still)[:min(k, len(still), n)])
        new_pool = np.setdiff1d(near, keep)
        if len(new_pool) < n - len(keep):  # too few neurons near the array: take the nearest
            new_pool = np.setdiff1d(np.argsort(d)[: 2 * cfg.units_max], keep)
        if cfg.degradation > 0:
            n = max(1, int(round(n * (1 - cfg.degradation) ** s)))
            keep = keep[:n]
        p = np.exp(-(d[new_pool] / _DETECT_MM) ** 2)
        new = rng.choice(new_pool, size=max(0, n - len(keep)), replace=False, p=p / p.sum())
        prev = np.sort(np.concatenate([keep, new]).astype(np.int64))
        sets.append(prev)
        offsets.append(offset.copy())
    return sets, offsets


def _drifted_loadings(cfg: SimConfig, brain: _Brain) -> list[np.ndarray]:
    """Every hidden neuron's loading vector per session: a cumulative rotation by
    ``tuning_drift_deg`` (a random walk on the sphere) from session to session."""
    rng = _rng(cfg, _P_UNITS, 0, 2)
    w = brain.w.copy()
    out = [w]
    step = math.radians(cfg.tuning_drift_deg)
    for _ in range(1, cfg.n_sessions):
        r = rng.standard_normal(w.shape)
        r -= (r * w).sum(1, keepdims=True) * w
        r /= np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
        ang = step * np.abs(rng.standard_normal((len(w), 1)))
        w = np.cos(ang) * w + np.sin(ang) * r
        out.append(w)
    return out


def _bad_channels(cfg: SimConfig, brain: _Brain, C: int) -> list[np.ndarray]:
    """Failed channels per session (cumulative: a failed channel stays failed)."""
    rng = _rng(cfg, _P_ARRAY, 0, 1)
    bad = np.zeros(C, dtype=bool)
    out = []
    for s in range(cfg.n_sessions):
        if s:
            bad |= rng.uniform(size=C) < brain.p["bad_channel_rate"]
        out.append(bad.copy())
    return out


def _lfp(cfg: SimConfig, s: int, brain: _Brain, elec: np.ndarray, offset: np.ndarray,
         xs: np.ndarray, rates_hidden_fn: Any, subs: list[dict[str, Any]], go_times: np.ndarray,
         activity: np.ndarray, bad: np.ndarray, log_gain: np.ndarray) -> np.ndarray:
    """Processed LFP ``[n, C]`` float32 of session ``s``."""
    lc = cfg.lfp
    dt = cfg.bin_size
    fs = 1.0 / dt
    n, C = len(xs), len(elec)
    rng = _rng(cfg, _P_LFP, s)
    shifted = elec + offset
    depth = brain.p["source_depth_mm"]
    K = brain.dipole_kernel(shifted, brain.pos, depth)  # [C, H]
    K /= np.abs(K).sum(1, keepdims=True)
    out = np.zeros((n, C))
    # 1) synaptic input currents: network state through the input maps, synaptic low-pass
    if lc.spiking > 0:
        syn = xs @ (K @ brain.inp).T  # [n, C]
        syn = _lowpass_causal(syn, dt, lc.synaptic_tau_s)
        syn -= syn.mean(1, keepdims=True)
        out += lc.spiking * 3.0 * syn / max(float(syn.std()), 1e-12)
    # 2) fast currents whose amplitude follows each neuron's firing rate
    if lc.broadband > 0:
        agg = np.empty((n, C))
        for a in range(0, n, 4096):
            agg[a:a + 4096] = rates_hidden_fn(a, min(n, a + 4096)) @ K.T
        rel = agg / agg.mean(0)
        env = np.clip(rel, 0.05, None) ** lc.broadband_gain
        env /= np.sqrt((env**2).mean(0))
        tau_r, tau_d = 0.001, 0.004
        fast = _spectral_noise(rng, n, C, fs, lambda f: 1.0 / (
            (1 + (2 * np.pi * f * tau_r) ** 2) * (1 + (2 * np.pi * f * tau_d) ** 2)))
        out += lc.broadband * 2.0 * fast * env
    # 3) 1/f background: independent sources around/below the array + a local part
    if lc.background > 0:
        chi = lc.exponent

        def shape(f: np.ndarray) -> np.ndarray:
            return 1.0 / np.maximum(f, 0.5) ** chi

        Kb = brain.dipole_kernel(shifted, brain.bg_pos, brain.bg_pos[:, 2])  # [C, nb]
        src = _spectral_noise(rng, n, Kb.shape[1], fs, shape)
        bg = src @ Kb.T
        bg /= max(float(bg.std()), 1e-12)
        local = _spectral_noise(rng, n, C, fs, shape)
        out += lc.background * 2.0 * (0.8 * bg + 0.45 * local)
    # 4) movement-evoked potential (the family's local motor potential)
    if lc.lmp > 0:
        times = (np.arange(n) + 0.5) * dt
        T_e = brain.p["evoked_duration_s"]
        ev = np.zeros((n, 3))
        for sub, tg in zip(subs, go_times, strict=True):
            u = (times - tg) / T_e
            ok = (u > 0) & (u < 1)
            if not ok.any():
                continue
            wave = np.sin(2 * np.pi * u[ok]) * np.sin(np.pi * u[ok]) ** 2  # biphasic
            amp = sub["peak_speed"] / _V_REF
            ev[ok] += amp * wave[:, None] * np.array([0.4, math.cos(sub["angle"]),
                                                      math.sin(sub["angle"])])
        fc = lc.lmp_hz
        ev = _filter(ev, fs, lambda f: 1.0 / (1.0 + (f / fc) ** 4))
        out += lc.lmp * _EVOKED_REF * 6.0 * ev @ brain.evoked.T
    # 5) standing beta rhythm, suppressed while the network is active
    if lc.beta > 0:
        bw = lc.beta_width_hz
        osc = _spectral_noise(rng, n, 1, fs, lambda f: 1.0 / (1.0 + ((f - lc.beta_hz) / bw) ** 2)
                              )[:, 0]
        supp = rng.uniform(*lc.beta_suppression)
        act = (activity - activity.mean()) / max(float(activity.std()), 1e-12)
        env_b = 1.0 - supp / (1.0 + np.exp(-2.0 * act))
        out += lc.beta * 2.0 * (osc * env_b)[:, None] * brain.beta_map[None, :]
    # 6) common mode, amplifier noise, electrode gains, failed channels
    if lc.common > 0:
        cm = _spectral_noise(rng, n, 1, fs, lambda f: 1.0 / np.maximum(f, 1.0) ** 1.5)
        out += lc.common * 2.0 * cm * (1 + 0.05 * rng.standard_normal(C))[None, :]
    gains = np.exp(log_gain) * (1 + lc.gain_jitter * rng.standard_normal(C))
    out *= gains[None, :]
    white = rng.standard_normal((n, C))
    out += lc.white * 2.0 * white
    if bad.any():
        out[:, bad] = 0.1 * out[:, bad] + 3.0 * white[:, bad]
    # processing: 0.05 Hz high-pass, roll-off towards 50 Hz, CAR, z-score
    out = _filter(out, fs, lambda f: ((f / 0.05) ** 4 / (1 + (f / 0.05) ** 4))
                  / np.sqrt(1 + (f / 42.0) ** 12))
    out -= out.mean(1, keepdims=True)
    out -= out.mean(0)
    sd = out.std(0)
    sd[sd <= 0] = 1.0
    return (out / sd).astype(np.float32)


def _log_rates(brain: _Brain, rates: np.ndarray, W: np.ndarray, idx: np.ndarray | slice,
               a: int, b: int, scale: float, drive_var: float) -> np.ndarray:
    """Log-rates of the neurons ``idx`` over bins ``a:b``: baseline + gain x loading . rates;
    the drive's mean log-normal inflation is removed so the mean rate stays near baseline."""
    g = brain.gain[idx] * scale
    drive = rates[a:b] @ W[idx].T * g
    return brain.log_base[idx] + drive - 0.5 * g**2 * drive_var


def simulate_recurrent(cfg: SimConfig, progress: bool = False) -> list[Session]:
    """Simulate ``cfg.n_sessions`` sessions ``sim00, sim01, ...`` (subject ``"sim"``) of the
    recurrent family; ``cfg`` must be resolved (``variant="default"``, see
    :func:`lfpdistill.simulate.resolve_variant`)."""
    if cfg.family != "recurrent":
        raise ConfigError(f"simulate_recurrent needs family 'recurrent', not '{cfg.family}'")
    if cfg.variant != "default":
        raise ConfigError("resolve the variant first (lfpdistill.simulate.resolve_variant)")
    if cfg.path != "fast":
        raise ConfigError("the recurrent simulator family synthesises the processed LFP only; "
                          "set path: fast (or use family: kinematic for the raw path)")
    if cfg.chronic.model_dump() != type(cfg.chronic)().model_dump():
        raise ConfigError("chronic degradation options belong to the kinematic family; the "
                          "recurrent family has its own session-to-session drift: leave "
                          "chronic at its defaults or use family: kinematic")
    elec = array_positions(cfg.n_channels)
    channel_ids = [f"ch{i:03d}" for i in range(cfg.n_channels)]
    brain = _Brain(cfg, elec)
    unit_sets, offsets = _units_per_session(cfg, brain, elec)
    loadings = _drifted_loadings(cfg, brain)
    bads = _bad_channels(cfg, brain, cfg.n_channels)
    gain_rng = _rng(cfg, _P_ARRAY, 0, 2)
    log_gain = np.zeros(cfg.n_channels)
    dt = cfg.bin_size
    n = cfg.n_bins
    lead = int(round(cfg.lead_s / dt))
    out = []
    for s in range(cfg.n_sessions):
        t_start = time.perf_counter()
        if s:
            log_gain = log_gain + 0.05 * gain_rng.standard_normal(cfg.n_channels)
        vel_all, subs = _behaviour(cfg, _rng(cfg, _P_BEHAV, s), n + lead)
        times_all = (np.arange(n + lead) + 0.5) * dt
        speed = np.linalg.norm(vel_all, axis=1, keepdims=True)
        go = _go_signal(subs, times_all, 0.15)
        u = np.column_stack([vel_all / _V_REF, speed / _V_REF, go])[lead:lead + n]
        rng_net = _rng(cfg, _P_NET, s)
        xs, rates = brain.run_network(cfg, rng_net, np.vstack([np.zeros((lead, 4)), u]))
        # the hand also carries a readout of the network (lead bins earlier)
        velocity = vel_all[:n] + brain.p["feedthrough_cm_s"] * rates[:n] @ brain.hand.T * 2.0
        xs, rates = xs[lead:], rates[lead:]
        units = unit_sets[s]
        W = loadings[s]
        scale = (1 - cfg.degradation) ** s
        drive_var = float((rates**2).mean())  # variance of w . tanh(x) for a unit-norm w

        lam = np.minimum(np.exp(_log_rates(brain, rates, W, units, 0, n, scale, drive_var)),
                         cfg.max_rate_hz)
        rng_sp = _rng(cfg, _P_SPIKES, s)
        if cfg.private_noise > 0:
            sig = cfg.private_noise
            a = math.exp(-dt / cfg.private_tau_s)
            e = rng_sp.standard_normal((n, len(units))) * math.sqrt(1 - a * a)
            e[0] = rng_sp.standard_normal(len(units))
            for t in range(1, n):
                e[t] += a * e[t - 1]
            lam = lam * np.exp(sig * e - sig**2 / 2)
        spikes = rng_sp.poisson(lam * dt).astype(np.int32)

        def hidden_rates(a: int, b: int, rates: np.ndarray = rates, W: np.ndarray = W,
                         v: float = drive_var) -> np.ndarray:
            return np.minimum(np.exp(_log_rates(brain, rates, W, slice(None), a, b, 1.0, v)),
                              cfg.max_rate_hz)

        t_start_sub = [sub["start"] - lead * dt for sub in subs]
        go_times = np.asarray(t_start_sub) - 0.15
        activity = _lowpass_causal(np.linalg.norm(xs, axis=1, keepdims=True), dt, 0.1)[:, 0]
        subs_here = [{**sub, "start": st} for sub, st in zip(subs, t_start_sub, strict=True)]
        lfp = _lfp(cfg, s, brain, elec, offsets[s], xs, hidden_rates, subs_here, go_times,
                   activity, bads[s], log_gain)
        trials = []
        for sub in subs:
            i0 = max(0, int(math.floor(sub["start"] / dt)))
            i1 = min(n, int(math.ceil((sub["start"] + sub["dur"]) / dt)))
            if i1 > i0:
                trials.append((i0, i1))
        trials = sorted(set(trials))
        name = f"sim{s:02d}"  # the kinematic family's names: experiment configs work unchanged
        segments = None
        if cfg.segment_s is not None:
            segments = make_segments(n, dt, cfg.segment_s, seed=cfg.seed, session=name)
        d = np.sqrt(((elec[:, None] + offsets[s] - brain.pos[units][None]) ** 2).sum(-1))
        meta = {
            "simulator": "lfpdistill.simulate.recurrent", "family": "recurrent",
            "task": cfg.task, "seed": cfg.seed, "path": cfg.path,
            "degradation": cfg.degradation, "session_index": s, "velocity_units": "cm/s",
            "latent_names": [f"rnn{i:02d}" for i in range(brain.D)], "lead_s": cfg.lead_s,
            "n_hidden": cfg.n_hidden, "day": s,
            "unit_channels": [channel_ids[i] for i in d.argmin(0)],
            "array_offset_mm": [float(v) for v in offsets[s]],
            "bad_channels": [channel_ids[i] for i in np.flatnonzero(bads[s])],
            "brain": brain.p, "config": cfg.model_dump(mode="json"),
        }
        out.append(Session(
            name=name, subject="sim", velocity=velocity.astype(np.float32), spikes=spikes,
            lfp=lfp, bin_size=dt, unit_ids=[f"r{i:05d}" for i in units],
            channel_ids=channel_ids, electrode_positions=elec.astype(np.float32),
            trials=np.asarray(trials, dtype=np.int64).reshape(-1, 2), segments=segments,
            latents=rates.astype(np.float32), meta=meta))
        if progress:
            print(f"simulated {name} (recurrent family, {len(units)} units, "
                  f"{time.perf_counter() - t_start:.1f} s)", file=sys.stderr, flush=True)
    return out
