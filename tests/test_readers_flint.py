"""Flint 2012 reader on MAT 5 fixtures in the release layout."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lfpdistill.data import open_store
from lfpdistill.errors import LfpDistillError
from lfpdistill.preprocess import broadband_to_lfp
from lfpdistill.readers import list_raw_sessions, prepare_store, read_raw
from lfpdistill.readers._common import file_kind

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures_real import make_flint, make_odoherty  # noqa: E402


def _expected(trials: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts, vel, lfp = [], [], []
    for tr in trials:
        time = tr["time"]
        c = np.zeros((len(time), len(tr["spikes"])), dtype=np.int64)
        for k, st in enumerate(tr["spikes"]):
            for s in st:
                c[int(np.floor((s - (time[0] - 0.005)) / 0.01)), k] += 1
        counts.append(c)
        vel.append(tr["vel"][:, :2])
        lfp.append(np.concatenate([x for x in tr["lfp"] if x.size], axis=1))
    return np.concatenate(counts), np.concatenate(vel), np.concatenate(lfp)


def test_prepare_flint_sessions(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    t1 = make_flint(raw, exp=1, n_subjects=2)
    t3 = make_flint(raw, exp=3, n_subjects=1, gap_s=0.5)
    assert file_kind(raw / "Flint_2012_e1.mat") == "mat5"
    assert list_raw_sessions("flint", raw) == ["e1_1", "e1_2", "e3_1"]
    out = prepare_store("flint", raw, tmp_path / "st", segment_s=1.0)
    st = open_store(out)
    assert st.names == ["e1_1", "e1_2", "e3_1"]
    for name, truth in [("e1_1", t1["e1_1"]), ("e1_2", t1["e1_2"]), ("e3_1", t3["e3_1"])]:
        s = st.session(name)
        counts, vel, lfp_raw = _expected(truth["trials"])
        np.testing.assert_array_equal(s.spikes, counts)
        np.testing.assert_allclose(s.velocity, vel, atol=1e-5)
        ref = broadband_to_lfp(lfp_raw, 2000.0, 0.01, grid_start=-0.005, n_bins=len(vel))
        assert s.lfp.shape == (len(vel), 4) and np.abs(s.lfp - ref).max() < 1e-4
        lens = [len(tr["time"]) for tr in truth["trials"]]
        np.testing.assert_array_equal(s.trials[:, 1] - s.trials[:, 0], lens)
        assert s.t0 == pytest.approx(truth["trials"][0]["time"][0] - 0.005)
        assert s.unit_ids[0] == "n001" and s.channel_ids == ["n001", "n002", "n003", "n004"]
    assert st.session("e3_1").meta["gaps_s"] == pytest.approx(1.5)
    assert st.session("e1_1").meta["conditions"] == [1, 2, 3, 4]


def test_flint_spikes_only_option(tmp_path: Path) -> None:
    make_flint(tmp_path, exp=2, n_subjects=1)
    (s,) = read_raw("flint", tmp_path, ["e2_1"], lfp=False)
    assert s.lfp is None and s.spikes.shape[1] == 6 and "spikes only" in s.meta["lfp_note"]


# ----------------------------------------------------------------------------- bad input
def _fails(raw: Path, match: str, sessions: list[str] | None = None) -> None:
    with pytest.raises(LfpDistillError, match=match) as e:
        prepare_store("flint", raw, raw.parent / "store", sessions=sessions, segment_s=1.0)
    assert "\n" not in str(e.value)
    assert not (raw.parent / "store").exists()
    assert not [p for p in raw.parent.iterdir() if p.name.startswith(".")]


def test_v73_where_mat5_required(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_odoherty(raw, bb_t0=None)
    (raw / "indy_20160407_02.mat").rename(raw / "Flint_2012_e1.mat")
    _fails(raw, r"Flint_2012_e1.mat' is a MATLAB v7.3/HDF5 file; expected a MAT 5 file")


def test_missing_field(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()

    def drop(trials: list[dict]) -> None:
        for tr in trials:
            del tr["HandVel"]

    make_flint(raw, n_subjects=1, mutate=drop)
    _fails(raw, r"field 'Subject\(1\).Trial\(1\).HandVel' is missing")


def test_lfp_channels_disagree_between_trials(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()

    def lose(trials: list[dict]) -> None:
        trials[2]["Neuron"][1]["LFP"] = np.zeros((0, 0))

    make_flint(raw, n_subjects=1, mutate=lose)
    _fails(raw, r"Trial\(3\).Neuron\(k\).LFP' is present on 3 neurons; Trial\(1\) has it on 4")


def test_nan_in_lfp(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()

    def spoil(trials: list[dict]) -> None:
        trials[1]["Neuron"][2]["LFP"][17, 0] = np.nan

    make_flint(raw, n_subjects=1, mutate=spoil)
    _fails(raw, r"Trial\(2\).Neuron\(3\).LFP' has NaN/inf \(sample 17\)")


def test_session_not_in_folder_and_truncated(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    make_flint(raw, n_subjects=1)
    _fails(raw, r"session 'e1_2' is not in raw data folder .*available: e1_1", ["e1_2"])
    _fails(raw, r"session 'e4_1' is not in raw data folder", ["e4_1"])
    p = raw / "Flint_2012_e1.mat"
    with open(p, "r+b") as fh:
        fh.truncate(p.stat().st_size // 2)
    _fails(raw, r"Flint_2012_e1.mat' is unreadable")
