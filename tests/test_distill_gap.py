"""The generalisation gap of distillation: validation numbers come from validation bins only,
the gap and the memorisation flag follow from them, and the study report shows them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfpdistill.commands.distill import (
    MEMORISATION_GAP,
    distillation_diagnostics,
    generalisation_gap,
    generalisation_summary,
)
from lfpdistill.session import Session, make_segments
from lfpdistill.study.report import diagnostics_markdown


class _Out:
    def __init__(self, latents: torch.Tensor) -> None:
        self.latents = latents


class _Identity(torch.nn.Module):
    """A 'student' whose latents are its input LFP (one latent per channel)."""

    def forward(self, x, sessions, widths, reconstruct=False):  # noqa: ARG002
        return _Out(x)


class _Module(torch.nn.Module):
    """The parts of a DistillModule the diagnostics read: identity normalise and projection."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _Identity()
        self.teacher = _Identity()
        self.t_basis = None
        self.anchor_proj = None
        self.anchor_targets = None

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def proj(self, z: torch.Tensor) -> torch.Tensor:
        return z


def _session(target: np.ndarray, lfp: np.ndarray, name: str = "a") -> Session:
    T = len(target)
    return Session(name=name, velocity=np.zeros((T, 2), np.float32), lfp=lfp.astype(np.float32),
                   bin_size=0.01, segments=make_segments(T, 0.01, 1.0, seed=0, session=name))


def _memorising(seed: int = 0, T: int = 3000, D: int = 4) -> tuple[Session, np.ndarray]:
    """Targets; an LFP (= the student's prediction) equal to them on training bins, their
    negative on validation bins and noise on test bins."""
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(T, D)).astype(np.float32)
    s = _session(target, target)
    lfp = target.copy()
    val, test = s.split_mask("val"), s.split_mask("test")
    lfp[val] = -target[val]
    lfp[test] = rng.normal(size=(int(test.sum()), D))
    return _session(target, lfp), target


def test_validation_numbers_read_validation_bins_only():
    s, target = _memorising()
    diag = distillation_diagnostics(_Module(), [s], 0.2, {"a": target})
    d = diag["sessions"]["a"]
    val, train = s.split_mask("val"), s.split_mask("train")
    t = target[val].astype(np.float64)
    sst = ((t - t.mean(0)) ** 2).sum(0)
    sse = ((2 * t) ** 2).sum(0)  # prediction -t on validation bins
    # exactly the validation-only value: a single training bin (prediction = target) would
    # raise it, a test bin (noise) would move it
    assert d["bins"] == int(val.sum()) and d["bins_train"] == int(train.sum())
    assert d["r2"] == pytest.approx(1 - sse.sum() / sst.sum(), abs=1e-9)
    np.testing.assert_allclose(d["r2_per_dim"], 1 - sse / sst, atol=1e-9)
    assert d["r2"] < -2.5
    assert d["r2_train"] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(d["r2_train_per_dim"], 1.0, atol=1e-9)
    # one training bin counted as validation would have changed the number
    leaky = val.copy()
    leaky[np.flatnonzero(train)[0]] = True
    from lfpdistill.commands.distill import _explained

    pred = s.lfp
    assert _explained(target, pred, leaky, train)["r2"] > d["r2"] + 1e-6


def test_gap_flags_memorisation_and_not_a_student_that_generalises():
    s, target = _memorising()
    gen = generalisation_gap(distillation_diagnostics(_Module(), [s], 0.2, {"a": target}))
    assert gen["memorising"] is True and gen["gap"] > 3.5
    assert len(gen["val_per_dim"]) == 3 and len(gen["train_per_dim"]) == 3
    text = "\n".join(generalisation_summary(gen))
    assert "WARNING" in text and "memorises" in text and "validation" in text
    # a student that predicts the targets (up to small noise) everywhere generalises
    rng = np.random.default_rng(1)
    good = _session(target, target + 0.1 * rng.normal(size=target.shape))
    gen = generalisation_gap(distillation_diagnostics(_Module(), [good], 0.2, {"a": target}))
    assert gen["memorising"] is False and gen["val"] > 0.95 and abs(gen["gap"]) < 0.05
    assert "WARNING" not in "\n".join(generalisation_summary(gen))


def test_gap_threshold_and_means_over_sessions():
    def d(val: float, train: float) -> dict:
        return {"r2": val, "r2_per_dim": [val] * 4, "r2_train": train,
                "r2_train_per_dim": [train] * 4}

    ok = generalisation_gap({"space": "target_pcs",
                             "sessions": {"a": d(0.3, 0.5), "b": d(0.5, 0.7)}})
    assert ok["val"] == pytest.approx(0.4) and ok["train"] == pytest.approx(0.6)
    assert ok["gap"] == pytest.approx(0.2) and ok["memorising"] is False
    assert ok["val_per_dim"] == pytest.approx([0.4] * 3)
    wide = generalisation_gap({"sessions": {"a": d(0.2, 0.2 + MEMORISATION_GAP + 0.01)}})
    assert wide["memorising"] is True
    assert generalisation_gap({"sessions": {"a": d(-0.01, 0.0)}})["memorising"] is True
    # diagnostics written before the per-dimension training values existed still summarise
    old = generalisation_gap({"sessions": {"a": {"r2": 0.1, "r2_per_dim": [0.1, 0.2]}}})
    assert old["train"] is None and old["gap"] is None and old["train_per_dim"] == []
    assert "validation +0.100, training n/a" in generalisation_summary(old)[0]
    assert generalisation_gap({"sessions": {}})["memorising"] is None


def test_study_report_shows_validation_and_training_per_dimension():
    diag = {"space": "target_pcs", "sessions": {
        "a": {"r2": -0.1, "r2_per_dim": [0.3, -0.2, -0.3, -0.4], "r2_train": 0.5,
              "r2_train_per_dim": [0.7, 0.6, 0.5, 0.4]}}}
    md = diagnostics_markdown({0: diag})
    assert "| 0 | a | -0.100 | 0.50 | +0.60 | 0.30 / -0.20 / -0.30 | 0.70 / 0.60 / 0.50 |" in md
    assert "memorisation flagged on 1 of 1" in md


def test_distill_command_prints_the_gap_and_saves_it(tmp_path, capsys):
    import json

    from tests.conftest import make_session

    from lfpdistill.cli import main
    from lfpdistill.data import write_store

    tiny = ["--set", "patch_size=4", "--set", "d_model=16", "--set", "n_layers=1", "--set",
            "n_heads=2", "--set", "window_s=0.2", "--set", "stride_s=0.2", "--set",
            "batch_size=8", "--set", "max_epochs=1", "--set", "progress=false", "--set",
            "accelerator=cpu"]
    store = tmp_path / "store"
    write_store([make_session("a", T=1500, N=7, C=5, seed=0),
                 make_session("b", T=1500, N=9, C=6, seed=1)], store, segment_s=1.0)
    assert main(["pretrain", "--modality", "spikes", "--store", str(store), "--out",
                 str(tmp_path / "teacher"), *tiny]) == 0
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(tmp_path / "teacher"), "--store", str(store),
                 "--out", str(out), *tiny, "--set", "target_pcs=4"]) == 0
    printed = capsys.readouterr().out
    gen = json.loads((out / "diagnostics.json").read_text())["generalisation"]
    assert set(gen["sessions"]) == {"a", "b"} and len(gen["val_per_dim"]) == 3
    assert f"validation {gen['val']:+.3f}, training {gen['train']:+.3f}" in printed
    assert ("WARNING" in printed) == gen["memorising"]


def test_the_lfp_filter_yardstick_measures_what_the_lfp_predicts_linearly():
    from lfpdistill.commands.distill import lfp_filter_alignment
    from lfpdistill.evaluation import band_power_features

    rng = np.random.default_rng(3)
    T = 6000
    t = np.arange(T) * 0.01
    amp = 1.0 + 0.8 * np.sin(2 * np.pi * 0.3 * t)[:, None]  # slow power modulation
    lfp = (amp * np.sin(2 * np.pi * 20 * t)[:, None] + 0.1 * rng.normal(size=(T, 4)))
    s = _session(np.zeros((T, 1), np.float32), lfp)
    driven = band_power_features(s.lfp, fs=100.0)[:, 1:2]  # a band's power: the LFP carries it
    noise = rng.normal(size=(T, 1))
    train, val = s.split_mask("train"), s.split_mask("val")
    assert lfp_filter_alignment(s, driven, train, val) > 0.5
    assert lfp_filter_alignment(s, noise, train, val) < 0.05
    # the filter is fit on training bins only: validation targets change its score, not its fit
    moved = driven.copy()
    moved[val] = rng.normal(size=(int(val.sum()), 1))
    assert lfp_filter_alignment(s, moved, train, val) < 0.05
    # the identity student predicts its 4 LFP channels: 4 target dimensions
    both = np.hstack([driven, noise, rng.normal(size=(T, 2))]).astype(np.float32)
    diag = distillation_diagnostics(_Module(), [s], 0.2, {"a": both})
    assert "lfp_filter_r2" in diag["sessions"]["a"]
    gen = generalisation_gap(diag)
    assert gen["lfp_filter_val"] == pytest.approx(diag["sessions"]["a"]["lfp_filter_r2"])
    assert "yardstick: a linear LMP + band-power filter" in "\n".join(generalisation_summary(gen))
    md = diagnostics_markdown({0: diag})
    assert "LFP filter |" in md and "; the LFP filter " in md


def test_the_yardstick_is_left_out_where_the_filter_cannot_be_fit():
    from lfpdistill.commands.distill import lfp_filter_alignment

    rng = np.random.default_rng(5)
    s = _session(np.zeros((3000, 1), np.float32), rng.normal(size=(3000, 4)))
    few = np.zeros(3000, bool)
    few[:3] = True  # three training bins: too few for the filter's cross-validation
    target = rng.normal(size=(3000, 4)).astype(np.float32)
    assert lfp_filter_alignment(s, target, few, s.split_mask("val")) is None
