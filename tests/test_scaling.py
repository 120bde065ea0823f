"""Scaling: training on a budget of paired seconds, the scaling summary and claims, the checks
made before training, and a tiny `lfpdistill run` of a scaling config."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.conftest import ONE_EPOCH, TINY_LFP_MODEL, TINY_SPIKE_MODEL, shrink_config

from lfpdistill.cli import main
from lfpdistill.config import ScalingSection, SimConfig
from lfpdistill.data import WindowDataset
from lfpdistill.data.windows import budget_runs, runs_mask
from lfpdistill.errors import DataValidationError
from lfpdistill.simulate import simulate_sessions
from lfpdistill.study.scaling import scaling_claims, summarise_scaling

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def sessions():
    return simulate_sessions(SimConfig(n_sessions=2, seconds=60, n_channels=16, units_min=20,
                                       units_max=30, n_hidden=200, segment_s=2.0))


def test_budget_takes_exactly_that_many_training_bins(sessions):
    for s in sessions:
        for budget in (3.0, 10.0, 20.5):
            mask = runs_mask(budget_runs(s, "train", budget, seed=1), s.n_bins)
            assert mask.sum() == round(budget / s.bin_size)
            assert not (mask & ~s.split_mask("train")).any()  # never validation or test bins
        again = runs_mask(budget_runs(s, "train", 10.0, seed=1), s.n_bins)
        other = runs_mask(budget_runs(s, "train", 10.0, seed=2), s.n_bins)
        assert np.array_equal(mask_of(s, 10.0, 1), again) and not np.array_equal(again, other)
    full = runs_mask(budget_runs(sessions[0], "train"), sessions[0].n_bins)
    assert np.array_equal(full, sessions[0].split_mask("train"))


def mask_of(s, budget, seed):
    return runs_mask(budget_runs(s, "train", budget, seed=seed), s.n_bins)


def test_budgeted_windows_lie_in_the_budget(sessions):
    ds = WindowDataset(sessions, "train", 0.5, 0.25, budget_s=10.0, budget_seed=3)
    full = WindowDataset(sessions, "train", 0.5, 0.25)
    assert 0 < len(ds) < len(full)
    for i, start in ds.index:
        s = sessions[i]
        assert mask_of(s, 10.0, 3)[start:start + ds.window].all()


def test_a_budget_beyond_the_training_bins_is_refused(sessions):
    with pytest.raises(DataValidationError, match="lower train_seconds"):
        WindowDataset(sessions, "train", 0.5, budget_s=1000.0)


@pytest.mark.parametrize("key,value", [("paired_seconds", [40, 20]), ("paired_seconds", [0]),
                                       ("teacher_sessions", [2, 2])])
def test_scaling_config_rejects_bad_lists(key, value):
    with pytest.raises(ValueError, match=key):
        ScalingSection(**{key: value})


def _rows(model, ev, r2s, group="distilled", **tags):
    return [{"model": model, "eval": ev, "group": group, "session": f"s{i}", "seed": 0,
             "r2": r, **tags} for i, r in enumerate(r2s)]


def test_summary_closes_the_curves_with_the_studys_student_and_claims_read_it():
    scaling_rows = (_rows("distilled", "probe_wiener", [0.20, 0.22], axis="paired_seconds", x=20)
                    + _rows("distilled", "probe_wiener", [0.30, 0.34], axis="paired_seconds", x=80)
                    + _rows("distilled", "probe_wiener", [0.33, 0.35], axis="teacher_sessions",
                            x=2))
    rows = (_rows("distilled", "probe_wiener", [0.36, 0.40])
            + _rows("distilled", "probe_wiener", [-1.0], group="unseen")  # not a distilled session
            + _rows("ms_lfp", "probe_wiener", [0.25, 0.27])
            + _rows("wiener_bandpower", "classic", [0.3, 0.3])
            + _rows("kalman_bandpower", "classic", [0.1, 0.1]))
    summary = summarise_scaling(scaling_rows, rows, full_s=160.0, n_teacher=8)
    paired = [p for p in summary["points"] if p["axis"] == "paired_seconds"]
    assert [p["x"] for p in paired] == [20, 80, 160]
    assert paired[-1]["mean"] == pytest.approx(0.38)
    assert summary["refs"]["best_classic_lfp"] == pytest.approx(0.3)
    assert summary["refs"]["best_classic_name"] == "wiener_bandpower"
    rising = [c for c in scaling_claims(summary) if "still rising" in c["claim"]][0]
    assert rising["pass"] and rising["values"]["step"] == pytest.approx(0.06)
    beats = [c for c in scaling_claims(summary) if "beats MS-LFP" in c["claim"]][0]
    assert beats["values"]["smallest_seconds"] == 80  # 0.32 > 0.26; 0.21 is not
    teacher = [c for c in scaling_claims(summary) if "teacher sessions" in c["claim"]][0]
    assert teacher["pass"] and teacher["values"]["gain"] == pytest.approx(0.04)


TINY_SCALING = {
    "name": "tiny_scaling", "seeds": [0], "accelerator": "cpu",
    "data": {"simulate": {"n_sessions": 3, "seconds": 60, "seed": 0, "n_channels": 32,
                          "units_min": 30, "units_max": 40},
             "segment_s": 5.0},
    "sessions": {"teacher": ["sim00", "sim01", "sim02"], "distill": ["sim00"]},
    "teacher": {"model": TINY_SPIKE_MODEL, "train": ONE_EPOCH},
    "lfp_model": TINY_LFP_MODEL, "ss_lfp": ONE_EPOCH, "ms_lfp": ONE_EPOCH,
    "distill": {"train": ONE_EPOCH},
    "finetune": {"enabled": False},
    "scaling": {"enabled": True, "paired_seconds": [10, 20], "teacher_sessions": [1]},
}


def test_scaling_lists_are_checked_against_the_store_before_training(tmp_path, capsys):
    for bad, msg in (({"teacher_sessions": [3]}, "must lie in \\[1, 3\\)"),
                     ({"paired_seconds": [100]}, "only 50 s of training bins")):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump({**TINY_SCALING, "out": str(tmp_path / "o"),
                                       "scaling": {**TINY_SCALING["scaling"], **bad}}))
        assert main(["run", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert re.search(msg, err), err
        assert not (tmp_path / "o" / "stages" / "teacher").exists()


@pytest.mark.slow
def test_tiny_scaling_study_reports_both_curves(tmp_path):
    """configs/scaling.yaml itself (eight teacher sessions, its budgets and counts), made tiny;
    sessions of 120 s keep its largest budget (80 s) below the ~96 s of training bins."""
    cfg = tmp_path / "scaling.yaml"
    cfg.write_text(yaml.safe_dump(shrink_config(CONFIGS / "scaling.yaml", tmp_path / "out",
                                                seconds=120.0)))
    assert main(["run", str(cfg)]) == 0
    out = tmp_path / "out"
    res = json.loads((out / "results.json").read_text())
    sc = res["scaling"]
    paired = [p["x"] for p in sc["points"] if p["axis"] == "paired_seconds"
              and p["eval"] == "probe"]
    assert paired == [20, 40, 80, sc["full_seconds"]]
    teach = [p["x"] for p in sc["points"] if p["axis"] == "teacher_sessions"
             and p["eval"] == "probe"]
    assert teach == [2, 4, 8]
    # the budgeted students really trained on their budget, with the epochs scaled
    runs = sorted((out / "stages" / "scaling").glob("distill-paired20-seed0-*"))
    assert runs
    cfg_run = json.loads((runs[0] / "run_config.json").read_text())
    assert cfg_run["train"]["train_seconds"] == 20
    assert cfg_run["train"]["max_epochs"] == math.ceil(sc["full_seconds"] / 20)
    assert cfg_run["train"]["patience"] == cfg_run["train"]["max_epochs"]  # no early stop
    steps = {p["x"]: p["steps"] for p in sc["points"] if p["axis"] == "paired_seconds"}
    assert all(v is not None and v > 0 for v in steps.values())
    md = (out / "report.md").read_text()
    assert "## Scaling" in md and "scaling.png" in md
    assert any("still rising" in c["claim"] for c in res["checks"])
