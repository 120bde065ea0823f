"""The second hostile-input sweep (issue #37): outputs that would replace inputs (C), simulate
over a store (L), two commands in one run folder (O), unreadable text (D), ONNX metadata (E),
NWB and O'Doherty files (F, G), seeds (H), export options (I), missing segments and NaN
options (J), huge-but-finite LFP and flat NWB LFP (K), and the silently accepted inputs of P.
Each ends in one ``error:`` line with exit status 2, 3 or 4, or behaves correctly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import cli_error, make_session

from lfpdistill.cli import main
from lfpdistill.data import open_store, write_store
from lfpdistill.data.store import MANIFEST

TINY = ["--set", "patch_size=4", "--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2",
        "--set", "window_s=0.2", "--set", "stride_s=0.2", "--set", "batch_size=8",
        "--set", "max_steps=2", "--set", "progress=false", "--set", "accelerator=cpu"]


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "store"
    write_store([make_session("a", T=800, N=7, C=5, seed=0),
                 make_session("b", T=800, N=9, C=6, seed=1)], root, segment_s=1.0)
    return root


@pytest.fixture
def fake_run(tmp_path) -> Path:
    """A folder with a run's files (their content does not matter to the checks)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.ckpt").write_bytes(b"weights")
    (run / "run_config.json").write_text("{}")
    return run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ C: --out replacing inputs
def test_c_an_output_that_would_replace_an_input_or_a_store_or_run_file(store, fake_run, tmp_path,
                                                                        capsys):
    latents = tmp_path / "latents.npz"
    np.savez(latents, a=np.zeros((800, 4), np.float32))
    before, run_before = _snapshot(store), _snapshot(fake_run)
    cases = [
        (["embed", fake_run, "--store", store, "--out", store / MANIFEST], "file of the store"),
        (["embed", fake_run, "--store", store, "--out", fake_run / "model.ckpt"], "file of the run"),
        (["probe", latents, "--store", store, "--out", store / "a.h5"], "file of the store"),
        (["probe", latents, "--store", store, "--out", latents], "one of this command's inputs"),
        (["classic", "--store", store, "--out", store / "b.h5"], "file of the store"),
        (["decode", fake_run, "--store", store, "--session", "a", "--out", store / "b.h5"],
         "file of the store"),
        (["decode", tmp_path / "m.onnx", "--store", store, "--session", "a",
          "--out", tmp_path / "m.json"], "one of this command's inputs"),
        (["export", fake_run, "--store", store, "--session", "a", "--out", store / "manifest.onnx"],
         "file of the store"),
        (["export-temporaldata", store, store], "one of this command's inputs"),
        (["pretrain", "--modality", "spikes", "--store", store, "--out", store, *TINY],
         "one of this command's inputs"),
        (["finetune", fake_run, "--store", store, "--session", "a", "--out", fake_run],
         "one of this command's inputs"),
        (["distill", "--teacher", fake_run, "--store", store, "--out", fake_run, *TINY],
         "one of this command's inputs"),
        (["pretrain", "--modality", "spikes", "--store", store, "--init-from", fake_run,
          "--out", fake_run, *TINY], "one of this command's inputs"),
    ]
    for argv, fragment in cases:
        cli_error(capsys, argv, fragment, code=2)
    assert _snapshot(store) == before and _snapshot(fake_run) == run_before
    open_store(store)  # still whole


def test_c_an_export_into_another_store_cannot_replace_its_session_files(store, tmp_path, capsys):
    pytest.importorskip("temporaldata")
    other = tmp_path / "other"
    write_store([make_session("a", T=400, N=3, C=2, seed=5)], other, segment_s=1.0)
    cli_error(capsys, ["export-temporaldata", store, other], "file of the store", code=2)
    open_store(other)


def test_c_embed_may_still_rewrite_its_own_default_output(tmp_path):
    from lfpdistill.data.guard import check_output_file

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.ckpt").write_bytes(b"w")
    (run / "latents.npz").write_bytes(b"old")
    check_output_file(run / "latents.npz", [run], allow=[run / "latents.npz"])
    check_output_file(run / "probe.json", [run])  # a new file next to the run's own


# ------------------------------------------------------------------ L: simulate over a store
def test_l_simulate_refuses_a_non_empty_folder_without_force(tmp_path, capsys):
    out = tmp_path / "s"
    sim = ["--seconds", "12", "--segment-s", "2"]
    assert main(["simulate", "--out", str(out), "--sessions", "2", *sim]) == 0
    names = sorted(p.name for p in out.glob("*.h5"))
    assert len(names) == 2
    manifest = (out / MANIFEST).read_bytes()
    cli_error(capsys, ["simulate", "--out", out, "--sessions", "1", *sim],
              "--force", code=2)
    assert (out / MANIFEST).read_bytes() == manifest
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    cli_error(capsys, ["simulate", "--out", other, "--sessions", "1", *sim],
              "not empty", code=2)
    assert main(["simulate", "--out", str(out), "--sessions", "1", *sim, "--force"]) == 0
    assert len(open_store(out).names) == 1
    assert len(list(out.glob("*.h5"))) == 1  # no orphan session file of the old store


# ------------------------------------------------------------------ O: one writer per run folder
def test_o_a_second_training_command_on_a_held_run_folder_is_refused(store, tmp_path, capsys):
    out = tmp_path / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lfpdistill.data.guard import folder_lock\n"
         f"with folder_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", out,
                           *TINY], "in use by another lfpdistill run", f"pid {holder.pid}", code=3)
        cli_error(capsys, ["finetune", out, "--store", store, "--session", "a",
                           "--out", out], "one of this command's inputs", code=2)
        assert not (out / "model.ckpt").exists()
    finally:
        holder.kill()
        holder.wait()
    # released with its process: the folder can be trained into now, and is free again after
    assert main(["pretrain", "--modality", "spikes", "--store", str(store), "--out", str(out),
                 *TINY]) == 0
    from lfpdistill.data.guard import _HELD, _LOCKS

    assert str(out.resolve()) not in _HELD and str(out.resolve()) not in _LOCKS


def test_o_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    from lfpdistill.data.guard import folder_lock

    with folder_lock(tmp_path / "x"), folder_lock(tmp_path / "x"):
        pass
    probe = subprocess.run(
        [sys.executable, "-c", "from lfpdistill.data.guard import folder_lock\n"
         f"with folder_lock({str(tmp_path / 'x')!r}): print('ok')"],
        capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "ok", probe.stderr
