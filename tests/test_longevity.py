"""Longevity: the simulator's chronic degradation, the study's R²-against-day summary and claims,
and a tiny `lfpdistill run` of a longevity config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.conftest import shrink_config

from lfpdistill.cli import main
from lfpdistill.config import ExperimentConfig, SimChronicConfig, SimConfig
from lfpdistill.simulate import simulate_sessions
from lfpdistill.study.longevity import deployable_curve_rows, longevity_claims, summarise_longevity

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

SMALL = dict(n_sessions=5, seconds=12, seed=4, n_channels=16, units_min=40, units_max=50,
             n_hidden=400, segment_s=2.0)
CHRONIC = dict(interval_days=30, unit_loss=0.1, amplitude_loss=0.1, lfp_gain_drift=0.1,
               lfp_map_drift_deg=10)


@pytest.fixture(scope="module")
def pair():
    base = SimConfig(**SMALL)
    aged = SimConfig(**SMALL, chronic=SimChronicConfig(**CHRONIC))
    return simulate_sessions(base), simulate_sessions(aged)


def test_zero_degradation_is_the_simulator_without_it():
    a = simulate_sessions(SimConfig(**SMALL))
    b = simulate_sessions(SimConfig(**SMALL, chronic=SimChronicConfig(interval_days=7)))
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.spikes, y.spikes) and np.array_equal(x.lfp, y.lfp)
        assert x.unit_ids == y.unit_ids


def test_first_day_is_untouched_and_later_days_degrade(pair):
    base, aged = pair
    assert np.array_equal(base[0].spikes, aged[0].spikes)
    assert np.array_equal(base[0].lfp, aged[0].lfp)
    assert [s.meta["day"] for s in aged] == [0, 30, 60, 90, 120]
    det = [s.meta["mean_detection"] for s in aged]
    assert det[0] == 1.0 and all(b < a for a, b in zip(det, det[1:], strict=False))
    for s in range(1, len(aged)):
        assert aged[s].n_units < base[s].n_units  # lost units and units below threshold
        # and the units it keeps fire fewer detected spikes on average
        assert aged[s].spikes.mean() < base[s].spikes.mean()
    # the behaviour does not degrade; the LFP changes, slowly
    assert np.array_equal(base[-1].velocity, aged[-1].velocity)
    assert not np.array_equal(base[-1].lfp, aged[-1].lfp)
    r = np.corrcoef(base[-1].lfp.ravel(), aged[-1].lfp.ravel())[0, 1]
    assert r > 0.8


def test_degradation_is_deterministic(pair):
    _, aged = pair
    again = simulate_sessions(SimConfig(**SMALL, chronic=SimChronicConfig(**CHRONIC)))
    for x, y in zip(aged, again, strict=True):
        assert np.array_equal(x.spikes, y.spikes) and np.array_equal(x.lfp, y.lfp)


@pytest.mark.parametrize("field,value", [("unit_loss", 0.6), ("amplitude_loss", -0.1),
                                         ("lfp_map_drift_deg", 120), ("interval_days", 0)])
def test_chronic_config_rejects_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=field):
        SimChronicConfig(**{field: value})


def _row(model, session, ev, r2, seed=0, mode=None, group="unseen"):
    return {"model": model, "session": session, "eval": ev, "r2": r2, "seed": seed, "mode": mode,
            "group": group, "split": "test"}


def test_summary_orders_days_and_claims_find_the_crossing():
    days = {"d0": {"day": 0, "units": 100}, "d1": {"day": 60, "units": 80},
            "d2": {"day": 120, "units": 50}}
    rows = []
    for name, spk, dist in (("d0", 0.7, 0.4), ("d1", 0.45, 0.42), ("d2", 0.32, 0.41)):
        rows.append(_row("wiener_spikes", name, "classic", spk, seed=None))
        rows.append(_row("wiener_bandpower", name, "classic", 0.35, seed=None))
        rows.append(_row("kalman_bandpower", name, "classic", 0.30, seed=None))
        for seed, jitter in ((0, 0.01), (1, -0.01)):
            mode = None if name == "d0" else "b"
            rows.append(_row("distilled", name, "probe_wiener", dist + jitter, seed, mode))
            rows.append(_row("distilled", name, "probe", dist - 0.1, seed, mode))
    # a distilled mode (a) row on a later day must not count as the distilled model
    rows.append(_row("distilled", "d2", "probe_wiener", -5.0, 0, "a"))
    summary = summarise_longevity(rows, days, distilled=["d0"])
    assert [r["session"] for r in summary] == ["d0", "d1", "d2"]
    assert summary[2]["distilled_wiener"] == pytest.approx(0.41)
    assert summary[0]["best_classic_lfp"] == 0.35
    assert summary[0]["best_classic_name"] == "wiener_bandpower"
    checks = {c["claim"].split("(")[1].split(")")[0]: c for c in longevity_claims(summary)
              if "falls below" in c["claim"]}
    assert checks["Wiener read-out"]["pass"]
    assert checks["Wiener read-out"]["values"]["first_day"] == 120
    assert checks["Wiener read-out"]["values"]["stays_below_after"]
    assert not checks["linear probe"]["pass"]  # 0.31 never beats the spike decoder


def test_longevity_section_needs_later_days_mode_b_and_classic_decoders():
    base = {"sessions": {"teacher": ["a"], "distill": ["a"]}, "longevity": {"enabled": True}}
    with pytest.raises(ValueError, match="sessions.heldout"):
        ExperimentConfig(**base)
    with pytest.raises(ValueError, match="generalize.modes with b"):
        ExperimentConfig(**{**base, "sessions": {**base["sessions"], "heldout": ["b"]},
                            "generalize": {"modes": ["a"]}})
    ok = ExperimentConfig(**{**base, "sessions": {**base["sessions"], "heldout": ["b"]}})
    assert ok.longevity.enabled


@pytest.mark.slow
def test_deployable_curve_and_its_claim_count_days_against_each_days_best_classic():
    days = {f"d{k}": {"day": 60 * k, "units": 100 - k} for k in range(5)}
    rows = []
    for k, name in enumerate(days):
        rows.append(_row("wiener_bandpower", name, "classic", 0.40, seed=None))
        rows.append(_row("kalman_bandpower", name, "classic", 0.45 if k == 4 else 0.30, seed=None))
    # per seed and day what validation chose; a causal row never counts as the offline curve
    drows = [{"setting": "offline", "seed": seed, "session": name, "r2": 0.5 + 0.01 * seed}
             for seed in (0, 1) for name in days]
    drows[4]["r2"] = drows[9]["r2"] = 0.44  # day 240: below its best classic (0.45) on both seeds
    drows.append({"setting": "causal", "seed": 0, "session": "d1", "r2": -1.0})
    curve = deployable_curve_rows(drows)
    assert len(curve) == 10 and {r["eval"] for r in curve} == {"deployable_offline"}
    summary = summarise_longevity(rows + curve, days, distilled=["d0", "d1"])
    assert summary[1]["deployable"] == pytest.approx(0.505)
    assert summary[4]["best_classic_lfp"] == 0.45
    claim = next(c for c in longevity_claims(summary) if "deployable" in c["claim"])
    v = claim["values"]
    assert (v["days_at_or_above"], v["days"], v["days_needed"]) == (4, 5, 4)
    assert v["best_classic_later"] == pytest.approx((0.40 + 0.40 + 0.45) / 3)
    assert claim["pass"]
    drows[3]["r2"] = drows[8]["r2"] = 0.2  # a second losing day: 3 of 5 < 80 %
    summary = summarise_longevity(rows + deployable_curve_rows(drows), days, distilled=["d0"])
    assert not next(c for c in longevity_claims(summary) if "deployable" in c["claim"])["pass"]


def test_tiny_longevity_study_reports_r2_against_day(tmp_path):
    """configs/longevity.yaml itself (ten days, its chronic rates and roles), made tiny."""
    cfg = tmp_path / "longevity.yaml"
    cfg.write_text(yaml.safe_dump(shrink_config(CONFIGS / "longevity.yaml", tmp_path / "out")))
    assert main(["run", str(cfg)]) == 0
    out = tmp_path / "out"
    res = json.loads((out / "results.json").read_text())
    days = res["longevity"]["days"]
    assert [d["day"] for d in days] == [60 * k for k in range(10)]
    assert [d["phase"] for d in days] == ["distilled"] * 3 + ["later"] * 7
    assert days[-1]["units"] < days[0]["units"]
    for d in days:
        for key in ("spikes", "best_classic_lfp", "distilled_probe", "distilled_wiener",
                    "deployable"):
            assert np.isfinite(d[key])
    # the table's numbers are the summary's
    md = (out / "report.md").read_text()
    assert "## Longevity" in md and "longevity.png" in md
    assert f"{days[-1]['distilled_wiener']:.3f}" in md.split("## Longevity")[1]
    claims = [c["claim"] for c in res["checks"]]
    assert any("falls below the distilled LFP model (Wiener read-out)" in c for c in claims)
    assert any(c.startswith("Longevity: the deployable decoder") for c in claims)
    assert (out / "longevity.png").stat().st_size > 0


def test_simulate_command_takes_chronic_options(tmp_path, capsys):
    from lfpdistill.data import open_store

    out = tmp_path / "store"
    assert main(["simulate", "--out", str(out), "--sessions", "3", "--seconds", "12",
                 "--segment-s", "2", "--chronic", "interval_days=30",
                 "--chronic", "amplitude_loss=0.2"]) == 0
    store = open_store(out)
    days = [store.session(n).meta["day"] for n in store.names]
    assert days == [0, 30, 60]
    det = [store.session(n).meta["mean_detection"] for n in store.names]
    assert det[0] == 1.0 and det[2] < det[1] < 1.0
    assert main(["simulate", "--out", str(tmp_path / "bad"), "--sessions", "2", "--seconds", "12",
                 "--segment-s", "2", "--chronic", "unit_los=0.1"]) == 2
    err = capsys.readouterr().err
    assert "unit_los" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_trend_is_the_least_squares_slope_per_100_days():
    from lfpdistill.study.longevity import trends

    summary = [{"day": d, "spikes": 0.7 - 0.001 * d, "distilled_wiener": 0.4} for d in (0, 50, 200)]
    t = trends(summary)
    assert t["spikes"] == pytest.approx(-0.1) and t["distilled_wiener"] == pytest.approx(0.0)
    assert "best_classic_lfp" not in t
