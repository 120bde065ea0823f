"""What used to end in a traceback (issue #16): the operating system refusing a file
(permission, full disk, long names, folders where files belong), empty selections, damaged
inputs, two studies in one folder. Each must be one ``error:`` line and exit status 2."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from tests.conftest import make_session
from tests.test_pipeline import TINY as STUDY

from lfpdistill.cli import main, os_error_line
from lfpdistill.data import open_store, write_store
from lfpdistill.data.store import MANIFEST
from lfpdistill.errors import StoreError

TINY = ["--set", "patch_size=4", "--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2",
        "--set", "window_s=0.2", "--set", "stride_s=0.2", "--set", "batch_size=8",
        "--set", "max_steps=2", "--set", "progress=false", "--set", "accelerator=cpu"]
SIMULATE = ["simulate", "--sessions", "1", "--seconds", "15"]


def _error(capsys, argv, *fragments) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code in (2, 3, 4), err  # usage, data or environment (README, "Exit codes")
    lines = err.strip().splitlines()  # progress lines (simulate) may come before the error
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err and sum(x.startswith("error") for x in lines) == 1, err
    for f in fragments:
        assert f in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_hostile") / "store"
    write_store([make_session("a", T=800, N=7, C=5, seed=0),
                 make_session("b", T=800, N=9, C=6, seed=1)], root, segment_s=1.0)
    return root


@pytest.fixture
def latents(tmp_path) -> Path:
    path = tmp_path / "latents.npz"
    np.savez(path, a=np.random.default_rng(0).normal(size=(800, 4)).astype(np.float32))
    return path


@contextmanager
def unprivileged():
    """Permission checks as an ordinary user: root passes them, so drop the effective user id
    (and restore it) when running as root."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@contextmanager
def file_size_limit(limit: int):
    """Writes beyond ``limit`` bytes fail with EFBIG, as on a full disk (ENOSPC) — without
    filling one."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


# ------------------------------------------------------------------ the operating system says no
def test_an_unwritable_output_folder_is_one_line_naming_it(tmp_path, capsys):
    import lfpdistill.simulate  # noqa: F401 - imported before the user id changes
    from lfpdistill.data import write_store as _  # noqa: F401

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    locked = shared / "locked"
    locked.mkdir(mode=0o555)
    os.chmod(tmp_path, 0o755)
    with unprivileged():
        _error(capsys, [*SIMULATE, "--out", locked / "S"], f"'{locked / 'S'}'",
               "permission denied", "choose a folder you can write to")
    assert list(locked.iterdir()) == []


def test_unwritable_outputs_are_found_before_the_work(store, latents, tmp_path, capsys):
    import lfpdistill.commands.evaluate  # noqa: F401
    import lfpdistill.simulate  # noqa: F401

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    os.chmod(tmp_path, 0o755)
    with unprivileged():
        capsys.readouterr()
        assert main([*SIMULATE, "--out", str(locked / "S")]) == 4  # the file system refused
        err = capsys.readouterr().err
        assert "permission denied" in err and "simulated" not in err, err  # nothing simulated
        _error(capsys, ["probe", latents, "--store", store, "--out", locked / "p.json"],
               f"'{locked}", "permission denied")
        _error(capsys, ["classic", "--store", store, "--out", locked / "c.json"],
               f"'{locked}", "permission denied")
    assert list(locked.iterdir()) == []


def test_a_full_disk_while_simulating_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys):
    import lfpdistill.simulate  # noqa: F401

    out = tmp_path / "S"
    with file_size_limit(100_000):
        _error(capsys, [*SIMULATE, "--out", out], f"'{out / 'sim00.h5'}'", "file too large")
    assert [p.name for p in out.iterdir()] == []  # no .tmp, no half-written session
    stale = out / ".sim00.h5.abcd1234.tmp"  # what a writer killed mid-way leaves
    stale.write_bytes(b"x" * 100)
    assert main([*SIMULATE, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "sim00.h5"]


def test_a_full_disk_while_training_names_the_run_folder(store, tmp_path, capsys):
    import lfpdistill.commands.pretrain  # noqa: F401

    out = tmp_path / "run"
    with file_size_limit(20_000):
        _error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", out, *TINY,
                        "--set", "checkpoint_every_steps=1"], f"'{out}'", "file too large")
    assert not (out / "model.ckpt").exists()


def test_an_output_name_too_long_for_the_file_system(store, latents, tmp_path, capsys):
    out = tmp_path / ("x" * 300 + ".json")
    _error(capsys, ["probe", latents, "--store", store, "--sessions", "a", "--out", out],
           "file name too long", "use shorter names")


def test_a_session_name_too_long_for_a_file_is_refused_before_writing(tmp_path):
    with pytest.raises(StoreError, match="is too long for a file name here"):
        write_store([make_session("s" * 250, T=300)], tmp_path / "S", segment_s=1.0)
    assert not (tmp_path / "S").exists()


@pytest.mark.parametrize("command", ["probe", "classic", "embed"])
def test_an_output_file_that_is_a_folder_is_refused_before_any_work(store, latents, tmp_path,
                                                                     capsys, command):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    argv = {"probe": ["probe", latents, "--store", store],
            "classic": ["classic", "--store", store],
            "embed": ["embed", tmp_path / "no_run", "--store", store]}[command]
    _error(capsys, [*argv, "--out", folder], f"--out '{folder}' is a folder", "pass a file path")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    _error(capsys, [*argv, "--out", a_file / "x.json"], f"'{a_file}' is a file, not a folder")
    assert a_file.read_text() == "keep me"


def test_an_output_folder_that_is_a_file(store, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    _error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", a_file, *TINY],
           f"'{a_file}'", "exists and is not a folder")
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump({**STUDY, "out": str(a_file)}))
    _error(capsys, ["run", cfg], f"'{a_file}'", "exists and is not a folder")
    assert a_file.read_text() == "keep me"


def test_the_os_error_line_reads_hdf5_messages():
    e = OSError("Unable to create file (unable to open file: name = '/data/s.h5', errno = 28, "
                "error message = 'No space left on device', flags = 13)")
    assert os_error_line(e) == ("cannot use '/data/s.h5': no space left on the device; free "
                                "some space or write to another disk")
    e = PermissionError(13, "Permission denied", "/data/.manifest.json.k2j3h4g5.tmp")
    assert os_error_line(e).startswith("cannot use '/data/manifest.json': permission denied")


# ------------------------------------------------------------------ two studies, one folder
_HOLD_LOCK = textwrap.dedent("""
    import fcntl, sys, time
    f = open({lock!r}, "a+")
    fcntl.flock(f, fcntl.LOCK_EX)
    f.truncate(0); f.write("pid 4242 on labhost, started 2026-01-01 10:00:00"); f.flush()
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
""")


def test_a_second_run_on_the_same_output_folder_is_refused_naming_the_first(tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK.format(lock=str(out / ".lock"))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = tmp_path / "study.yaml"
        cfg.write_text(yaml.safe_dump({**STUDY, "out": str(out)}))
        _error(capsys, ["run", cfg], f"output folder '{out}' is in use by another lfpdistill run",
               "pid 4242 on labhost", "wait for it to finish")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# ------------------------------------------------------------------ empty and damaged input
def test_a_store_without_sessions_and_an_empty_session_list(store, tmp_path, capsys):
    empty = tmp_path / "empty"
    write_store([], empty)
    _error(capsys, ["pretrain", "--modality", "spikes", "--store", empty, "--out", tmp_path / "r",
                    *TINY], "holds no sessions")
    _error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--sessions", ",,",
                    "--out", tmp_path / "r", *TINY], "sessions ',,' names no session")
    assert not (tmp_path / "r").exists()


def test_a_session_file_without_velocity(tmp_path, capsys):
    store = tmp_path / "S"
    write_store([make_session("a", T=800, N=7, C=5)], store, segment_s=1.0)
    manifest = json.loads((store / MANIFEST).read_text())
    for e in manifest["sessions"]:  # a store from before the manifest recorded its files
        for k in ("size", "sha256", "mtime_ns", "inode"):
            e.pop(k)
    (store / MANIFEST).write_text(json.dumps(manifest))
    with h5py.File(store / "a.h5", "a") as f:
        del f["velocity"]
    _error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", tmp_path / "r",
                    *TINY], "a.h5' is damaged or incomplete", "velocity")
    assert open_store(store).names == ["a"]


def test_probe_on_a_truncated_latents_file_or_on_1d_latents(store, latents, tmp_path, capsys):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(latents.read_bytes()[:1000])
    _error(capsys, ["probe", truncated, "--store", store, "--sessions", "a"],
           f"latents file '{truncated}' is unreadable")
    flat = tmp_path / "flat.npz"
    np.savez(flat, a=np.zeros(800, np.float32))
    for decoder in ("linear", "wiener"):
        _error(capsys, ["probe", flat, "--store", store, "--sessions", "a", "--decoder", decoder],
               "latents of 'a' have shape [800]; expected [bins, features]")


def test_simulate_segment_s_is_the_split_the_sessions_get(tmp_path):
    out = tmp_path / "S"
    assert main([*SIMULATE, "--segment-s", "2", "--out", str(out)]) == 0
    st = open_store(out)
    seg = st.session("sim00").segments
    bins = seg[:, 1] - seg[:, 0]
    assert st.options["segment_s"] == 2.0
    assert abs(float(np.median(bins)) * st.session("sim00").bin_size - 2.0) < 1e-6
