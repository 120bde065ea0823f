"""Stores under hostile conditions (issue #16): files' modes, a re-write killed half-way, replaced
or damaged session files, hand-edited manifests, and the study cache's key of a store."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from rich.console import Console
from tests.conftest import cli_error, make_session

import lfpdistill.data.store as store_module
from lfpdistill.data import open_store, save_session, write_json_atomic, write_store
from lfpdistill.data.store import MANIFEST, atomic_path
from lfpdistill.errors import StoreError
from lfpdistill.study.cache import Cache, canonical

ROOT = Path(__file__).resolve().parents[1]


def _sessions(seed: int, n: int = 3, units: int = 7) -> list:
    return [make_session(f"sim0{i}", T=600, N=units + i + seed, C=5, seed=seed * 10 + i)
            for i in range(n)]




@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


# ------------------------------------------------------------------ security 3: file modes
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)],
                         ids=["022", "027", "002"])
def test_atomically_written_files_get_the_umask_mode_not_0600(tmp_path, umask, mask, mode):
    umask(mask)
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_store([make_session("s", T=300)], tmp_path / "store", segment_s=1.0)
    with atomic_path(tmp_path / "b.npz", suffix=".npz") as tmp:
        np.savez(tmp, x=np.zeros(3))
    for p in (tmp_path / "a.json", tmp_path / "b.npz", tmp_path / "store" / MANIFEST,
              tmp_path / "store" / "s.h5"):
        assert stat.S_IMODE(p.stat().st_mode) == mode, (p, oct(p.stat().st_mode))


# ------------------------------------------------------------------ data loss 4: killed re-writes
_KILL_AFTER_FIRST_FILE = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [{root!r}]
    import lfpdistill.data.store as st
    from tests.conftest import make_session
    original = st.save_session

    def save_then_die(session, path):
        original(session, path)
        os.kill(os.getpid(), signal.SIGKILL)  # the first session is in, the others are not

    st.save_session = save_then_die
    sessions = [make_session(f"sim0{{i}}", T=600, N=7 + i + 7, C=5, seed=70 + i) for i in range(3)]
    st.write_store(sessions, {store!r}, segment_s=1.0)
""")


def test_a_rewrite_killed_half_way_leaves_a_store_that_is_refused_not_mixed(tmp_path, capsys):
    store = tmp_path / "S"
    write_store(_sessions(0), store, segment_s=1.0)
    before = json.loads((store / MANIFEST).read_text())
    res = subprocess.run([sys.executable, "-c", _KILL_AFTER_FIRST_FILE.format(root=str(ROOT),
                                                                              store=str(store))],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert json.loads((store / MANIFEST).read_text()) == before  # the old manifest ...
    with pytest.raises(StoreError, match="'sim00.h5' .*is not the file the manifest describes"):
        open_store(store)  # ... next to a new sim00.h5: refused, not loaded as the old session
    cli_error(capsys, ["inspect", store], "interrupted", "re-create the store")
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", tmp_path / "r"],
           "is not the file the manifest describes")
    write_store(_sessions(7), store, segment_s=1.0)  # writing it again repairs it
    assert open_store(store).session("sim00").n_units == 14


_KILL_PREPARE = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [{root!r}]
    import lfpdistill.data as data
    from lfpdistill.readers import prepare_store
    original = data.write_store
    calls = []

    def write_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # one session read and written, one to go
        return original(*args, **kwargs)

    data.write_store = write_then_die
    prepare_store("flint", {raw!r}, {store!r}, segment_s=1.0, seed=5, force=True)
""")


def test_a_prepare_killed_half_way_leaves_the_old_store_whole(tmp_path):
    from tests.fixtures_real import make_flint

    from lfpdistill.readers import prepare_store

    raw, store = tmp_path / "raw", tmp_path / "st"
    raw.mkdir()
    make_flint(raw, exp=1, n_subjects=2)
    prepare_store("flint", raw, store, segment_s=1.0)
    old = open_store(store)
    code = _KILL_PREPARE.format(root=str(ROOT), raw=str(raw), store=str(store))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == -signal.SIGKILL, res.stderr
    again = open_store(store)
    assert again.manifest == old.manifest and again.content_key == old.content_key
    assert again.options["seed"] == 0
    left = list(tmp_path.glob(".st.preparing-*"))
    assert len(left) == 1  # the killed process's staging store, never loaded ...
    prepare_store("flint", raw, store, segment_s=1.0, seed=5)
    assert not list(tmp_path.glob(".st.*"))  # ... and removed by the next prepare
    assert open_store(store).options["seed"] == 5


# ------------------------------------------------------------------ replaced / damaged files
def test_a_replaced_session_file_is_refused(tmp_path, capsys):
    store = tmp_path / "S"
    write_store(_sessions(0), store, segment_s=1.0)
    other = _sessions(7)[0]
    other.segments = open_store(store).session("sim00").segments
    save_session(other, store / "sim00.h5")
    cli_error(capsys, ["inspect", store], "'sim00.h5' (session 'sim00') is not the file")


def test_bit_rot_with_the_same_size_is_refused(tmp_path):
    store = tmp_path / "S"
    write_store(_sessions(0), store, segment_s=1.0)
    path = store / "sim01.h5"
    blob = bytearray(path.read_bytes())
    blob[-200:-100] = os.urandom(100)
    path.write_bytes(bytes(blob))
    with pytest.raises(StoreError, match="content differs from the manifest's checksum"):
        open_store(store)


def test_bit_rot_that_keeps_size_and_modification_time_is_refused_on_load(tmp_path):
    store = tmp_path / "S"
    write_store(_sessions(0), store, segment_s=1.0)
    path = store / "sim02.h5"
    with h5py.File(path, "r") as f:
        at = f["lfp"].id.get_chunk_info(0).byte_offset + 400  # inside the LFP samples
    st = path.stat()
    with open(path, "r+b") as f:  # change bytes in place, then put the old times back
        f.seek(at)
        f.write(bytes(b ^ 0x01 for b in f.read(8)))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    store_module._DIGESTS.clear()  # as in a later process
    opened = open_store(store)  # size, time and inode as recorded: the cheap check passes
    assert opened.session("sim00").name == "sim00"
    with pytest.raises(StoreError, match="'sim02.h5' .*content differs from the manifest"):
        opened.session("sim02")


def test_a_copied_store_still_opens(tmp_path):
    import shutil

    write_store(_sessions(0), tmp_path / "S", segment_s=1.0)
    shutil.copytree(tmp_path / "S", tmp_path / "copy")  # new inodes: checked by content
    assert open_store(tmp_path / "copy").content_key == open_store(tmp_path / "S").content_key


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda e: e.pop("file"), "needs a 'name' and a 'file'"),
    (lambda e: e.update(file=3), "needs a 'name' and a 'file'"),
    (lambda e: e.update(name=["x"]), "needs a 'name' and a 'file'"),
    (lambda e: e.update(file="../S/sim00.h5"), "outside the store folder"),
    (lambda e: e.update(file="sim01.h5"), "'sim01.h5' (session 'sim00') is not the file"),
])
def test_hand_edited_manifest_entries_are_one_line_errors(tmp_path, capsys, edit, fragment):
    store = tmp_path / "S"
    write_store(_sessions(0), store, segment_s=1.0)
    manifest = json.loads((store / MANIFEST).read_text())
    edit(manifest["sessions"][0])
    (store / MANIFEST).write_text(json.dumps(manifest))
    cli_error(capsys, ["inspect", store], fragment)


def test_an_old_manifest_pointing_to_another_sessions_file_is_refused(tmp_path):
    store = tmp_path / "S"
    write_store(_sessions(0), store, segment_s=1.0)
    manifest = json.loads((store / MANIFEST).read_text())
    for e in manifest["sessions"]:  # as written before the manifest recorded its files
        for k in ("size", "sha256", "mtime_ns", "inode"):
            e.pop(k)
    manifest["sessions"][0]["file"] = "sim01.h5"
    (store / MANIFEST).write_text(json.dumps(manifest))
    st = open_store(store)
    with pytest.raises(StoreError, match="lists session 'sim00' but its file 'sim01.h5' holds "
                                         "session 'sim01'"):
        st.lazy("sim00")
    with pytest.raises(StoreError, match="holds session 'sim01'"):
        st.session("sim00")


# ------------------------------------------------------------------ data loss 6: study cache key
def count_sessions(out_dir: Path, store) -> None:
    """A study unit that reads the store (module level: the cache keys on its name)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "n.json").write_text(json.dumps([store.session(n).n_units for n in store.names]))


def test_the_study_cache_recomputes_after_the_store_is_rewritten_with_the_same_options(tmp_path):
    store = tmp_path / "S"
    write_store(_sessions(0), store, segment_s=1.0)
    cache = Cache(tmp_path / "study", set(), Console(quiet=True))
    first = cache.run("data", "count", count_sessions, store=open_store(store))
    assert cache.run("data", "count", count_sessions, store=open_store(store)) == first
    assert [e["status"] for e in cache.log] == ["ran", "cached"]
    write_store(_sessions(7), store, segment_s=1.0)  # same options, other data
    again = cache.run("data", "count", count_sessions, store=open_store(store))
    assert cache.log[-1]["status"] == "ran" and again != first
    assert json.loads((again / "n.json").read_text()) == [14, 15, 16]


def test_the_cache_key_of_an_old_store_changes_when_a_session_file_is_rewritten(tmp_path):
    store = tmp_path / "S"
    write_store(_sessions(0), store, segment_s=1.0)
    manifest = json.loads((store / MANIFEST).read_text())
    for e in manifest["sessions"]:
        for k in ("size", "sha256", "mtime_ns", "inode"):
            e.pop(k)
    (store / MANIFEST).write_text(json.dumps(manifest))
    key = canonical(open_store(store))
    assert canonical(open_store(store)) == key
    s = _sessions(7)[1]
    s.name = "sim01"
    s.segments = open_store(store).session("sim01").segments
    save_session(s, store / "sim01.h5")
    assert canonical(open_store(store)) != key
