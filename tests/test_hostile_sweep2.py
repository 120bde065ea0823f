"""The second hostile-input sweep (issue #37): outputs that would replace inputs (C), simulate
over a store (L), two commands in one run folder (O), unreadable text (D), ONNX metadata (E),
NWB and O'Doherty files (F, G), seeds (H), export options (I), missing segments and NaN
options (J), huge-but-finite LFP and flat NWB LFP (K), and the silently accepted inputs of P.
Each ends in one ``error:`` line with exit status 2, 3 or 4, or behaves correctly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
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


def test_c_a_packed_models_files_are_not_replaced(tmp_path):
    from lfpdistill.data.guard import PACKED_FILES, check_output_file
    from lfpdistill.errors import ConfigError
    from lfpdistill.models.pack import PACK_FILES

    assert PACKED_FILES == PACK_FILES  # the guard names the files pack writes
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in PACK_FILES:
        (packed / name).write_text("x")
    for name in PACK_FILES:
        with pytest.raises(ConfigError, match="file of the packed model"):
            check_output_file(packed / name)
    check_output_file(packed / "probe.json")  # a new file next to the model's own
    plain = tmp_path / "notes"
    plain.mkdir()
    check_output_file(plain / "README.md")  # no model.safetensors: an ordinary folder


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


def _retouch(store: Path) -> None:
    """Record the session files as they are now in the manifest (a hostile edit that keeps the
    store's own integrity check quiet)."""
    from lfpdistill.data.store import _file_record

    mpath = store / MANIFEST
    manifest = json.loads(mpath.read_text())
    for entry in manifest["sessions"]:
        entry.update(_file_record(store / entry["file"]))
    mpath.write_text(json.dumps(manifest))


# ------------------------------------------------------------------ D: unreadable text
def test_d_a_manifest_that_is_not_utf8_or_nested_too_deep(store, capsys):
    mpath = store / MANIFEST
    mpath.write_bytes(b'{"format": "\xff\xfe"}')
    cli_error(capsys, ["inspect", store], "not UTF-8", code=3)
    mpath.write_text("[" * 100_000 + "]" * 100_000)
    cli_error(capsys, ["inspect", store], "nested too deeply", code=3)


@pytest.mark.parametrize("meta", ["{not json", "[1, 2]", b"\xff\xfe"])
def test_d_a_session_meta_that_is_not_json(store, capsys, meta):
    with h5py.File(store / "a.h5", "a") as f:
        f.attrs["meta"] = np.void(meta) if isinstance(meta, bytes) else meta
    _retouch(store)
    cli_error(capsys, ["classic", "--store", store, "--sessions", "a"], "'meta' attribute",
              code=3)


@pytest.mark.parametrize(("text", "fragment"), [
    (b"name: \xff\xfe\n", "not UTF-8"),
    (b"a: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "nested too deeply"),
    (b"name: a\nseeds: [0]\nname: b\n", "found the key 'name' twice (line 3)"),  # P
])
def test_d_p_a_yaml_config_that_is_not_utf8_too_deep_or_has_a_key_twice(tmp_path, capsys, text,
                                                                         fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text)
    cli_error(capsys, ["run", cfg, "--out", tmp_path / "o"], fragment, code=2)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ H: seeds
@pytest.mark.parametrize("seed", ["-1", "1e20", "4294967296"])
def test_h_a_seed_outside_0_to_2_32_is_refused_by_the_config(store, tmp_path, capsys, seed):
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", tmp_path / "r",
                       *TINY, "--set", f"seed={seed}"], "seed", code=2)
    assert not (tmp_path / "r").exists()


def test_h_a_study_with_a_negative_seed_stops_before_the_data_stage(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"out": str(tmp_path / "o"), "seeds": [0, -1],
                                   "sessions": {"teacher": ["*"], "distill": ["*"]}}))
    cli_error(capsys, ["run", cfg], "seeds.1", code=2)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ J: missing segments, NaN lag
def test_j_a_session_without_segments_is_one_line(session_factory):
    from lfpdistill.config import ModelConfig
    from lfpdistill.errors import DataValidationError
    from lfpdistill.evaluation import session_latents
    from lfpdistill.models import NeuralTransformer

    s = session_factory("s0", T=200, C=5)
    assert s.segments is None
    model = NeuralTransformer(ModelConfig(modality="lfp", patch_size=4, d_model=16, n_layers=1,
                                          n_heads=2), {"s0": 5})
    with pytest.raises(DataValidationError, match="has no split segments"):
        session_latents(model, s, 0.2)


def test_j_probe_with_a_nan_lag(store, tmp_path, capsys):
    latents = tmp_path / "latents.npz"
    np.savez(latents, a=np.zeros((800, 4), np.float32))
    cli_error(capsys, ["probe", latents, "--store", store, "--lag-ms", "nan"], "finite", code=2)


# ------------------------------------------------------------------ J, K: LFP x 1e30
def test_k_lfp_far_beyond_z_scores_is_refused_not_decoded_to_nan(store, tmp_path, capsys):
    from lfpdistill.errors import DataValidationError
    from lfpdistill.session import Session

    s = make_session("big", T=300, C=4)
    with pytest.raises(DataValidationError, match="z-scored"):
        Session(name="big", velocity=s.velocity, lfp=s.lfp * np.float32(1e30))
    with h5py.File(store / "a.h5", "a") as f:
        f["lfp"][...] = f["lfp"][()] * np.float32(1e30)
    _retouch(store)
    cli_error(capsys, ["classic", "--store", store, "--sessions", "a"], "z-scored", code=3)
    cli_error(capsys, ["decode", tmp_path / "nowhere", "--store", store, "--session", "a"],
              "z-scored", code=3)


# ------------------------------------------------------------------ P: silently accepted inputs
def test_p_a_boolean_for_a_number_is_refused(store, tmp_path, capsys):
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", tmp_path / "r",
                       *TINY, "--set", "max_epochs=true"], "max_epochs=true is a boolean", code=2)


def test_p_init_from_with_a_conflicting_model_option(store, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["pretrain", "--modality", "spikes", "--store", str(store), "--out", str(run),
                 *TINY]) == 0
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--init-from", run,
                       "--out", tmp_path / "r2", *TINY, "--set", "d_model=64"],
              "d_model=64 (the checkpoint has 16)", code=2)
    # the same value as the checkpoint's is no conflict
    assert main(["pretrain", "--modality", "spikes", "--store", str(store), "--init-from", str(run),
                 "--out", str(tmp_path / "r3"), *TINY]) == 0


def test_p_probe_on_an_empty_npz_or_latents_of_other_sessions(store, tmp_path, capsys):
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    cli_error(capsys, ["probe", empty, "--store", store], "holds no latents", code=3)
    other = tmp_path / "other.npz"
    np.savez(other, zz=np.zeros((800, 4), np.float32))
    cli_error(capsys, ["probe", other, "--store", store], "none of them a session", code=3)


def test_p_a_latents_header_declaring_a_huge_array_is_refused_before_allocating(store, tmp_path,
                                                                              capsys):
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (10**11, 100)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.npy", buf.getvalue() + b"\0" * 64)
    cli_error(capsys, ["probe", path, "--store", store], "GiB", code=3)
    small = tmp_path / "short.npz"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (800, 4)})
    with zipfile.ZipFile(small, "w") as z:
        z.writestr("a.npy", buf.getvalue() + b"\0" * 64)
    cli_error(capsys, ["probe", small, "--store", store], "declares shape [800, 4]", code=3)


def test_p_a_manifest_of_a_newer_format_version_is_refused(store, capsys):
    mpath = store / MANIFEST
    manifest = json.loads(mpath.read_text())
    manifest["format_version"] = 99
    mpath.write_text(json.dumps(manifest))
    cli_error(capsys, ["inspect", store], "format_version 99", code=3)
