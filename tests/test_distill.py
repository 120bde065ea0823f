"""Distillation: alignment loss, frozen teacher, stage-level errors, a tiny run that learns."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from tests.conftest import make_session
from torch.utils.data import DataLoader

from lfpdistill.commands import distill_run, pretrain_run
from lfpdistill.config import DistillConfig, TrainConfig
from lfpdistill.data import WindowDataset, collate_windows, open_store, write_store
from lfpdistill.errors import CheckpointMismatchError, ConfigError, DataValidationError, LfpDistillError
from lfpdistill.evaluation import session_latents
from lfpdistill.models import CKPT_KEY, ModelConfig, NeuralTransformer, load_checkpoint, load_model
from lfpdistill.training import (
    DistillModule,
    alignment_loss,
    check_teacher_sessions,
    fit,
    teacher_pca,
    teacher_target_stats,
)


def mcfg(modality, **kw) -> ModelConfig:
    c = dict(modality=modality, patch_size=4, d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    c.update(kw)
    return ModelConfig(**c)


def tcfg(**kw) -> TrainConfig:
    c = dict(window_s=0.2, stride_s=0.2, batch_size=8, max_epochs=2, progress=False,
             accelerator="cpu", lr=3e-3)
    c.update(kw)
    return TrainConfig(**c)


# ---------------------------------------------------------------------------- alignment loss
@pytest.mark.parametrize("kind", ["mse", "cosine", "mse+cosine"])
def test_alignment_is_zero_at_equality(kind):
    z = torch.randn(3, 7, 5)
    assert alignment_loss(z, z.clone(), kind).item() == pytest.approx(0.0, abs=1e-6)


def test_mse_alignment_is_the_elementwise_mean_squared_error():
    a, b = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    torch.testing.assert_close(alignment_loss(a, b, "mse"), ((a - b) ** 2).mean())
    torch.testing.assert_close(alignment_loss(2 * a, 2 * b, "mse"), 4 * ((a - b) ** 2).mean())
    w = torch.zeros(2, 6)
    w[0, :3] = 1
    torch.testing.assert_close(alignment_loss(a, b, "mse", w), ((a[0, :3] - b[0, :3]) ** 2).mean())


def test_cosine_alignment_ignores_positive_scale_only():
    a, b = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    ref = alignment_loss(a, b, "cosine")
    scale = torch.rand(2, 6, 1) * 10 + 0.1
    torch.testing.assert_close(alignment_loss(a * scale, b, "cosine"), ref)
    torch.testing.assert_close(alignment_loss(a, b * 3, "cosine"), ref)
    assert alignment_loss(a, 5 * a, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert alignment_loss(a, -a, "cosine").item() == pytest.approx(2.0, abs=1e-6)
    both = alignment_loss(a, b, "mse+cosine")
    torch.testing.assert_close(both, alignment_loss(a, b, "mse") + ref)


def test_alignment_shape_mismatch_is_a_clear_error():
    with pytest.raises(DataValidationError, match=r"student latents \[2, 5, 4\] and teacher "
                                                  r"latents \[2, 5, 3\]"):
        alignment_loss(torch.zeros(2, 5, 4), torch.zeros(2, 5, 3), "mse")
    with pytest.raises(DataValidationError):
        alignment_loss(torch.zeros(2, 5, 4), torch.zeros(2, 6, 4), "cosine")


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_store")
    write_store([make_session("a", T=1500, N=7, C=5, seed=0),
                 make_session("b", T=1500, N=9, C=6, seed=1)], root, segment_s=1.0)
    return root


@pytest.fixture(scope="module")
def teacher_run(store_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    pretrain_run(store_dir, None, "spikes", out, mcfg("spikes"), tcfg(max_epochs=1))
    return out


def _sessions(store_dir):
    st = open_store(store_dir)
    return [st.session(n) for n in st.names]


def _module(store_dir, teacher_run, cache=True, teacher_dropout=None, **dkw):
    sel = _sessions(store_dir)
    teacher, meta = load_model(teacher_run, modality="spikes")
    if teacher_dropout is not None:  # a teacher whose train mode would be visible
        teacher = NeuralTransformer(mcfg("spikes", dropout=teacher_dropout), teacher.vocab())
        teacher.load_state_dict(load_model(teacher_run)[0].state_dict())
        teacher.train()
    torch.manual_seed(0)
    student = NeuralTransformer(mcfg("lfp"), {s.name: s.n_channels for s in sel})
    dcfg = DistillConfig(cache_teacher=cache, **dkw)
    tc = session_cache = stats = None
    if cache:
        session_cache = {s.name: session_latents(teacher, s, 0.2) for s in sel}
        stats = teacher_target_stats(session_cache, {s.name: s.split_mask("train") for s in sel})
    tc = tcfg()
    module = DistillModule(student, teacher, tc, dcfg, 0.01, session_cache, stats)
    mods = ("lfp",) if cache else ("spikes", "lfp")
    train = WindowDataset(sel, "train", 0.2, 0.2, mods)
    val = WindowDataset(sel, "val", 0.2, None, mods)
    return module, teacher, train, val, tc


def _val_align(module, val):
    module.eval()
    vals = []
    with torch.no_grad():
        for batch in DataLoader(val, batch_size=16, collate_fn=collate_windows):
            vals.append(module.losses(batch)["align"].item())
    return float(np.mean(vals))


# ---------------------------------------------------------------------------- frozen teacher
@pytest.mark.parametrize("cache", [True, False])
def test_teacher_stays_frozen_and_outside_the_student(store_dir, teacher_run, tmp_path, cache):
    module, teacher, train, val, tc = _module(store_dir, teacher_run, cache=cache,
                                              teacher_dropout=0.5)
    assert not teacher.training
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("teacher") for k in module.state_dict())
    student_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    fit(module, train, val, tmp_path, tc, {"cache": cache})
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    teacher_ids = {id(p) for p in teacher.parameters()}
    opt_ids = {id(p) for g in module.trainer.optimizers[0].param_groups for p in g["params"]}
    assert not teacher_ids & opt_ids
    assert {id(p) for p in module.model.parameters()} <= opt_ids
    assert any(not torch.equal(v, student_before[k]) for k, v in module.model.state_dict().items())
    saved = load_checkpoint(tmp_path)["state_dict"]
    assert not any(k.startswith("teacher") for k in saved)
    assert any(k.startswith("model.") for k in saved) and "proj.weight" in saved
    if not cache:  # the live teacher runs in eval mode: its latents are deterministic
        batch = collate_windows([val[0], val[1]])
        torch.testing.assert_close(module.teacher_latents(batch), module.teacher_latents(batch))


def test_tiny_distillation_reduces_the_alignment_loss(store_dir, teacher_run, tmp_path):
    module, _, train, val, tc = _module(store_dir, teacher_run, w_mae=0.0)
    before = _val_align(module, val)
    module.train()
    tc = tcfg(max_epochs=8, patience=20)
    fit(module, train, val, tmp_path, tc, {})
    after = _val_align(module, val)
    assert after < 0.75 * before, (before, after)


def test_distill_run_end_to_end(store_dir, teacher_run, tmp_path):
    out = tmp_path / "student"
    summary = distill_run(teacher_run, store_dir, None, out, mcfg("lfp"),
                          tcfg(max_epochs=4, patience=20), DistillConfig(w_mae=0.1))
    assert summary["stage"] == "distill" and summary["steps"] > 0
    rows = list(csv.DictReader((out / "logs" / "metrics.csv").read_text().splitlines()))
    align = [float(r["val_align"]) for r in rows if r.get("val_align")]
    assert len(align) == 4 and align[-1] < align[0]
    student, meta = load_model(out, modality="lfp")
    assert meta["stage"] == "distill" and meta["vocab"] == {"a": 5, "b": 6}
    assert meta["teacher_vocab"] == {"a": 7, "b": 9}
    ckpt = load_checkpoint(out)
    assert ckpt[CKPT_KEY]["distill"]["w_mae"] == 0.1
    z = session_latents(student, _sessions(store_dir)[0], 0.2)
    assert z.shape == (1500, 16) and np.isfinite(z).all()


def test_lagged_targets_are_the_teacher_latents_shifted_in_time(store_dir, teacher_run, tmp_path,
                                                                  monkeypatch):
    import lfpdistill.commands.distill as stages

    seen = {}

    class Recording(DistillModule):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.update(self.teacher_cache)

    monkeypatch.setattr(stages, "DistillModule", Recording)
    distill_run(teacher_run, store_dir, ["a"], tmp_path / "s", mcfg("lfp"), tcfg(max_epochs=1),
                DistillConfig(target_lag_s=0.05))
    teacher, meta = load_model(teacher_run)
    z = session_latents(teacher, _sessions(store_dir)[0], meta["window_s"])
    np.testing.assert_allclose(seen["a"][5:], z[:-5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seen["a"][:5], np.repeat(z[:1], 5, 0), rtol=1e-5, atol=1e-6)
    with pytest.raises(LfpDistillError, match="target_lag_s needs cache_teacher") as e:
        distill_run(teacher_run, store_dir, ["a"], tmp_path / "s2", mcfg("lfp"), tcfg(max_epochs=1),
                    DistillConfig(target_lag_s=0.05, cache_teacher=False))
    _one_line(e)
    with pytest.raises(LfpDistillError, match="target_smooth_s needs cache_teacher") as e:
        distill_run(teacher_run, store_dir, ["a"], tmp_path / "s3", mcfg("lfp"), tcfg(max_epochs=1),
                    DistillConfig(target_smooth_s=0.05, cache_teacher=False))
    _one_line(e)
    with pytest.raises(LfpDistillError, match="target_center needs cache_teacher") as e:
        distill_run(teacher_run, store_dir, ["a"], tmp_path / "s4", mcfg("lfp"), tcfg(max_epochs=1),
                    DistillConfig(target_center="session", cache_teacher=False))
    _one_line(e)


def test_validation_does_not_reset_the_global_random_state(store_dir, teacher_run):
    """Validation must be reproducible without clobbering the training RNG stream."""
    module, _, _, val, _ = _module(store_dir, teacher_run)
    module.eval()
    batch = collate_windows([val[i] for i in range(4)])
    draws = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        with torch.no_grad(), pytest.warns(UserWarning, match="self.log"):
            module.validation_step(batch, 0)
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1])


# ---------------------------------------------------------------------------- module errors
def test_distill_module_needs_lfp_student_and_spike_teacher(store_dir, teacher_run):
    teacher, _ = load_model(teacher_run)
    with pytest.raises(DataValidationError, match="LFP student and a spike teacher"):
        DistillModule(teacher, teacher, tcfg(), DistillConfig(), 0.01)
    student = NeuralTransformer(mcfg("lfp", d_model=32), {"a": 5})
    with pytest.raises(DataValidationError, match="projection 'none' needs equal widths"):
        DistillModule(student, teacher, tcfg(), DistillConfig(projection="none"), 0.01)


def test_teacher_sessions_are_checked(teacher_run):
    teacher, _ = load_model(teacher_run)
    with pytest.raises(DataValidationError, match="has not seen session"):
        check_teacher_sessions(teacher, ["a", "zz"], {"a": 7, "zz": 3})
    with pytest.raises(CheckpointMismatchError, match="has 8 spikes channels"):
        check_teacher_sessions(teacher, ["a"], {"a": 8})


def test_target_stats_use_training_bins_only():
    cache = {"a": np.array([[0.0], [2.0], [100.0]]), "b": np.array([[4.0], [-50.0]])}
    masks = {"a": np.array([True, True, False]), "b": np.array([True, False])}
    mean, std = teacher_target_stats(cache, masks)
    assert mean.tolist() == [2.0] and std[0] == pytest.approx(np.std([0, 2, 4]))


def test_teacher_pca_finds_the_dominant_subspace_from_training_bins_only():
    rng = np.random.default_rng(0)
    axes = np.linalg.qr(rng.normal(size=(6, 2)))[0].T  # two orthonormal directions in 6-d
    lat = rng.normal(size=(400, 2)) * [5.0, 3.0]
    z = 1.0 + lat @ axes + 0.01 * rng.normal(size=(400, 6))
    z[300:] = 1000.0  # excluded bins must not move the fit
    masks = {"a": np.arange(400) < 300}
    centre, comps = teacher_pca({"a": z}, masks, 2)
    assert comps.shape == (2, 6) and centre.shape == (6,)
    np.testing.assert_allclose(centre, z[:300].mean(0), atol=1e-5)
    # same subspace: projector equality
    np.testing.assert_allclose(comps.T @ comps, axes.T @ axes, atol=1e-3)
    mean, std = teacher_target_stats({"a": z}, masks, (centre, comps))
    np.testing.assert_allclose(mean, 0, atol=1e-4)
    np.testing.assert_allclose(std, [5.0, 3.0], rtol=0.15)
    with pytest.raises(DataValidationError, match="target_pcs=7"):
        teacher_pca({"a": z}, masks, 7)


def test_module_aligns_projected_targets(teacher_run):
    teacher, _ = load_model(teacher_run)
    student = NeuralTransformer(mcfg("lfp"), {"a": 7})
    d = teacher.cfg.d_model
    centre, comps = np.arange(d, dtype=np.float32), np.eye(d, dtype=np.float32)[[3, 1]]
    module = DistillModule(student, teacher, tcfg(), DistillConfig(target_pcs=2), 0.01,
                           target_basis=(centre, comps))
    assert module.proj.out_features == 2
    z = torch.randn(2, 5, d)
    torch.testing.assert_close(module.normalise(z), (z - torch.as_tensor(centre))[..., [3, 1]])
    with pytest.raises(DataValidationError, match="does not fit teacher latents"):
        DistillModule(student, teacher, tcfg(), DistillConfig(), 0.01,
                      target_basis=(centre[:3], comps[:, :3]))


# ---------------------------------------------------------------------------- stage errors
def _one_line(e):
    assert isinstance(e.value, LfpDistillError) and "\n" not in str(e.value)


def test_teacher_from_a_different_bin_size_is_refused(store_dir, teacher_run, tmp_path):
    coarse = [dataclasses.replace(s, bin_size=0.02, segments=None) for s in _sessions(store_dir)]
    write_store(coarse, tmp_path / "coarse", segment_s=2.0)
    with pytest.raises(DataValidationError, match=r"trained on 0\.01s bins but the store uses "
                                                  r"0\.02s bins") as e:
        distill_run(teacher_run, tmp_path / "coarse", None, tmp_path / "out", mcfg("lfp"), tcfg())
    _one_line(e)


def test_an_lfp_model_is_not_a_teacher(store_dir, tmp_path):
    pretrain_run(store_dir, None, "lfp", tmp_path / "lfp_run", mcfg("lfp"), tcfg(max_epochs=1))
    with pytest.raises(CheckpointMismatchError, match="is a lfp model but a spikes model") as e:
        distill_run(tmp_path / "lfp_run", store_dir, None, tmp_path / "out", mcfg("lfp"), tcfg())
    _one_line(e)


def test_sessions_without_spikes_cannot_be_distilled(teacher_run, tmp_path):
    write_store([make_session("a", T=1500, N=7, C=5, spikes=False)], tmp_path / "nospk",
                segment_s=1.0)
    with pytest.raises(DataValidationError, match="have no spikes") as e:
        distill_run(teacher_run, tmp_path / "nospk", None, tmp_path / "out", mcfg("lfp"), tcfg())
    _one_line(e)
    write_store([make_session("a", T=1500, N=7, C=5, lfp=False)], tmp_path / "nolfp",
                segment_s=1.0)
    with pytest.raises(DataValidationError, match="have no lfp") as e:
        distill_run(teacher_run, tmp_path / "nolfp", None, tmp_path / "out", mcfg("lfp"), tcfg())
    _one_line(e)


def test_sessions_unknown_to_the_teacher_are_refused(teacher_run, tmp_path):
    write_store([make_session("new", T=1500, N=7, C=5)], tmp_path / "st", segment_s=1.0)
    with pytest.raises(DataValidationError, match="has not seen session") as e:
        distill_run(teacher_run, tmp_path / "st", None, tmp_path / "out", mcfg("lfp"), tcfg())
    _one_line(e)


# ---------------------------------------------------------------------------- diagnostics
def test_diagnostics_use_validation_bins_only(store_dir, teacher_run, tmp_path):
    from lfpdistill.commands.distill import distillation_diagnostics

    module, _, _, _, _ = _module(store_dir, teacher_run, target_norm="standardize")
    sel = _sessions(store_dir)
    cache = module.teacher_cache
    ref = distillation_diagnostics(module, sel, 0.2, cache)
    d = ref["sessions"]["a"]
    assert ref["split"] == "val" and len(d["r2_per_dim"]) == 16 and d["r2"] <= 1
    assert d["bins"] == int(sel[0].split_mask("val").sum())
    # LFP and teacher latents outside the validation bins change nothing
    noisy = []
    for s in sel:
        out_of_val = ~s.split_mask("val")
        lfp = s.lfp.copy()
        lfp[out_of_val] = np.random.default_rng(0).normal(size=lfp[out_of_val].shape) * 50
        noisy.append(dataclasses.replace(s, lfp=lfp))
    moved = {n: np.where(s.split_mask("val")[:, None], z, z + 100) for (n, z), s in
             zip(cache.items(), sel, strict=True)}
    again = distillation_diagnostics(module, noisy, 0.2, moved)

    def val_only(diag):  # r2_train*, bins_train and the LFP filter (fit there) read the
        # training bins, by design
        return {n: {k: v for k, v in d.items() if "train" not in k and k != "lfp_filter_r2"}
                for n, d in diag["sessions"].items()}

    assert val_only(again) == val_only(ref)
    assert again["sessions"]["a"]["r2_train"] != ref["sessions"]["a"]["r2_train"]
    # the validation bins do matter
    val_moved = {n: np.where(s.split_mask("val")[:, None], z + 1, z) for (n, z), s in
                 zip(cache.items(), sel, strict=True)}
    assert distillation_diagnostics(module, sel, 0.2, val_moved)["sessions"] != ref["sessions"]


def test_distill_run_writes_diagnostics(store_dir, teacher_run, tmp_path):
    out = tmp_path / "student"
    summary = distill_run(teacher_run, store_dir, None, out, mcfg("lfp"), tcfg(max_epochs=1),
                          DistillConfig(target_pcs=4, target_norm="standardize"))
    diag = summary["diagnostics"]
    assert set(diag["sessions"]) == {"a", "b"} and diag["space"] == "target_pcs"
    assert all(len(d["r2_per_dim"]) == 4 for d in diag["sessions"].values())
    on_disk = json.loads((out / "diagnostics.json").read_text())
    assert on_disk == diag == json.loads((out / "summary.json").read_text())["diagnostics"]


def test_lfp_predictability_weights_follow_what_the_lfp_carries(store_dir):
    from lfpdistill.commands.distill import lfp_predictability
    from lfpdistill.evaluation import band_power_features

    sel = _sessions(store_dir)
    rng = np.random.default_rng(0)
    targets = {}
    for s in sel:
        lmp = band_power_features(s.lfp, fs=100.0)[:, :1]  # the LFP's slow part on channel 0
        lfp_driven = lmp / lmp.std() + 0.3 * rng.normal(size=(s.n_bins, 1))
        targets[s.name] = np.hstack([lfp_driven, rng.normal(size=(s.n_bins, 2))]).astype(np.float32)
    w = lfp_predictability(sel, targets)
    assert w.shape == (3,) and (w >= 0).all()
    assert w[0] > 0.3 and w[1:].max() < 0.1


def test_distill_run_with_predictability_weighting(store_dir, teacher_run, tmp_path):
    summary = distill_run(teacher_run, store_dir, None, tmp_path / "w", mcfg("lfp"),
                          tcfg(max_epochs=1),
                          DistillConfig(target_pcs=4, target_weighting="lfp_predictable"))
    w = summary["diagnostics"]["target_weights"]
    assert len(w) == 4 and min(w) >= 0 and max(w) > 0


def test_a_causal_student_cannot_silently_start_from_a_bidirectional_run(store_dir, teacher_run,
                                                                        tmp_path):
    pretrain_run(store_dir, None, "lfp", tmp_path / "lfp", mcfg("lfp"), tcfg(max_epochs=1))
    with pytest.raises(ConfigError, match="keeps its architecture") as e:
        distill_run(teacher_run, store_dir, None, tmp_path / "s", mcfg("lfp", causal=True),
                    tcfg(max_epochs=1), student_init=tmp_path / "lfp")
    assert "\n" not in str(e.value)


def test_target_smoothing_stays_inside_each_segment():
    """Smoothed teacher targets never mix bins of two split segments (no validation value leaks
    into a training target) and keep a constant signal unchanged."""
    from lfpdistill.commands.distill import smooth_within_segments

    z = np.zeros((30, 2), np.float32)
    z[10:20] = 5.0  # the middle segment only
    seg = np.array([[0, 10, 0], [10, 20, 1], [20, 30, 0]])
    out = smooth_within_segments(z, seg, sigma_bins=3.0)
    np.testing.assert_array_equal(out[:10], 0.0)
    np.testing.assert_array_equal(out[20:], 0.0)
    np.testing.assert_allclose(out[10:20], 5.0, rtol=1e-6)
    noisy = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    smooth = smooth_within_segments(noisy, seg, sigma_bins=3.0)
    assert smooth[:10].std() < noisy[:10].std()
    np.testing.assert_array_equal(smooth_within_segments(noisy, seg, 0.0), noisy)


def test_input_dropout_drops_whole_electrodes_in_training_only(teacher_run):
    teacher, _ = load_model(teacher_run)
    student = NeuralTransformer(mcfg("lfp"), {"a": 7})
    module = DistillModule(student, teacher, tcfg(), DistillConfig(input_dropout=0.25), 0.01)
    x = torch.randn(64, 20, 7) + 3.0
    torch.manual_seed(0)
    module.train()
    y = module.drop_electrodes(x)
    dropped = (y == 0).all(1)                      # [B, C]: a whole electrode, every bin
    kept = ~dropped
    assert ((y == 0) == dropped[:, None, :].expand_as(y)).all()
    torch.testing.assert_close(y[kept[:, None, :].expand_as(y)],
                               x[kept[:, None, :].expand_as(x)] / 0.75)
    assert 0.15 < dropped.float().mean() < 0.35
    assert not dropped.all(0).any()                # different windows lose different electrodes
    module.eval()
    assert module.drop_electrodes(x) is x          # validation and read-out see every electrode
    assert DistillModule(student, teacher, tcfg(), DistillConfig(), 0.01).drop_electrodes(x) is x
    with pytest.raises(ValueError):
        DistillConfig(input_dropout=1.0)


def test_session_centred_targets_drop_the_offsets_between_sessions(store_dir, teacher_run):
    """With target_center: session, each session's targets are centred on its own training
    bins, so the top PC is the shared dynamics, not the offset between the two sessions."""
    from lfpdistill.commands.distill import teacher_targets, transform_targets

    teacher, _ = load_model(teacher_run)
    sel = _sessions(store_dir)[:2]
    d = teacher.cfg.d_model
    rng = np.random.default_rng(0)
    shared = np.zeros(d, np.float32)
    shared[0] = 1.0
    offset = np.zeros(d, np.float32)
    offset[1] = 20.0
    given = {s.name: (rng.normal(size=(s.n_bins, 1)) * shared + (-1) ** i * offset
                      + 0.01 * rng.normal(size=(s.n_bins, d))).astype(np.float32)
             for i, s in enumerate(sel)}
    before = {n: z.copy() for n, z in given.items()}
    pooled = teacher_targets(teacher, sel, 0.2, DistillConfig(target_pcs=1), given)
    assert abs(pooled.basis[1][0, 1]) > 0.99            # PC1 = the between-session offset
    centred = teacher_targets(teacher, sel, 0.2,
                              DistillConfig(target_pcs=1, target_center="session"), given)
    assert abs(centred.basis[1][0, 0]) > 0.99           # PC1 = the shared dynamics
    for s in sel:
        t = transform_targets(centred.cache[s.name], centred.basis, centred.stats, "standardize")
        assert abs(t[s.split_mask("train")].mean()) < 0.05
    for name, z in before.items():                      # the caller's latents are untouched
        np.testing.assert_array_equal(given[name], z)


# ---------------------------------------------------------------------------- anchor
@pytest.fixture(scope="module")
def lfp_run(store_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ms_lfp")
    pretrain_run(store_dir, None, "lfp", out, mcfg("lfp"), tcfg(max_epochs=1))
    return out


def test_anchor_targets_are_the_anchor_latents_pcs_fit_on_training_bins(store_dir, lfp_run):
    from lfpdistill.commands.distill import anchor_targets

    sel = _sessions(store_dir)
    anchor, _ = load_model(lfp_run, modality="lfp")
    dcfg = DistillConfig(anchor_pcs=3, target_norm="standardize", target_center="session")
    out = anchor_targets(anchor, sel, 0.2, dcfg)
    for s in sel:
        z = out[s.name]
        assert z.shape == (s.n_bins, 3) and np.isfinite(z).all()
        train = s.split_mask("train")
        np.testing.assert_allclose(z[train].mean(0), 0.0, atol=1e-4)  # centred per session
    pooled = np.concatenate([out[s.name][s.split_mask("train")] for s in sel])
    np.testing.assert_allclose(pooled.std(0), 1.0, rtol=1e-3)  # standardised on training bins
    # validation bins do not move the transform: change them and the training targets stay
    given = {s.name: session_latents(anchor, s, 0.2) for s in sel}
    moved = {n: z.copy() for n, z in given.items()}
    for s in sel:
        moved[s.name][s.split_mask("val")] += 100.0
    again = anchor_targets(anchor, sel, 0.2, dcfg, given=moved)
    for s in sel:
        train = s.split_mask("train")
        np.testing.assert_allclose(again[s.name][train], out[s.name][train], rtol=1e-4, atol=1e-4)


def test_distill_run_with_an_anchor_trains_both_heads_and_keeps_the_student_loadable(
        store_dir, teacher_run, lfp_run, tmp_path):
    out = tmp_path / "anchored"
    dcfg = DistillConfig(target_pcs=4, target_norm="standardize", anchor_pcs=3, w_anchor=0.5)
    distill_run(teacher_run, store_dir, None, out, mcfg("lfp"), tcfg(max_epochs=2), dcfg,
                anchor_run=lfp_run)
    rows = list(csv.DictReader((out / "logs" / "metrics.csv").read_text().splitlines()))
    assert any(r.get("val_anchor") for r in rows)
    state = load_checkpoint(out / "model.ckpt")["state_dict"]
    assert state["anchor_proj.weight"].shape == (3, 16)
    student, meta = load_model(out, modality="lfp")  # the read-out model has no anchor head
    assert meta["distill"]["anchor_pcs"] == 3
    assert not any("anchor" in k for k in student.state_dict())
    # the diagnostics also report how much of the anchor's PCs the anchor head explains, on
    # validation bins: recomputed here from the kept student, its anchor head and the targets
    from lfpdistill.commands.distill import anchor_targets

    diag = json.loads((out / "diagnostics.json").read_text())
    anchor, _ = load_model(lfp_run, modality="lfp")
    sel = _sessions(store_dir)
    targets = anchor_targets(anchor, sel, 0.2, dcfg)
    w, b = state["anchor_proj.weight"].numpy(), state["anchor_proj.bias"].numpy()
    for s in sel:
        pred = session_latents(student, s, 0.2) @ w.T + b
        val = s.split_mask("val")
        t, p = targets[s.name][val].astype(np.float64), pred[val].astype(np.float64)
        r2 = 1 - ((t - p) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()
        got = diag["anchor"]["sessions"][s.name]
        assert got["r2"] == pytest.approx(r2, abs=1e-4) and len(got["r2_per_dim"]) == 3
        assert got["bins"] == int(val.sum())
    assert diag["anchor"]["space"] == "anchor_pcs" and diag["space"] == "target_pcs"


def test_anchor_options_must_come_together(store_dir, teacher_run, lfp_run, tmp_path):
    with pytest.raises(ConfigError, match="needs an anchor: an LFP run") as e:
        distill_run(teacher_run, store_dir, None, tmp_path / "a", mcfg("lfp"), tcfg(max_epochs=1),
                    DistillConfig(anchor_pcs=3))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="anchor_pcs is 0"):
        distill_run(teacher_run, store_dir, None, tmp_path / "b", mcfg("lfp"), tcfg(max_epochs=1),
                    DistillConfig(), anchor_run=lfp_run)
    with pytest.raises(ConfigError, match="cache_teacher"):
        distill_run(teacher_run, store_dir, None, tmp_path / "c", mcfg("lfp"), tcfg(max_epochs=1),
                    DistillConfig(anchor_pcs=3, cache_teacher=False), anchor_run=lfp_run)


def test_an_anchor_that_does_not_fit_is_a_clear_error(store_dir, teacher_run, lfp_run, tmp_path):
    only_a = tmp_path / "only_a"
    pretrain_run(store_dir, ["a"], "lfp", only_a, mcfg("lfp"), tcfg(max_epochs=1))
    with pytest.raises(DataValidationError, match="anchor .* has not seen session\\(s\\) b") as e:
        distill_run(teacher_run, store_dir, None, tmp_path / "s", mcfg("lfp"), tcfg(max_epochs=1),
                    DistillConfig(anchor_pcs=3), anchor_run=only_a)
    assert "\n" not in str(e.value)
    with pytest.raises(DataValidationError, match="anchor_pcs=17 but the anchor latents have 16") as e:
        distill_run(teacher_run, store_dir, None, tmp_path / "wide", mcfg("lfp"), tcfg(max_epochs=1),
                    DistillConfig(anchor_pcs=17), anchor_run=lfp_run)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointMismatchError):  # a spike run is not an LFP anchor
        distill_run(teacher_run, store_dir, None, tmp_path / "t", mcfg("lfp"), tcfg(max_epochs=1),
                    DistillConfig(anchor_pcs=3), anchor_run=teacher_run)


def test_the_study_keeps_the_student_whose_validation_probe_is_higher(store_dir, lfp_run,
                                                                      tmp_path):
    """distill.anchor "validation": the choice is the mean validation-bin probe over the
    sessions; swapping the candidates swaps it, and the test bins' labels never enter it."""
    from lfpdistill.evaluation import linear_probe
    from lfpdistill.study.units import StudyMemo, choose_student

    other = tmp_path / "other"
    pretrain_run(store_dir, None, "lfp", other, mcfg("lfp"), tcfg(max_epochs=1, seed=1))
    store = open_store(store_dir)
    val = {}
    for run in (lfp_run, other):
        model, meta = load_model(run, modality="lfp")
        val[run] = np.mean([linear_probe(session_latents(model, s, meta["window_s"]), s.velocity,
                                         s.split_mask("train"), s.split_mask("val"))["r2"]
                            for s in map(store.session, store.names)])
    assert val[lfp_run] != pytest.approx(val[other])
    choose_student(tmp_path / "c", store, store.names, plain=lfp_run, anchored=other,
                   memo=StudyMemo(store))
    c = json.loads((tmp_path / "c" / "choice.json").read_text())
    assert c["plain_val"] == pytest.approx(val[lfp_run]) and c["anchored_val"] == pytest.approx(
        val[other])
    assert c["anchored"] == (val[other] > val[lfp_run])
    assert set(c["sessions"]) == set(store.names)
    choose_student(tmp_path / "swapped", store, store.names, plain=other, anchored=lfp_run,
                   memo=StudyMemo(store))
    swapped = json.loads((tmp_path / "swapped" / "choice.json").read_text())
    assert swapped["anchored"] != c["anchored"]
    # scramble the test bins' velocity: the same scores, the same choice
    rng = np.random.default_rng(0)
    scrambled = []
    for s in map(store.session, store.names):
        v = np.array(s.velocity, copy=True)
        test = s.split_mask("test")
        v[test] = rng.normal(size=(int(test.sum()), 2)) * 10
        scrambled.append(dataclasses.replace(s, velocity=v.astype(np.float32)))
    moved = open_store(write_store(scrambled, tmp_path / "scrambled", segment_s=1.0).root)
    for name in store.names:  # same split, other test labels
        assert (moved.session(name).split_mask("test") == store.session(name).split_mask("test")).all()
        assert not np.allclose(moved.session(name).velocity, store.session(name).velocity)
    choose_student(tmp_path / "c2", moved, moved.names, plain=lfp_run, anchored=other,
                   memo=StudyMemo(moved))
    again = json.loads((tmp_path / "c2" / "choice.json").read_text())
    assert again["plain_val"] == pytest.approx(c["plain_val"])
    assert again["anchored_val"] == pytest.approx(c["anchored_val"])


def test_the_probe_reuses_the_latents_the_choice_computed(store_dir, lfp_run, tmp_path,
                                                          monkeypatch):
    """A student's latents that a unit of the study already computed (the choice reads both
    students through the study's memo) are not computed again by the probe; the rows are those
    of a fresh computation, and an item read with another session's embeddings is still
    computed."""
    from lfpdistill.study import units
    from lfpdistill.study.plan import EvalItem

    store = open_store(store_dir)
    a, b = store.names[:2]
    plan = [EvalItem("distilled", a, lfp_run, "distilled", 0)]
    units.probe(tmp_path / "fresh", store, plan, None, units.StudyMemo(store))
    memo = units.StudyMemo(store)
    units.choose_student(tmp_path / "c", store, [a], plain=lfp_run, anchored=lfp_run, memo=memo)
    assert memo.computed(lfp_run, a) is not None and memo.computed(lfp_run, b) is None
    calls = []
    real = units.session_latents
    monkeypatch.setattr(units, "session_latents",
                        lambda *args, **kw: calls.append(kw.get("as_session")) or real(*args, **kw))
    units.probe(tmp_path / "reused", store, plan, None, memo)
    assert calls == []
    fresh, reused = (json.loads((tmp_path / d / "rows.json").read_text()) for d in ("fresh", "reused"))
    assert reused == fresh
    units.probe(tmp_path / "mode_a", store, [EvalItem("distilled", a, lfp_run, "heldout", 0,
                                                      "a", as_session=a)], None, memo)
    assert calls == [a]


@pytest.mark.parametrize("modality", ["lfp", "spikes"])
def test_multi_session_pretraining_is_reproducible_from_its_seed(store_dir, tmp_path, modality):
    """Two runs of the same multi-session masked autoencoding with the same seed end with the
    same weights (a study's MS-LFP or teacher reproduces); another seed does not."""
    states = {}
    for name, seed in (("one", 3), ("two", 3), ("other", 4)):
        pretrain_run(store_dir, None, modality, tmp_path / name, mcfg(modality),
                     tcfg(max_epochs=2, seed=seed))
        states[name] = load_model(tmp_path / name)[0].state_dict()
    for k, v in states["one"].items():
        assert torch.equal(v, states["two"][k]), k
    assert any(not torch.equal(v, states["other"][k]) for k, v in states["one"].items())


def _lfp_and_noise_latents(sel, rng, noise_sd=3.0):
    """Latents of 3 dimensions mixed by a rotation: one axis follows the LFP's slow part, two
    louder axes are noise the LFP does not carry (the top principal axes)."""
    from lfpdistill.evaluation import band_power_features

    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    out = {}
    for s in sel:
        lmp = band_power_features(s.lfp, fs=100.0)[:, :1]
        src = np.hstack([(lmp - lmp.mean()) / lmp.std(), noise_sd * rng.normal(size=(s.n_bins, 2))])
        out[s.name] = (src @ q.T).astype(np.float32)
    return out, q


def test_lfp_basis_finds_the_axis_the_lfp_predicts_not_the_loudest(store_dir):
    from lfpdistill.commands.distill import lfp_predictable_basis, teacher_pca

    sel = _sessions(store_dir)
    cache, q = _lfp_and_noise_latents(sel, np.random.default_rng(0))
    train = {s.name: s.split_mask("train") for s in sel}
    _, pca = teacher_pca(cache, train, 1)
    centre, lfp = lfp_predictable_basis(sel, cache, train, 1)
    assert centre.shape == (3,) and lfp.shape == (1, 3)
    assert abs(float(pca[0] @ q[:, 0])) < 0.5  # the top principal axis is noise
    assert abs(float(lfp[0] @ q[:, 0])) > 0.95  # the LFP's axis, up to sign


def test_lfp_basis_never_reads_validation_or_test_bins(store_dir):
    from lfpdistill.commands.distill import lfp_predictable_basis

    sel = _sessions(store_dir)
    cache, _ = _lfp_and_noise_latents(sel, np.random.default_rng(1))
    train = {s.name: s.split_mask("train") for s in sel}
    ref = lfp_predictable_basis(sel, cache, train, 2)
    moved = {}
    for s in sel:
        z = cache[s.name].copy()
        z[~train[s.name]] = 100.0 * np.random.default_rng(2).normal(size=z[~train[s.name]].shape)
        moved[s.name] = z
    for a, b in zip(ref, lfp_predictable_basis(sel, moved, train, 2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_lfp_basis_needs_target_pcs():
    with pytest.raises(ValueError, match="target_basis=lfp .* target_pcs > 0"):
        DistillConfig(target_basis="lfp", target_pcs=0)
    assert DistillConfig(target_basis="lfp", target_pcs=4).target_basis == "lfp"


def test_distill_run_with_the_lfp_basis(store_dir, teacher_run, tmp_path):
    summary = distill_run(teacher_run, store_dir, None, tmp_path / "b", mcfg("lfp"),
                          tcfg(max_epochs=1), DistillConfig(target_pcs=3, target_basis="lfp",
                                                            target_center="session"))
    diag = summary["diagnostics"]
    assert diag["space"] == "target_pcs"
    assert all(len(d["r2_per_dim"]) == 3 for d in diag["sessions"].values())


def test_lfp_basis_asks_for_no_more_axes_than_the_latents_have(store_dir):
    from lfpdistill.commands.distill import lfp_predictable_basis

    sel = _sessions(store_dir)
    cache, _ = _lfp_and_noise_latents(sel, np.random.default_rng(4))
    train = {s.name: s.split_mask("train") for s in sel}
    with pytest.raises(DataValidationError, match="target_pcs=4 but the teacher latents have 3 "
                                                  "dimensions") as e:
        lfp_predictable_basis(sel, cache, train, 4)
    assert "\n" not in str(e.value) and "use target_pcs <= 3" in str(e.value)


def test_a_validator_error_reads_without_pydantics_prefix():
    from lfpdistill.config import one_line

    with pytest.raises(ValueError) as e:
        DistillConfig(target_basis="lfp", target_pcs=0)
    text = one_line(e.value)
    assert text.startswith("target_basis=lfp chooses") and "Value error" not in text
