import json
import multiprocessing as mp
import os
import signal
import time

import h5py
import numpy as np
import pytest
from tests.conftest import make_session

from lfpdistill.data import LazySession, load_session, open_store, save_session, write_store
from lfpdistill.errors import StoreError


def _same(a, b):
    for k in ("spikes", "lfp", "velocity", "latents", "segments", "trials", "electrode_positions"):
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None), k
        if x is not None:
            assert x.dtype == y.dtype, k
            np.testing.assert_array_equal(x, y)
    assert a.unit_ids == b.unit_ids and a.channel_ids == b.channel_ids
    assert (a.name, a.subject, a.bin_size, a.t0, a.meta) == (b.name, b.subject, b.bin_size, b.t0, b.meta)


def test_store_round_trip_bit_exact(tmp_path):
    sessions = [make_session(f"s{i}", T=2000 + 100 * i, seed=i, latents=True) for i in range(3)]
    sessions[1].meta = {"task": "center_out", "x": [1, 2]}
    sessions[2].spikes[5, 0] = 300  # forces uint16 storage
    store = write_store(sessions, tmp_path / "st", options={"sim": {"seed": 0}})
    again = open_store(tmp_path / "st")
    assert again.names == ["s0", "s1", "s2"]
    assert again.options_hash == store.options_hash and again.options["sim"] == {"seed": 0}
    for s in sessions:
        _same(s, again.session(s.name))
    with h5py.File(tmp_path / "st" / "s0.h5") as f:
        assert f["spikes"].dtype == np.uint8 and f["lfp"].dtype == np.float32
        assert f["lfp"].chunks[0] <= 1000


def test_spikes_only_and_lfp_only_sessions(tmp_path):
    a = make_session("a", T=1500, lfp=False)
    b = make_session("b", T=1500, spikes=False)
    write_store([a, b], tmp_path)
    st = open_store(tmp_path)
    assert st.session("a").lfp is None and st.session("b").spikes is None
    rows = {r["name"]: r for r in st.summary()}
    assert rows["a"]["n_channels"] == 0 and rows["b"]["mean_rate_hz"] is None


def test_lazy_window_reads_match(tmp_path):
    s = make_session("s", T=5000, C=6)
    write_store([s], tmp_path)
    lazy = LazySession(tmp_path / "s.h5")
    assert (lazy.n_bins, lazy.n_units, lazy.n_channels) == (5000, 7, 6)
    np.testing.assert_array_equal(lazy.read("lfp", 1234, 1334), s.lfp[1234:1334])
    np.testing.assert_array_equal(lazy.read("spikes", 10, 20), s.spikes[10:20])


def test_split_stable_across_runs(tmp_path):
    s1 = make_session("s", T=6000)
    s2 = make_session("s", T=6000)
    write_store([s1], tmp_path / "a", seed=7)
    write_store([s2], tmp_path / "b", seed=7)
    np.testing.assert_array_equal(open_store(tmp_path / "a").session("s").segments,
                                  open_store(tmp_path / "b").session("s").segments)


def test_select_patterns(tmp_path):
    write_store([make_session(n, T=1500) for n in ("sim00", "sim01", "real00")], tmp_path)
    st = open_store(tmp_path)
    assert st.select("sim*") == ["sim00", "sim01"]
    assert st.select("real00,sim01") == ["sim01", "real00"]
    assert st.select(None) == ["sim00", "sim01", "real00"]
    with pytest.raises(StoreError, match="matches no session"):
        st.select("nope*")


def test_bad_store_directories(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing")
    with pytest.raises(StoreError, match="not an lfpdistill store"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        open_store(tmp_path)


def test_corrupt_and_truncated_files(tmp_path):
    s = make_session("s", T=3000)
    write_store([s], tmp_path)
    path = tmp_path / "s.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match="unreadable|damaged"):
        load_session(path)
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError, match="unreadable|not the file the manifest describes"):
        open_store(tmp_path).session("s")
    path.unlink()
    with pytest.raises(StoreError, match="missing"):
        open_store(tmp_path)


def _slow_writer(path):
    big = make_session("big", T=400_000, N=50, C=96)
    save_session(big, path)


def test_killed_writer_leaves_no_loadable_file(tmp_path):
    path = tmp_path / "big.h5"
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_slow_writer, args=(path,))
    p.start()
    deadline = time.time() + 30
    while time.time() < deadline and not any(tmp_path.glob(".big.h5.*")):
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    assert not path.exists()
    with pytest.raises(StoreError):
        load_session(path)


def test_manifest_is_json_with_summary(tmp_path):
    write_store([make_session("s", T=3000)], tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    row = m["sessions"][0]
    assert row["train_s"] + row["val_s"] + row["test_s"] == pytest.approx(30.0)
