"""O'Doherty reader and prepare_store on fixture files in the exact release layout."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from lfpdistill.data import open_store
from lfpdistill.errors import LfpDistillError
from lfpdistill.preprocess import broadband_to_lfp
from lfpdistill.readers import RawDataError, list_raw_sessions, prepare_store
from lfpdistill.readers._common import file_kind

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures_real import (  # noqa: E402
    BB_FS,
    expected_counts,
    make_odoherty,
    write_broadband,
    write_mat73,
)

NAME = "indy_20160407_02"


def _channel_trains(truth) -> list[np.ndarray]:
    return [np.concatenate([u for u in ch if u is not None] or [np.empty(0)])
            for ch in truth.spikes]


def _no_leftovers(parent: Path) -> None:
    assert not [p for p in parent.iterdir() if p.name.startswith(".")], list(parent.iterdir())


def test_fixture_is_a_v73_matfile(tmp_path: Path) -> None:
    make_odoherty(tmp_path, bb_t0=None)
    assert file_kind(tmp_path / f"{NAME}.mat") == "mat7.3"
    with open(tmp_path / f"{NAME}.mat", "rb") as fh:
        assert fh.read(19) == b"MATLAB 7.3 MAT-file"
    with h5py.File(tmp_path / f"{NAME}.mat", "r") as f:
        assert f["spikes"].shape == (3, 8) and f["t"].shape[0] == 1
        empty = [f[r] for r in f["spikes"][()].ravel() if f[r].attrs.get("MATLAB_empty")]
        assert empty and empty[0].shape == (2,) and empty[0].dtype == np.uint64


def test_prepare_odoherty_spikes_velocity_lfp_aligned(tmp_path: Path) -> None:
    truth = make_odoherty(tmp_path / "raw")  # behaviour 1000.25 s.., broadband 999.1 s..
    out = prepare_store("odoherty", tmp_path / "raw", tmp_path / "store", segment_s=2.0)
    s = open_store(out).session(NAME)
    # clocks: bins cover only the overlap, which starts with the behaviour and ends with the
    # broadband recording
    assert s.t0 == pytest.approx(1000.25) and truth.grid_start == pytest.approx(1000.25)
    assert s.n_bins == truth.n_bins == int(np.floor((999.1 + (int(12.5 * BB_FS) - 1) / BB_FS
                                                     - 1000.25) / 0.01))
    np.testing.assert_array_equal(
        s.spikes, expected_counts(_channel_trains(truth), truth.grid_start, truth.n_bins))
    assert s.unit_ids == truth.chan_names
    # velocity: d(cursor)/dt at the bin centres (analytic derivative of the fixture path)
    tc = s.t0 + (np.arange(s.n_bins) + 0.5) * 0.01 - 1000.25
    vx = 30 * 2 * np.pi * 0.3 * np.cos(2 * np.pi * 0.3 * tc)
    vy = -20 * 2 * np.pi * 0.2 * np.sin(2 * np.pi * 0.2 * tc)
    assert np.abs(s.velocity[1:-1, 0] - vx[1:-1]).max() < 0.05
    assert np.abs(s.velocity[1:-1, 1] - vy[1:-1]).max() < 0.05
    # LFP: the same chain in memory on the whole broadband signal, same grid
    ref = broadband_to_lfp(truth.bb, BB_FS, 0.01, t0=truth.bb_t0, grid_start=truth.grid_start,
                           n_bins=truth.n_bins, scale=truth.conversion)
    assert np.abs(s.lfp - ref).max() < 1e-4
    assert s.channel_ids == truth.electrode_names
    assert s.meta["lfp_source"] == f"{NAME}.nwb"
    # trials from target changes (every 2 s)
    assert s.trials is not None and s.trials[0, 0] == 0 and s.trials[-1, 1] == s.n_bins
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["format"] == "odoherty"
    assert manifest["options"]["reader"]["bin_by"] == "channel"
    assert "prepare_hash" in manifest["options"]


def test_bin_by_unit_keeps_sorted_units_only(tmp_path: Path) -> None:
    truth = make_odoherty(tmp_path / "raw", bb_t0=None)
    out = prepare_store("odoherty", tmp_path / "raw", tmp_path / "st", segment_s=2.0,
                        bin_by="unit")
    s = open_store(out).session(NAME)
    trains, ids = [], []
    for c, ch in enumerate(truth.spikes):
        for u, times in enumerate(ch[1:], start=1):
            if times is not None:
                trains.append(times)
                ids.append(f"{truth.chan_names[c]}#u{u}")
    assert s.unit_ids == ids
    np.testing.assert_array_equal(s.spikes, expected_counts(trains, truth.grid_start,
                                                            truth.n_bins))
    assert s.lfp is None and "spikes only" in s.meta["lfp_note"]


def test_96_and_192_channel_sessions(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    t96 = make_odoherty(raw, "indy_20160921_01", n_ch=96, n_units=2, beh_dur=3.0, bb_t0=1000.0,
                        bb_dur=3.0)
    t192 = make_odoherty(raw, "loco_20170210_03", n_ch=192, n_units=2, beh_dur=4.0,
                         bb_t0=None, seed=3)
    out = prepare_store("odoherty", raw, tmp_path / "st", segment_s=0.5)
    st = open_store(out)
    a, b = st.session("indy_20160921_01"), st.session("loco_20170210_03")
    assert a.spikes.shape[1] == 96 and a.lfp.shape[1] == 96
    np.testing.assert_array_equal(a.spikes, expected_counts(_channel_trains(t96), t96.grid_start,
                                                            t96.n_bins))
    assert b.spikes.shape[1] == 192 and b.lfp is None and b.unit_ids[96] == "S1 001"
    assert b.subject == "loco"
    np.testing.assert_array_equal(b.spikes, expected_counts(_channel_trains(t192),
                                                            t192.grid_start, t192.n_bins))


def test_broadband_subset_of_channels_is_accepted(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", n_ch=8, bb_channels=6, beh_dur=3.0, bb_t0=1000.0,
                  bb_dur=3.0)
    s = open_store(prepare_store("odoherty", tmp_path / "raw", tmp_path / "st",
                                 segment_s=0.5)).session(NAME)
    assert s.spikes.shape[1] == 8 and s.lfp.shape[1] == 6


def test_unchanged_options_skip_changed_options_reprocess(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", bb_t0=None)
    out = prepare_store("odoherty", tmp_path / "raw", tmp_path / "st", segment_s=2.0)
    f = out / f"{NAME}.h5"
    mtime = f.stat().st_mtime_ns
    prepare_store("odoherty", tmp_path / "raw", tmp_path / "st", segment_s=2.0)
    assert f.stat().st_mtime_ns == mtime  # skipped
    prepare_store("odoherty", tmp_path / "raw", tmp_path / "st", segment_s=2.0, bin_by="unit")
    st = open_store(out)
    assert st.options["reader"]["bin_by"] == "unit"
    assert st.session(NAME).unit_ids[0].endswith("#u1")
    os.utime(tmp_path / "raw" / f"{NAME}.mat", ns=(1, 1))  # raw file changed -> reprocess
    h = st.options["prepare_hash"]
    prepare_store("odoherty", tmp_path / "raw", tmp_path / "st", segment_s=2.0, bin_by="unit")
    assert open_store(out).options["prepare_hash"] != h
    _no_leftovers(tmp_path)


# ----------------------------------------------------------------------------- bad input
def _fails(tmp_path: Path, match: str, **kw) -> LfpDistillError:
    """prepare must fail with a one-line LfpDistillError and leave no store or temp files."""
    with pytest.raises(LfpDistillError, match=match) as e:
        prepare_store("odoherty", tmp_path / "raw", tmp_path / "store", segment_s=2.0, **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "store").exists()
    _no_leftovers(tmp_path)
    return e.value


def test_v5_matfile_rejected(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    scipy.io.savemat(tmp_path / "raw" / f"{NAME}.mat", {"t": np.arange(10.0)})
    err = _fails(tmp_path, "MATLAB v5/v7 MAT-file; expected MATLAB v7.3")
    assert isinstance(err, RawDataError) and f"{NAME}.mat" in str(err)


def test_missing_field_named(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    write_mat73(tmp_path / "raw" / f"{NAME}.mat", {"t": np.arange(100.0)[:, None] / 250})
    _fails(tmp_path, r"field 'cursor_pos' is missing")


def test_broadband_clock_not_overlapping(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", bb_t0=2000.0, bb_dur=2.0)
    _fails(tmp_path, r"broadband timestamps: time spans .* do not overlap")


def test_channel_counts_disagree(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", n_ch=8, bb_channels=10, beh_dur=3.0, bb_t0=1000.0,
                  bb_dur=3.0)
    _fails(tmp_path, r"broadband has 10 channels but .*has 8 channels")


def test_nan_in_broadband_signal(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", bb_t0=None, beh_dur=3.0)
    write_broadband(tmp_path / "raw" / f"{NAME}.nwb", 1000.0, 3.0, 8, dtype="float32",
                    nan_at=30000)
    _fails(tmp_path, r"broadband/data: 1 non-finite value.*sample 30000 channel 0")


def test_nan_in_cursor(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    cur = np.zeros((100, 2))
    cur[5, 1] = np.nan
    write_mat73(tmp_path / "raw" / f"{NAME}.mat", {"t": np.arange(100.0)[:, None] / 250,
                                                   "cursor_pos": cur})
    _fails(tmp_path, r"field 'cursor_pos' contains NaN/inf")


@pytest.mark.parametrize("which", ["mat", "nwb"])
def test_truncated_files(tmp_path: Path, which: str) -> None:
    make_odoherty(tmp_path / "raw", beh_dur=3.0, bb_t0=1000.0, bb_dur=3.0)
    p = tmp_path / "raw" / f"{NAME}.{which}"
    size = p.stat().st_size
    with open(p, "r+b") as fh:
        fh.truncate(size // 2)
    _fails(tmp_path, r"(unreadable|truncated)")


def test_listed_session_not_in_raw_folder(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", bb_t0=None)
    _fails(tmp_path, r"session 'indy_20170101_01' is not in raw data folder .*available: "
                     rf"{NAME}", sessions=["indy_20170101_01"])
    with pytest.raises(RawDataError, match="does not exist"):
        list_raw_sessions("odoherty", tmp_path / "nope")


def test_failure_keeps_existing_store(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", bb_t0=None)
    out = prepare_store("odoherty", tmp_path / "raw", tmp_path / "store", segment_s=2.0)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(LfpDistillError):
        prepare_store("odoherty", tmp_path / "raw", tmp_path / "store", segment_s=2.0,
                      sessions=["indy_20990101_01"])
    with pytest.raises(LfpDistillError, match="bin_by"):
        prepare_store("odoherty", tmp_path / "raw", tmp_path / "store", bin_by="electrode")
    assert sorted(p.name for p in out.iterdir()) == before
    open_store(out).session(NAME)
    _no_leftovers(tmp_path)


def test_not_a_store_output_refused(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", bb_t0=None)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(LfpDistillError, match="not empty and not an lfpdistill store"):
        prepare_store("odoherty", tmp_path / "raw", tmp_path / "busy", segment_s=2.0)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
