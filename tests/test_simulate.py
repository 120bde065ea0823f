"""Tests of the built-in simulator (lfpdistill.simulate)."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
from scipy import signal

from lfpdistill.evaluation import WienerDecoder, band_power_features, r2_mean
from lfpdistill.session import Session
from lfpdistill.simulate import SimConfig, electrode_grid, simulate_sessions

# Fixed ridge penalties (about the CV optimum of each input) keep these tests fast.
ALPHA = {"spikes": 1.0, "lfp": 0.1, "bp": 3.0}


def _decode(X: np.ndarray, Y: np.ndarray, kind: str) -> float:
    """Contiguous 80/20 split, Wiener filter (10 lags x 20 ms), test R^2."""
    T = len(Y)
    train = np.arange(T) < int(0.8 * T)
    dec = WienerDecoder(integrate=kind == "spikes", alphas=(ALPHA[kind],)).fit(X, Y, train)
    return r2_mean(Y[~train], dec.predict(X, ~train))


@pytest.fixture(scope="module")
def small() -> list[Session]:
    cfg = SimConfig(n_sessions=2, seconds=120, seed=3, n_channels=32)
    return simulate_sessions(cfg)


def test_electrode_grid_utah_layout():
    pos = electrode_grid(96)
    assert pos.shape == (96, 2)
    assert np.allclose(pos.min(axis=0), 0.0) and np.allclose(pos.max(axis=0), 3.6)
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1)) + np.eye(96) * 99
    assert np.isclose(d.min(), 0.4)
    corners = {(0.0, 0.0), (3.6, 0.0), (0.0, 3.6), (3.6, 3.6)}
    assert not corners & {tuple(np.round(p, 6)) for p in pos}


def test_shapes_dtypes_and_meta(small):
    cfg = SimConfig(n_sessions=2, seconds=120, seed=3, n_channels=32)
    for i, s in enumerate(small):
        T = 12000
        assert s.name == f"sim{i:02d}" and s.subject == "sim"
        assert s.velocity.shape == (T, 2) and s.velocity.dtype == np.float32
        assert s.spikes.dtype == np.int32 and s.spikes.shape[0] == T
        assert 100 <= s.n_units <= 200
        assert s.lfp.shape == (T, 32) and s.lfp.dtype == np.float32
        np.testing.assert_allclose(s.lfp.mean(axis=0), 0.0, atol=1e-3)
        np.testing.assert_allclose(s.lfp.std(axis=0), 1.0, atol=1e-3)
        assert s.latents.shape == (T, len(cfg.latent_names))
        assert s.meta["latent_names"] == cfg.latent_names
        assert s.electrode_positions.shape == (32, 2)
        assert len(s.unit_ids) == s.n_units and len(s.meta["unit_channels"]) == s.n_units
        assert s.trials.ndim == 2 and len(s.trials) > 50
        assert (np.diff(s.trials[:, 0]) > 0).all()
        for key in ("task", "seed", "path", "degradation", "session_index", "velocity_units"):
            assert key in s.meta
        assert s.meta["session_index"] == i and s.meta["velocity_units"] == "cm/s"
        assert s.split_mask("train").mean() == pytest.approx(0.8, abs=0.05)
        # behaviour in a plausible range (cm/s), firing rates around the baseline
        assert 3.0 < float(s.velocity.std()) < 30.0
        rates = s.spikes.mean(axis=0) / s.bin_size
        assert 4.0 < float(np.median(rates)) < 20.0
    # the latents lead the velocity by lead_s: latent vx at t matches velocity at t + lead
    s = small[0]
    lead = int(round(cfg.lead_s / cfg.bin_size))
    c = np.corrcoef(s.latents[:-lead, 0], s.velocity[lead:, 0])[0, 1]
    assert c > 0.99


def test_deterministic_and_seed_dependent():
    cfg = SimConfig(n_sessions=2, seconds=20, seed=5, n_channels=16, segment_s=2.0)
    a = simulate_sessions(cfg)
    b = simulate_sessions(cfg)
    c = simulate_sessions(cfg.model_copy(update={"seed": 6}))
    for sa, sb, sc in zip(a, b, c, strict=True):
        for field in ("spikes", "lfp", "velocity", "latents", "trials", "segments",
                      "electrode_positions"):
            np.testing.assert_array_equal(getattr(sa, field), getattr(sb, field))
        assert sa.unit_ids == sb.unit_ids
        assert not np.array_equal(sa.velocity, sc.velocity)
        assert not np.array_equal(sa.lfp, sc.lfp)
    assert not np.array_equal(a[0].lfp, a[1].lfp)


def test_center_out_task():
    s = simulate_sessions(SimConfig(n_sessions=1, seconds=30, task="center_out",
                                    n_channels=8, segment_s=None))[0]
    assert s.meta["task"] == "center_out" and s.segments is None
    # out-and-back reaches: directions of outward reaches fall on 8 angles
    pos = np.cumsum(s.velocity.astype(np.float64), axis=0) * s.bin_size
    ends = pos[s.trials[::2, 1] - 1] - pos[s.trials[::2, 0]]
    ang = np.degrees(np.arctan2(ends[:, 1], ends[:, 0])) % 45
    assert np.mean(np.minimum(ang, 45 - ang) < 8) > 0.8


def test_spikes_decode_far_better_than_raw_lfp_and_features_help(small):
    r_spk, r_raw, r_bp = [], [], []
    for s in small:
        r_spk.append(_decode(s.spikes, s.velocity, "spikes"))
        r_raw.append(_decode(s.lfp, s.velocity, "lfp"))
        r_bp.append(_decode(band_power_features(s.lfp), s.velocity, "bp"))
    spk, raw, bp = np.mean(r_spk), np.mean(r_raw), np.mean(r_bp)
    assert spk > 0.5
    assert spk - raw > 0.2  # spikes clearly better than a linear read-out of the LFP
    assert raw > 0.0
    assert bp - raw > 0.05  # LMP + band power carries more than the raw LFP


def test_units_drift_between_sessions():
    ss = simulate_sessions(SimConfig(n_sessions=4, seconds=20, n_channels=8, segment_s=2.0))
    ids = [set(s.unit_ids) for s in ss]
    for a, b in zip(ids[:-1], ids[1:], strict=True):
        shared = len(a & b) / min(len(a), len(b))
        assert 0.5 < shared < 1.0  # a majority carried over, not all
    assert len(ids[0] & ids[3]) < len(ids[0] & ids[1])


def test_degradation_hits_spikes_not_lfp():
    base = SimConfig(n_sessions=5, seconds=90, n_channels=8, segment_s=5.0)
    good = simulate_sessions(base)
    bad = simulate_sessions(base.model_copy(update={"degradation": 0.15}))
    for g, b in zip(good, bad, strict=True):
        np.testing.assert_array_equal(g.lfp, b.lfp)  # the LFP does not degrade
        np.testing.assert_array_equal(g.velocity, b.velocity)
    assert [s.n_units for s in bad][-1] < good[4].n_units
    assert bad[4].meta["tuning_scale"] == pytest.approx(0.85**4)
    r_good = _decode(good[4].spikes, good[4].velocity, "spikes")
    r_bad = _decode(bad[4].spikes, bad[4].velocity, "spikes")
    r_first = _decode(bad[0].spikes, bad[0].velocity, "spikes")
    assert r_bad < r_good - 0.15
    assert r_bad < r_first - 0.15


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units_min": 150, "units_max": 120}, "units_min"),
        ({"raw_fs": 500.0}, "raw_fs"),
        ({"degradation": 0.9}, "degradation"),
        ({"task": "maze"}, "task"),
        ({"n_sesions": 3}, "n_sesions"),
        ({"seconds": 10.0}, "segment_s"),
        ({"lfp": {"knee_hz": (20.0, 5.0)}}, "knee_hz"),
    ],
)
def test_bad_config_rejected(kwargs, match):
    with pytest.raises(pydantic.ValidationError, match=match):
        SimConfig(**kwargs)


def test_raw_path_runs_real_chain():
    cfg = SimConfig(n_sessions=1, seconds=60, n_channels=8, path="raw", segment_s=5.0)
    s = simulate_sessions(cfg)[0]
    fast = simulate_sessions(cfg.model_copy(update={"path": "fast"}))[0]
    assert s.lfp.shape == fast.lfp.shape and s.lfp.dtype == np.float32
    np.testing.assert_array_equal(s.spikes, fast.spikes)  # shared streams
    np.testing.assert_array_equal(s.velocity, fast.velocity)
    np.testing.assert_allclose(s.lfp.std(axis=0), 1.0, atol=1e-3)
    assert s.meta["path"] == "raw"
    # same spectrum as the fast path (the chain's pass band is what the fast path imitates)
    f, p_raw = signal.welch(s.lfp, fs=100.0, nperseg=256, axis=0)
    _, p_fast = signal.welch(fast.lfp, fs=100.0, nperseg=256, axis=0)
    for lo, hi in ((0.5, 4), (4, 13), (13, 30), (30, 45)):
        m = (f >= lo) & (f < hi)
        assert p_raw[m].mean() / p_fast[m].mean() == pytest.approx(1.0, abs=0.15)
    # beta and LMP are shared components: with the noise switched off the paths coincide
    quiet = {"background": 0.0, "white": 0.0, "broadband": 0.0, "spiking": 0.0, "common": 0.0}
    cfg_q = cfg.model_copy(update={"lfp": cfg.lfp.model_copy(update=quiet)})
    q_raw = simulate_sessions(cfg_q)[0].lfp
    q_fast = simulate_sessions(cfg_q.model_copy(update={"path": "fast"}))[0].lfp
    c = np.mean([np.corrcoef(q_raw[100:-100, i], q_fast[100:-100, i])[0, 1] for i in range(8)])
    assert c > 0.95


@pytest.mark.slow
def test_raw_and_fast_paths_decode_alike():
    kw = dict(n_sessions=2, seconds=150, seed=1, n_channels=32)
    fast = simulate_sessions(SimConfig(**kw))
    raw = simulate_sessions(SimConfig(path="raw", **kw))
    d_raw, d_bp = [], []
    for f, r in zip(fast, raw, strict=True):
        d_raw.append(_decode(r.lfp, r.velocity, "lfp") - _decode(f.lfp, f.velocity, "lfp"))
        d_bp.append(_decode(band_power_features(r.lfp), r.velocity, "bp")
                    - _decode(band_power_features(f.lfp), f.velocity, "bp"))
    assert abs(np.mean(d_raw)) < 0.06
    assert abs(np.mean(d_bp)) < 0.06


# ---------------------------------------------------------------------------- variants
def test_variant_draws_are_deterministic_and_inside_the_documented_ranges():
    from lfpdistill.simulate import VARIANT_RANGES, draw_variant, resolve_variant

    ranges = {r.field: r for r in VARIANT_RANGES}
    seen_tasks = set()
    for seed in range(40):
        d = draw_variant(seed)
        assert d == draw_variant(seed)
        for name, value in d.items():
            assert ranges[name].contains(value), (seed, name, value)
        cfg = resolve_variant(SimConfig(variant="random", seed=seed, n_sessions=3, seconds=30))
        assert cfg == resolve_variant(SimConfig(variant="random", seed=seed, n_sessions=3,
                                                seconds=30))
        assert cfg.units_max - cfg.units_min == d["units_width"] and cfg.lead_s == d["lead_s"]
        small = resolve_variant(SimConfig(variant="random", seed=seed, n_hidden=150, units_min=10,
                                          units_max=75))
        assert small.units_min <= small.units_max <= 75
        assert cfg.lfp.exponent == d["lfp.exponent"] and cfg.n_sessions == 3
        assert cfg.drawn_from == f"random variant, seed {seed}" and cfg.variant == "default"
        seen_tasks.add(cfg.task)
    assert seen_tasks == {"random_target", "center_out"}
    assert draw_variant(0) != draw_variant(1)
    default = SimConfig(seed=5)
    assert resolve_variant(default) is default


def test_variant_sessions_are_reproducible():
    cfg = SimConfig(variant="random", seed=3, n_sessions=1, seconds=20, n_hidden=400,
                    segment_s=None)
    a, b = simulate_sessions(cfg)[0], simulate_sessions(cfg)[0]
    assert np.array_equal(a.spikes, b.spikes) and np.array_equal(a.lfp, b.lfp)
    other = simulate_sessions(cfg.model_copy(update={"seed": 4}))[0]
    assert a.spikes.shape[1] != other.spikes.shape[1] or not np.array_equal(a.lfp, other.lfp)


def test_simulate_command_records_the_drawn_variant(tmp_path, capsys):
    import json

    from tests.conftest import cli_error

    from lfpdistill.cli import main

    assert main(["simulate", "--out", str(tmp_path / "v"), "--sessions", "1", "--seconds", "20",
                 "--seed", "3", "--variant", "random", "--segment-s", "2"]) == 0
    opts = json.loads((tmp_path / "v" / "manifest.json").read_text())["options"]["simulate"]
    assert opts["drawn_from"] == "random variant, seed 3" and opts["variant"] == "default"
    cli_error(capsys, ["simulate", "--out", tmp_path / "w", "--variant", "bogus"],
              "Invalid value for '--variant': 'bogus' is not one of 'default', 'random', "
              "'calibrated'", code=2)


# ---------------------------------------------------------------------- calibrated variants
def test_calibration_search_brackets_each_band_on_monotone_measures():
    """The search moves each factor by its own band, also when the measures are coupled."""
    from lfpdistill.simulate import CALIBRATION_BANDS, calibrate

    def measure(f):  # R^2 rising with log-amplitude, each measure also moved by another factor
        sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
        return {"spikes": sig(np.log(f["spikes"]) - 1.2),
                "raw_lfp": sig(np.log(f["raw_lfp"]) + 0.3 * np.log(f["spikes"]) + 2.5) - 0.6,
                "lmp_bp": sig(np.log(f["lmp_bp"]) + 0.5 * np.log(f["raw_lfp"]) - 2.0)}

    res = calibrate(measure, max_iter=25)
    assert res["inside"] and res["iterations"] < 25
    for k, (a, b) in CALIBRATION_BANDS.items():
        assert a <= res["r2"][k] <= b and res["r2"][k] == measure(res["factors"])[k]
    # a band no factor within the bounds can reach: the search stops at max_iter, not inside
    res = calibrate(lambda f: {"spikes": 0.1, "raw_lfp": 0.3, "lmp_bp": 0.5}, max_iter=6)
    # (once the factor sits at its limit, measuring again would repeat the same numbers)
    assert not res["inside"] and res["iterations"] == 4 and res["factors"]["spikes"] == 8.0
    assert res["factors"]["raw_lfp"] == res["factors"]["lmp_bp"] == 1.0


def test_calibration_search_drops_a_bracket_the_other_factors_made_stale():
    """Variant 307's shape: LMP + band power also rises with the LMP amplitude, so the broadband
    factor's lower bracket (seen at the LMP's first value) goes stale once the LMP doubled. The
    search steps past it instead of creeping towards it; with the other factors unchanged, a
    narrow bracket of a steep measure is kept."""
    from lfpdistill.simulate import calibrate

    def coupled(f):
        return {"spikes": min(0.15 * f["spikes"], 0.7), "raw_lfp": 0.19 * f["raw_lfp"],
                "lmp_bp": 0.25 * f["raw_lfp"] ** 1.5 * f["lmp_bp"] ** 0.3}

    res = calibrate(coupled)
    assert res["inside"] and res["iterations"] == 6 and res["factors"]["lmp_bp"] < 1.0
    # without the stale test (a ratio no bracket is below) the search creeps and misses
    assert not calibrate(coupled, stale_ratio=1.0)["inside"]

    asked = []

    def steep(f):  # only the broadband factor moves its measure, steeply: the band is narrow
        asked.append(f["lmp_bp"])
        return {"spikes": 0.7, "raw_lfp": 0.3, "lmp_bp": 0.525 + 20 * np.log(f["lmp_bp"] / 1.05)}

    res = calibrate(steep, max_iter=12)
    assert res["inside"] and min(asked[1:]) > 1.0  # bisected inside [1, 2], never stepped out


def test_calibrated_variant_keeps_its_draw_and_scales_three_amplitudes():
    from lfpdistill.simulate import calibrate_variant, resolve_variant, simulate_sessions

    base = dict(seed=7, n_sessions=2, seconds=30, n_hidden=300, units_min=20, units_max=40,
                n_channels=8)
    drawn = resolve_variant(SimConfig(variant="random", **base))
    a = calibrate_variant(drawn, simulate_sessions, seconds=20, max_iter=2, progress=False)
    c = a.calibration
    assert c.iterations <= 2 and (c.iterations == 2 or c.inside or c.factors != {})
    assert set(c.r2) == {"spikes", "raw_lfp", "lmp_bp"} and c.seconds == 20
    f = c.factors
    assert a.lfp.lmp == pytest.approx(drawn.lfp.lmp * f["lfp.lmp"], rel=1e-3)
    assert a.lfp.broadband == pytest.approx(drawn.lfp.broadband * f["lfp.broadband"], rel=1e-3)
    assert a.tuning_depth[1] == pytest.approx(drawn.tuning_depth[1] * f["tuning_depth"], rel=1e-3)
    # everything else is the random draw's
    skip = {"tuning_depth", "lfp", "calibration"}
    assert {k: v for k, v in a.model_dump().items() if k not in skip} == \
        {k: v for k, v in drawn.model_dump().items() if k not in skip}
    assert a.lfp.model_dump(exclude={"lmp", "broadband"}) == \
        drawn.lfp.model_dump(exclude={"lmp", "broadband"})
    assert a.drawn_from == "random variant, seed 7" and a.n_sessions == 2 and a.seconds == 30


def _fake_calibration(cfg, simulate, **kw):
    """Stands in for the minutes-long calibration: scales LMP by 2, reports it missed a band."""
    from lfpdistill.simulate.calibration import scaled

    assert simulate.__name__ == "simulate_sessions"
    out = scaled(cfg, {"raw_lfp": 2.0})
    record = {"factors": {"tuning_depth": 1.0, "lfp.lmp": 2.0, "lfp.broadband": 1.0},
              "r2": {"spikes": 0.7, "raw_lfp": 0.3, "lmp_bp": 0.3}, "inside": False,
              "iterations": 8, "bands": {"spikes": [0.6, 0.8]}, "seconds": 200.0}
    return SimConfig(**{**out.model_dump(), "calibration": record})


def test_calibrated_variant_is_the_random_draw_calibrated(monkeypatch):
    from lfpdistill.simulate import generator, resolve_variant

    monkeypatch.setattr(generator, "calibrate_variant", _fake_calibration)
    cal = resolve_variant(SimConfig(variant="calibrated", seed=5, n_sessions=2, seconds=30))
    rnd = resolve_variant(SimConfig(variant="random", seed=5, n_sessions=2, seconds=30))
    assert cal.drawn_from == "calibrated variant, seed 5" and cal.variant == "default"
    assert cal.lfp.lmp == pytest.approx(2 * rnd.lfp.lmp) and cal.units_min == rnd.units_min
    assert resolve_variant(cal) is cal  # a resolved config is final
    # a stale record does not survive a new draw
    redrawn = resolve_variant(SimConfig(**{**cal.model_dump(), "variant": "random"}))
    assert redrawn.calibration is None
    with pytest.raises(pydantic.ValidationError):
        SimConfig(calibration={"inside": True})  # a malformed record is refused


def test_simulate_command_records_the_calibration(tmp_path, capsys, monkeypatch):
    import json

    from lfpdistill.cli import main
    from lfpdistill.simulate import generator

    monkeypatch.setattr(generator, "calibrate_variant", _fake_calibration)
    assert main(["simulate", "--out", str(tmp_path / "c"), "--sessions", "1", "--seconds", "20",
                 "--seed", "3", "--variant", "calibrated", "--segment-s", "2"]) == 0
    out = capsys.readouterr().out
    assert "NOT inside the calibration bands" in out and "lfp.lmp x2.00" in out
    opts = json.loads((tmp_path / "c" / "manifest.json").read_text())["options"]["simulate"]
    assert opts["calibration"]["inside"] is False and opts["drawn_from"] == "calibrated variant, seed 3"


def test_a_study_warns_when_its_calibrated_variant_missed_the_bands(tmp_path, capsys, monkeypatch):
    from lfpdistill.data import open_store
    from lfpdistill.simulate import generator
    from lfpdistill.study import units

    monkeypatch.setattr(generator, "calibrate_variant", _fake_calibration)
    units.simulate_store(tmp_path, SimConfig(variant="calibrated", seed=4, n_sessions=1, seconds=20,
                                             n_hidden=200, units_min=10, units_max=20,
                                             segment_s=2.0), segment_s=2.0, split_seed=0)
    err = capsys.readouterr().err
    assert "warning: calibrated variant, seed 4: NOT inside the calibration bands" in err
    assert open_store(tmp_path / "store").manifest["options"]["simulate"]["calibration"]["inside"] is False


def test_calibration_r2_refuses_an_unknown_column():
    from lfpdistill.simulate import calibration_r2

    with pytest.raises(ValueError, match="unknown calibration column"):
        calibration_r2(None, ["spikes", "bogus"])  # refused before the session is read
