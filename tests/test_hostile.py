"""Hostile but realistic input (issue #16): shared checkpoints, killed runs, odd options.

Every case ends in one ``error:`` line with exit status 2, or in correct behaviour — never a
traceback, code run from a file, a file outside the requested folder, or stale output that a
later command loads.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from tests.conftest import cli_error, make_session

from lfpdistill.cli import main
from lfpdistill.commands import pretrain_run
from lfpdistill.config import ModelConfig, TrainConfig
from lfpdistill.data import write_store
from lfpdistill.errors import CheckpointMismatchError
from lfpdistill.models import CKPT_KEY, load_checkpoint, load_model

TINY = ["--set", "patch_size=4", "--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2",
        "--set", "window_s=0.2", "--set", "stride_s=0.2", "--set", "batch_size=8",
        "--set", "max_epochs=1", "--set", "max_steps=3", "--set", "progress=false",
        "--set", "accelerator=cpu"]
TRAIN = ["--set", "max_steps=2", "--set", "progress=false", "--set", "accelerator=cpu",
         "--set", "window_s=0.2", "--set", "stride_s=0.2"]


def tiny_model_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(modality="spikes", patch_size=4, d_model=16, n_layers=1, n_heads=2,
                                 dropout=0.0), **kw})


def tiny_train_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(window_s=0.2, stride_s=0.2, batch_size=8, max_epochs=1,
                                 max_steps=3, progress=False, accelerator="cpu",
                                 checkpoint_every_steps=2), **kw})




@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "store"
    write_store([make_session("a", T=800, N=7, C=5, seed=0),
                 make_session("b", T=800, N=9, C=6, seed=1)], root, segment_s=1.0)
    return root


@pytest.fixture(scope="module")
def runs(store) -> dict[str, Path]:
    """One run of every training stage, each a few optimiser steps."""
    root = store.parent
    new = root / "new"
    write_store([make_session("zz", T=800, N=7, C=5, seed=3)], new, segment_s=1.0)
    r = {k: root / k for k in ("pretrain", "lfp", "distill", "finetune", "adapt")}

    def ok(argv):
        assert main([str(a) for a in argv]) == 0

    ok(["pretrain", "--modality", "spikes", "--store", store, "--out", r["pretrain"], *TINY])
    ok(["pretrain", "--modality", "lfp", "--store", store, "--out", r["lfp"], *TINY])
    ok(["distill", "--teacher", r["pretrain"], "--store", store, "--out", r["distill"],
        "--student-init", r["lfp"], *TINY])
    ok(["finetune", r["distill"], "--store", store, "--session", "a", "--out", r["finetune"], *TRAIN])
    ok(["adapt", r["pretrain"], "--store", new, "--sessions", "zz", "--out", r["adapt"], *TRAIN])
    r["new"] = new
    return r


class _RunsCode:
    """Unpickling this creates ``marker``: the payload of a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------ security 1: checkpoints
def test_checkpoints_of_every_stage_load_with_tensors_and_plain_values_only(runs):
    stages = {"pretrain": "pretrain", "lfp": "pretrain", "distill": "distill",
              "finetune": "finetune", "adapt": "pretrain"}
    for name, stage in stages.items():
        for path in [runs[name] / "model.ckpt", *sorted((runs[name] / "checkpoints").glob("*.ckpt"))]:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # raises on any object
            assert ckpt[CKPT_KEY]["stage"] == stage, path
        model, _ = load_model(runs[name])
        assert model.vocab()
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("model.ckpt", "summary.json", "run_config.json"):  # not mkstemp's 0600
        assert stat.S_IMODE((runs["pretrain"] / name).stat().st_mode) == 0o666 & ~mask, name


def test_a_checkpoint_whose_metadata_runs_code_is_refused_without_running_it(runs, store, tmp_path,
                                                                           capsys):
    marker = tmp_path / "pwned"
    ckpt = load_checkpoint(runs["pretrain"])
    ckpt[CKPT_KEY]["note"] = _RunsCode(marker)
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save(ckpt, evil / "model.ckpt")
    with pytest.raises(CheckpointMismatchError, match="other than tensors and plain values"):
        load_model(evil)
    cli_error(capsys, ["embed", evil, "--store", store, "--out", tmp_path / "l.npz"],
           "other than tensors", "could run code")
    cli_error(capsys, ["distill", "--teacher", evil, "--store", store, "--out", tmp_path / "d", *TINY],
           "other than tensors")
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", tmp_path / "p",
                    "--init-from", evil, *TINY], "other than tensors")
    assert not marker.exists()
    assert not (tmp_path / "l.npz").exists()


def test_a_bare_pickle_as_model_ckpt_is_refused_without_running_it(store, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.ckpt").write_bytes(pickle.dumps(_RunsCode(marker)))
    cli_error(capsys, ["embed", evil, "--store", store, "--out", tmp_path / "l.npz"],
           f"checkpoint '{evil / 'model.ckpt'}'")
    assert not marker.exists()


def test_a_malicious_resume_checkpoint_is_not_run_and_training_starts_over(store, tmp_path):
    out = tmp_path / "run"
    pretrain_run(store, None, "spikes", out, tiny_model_cfg(), tiny_train_cfg())
    marker = tmp_path / "pwned"
    last = out / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    ckpt["loops"] = _RunsCode(marker)
    torch.save(ckpt, last)
    for p in (out / "checkpoints").glob("step*.ckpt"):
        p.unlink()
    summary = pretrain_run(store, None, "spikes", out, tiny_model_cfg(), tiny_train_cfg())
    assert not marker.exists()
    assert summary["steps"] == 3
    load_model(out)


def test_a_truncated_resume_checkpoint_is_skipped_not_retried_forever(store, tmp_path):
    out = tmp_path / "run"
    pretrain_run(store, None, "spikes", out, tiny_model_cfg(), tiny_train_cfg())
    last = out / "checkpoints" / "last.ckpt"
    assert (out / "checkpoints" / "step.ckpt").exists()
    last.write_bytes(last.read_bytes()[:1000])  # killed while Lightning wrote it; the newest file
    summary = pretrain_run(store, None, "spikes", out, tiny_model_cfg(), tiny_train_cfg())
    assert summary["steps"] == 3
    load_model(out)


# ------------------------------------------------------------------ data loss 5: run folders
def test_a_killed_retrain_leaves_no_old_model_next_to_the_new_run_config(store, tmp_path, capsys,
                                                                       monkeypatch):
    import lightning

    out = tmp_path / "run"
    pretrain_run(store, None, "spikes", out, tiny_model_cfg(), tiny_train_cfg())
    (out / "latents.npz").write_bytes(b"latents of the old model")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # SIGKILL'd in the middle of training

    monkeypatch.setattr(lightning.Trainer, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        pretrain_run(store, None, "spikes", out, tiny_model_cfg(), tiny_train_cfg(seed=7))
    monkeypatch.undo()
    assert json.loads((out / "run_config.json").read_text())["train"]["seed"] == 7
    for name in ("model.ckpt", "summary.json", "latents.npz"):
        assert not (out / name).exists(), name
    cli_error(capsys, ["embed", out, "--store", store], "no model checkpoint")


def test_finetune_with_a_pattern_matching_several_sessions_is_refused(runs, store, tmp_path, capsys):
    cli_error(capsys, ["finetune", runs["distill"], "--store", store, "--session", "*",
                    "--out", tmp_path / "ft", *TRAIN], "--session '*' matches 2 sessions (a, b)",
           "name it exactly")
    assert not (tmp_path / "ft").exists()


def test_retraining_after_the_store_is_rewritten_with_the_same_options_trains_anew(tmp_path):
    """A run folder resumes only runs of the same data: a store re-written with the same options
    (other content) must not hand back the finished model of the old data."""
    store = tmp_path / "S"
    write_store([make_session("a", T=800, N=7, C=5, seed=0),
                 make_session("b", T=800, N=9, C=6, seed=1)], store, segment_s=1.0)
    out = tmp_path / "run"
    pretrain_run(store, None, "spikes", out, tiny_model_cfg(), tiny_train_cfg())
    before = load_checkpoint(out)["state_dict"]
    write_store([make_session("a", T=800, N=7, C=5, seed=10),
                 make_session("b", T=800, N=9, C=6, seed=11)], store, segment_s=1.0)
    pretrain_run(store, None, "spikes", out, tiny_model_cfg(), tiny_train_cfg())
    after = load_checkpoint(out)["state_dict"]
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
