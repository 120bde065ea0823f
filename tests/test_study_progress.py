"""The study's time-left estimate (elapsed + remaining per finished unit)."""

from __future__ import annotations

import pytest
from rich.console import Console

from lfpdistill.config import load_config
from lfpdistill.study.cache import Cache, clock
from lfpdistill.study.plan import Roles
from lfpdistill.study.runner import REFERENCE_UNIT_SECONDS, Study


def test_clock():
    assert clock(0) == "0:00"
    assert clock(83) == "1:23"
    assert clock(3725) == "1:02:05"


def test_seconds_left_uses_the_stage_mean_then_rescaled_references(tmp_path):
    cache = Cache(tmp_path, set(), Console(quiet=True), reference={"a": 10.0, "b": 100.0})
    assert cache.seconds_left() is None                     # nothing expected: no estimate
    cache.expect({"a": 3, "b": 2})
    assert cache.seconds_left() == pytest.approx(3 * 10 + 2 * 100)
    # one unit of a ran twice as slowly as its reference: a's mean and b's reference x 2
    cache.log.append({"stage": "a", "unit": "u0", "status": "ran", "seconds": 20.0})
    assert cache.seconds_left() == pytest.approx(2 * 20 + 2 * 200)
    # a cached unit counts as done and costs nothing
    cache.log.append({"stage": "a", "unit": "u1", "status": "cached"})
    assert cache.seconds_left() == pytest.approx(1 * 20 + 2 * 200)
    cache.log.append({"stage": "a", "unit": "u2", "status": "ran", "seconds": 40.0})
    cache.log.append({"stage": "b", "unit": "v0", "status": "ran", "seconds": 50.0})
    assert cache.seconds_left() == pytest.approx(50.0)     # b's own mean now
    cache.expect({"b": 1})                                  # a corrected count
    assert cache.seconds_left() == 0


def test_a_stage_without_reference_costs_nothing_until_it_runs(tmp_path):
    cache = Cache(tmp_path, set(), Console(quiet=True))
    cache.expect({"x": 2})
    assert cache.seconds_left() == 0
    cache.log.append({"stage": "x", "unit": "u0", "status": "ran", "seconds": 7.0})
    assert cache.seconds_left() == pytest.approx(7.0)


def test_expected_units_of_the_demo(tmp_path):
    cfg = load_config("configs/demo.yaml")
    study = Study(cfg, out=tmp_path, console=Console(quiet=True))
    roles = Roles(teacher=["sim00", "sim01", "sim02", "sim03"], distill=["sim00", "sim01"],
                  heldout=["sim04", "sim05"], ms_lfp=["sim00", "sim01", "sim02", "sim03"])
    assert study.expected_units(roles) == {
        "teacher": 1, "ss_lfp": 12, "ms_lfp": 3, "distill": 6, "choose": 3, "generalize": 12,
        "probe": 12, "finetune": 12, "classic": 1}  # a probe unit per model group and seed
    # every stage of the demo has a reference cost: none counts as free before it starts
    assert set(study.expected_units(roles)) <= set(REFERENCE_UNIT_SECONDS)
    # distill.anchor "validation": per seed a plain and an anchored student, and the choice
    cfg = cfg.model_copy(update={"causal": cfg.causal.model_copy(update={"enabled": True})})
    assert Study(cfg, out=tmp_path / "c", console=Console(quiet=True)).expected_units(roles)[
        "causal"] == 3 * (3 + 2 * 2)  # MS-LFP, student, read-outs (one unit); adaptations
    cfg = cfg.model_copy(update={"labels": cfg.labels.model_copy(update={"enabled": True})})
    assert Study(cfg, out=tmp_path / "l", console=Console(quiet=True)).expected_units(roles)[
        "labels"] == 3 + 1  # one read-out unit per seed, the classic decoders once
