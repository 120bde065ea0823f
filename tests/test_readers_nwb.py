"""Generic NWB 2.x reader (pynwb fixtures) and the store -> NWB exporter round trip."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lfpdistill.data import open_store, write_store
from lfpdistill.errors import LfpDistillError
from lfpdistill.preprocess import broadband_to_lfp, sample_at_bins
from lfpdistill.readers import export_nwb, prepare_store, read_raw
from lfpdistill.readers.nwb_export import ExportMetadata
from lfpdistill.session import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures_real import expected_counts, make_nwb2, make_odoherty  # noqa: E402

#: what a user passes on the command line for a source that records no subject or start time
GIVEN = ExportMetadata(species="Macaca mulatta", sex="M", age="P8Y",
                       session_start="2016-04-07T10:00:00+00:00")


def test_read_nwb2_raw_series_position_units(tmp_path: Path) -> None:
    truth = make_nwb2(tmp_path / "rec1.nwb")  # LFP from 4 s, position from 5 s
    (s,) = read_raw("nwb", tmp_path, ["rec1"])
    assert s.t0 == pytest.approx(5.0) and s.n_bins == truth["n_bins"]
    np.testing.assert_array_equal(s.spikes, expected_counts(truth["trains"], 5.0,
                                                            truth["n_bins"]))
    vel = sample_at_bins(truth["pos_t"], np.gradient(truth["pos"], truth["pos_t"], axis=0), 5.0,
                         truth["n_bins"])
    np.testing.assert_allclose(s.velocity, vel, rtol=1e-5, atol=1e-4)
    ref = broadband_to_lfp(truth["data"], truth["fs"], 0.01, t0=truth["lfp_t0"], grid_start=5.0,
                           n_bins=truth["n_bins"], scale=truth["conversion"])
    assert np.abs(s.lfp - ref).max() < 1e-4
    assert s.channel_ids == [f"e{c:02d}" for c in range(5)]
    np.testing.assert_allclose(s.electrode_positions[:, 0], 0.4 * np.arange(5), rtol=1e-6)
    np.testing.assert_array_equal(s.trials, [[100, 300]])
    assert s.meta["lfp_source"] == "raw" and s.meta["velocity_from"].startswith("gradient")


def test_nwb_series_chosen_by_name(tmp_path: Path) -> None:
    make_nwb2(tmp_path / "rec1.nwb")
    (s,) = read_raw("nwb", tmp_path, ["rec1"], lfp_series="other")
    assert s.lfp.shape[1] == 2 and s.meta["lfp_source"] == "other"
    with pytest.raises(LfpDistillError, match=r"no ElectricalSeries named 'nope' .*found: other, raw"):
        read_raw("nwb", tmp_path, ["rec1"], lfp_series="nope")


def test_export_then_read_back_exactly(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", beh_dur=6.0, bb_t0=1000.0, bb_dur=7.0)
    store = prepare_store("odoherty", tmp_path / "raw", tmp_path / "st", segment_s=1.0)
    paths = export_nwb(store, tmp_path / "nwb", metadata=GIVEN)
    assert [p.name for p in paths] == ["indy_20160407_02.nwb"]
    back = prepare_store("nwb", tmp_path / "nwb", tmp_path / "st2", segment_s=1.0)
    a = open_store(store).session("indy_20160407_02")
    b = open_store(back).session("indy_20160407_02")
    assert (a.t0, a.n_bins) == pytest.approx((b.t0, b.n_bins))
    for key in ("spikes", "lfp", "velocity", "trials", "segments"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert a.unit_ids == b.unit_ids and a.channel_ids == b.channel_ids
    assert b.subject == "indy"


def test_export_lfp_only_and_spikes_only_sessions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vel = rng.normal(size=(500, 2)).astype(np.float32)
    s1 = Session(name="lfponly", velocity=vel, lfp=rng.normal(size=(500, 3)),
                 electrode_positions=rng.normal(size=(3, 2)), t0=2.0)
    s2 = Session(name="spk", velocity=vel, spikes=rng.poisson(1.0, size=(500, 4)), t0=-1.0)
    write_store([s1, s2], tmp_path / "st", options={}, segment_s=1.0)
    export_nwb(tmp_path / "st", tmp_path / "nwb", metadata=ExportMetadata(
        species="Macaca mulatta", sex="F", age="P6Y", subject_id="monkey",
        session_start="2020-01-01T09:30:00-05:00"))
    r1, r2 = read_raw("nwb", tmp_path / "nwb", ["lfponly", "spk"])
    assert r1.spikes is None and np.abs(r1.lfp - s1.lfp).max() == 0
    np.testing.assert_allclose(r1.electrode_positions, s1.electrode_positions, rtol=1e-6)
    assert r2.lfp is None and np.array_equal(r2.spikes, s2.spikes) and r2.t0 == pytest.approx(-1)


def test_nwb_errors(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", bb_t0=1000.0, bb_dur=3.0, beh_dur=3.0)
    with pytest.raises(LfpDistillError, match="is NWB 1.x; expected NWB 2.x"):
        read_raw("nwb", tmp_path / "raw", ["indy_20160407_02"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.nwb").write_bytes(b"not hdf5 at all")
    with pytest.raises(LfpDistillError, match="not an HDF5/NWB file"):
        prepare_store("nwb", tmp_path / "bad", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(LfpDistillError, match="lfp_seris"):
        read_raw("nwb", tmp_path / "bad", ["x"], lfp_seris="raw")
