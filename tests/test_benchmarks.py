"""Tests of the benchmark scripts' own logic (the benchmarks themselves are not run here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lfpdistill.config import SimConfig

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_robustness_calibrates_a_variant_once_and_skips_one_outside_the_bands(tmp_path, monkeypatch):
    rob = _load("robustness")
    calls = []

    def fake_resolve(cfg: SimConfig) -> SimConfig:
        calls.append(cfg)
        inside = cfg.seed != 301
        return SimConfig(**{**cfg.model_dump(), "variant": "default",
                            "drawn_from": f"calibrated variant, seed {cfg.seed}",
                            "calibration": {"inside": inside, "iterations": 8,
                                            "r2": {"spikes": 0.7, "raw_lfp": 0.1, "lmp_bp": 0.5},
                                            "factors": {}, "bands": {}, "seconds": 200.0}})

    monkeypatch.setattr(rob, "resolve_variant", fake_resolve)
    base = {"name": "demo", "data": {"simulate": {"n_sessions": 3, "seconds": 30, "seed": 0}},
            "sessions": {"teacher": ["sim00", "sim01"], "distill": ["sim00"], "heldout": ["sim02"]}}
    cfg = rob.variant_config(base, 300, tmp_path / "v300", [0], False, {}, "calibrated")
    assert cfg.data.simulate.calibration.inside and cfg.data.simulate.seed == 300
    assert cfg.data.simulate.n_sessions == 3 and cfg.data.simulate.variant == "default"
    assert len(calls) == 1 and calls[0].variant == "calibrated" and calls[0].seconds == 30
    saved = json.loads((tmp_path / "v300" / "calibrated.json").read_text())
    assert saved["request"]["seed"] == 300
    # the second time it is read back, not calibrated again; a changed request is recalibrated
    rob.variant_config(base, 300, tmp_path / "v300", [0], False, {}, "calibrated")
    assert len(calls) == 1
    base["data"]["simulate"]["seconds"] = 40
    rob.variant_config(base, 300, tmp_path / "v300", [0], False, {}, "calibrated")
    assert len(calls) == 2
    # random variants never calibrate
    cfg = rob.variant_config(base, 300, tmp_path / "r300", [0], False, {}, "random")
    assert cfg.data.simulate.variant == "random" and len(calls) == 2
    # --family: the simulator family, in the calibration request and in the drawn config
    cfg = rob.variant_config(base, 700, tmp_path / "f700", [0], False, {}, "calibrated", "recurrent")
    assert calls[-1].family == "recurrent" and cfg.data.simulate.family == "recurrent"
    cfg = rob.variant_config(base, 700, tmp_path / "fr700", [0], False, {}, "random", "recurrent")
    assert cfg.data.simulate.family == "recurrent" and "family" not in base["data"]["simulate"]
    # a variant outside the bands is skipped and named; nothing is run for it
    ran = []
    monkeypatch.setattr(rob, "run_experiment", lambda c: ran.append(c))
    cfg_path = tmp_path / "base.yaml"
    cfg_path.write_text(json.dumps(base))
    assert rob.main(["--variants", "301", "--variant", "calibrated", "--config", str(cfg_path),
                     "--out", str(tmp_path / "out"), "--tag", "t"]) == 0
    assert ran == []
    md = (tmp_path / "out" / "t.md").read_text()
    assert "variants: calibrated" in md and "301 (spikes 0.700" in md
    assert "No variant was run." in md
    assert json.loads((tmp_path / "out" / "t.json").read_text())["not_calibrated"]["301"]["inside"] is False
    # --max-variants: the first N variants that reach the bands are run, then it stops
    monkeypatch.setattr(rob, "variant_summary", lambda r: {"gain": 0.0, "share": None,
                                                            "distilled_wiener_minus_best_classic": 0.0})
    monkeypatch.setattr(rob, "write_summary", lambda *a: "")
    assert rob.main(["--variants", "300-305", "--variant", "calibrated", "--config", str(cfg_path),
                     "--out", str(tmp_path / "out2"), "--max-variants", "2"]) == 0
    assert [c.data.simulate.seed for c in ran] == [300, 302]


def test_robustness_refuses_simulation_overrides_for_calibrated_variants(tmp_path, capsys):
    import pytest

    rob = _load("robustness")
    with pytest.raises(SystemExit) as e:
        rob.main(["--variants", "300", "--variant", "calibrated", "--out", str(tmp_path),
                  "--set", "data.simulate.n_channels=32"])
    assert e.value.code == 2 and "cannot be combined with --variant calibrated" in capsys.readouterr().err


def test_robustness_reports_an_output_folder_in_use_in_one_line(tmp_path, capsys):
    """Another process holds the variant's output folder: one line naming it and the fix, exit 3
    (a data/run problem, as in the CLI), not a traceback from inside the study."""
    import subprocess
    import sys

    rob = _load("robustness")
    folder = tmp_path / "out" / "v100"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lfpdistill.study.cache import lock_folder; "
         f"lock_folder({str(folder)!r}); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg_path = tmp_path / "base.yaml"
        cfg_path.write_text(json.dumps({
            "name": "demo", "data": {"simulate": {"n_sessions": 3, "seconds": 30, "seed": 0}},
            "sessions": {"teacher": ["sim00", "sim01"], "distill": ["sim00"],
                         "heldout": ["sim02"]}}))
        code = rob.main(["--variants", "100", "--config", str(cfg_path),
                         "--out", str(tmp_path / "out")])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1
    assert "is in use by another lfpdistill run" in err[0] and "v100" in err[0]


def test_robustness_reports_a_missing_config_in_one_line(tmp_path, capsys):
    rob = _load("robustness")
    code = rob.main(["--variants", "100", "--config", str(tmp_path / "nope.yaml"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope.yaml" in err[0] and err[0].startswith("error: ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code = rob.main(["--variants", "100", "--config", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.yaml' is not valid YAML" in err[0]
    # an override the config refuses: one line naming the variant and the fix, nothing trained
    code = rob.main(["--variants", "100", "--out", str(tmp_path / "out"),
                     "--set", "distill.objective.anchor_pcs=16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "variant 100's config" in err[0] and "use distill.anchor" in err[0]
    assert not (tmp_path / "out" / "v100" / "stages").exists()


def _variant_rows(distilled_a: float) -> list[dict]:
    """A variant's study rows: teacher, MS-LFP and the student on distilled session a (the
    student's probe ``distilled_a``), and the unseen session b."""

    def row(model, session, r2, ev="probe", mode=None):
        return {"model": model, "session": session, "eval": ev, "r2": r2, "mode": mode}

    return [row("teacher", "a", 0.7), row("ms_lfp", "a", 0.3), row("distilled", "a", distilled_a),
            row("distilled", "a", 0.6, "probe_wiener"), row("wiener_bandpower", "a", 0.4, "classic"),
            row("ms_lfp", "b", 0.2), row("distilled", "b", 0.25, mode="b")]


def test_robustness_names_the_student_each_variant_kept():
    rob = _load("robustness")

    rows = _variant_rows(0.5)
    choice = {"0": {"rule": "validation", "anchored": True, "plain_val": 0.31, "anchored_val": 0.42},
              "10": {"rule": "validation", "anchored": False, "plain_val": 0.5, "anchored_val": 0.4}}
    v = rob.variant_summary({"rows": rows, "roles": {"distill": ["a"], "heldout": ["b"]},
                             "anchor_choice": choice})
    assert v["anchor_choice"] == choice
    md = rob.markdown("t", {400: v}, rob.distribution({400: v}), {}, "calibrated")
    assert "| 400 | 0 | 0.310 | 0.420 | anchored |" in md
    assert md.index("| 400 | 0 |") < md.index("| 400 | 10 |")  # model seeds in number order
    plain_only = {**v, "anchor_choice": {"0": {"rule": "off", "anchored": False}}}
    assert "kept" not in rob.markdown("t", {400: plain_only}, rob.distribution({400: plain_only}), {})


def test_robustness_reports_alignment_and_the_deployable_decoder_against_the_bar():
    rob = _load("robustness")

    rows = _variant_rows(0.6)
    diag = {str(k): {"generalisation": {"val": val, "train": 0.5, "sessions": {"a": {}}}}
            for k, val in ((0, 0.1), (1, 0.3))}
    deploy = {"rows": [{"setting": "offline", "seed": 0, "session": "a", "group": "distilled",
                        "r2": 0.55, "classic_best_r2": 0.4},
                       {"setting": "offline", "seed": 0, "session": "b", "group": "unseen",
                        "r2": 0.35, "classic_best_r2": 0.4},
                       {"setting": "causal", "seed": 0, "session": "a", "group": "distilled",
                        "r2": 0.1, "classic_best_r2": 0.4}]}
    v = rob.variant_summary({"rows": rows, "roles": {"distill": ["a"], "heldout": ["b"]},
                             "diagnostics": diag, "deployable": deploy})
    assert v["val_alignment"] == pytest.approx(0.2) and v["train_alignment"] == pytest.approx(0.5)
    assert [d["session"] for d in v["deployable"]] == ["a", "b"]  # offline rows only
    dist = rob.distribution({420: v})
    assert dist["median_val_alignment"] == pytest.approx(0.2)
    assert dist["deployable_above_classic_sessions"] == 0.5
    verdict = dict(rob.bar(dist))
    assert verdict["median gain share >= 0.5 on them"] is True  # (0.6 - 0.3) / (0.7 - 0.3)
    (align,) = [ok for claim, ok in verdict.items() if claim.startswith("median validation")]
    (dep,) = [ok for claim, ok in verdict.items() if claim.startswith("the deployable")]
    assert align is False and dep is False  # 0.2 is not above 0.2; one session of two
    md = rob.markdown("t", {420: v}, dist, {}, "calibrated")
    assert "| 420 | +0.200 | +0.500 | — |" in md


def test_bench_classic_compares_times_and_penalties_and_refuses_different_runs():
    bench = _load("bench_classic")

    def run(t_bp: float, alpha_bp: float, r2_bp: float) -> dict:
        rows = [{"session": "sim00", "decoder": "features", "seconds": 0.5, "alpha": None,
                 "r2": None},
                {"session": "sim00", "decoder": "wiener_bandpower", "seconds": t_bp,
                 "alpha": alpha_bp, "r2": r2_bp},
                {"session": "sim00", "decoder": "kalman_bandpower", "seconds": 1.0,
                 "alpha": None, "r2": 0.3}]
        totals: dict[str, float] = {}
        for r in rows:
            totals[r["decoder"]] = totals.get(r["decoder"], 0.0) + r["seconds"]
        return {"rows": rows, "totals": totals}

    table = {r["decoder"]: r for r in bench.compare(run(20.0, 3.0, 0.5), run(10.0, 3.0, 0.5001))}
    assert table["wiener_bandpower"]["speedup"] == 2.0
    assert table["wiener_bandpower"]["same_alpha"] is True
    assert abs(table["wiener_bandpower"]["max_abs_r2_change"] - 1e-4) < 1e-12
    assert table["kalman_bandpower"]["same_alpha"] is None  # no penalty to compare
    assert table["total"]["old_s"] == 21.5 and table["total"]["new_s"] == 11.5
    assert table["total"]["same_alpha"] is True
    moved = {r["decoder"]: r for r in bench.compare(run(20.0, 3.0, 0.5), run(10.0, 10.0, 0.4))}
    assert moved["wiener_bandpower"]["same_alpha"] is False and moved["total"]["same_alpha"] is False
    other = run(10.0, 3.0, 0.5)
    other["rows"][1]["session"] = "sim01"
    with pytest.raises(ValueError, match="same sessions"):
        bench.compare(run(20.0, 3.0, 0.5), other)


def test_bench_study_gives_the_mean_seconds_per_unit_of_each_stage_that_ran():
    bench = _load("bench_study")
    results = {"stages": [{"stage": "distill", "unit": "seed0", "seconds": 100.0},
                          {"stage": "distill", "unit": "seed0-anchored", "seconds": 110.0},
                          {"stage": "teacher", "unit": "teacher", "status": "cached"},
                          {"stage": "classic", "unit": "classic", "seconds": 75.04}]}
    assert bench.unit_seconds(results) == {"distill": 105.0, "classic": 75.0}
    assert bench.unit_seconds({}) == {}


def test_bench_study_reads_a_finished_study_from_its_folder_or_file_and_refuses_others(tmp_path):
    bench = _load("bench_study")
    results = {"seconds": 12.5, "stages": [{"stage": "data", "unit": "d", "seconds": 1.0}]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert bench.read_results(tmp_path) == results
    assert bench.read_results(tmp_path / "results.json") == results
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    for bad, says in ((tmp_path / "missing", "not a finished study"),
                      (tmp_path / "other.json", "holds no stage times")):
        with pytest.raises(SystemExit) as e:
            bench.read_results(bad)
        assert says in str(e.value) and "\n" not in str(e.value)


def test_lfp_ceiling_fits_every_classic_decoder_on_growing_budgets(tmp_path, capsys):
    ceil = _load("lfp_ceiling")
    out = tmp_path / "rows.json"
    assert ceil.main(["--sessions", "1", "--seconds", "60", "--budgets", "10,30",
                      "--store", str(tmp_path / "store"), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["budget_s"], r["model"]) for r in rows} == {
        (b, m) for b in (10.0, 30.0)
        for m in ("wiener_spikes", "wiener_lfp", "wiener_bandpower", "kalman_bandpower")}
    assert all(np.isfinite(r["r2"]) and r["test_s"] > 0 for r in rows)
    assert "mean over sessions" in capsys.readouterr().out
    # a budget longer than the training bins: one error line, no traceback
    assert ceil.main(["--sessions", "1", "--seconds", "60", "--budgets", "500",
                      "--store", str(tmp_path / "store2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --budgets 500 s exceeds the") and "Traceback" not in err
