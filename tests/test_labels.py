"""Label-efficiency study: which bins are labelled, and the config that asks for it."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import make_session

from lfpdistill.config import LabelsSection
from lfpdistill.errors import ConfigError
from lfpdistill.session import make_segments
from lfpdistill.study.labels import label_claims, label_mask, mask_sha, train_seconds


def split_session(T: int = 6000, seed: int = 0):
    s = make_session("a", T=T)
    s.segments = make_segments(T, s.bin_size, segment_s=5.0, seed=seed)
    return s


def test_label_mask_takes_exactly_the_budget_from_training_segments_only():
    s = split_session()
    train = s.split_mask("train")
    for sec in (0.5, 5.0, 12.3, train_seconds(s)):
        m = label_mask(s, sec, draw=0)
        assert m.sum() == round(sec / s.bin_size)
        assert not (m & ~train).any()  # never a validation or test bin
    assert label_mask(s, train_seconds(s), 0).sum() == train.sum()


def test_label_mask_is_deterministic_and_draws_differ():
    s = split_session()
    a, b = label_mask(s, 10, draw=0), label_mask(s, 10, draw=0)
    assert np.array_equal(a, b) and mask_sha(a) == mask_sha(b)
    assert mask_sha(label_mask(s, 10, draw=1)) != mask_sha(a)
    assert mask_sha(label_mask(s, 10, draw=0, seed=1)) != mask_sha(a)


def test_label_mask_refuses_a_budget_longer_than_the_training_bins():
    s = split_session()
    with pytest.raises(ConfigError, match=r"exceeds the \d+ s of training bins of session 'a'"):
        label_mask(s, train_seconds(s) + 5, 0)
    with pytest.raises(ConfigError, match="shorter than one bin"):
        label_mask(s, s.bin_size / 10, 0)


@pytest.mark.parametrize("seconds", [[], [10, 10], [20, 10], [0, 5], [-1], [float("nan")]])
def test_labels_config_rejects_bad_budgets(seconds):
    with pytest.raises(ValueError, match="labels.seconds"):
        LabelsSection(seconds=seconds)


def test_label_claims_find_the_smallest_winning_budget():
    def row(model, budget, mean, readout=None):
        return {"group": "distilled", "model": model, "readout": readout, "budget": budget,
                "mean": mean, "label": model}

    summary = [row("wiener_bandpower", b, m) for b, m in (("10", 0.1), ("20", 0.2), ("40", 0.4))]
    summary += [row("kalman_bandpower", b, 0.05) for b in ("10", "20", "40")]
    summary += [row("distilled", b, m, "wiener") for b, m in (("10", 0.05), ("20", 0.25),
                                                                ("40", 0.3))]
    got = {c["claim"]: c for c in label_claims(summary)}
    first = next(c for k, c in got.items() if "some labelled budget" in k)
    assert first["pass"] and first["values"]["smallest_seconds"] == 20.0
    at20 = next(c for k, c in got.items() if "20 s of labels" in k)
    assert at20["pass"] and at20["values"]["margin"] == pytest.approx(0.05)


def test_study_refuses_a_label_budget_longer_than_a_sessions_training_bins_before_training(
        tmp_path):
    from lfpdistill.config import ExperimentConfig
    from lfpdistill.data import open_store, write_store
    from lfpdistill.study.plan import resolve_roles
    from lfpdistill.study.runner import check_label_budgets

    write_store([make_session("a", T=3000), make_session("b", T=3000, seed=1)], tmp_path / "st")
    store = open_store(tmp_path / "st")
    cfg = ExperimentConfig(sessions={"teacher": ["a"], "distill": ["a"], "heldout": ["b"]},
                           labels={"enabled": True, "seconds": [5, 500]})
    with pytest.raises(ConfigError, match=r"labels.seconds lists 500 s but session 'a' has only "
                                          r"\d+ s of training bins"):
        check_label_budgets(cfg, store, resolve_roles(cfg, store))
    ok = cfg.model_copy(update={"labels": LabelsSection(enabled=True, seconds=[5, 10])})
    check_label_budgets(ok, store, resolve_roles(ok, store))


@pytest.mark.slow
def test_tiny_run_of_the_label_efficiency_config(tmp_path):
    """configs/label_efficiency.yaml itself (its sessions, budgets and draws), made tiny;
    sessions of 120 s keep its largest budget (80 s) within the ~96 s of training bins."""
    import json
    from pathlib import Path

    import yaml
    from tests.conftest import shrink_config

    from lfpdistill.cli import main

    path = Path(__file__).resolve().parents[1] / "configs" / "label_efficiency.yaml"
    cfg = tmp_path / "labels.yaml"
    cfg.write_text(yaml.safe_dump(shrink_config(path, tmp_path / "out", seconds=120.0)))
    assert main(["run", str(cfg)]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    budgets = {s["budget"] for s in res["labels"]["summary"]}
    assert budgets == {"10", "20", "40", "80", "all"}
    assert any("label efficiency" in c["claim"] for c in res["checks"])
    assert (tmp_path / "out" / "label_efficiency.png").exists()
