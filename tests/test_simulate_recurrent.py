"""Tests of the second simulator family (``SimConfig(family="recurrent")``,
lfpdistill.simulate.recurrent), and that the first family is unchanged by it."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from lfpdistill.errors import ConfigError
from lfpdistill.session import SPLITS, Session
from lfpdistill.simulate import CALIBRATION_BANDS, SimConfig, calibration_r2, simulate_sessions
from lfpdistill.simulate.calibration import scaled
from lfpdistill.simulate.recurrent import BRAIN_RANGES, array_positions, draw_brain
from lfpdistill.simulate.variants import (
    RECURRENT_VARIANT_RANGES,
    VARIANT_RANGES,
    draw_variant,
    resolve_random,
)

SMALL = dict(family="recurrent", n_sessions=3, seconds=30.0, n_channels=24, n_hidden=600,
             units_min=30, units_max=50, unit_turnover=0.3)


@pytest.fixture(scope="module")
def small() -> list[Session]:
    return simulate_sessions(SimConfig(seed=4, **SMALL))


def test_same_seed_same_arrays_other_seed_other_arrays(small):
    again = simulate_sessions(SimConfig(seed=4, **SMALL))
    for a, b in zip(small, again, strict=True):
        for key in ("spikes", "lfp", "velocity", "latents", "segments", "trials"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert a.unit_ids == b.unit_ids
    other = simulate_sessions(SimConfig(seed=5, **SMALL))
    for a, b in zip(small, other, strict=True):
        for key in ("lfp", "velocity", "latents"):
            x, y = getattr(a, key), getattr(b, key)
            assert x.shape != y.shape or not np.array_equal(x, y)


def test_shapes_dtypes_and_segments_fit_the_session_model(small):
    T = 3000
    for i, s in enumerate(small):
        assert s.name == f"sim{i:02d}" and s.subject == "sim" and s.bin_size == 0.01
        assert s.velocity.shape == (T, 2) and s.velocity.dtype == np.float32
        assert s.spikes.dtype == np.int32 and s.spikes.shape == (T, s.n_units)
        assert (s.spikes >= 0).all() and 30 <= s.n_units <= 50
        assert len(set(s.unit_ids)) == s.n_units
        assert s.lfp.shape == (T, 24) and s.lfp.dtype == np.float32
        np.testing.assert_allclose(s.lfp.mean(axis=0), 0.0, atol=1e-3)
        np.testing.assert_allclose(s.lfp.std(axis=0), 1.0, atol=1e-3)
        assert s.latents.shape == (T, s.meta["brain"]["network_dim"])
        assert np.abs(s.latents).max() <= 1.0  # network rates tanh(x)
        assert s.electrode_positions.shape == (24, 2)
        seg = s.segments
        assert seg[0, 0] == 0 and seg[-1, 1] == T and (seg[1:, 0] == seg[:-1, 1]).all()
        assert set(seg[:, 2].tolist()) == set(SPLITS.values())
        assert s.trials.ndim == 2 and len(s.trials) >= 20
        assert s.meta["family"] == "recurrent" and s.meta["session_index"] == i
        assert len(s.meta["unit_channels"]) == s.n_units


def test_values_within_the_documented_ranges(small):
    for s in small:
        rate = s.spikes.mean() / s.bin_size
        assert 2.0 < rate < 40.0  # Hz, around baseline_rate_hz (8)
        speed = np.linalg.norm(s.velocity, axis=1)
        assert 10.0 < np.percentile(speed, 95) < 120.0  # cm/s: reaching, not jitter or jumps
        assert np.isfinite(s.lfp).all() and np.isfinite(s.velocity).all()
        for name, (lo, hi, _) in BRAIN_RANGES.items():
            assert lo <= s.meta["brain"][name] <= hi, name
    # session-to-session drift: some units carried over (same id), some replaced
    for a, b in zip(small, small[1:], strict=False):
        kept = len(set(a.unit_ids) & set(b.unit_ids)) / a.n_units
        assert 0.4 < kept < 0.9
    assert small[0].meta["array_offset_mm"] == [0.0, 0.0]
    assert small[1].meta["array_offset_mm"] != [0.0, 0.0]
    for seed in range(40):
        brain = draw_brain(seed)
        assert all(lo <= brain[k] <= hi for k, (lo, hi, _) in BRAIN_RANGES.items())
        d = draw_variant(seed, family="recurrent")
        assert all(r.contains(d[r.field]) for r in RECURRENT_VARIANT_RANGES)
        cfg = resolve_random(SimConfig(family="recurrent", variant="random", seed=seed))
        assert cfg.family == "recurrent" and cfg.units_min <= cfg.units_max
        assert cfg.drawn_from == f"random variant, seed {seed}"
    # the kinematic family's draws are its own (same seed, other stream and ranges)
    assert set(draw_variant(3)) == {r.field for r in VARIANT_RANGES}
    assert draw_variant(3, family="recurrent")["units_min"] != draw_variant(3)["units_min"]


def test_array_layout():
    pos = array_positions(96)
    assert pos.shape == (96, 2) and np.allclose(pos.max(0), 3.6)
    assert len({tuple(p) for p in pos.round(6)}) == 96


def test_options_the_family_does_not_have_are_refused():
    with pytest.raises(ConfigError, match="path: fast"):
        simulate_sessions(SimConfig(family="recurrent", path="raw", seconds=20.0))
    with pytest.raises(ConfigError, match="chronic"):
        simulate_sessions(SimConfig(family="recurrent", seconds=20.0,
                                    chronic={"unit_loss": 0.1}))


def test_kinematic_family_unchanged():
    """The default family gives what it gave before the recurrent family existed (fingerprint
    computed on the code before the change: integer arrays exactly, floats to 1e-5)."""
    cfg = SimConfig(n_sessions=2, seconds=20.0, seed=3, n_channels=16, units_min=10,
                    units_max=20, n_hidden=200)
    assert "family" not in cfg.model_dump()  # config (and store / cache) hashes unchanged
    h = hashlib.sha256()
    vals = []
    for s in simulate_sessions(cfg):
        for a in (s.spikes, s.segments, s.trials):
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        h.update(repr((s.name, s.unit_ids, s.channel_ids, s.bin_size)).encode())
        idx = [0, 517, 1003, 1999]
        vals += [float(s.lfp[i, c]) for i in idx for c in (0, 7)]
        vals += [float(s.velocity[i, 1]) for i in idx]
        vals += [float(np.abs(s.latents).sum())]
    assert h.hexdigest() == "466ca15fd3241aedea3cb360731a644690d4818fc8f110e25f38d1892ab85a3d"
    before = [-2.10169, -0.640079, 0.744774, -0.875824, 0.097116, 0.910946, -2.195674, -0.619088,
              -0.248753, 15.116874, -0.936529, -0.702432, 15477.599609, 0.190586, -0.899451,
              0.281673, 0.325401, 0.31976, 0.704702, -0.649002, -1.217209, 0.108448, -0.221465,
              20.900881, -16.263374, 16342.513672]
    np.testing.assert_allclose(vals, before, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_calibrated_development_variant_lands_in_the_bands():
    """Development variant 90 (not a pre-registered seed) with the factors its calibration
    found (benchmarks/calibrate_simulator.py --family recurrent --variant calibrated --seed 90)
    decodes within every calibration band on its 200 s calibration session."""
    drawn = resolve_random(SimConfig(family="recurrent", variant="random", seed=90,
                                     n_sessions=1, seconds=200.0))
    # calibration steps: lfp.lmp and lfp.broadband x2, x4, then broadband back to x2.83
    cfg = scaled(drawn, {"spikes": 1.0, "raw_lfp": 4.0, "lmp_bp": math.sqrt(8.0)})
    r2 = calibration_r2(simulate_sessions(cfg)[0])
    for k, (lo, hi) in CALIBRATION_BANDS.items():
        assert lo <= r2[k] <= hi, (k, r2[k])
