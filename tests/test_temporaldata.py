"""temporaldata export and reading: one ``Data`` object per session that the real temporaldata
package loads (time series, split Intervals, unit and channel metadata), read back bit for bit;
torch_brain-style files (spike times, cursor velocity) read too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import temporaldata  # the real package (in the dev extra), not a stand-in

from lfpdistill.data import open_store, write_store
from lfpdistill.readers import export_temporaldata, prepare_store
from lfpdistill.session import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import cli_error, make_session  # noqa: E402


def _session(name: str, t0: float, **kw) -> Session:
    s = make_session(name, T=2500, N=5, C=3, latents=True, seed=len(name), **kw)
    s.t0 = t0
    s.bin_size = 0.01
    if s.lfp is not None:
        s.electrode_positions = np.random.default_rng(1).normal(size=(3, 3)).astype(np.float32)
        s.channel_ids = ["elec-a", "elec-b", "elec-c"]
    s.trials = np.array([[0, 400], [400, 1300], [1500, 2500]])
    s.meta = {"source": "simulate", "velocity_units": "cm/s", "nested": {"x": [1, 2.5]}}
    return s


@pytest.fixture
def store(tmp_path: Path) -> Path:
    write_store([_session("a", 12.345), _session("b", -3.21, lfp=False)], tmp_path / "st",
                options={"source": "simulate"}, segment_s=2.0, seed=4)
    return tmp_path / "st"


def test_export_loads_with_temporaldata(store: Path, tmp_path: Path) -> None:
    from lfpdistill.cli import main

    assert main(["export-temporaldata", str(store), str(tmp_path / "td")]) == 0
    s = open_store(store).session("a")
    data = temporaldata.Data.load(tmp_path / "td" / "a.h5", lazy=False)
    assert data.session.id == "a" and data.subject.id == "test" and data.brainset == "lfpdistill"
    for key, field, arr in (("cursor", "vel", s.velocity), ("binned_spikes", "counts", s.spikes),
                            ("lfp", "signal", s.lfp), ("latents", "values", s.latents)):
        series = getattr(data, key)
        assert isinstance(series, temporaldata.RegularTimeSeries), key
        assert series.sampling_rate == pytest.approx(100.0)
        np.testing.assert_array_equal(getattr(series, field), arr)
    assert data.cursor.timestamps[0] == pytest.approx(12.345)
    assert data.domain.start[0] == 12.345 and data.domain.end[-1] == pytest.approx(37.345)
    assert list(data.units.id) == s.unit_ids and list(data.channels.id) == s.channel_ids
    np.testing.assert_array_equal(data.channels.z, s.electrode_positions[:, 2])
    for split, key in (("train", "train_domain"), ("val", "valid_domain"), ("test", "test_domain")):
        interval = getattr(data, key)
        assert isinstance(interval, temporaldata.Interval)
        np.testing.assert_allclose(interval.start, 12.345 + s.split_segments(split)[:, 0] * 0.01)
    assert isinstance(data.trials, temporaldata.Interval) and len(data.trials) == 3
    # what torch_brain does with it: slice a window, relative to its start
    window = data.slice(13.345, 14.345)
    assert window.cursor.vel.shape == (100, 2) and window.binned_spikes.counts.shape == (100, 5)
    np.testing.assert_array_equal(window.lfp.signal, s.lfp[100:200])
    b = temporaldata.Data.load(tmp_path / "td" / "b.h5", lazy=False)
    assert "lfp" not in b and "channels" not in b


def test_round_trip_is_bit_exact(store: Path, tmp_path: Path) -> None:
    export_temporaldata(store, tmp_path / "td")
    back = prepare_store("temporaldata", tmp_path / "td", tmp_path / "st2")
    a_store, b_store = open_store(store), open_store(back)
    assert a_store.names == b_store.names
    for name in a_store.names:
        a, b = a_store.session(name), b_store.session(name)
        for key in ("velocity", "spikes", "lfp", "latents", "electrode_positions", "trials",
                    "segments"):
            x, y = getattr(a, key), getattr(b, key)
            assert (x is None) == (y is None), key
            if x is not None:
                assert x.dtype == y.dtype and x.shape == y.shape, key
                assert x.tobytes() == y.tobytes(), key
        assert (a.t0, a.bin_size, a.subject, a.unit_ids, a.channel_ids) == (
            b.t0, b.bin_size, b.subject, b.unit_ids, b.channel_ids)
        assert json.dumps(a.meta, sort_keys=True) == json.dumps(b.meta, sort_keys=True)


def test_other_bin_size_is_refused_in_one_line(store: Path, tmp_path: Path, capsys) -> None:
    export_temporaldata(store, tmp_path / "td")
    cli_error(capsys, ["prepare", "--format", "temporaldata", "--raw", tmp_path / "td", "--out",
                       tmp_path / "st2", "--bin-size", "0.02"], "holds 0.01 s bins",
              "--bin-size 0.01", code=3)


def test_reads_a_torch_brain_style_file(tmp_path: Path) -> None:
    td = temporaldata
    rng = np.random.default_rng(0)
    spike_t = np.sort(rng.uniform(1.0, 31.0, size=3000))
    unit = rng.integers(0, 4, size=3000)
    vel = rng.normal(size=(1500, 2))
    data = td.Data(
        spikes=td.IrregularTimeSeries(timestamps=spike_t, unit_index=unit,
                                      domain=td.Interval(1.0, 31.0)),
        units=td.ArrayDict(id=np.array(["u0", "u1", "u2", "u3"])),
        cursor=td.RegularTimeSeries(vel=vel, sampling_rate=50.0, domain_start=1.0),
        subject=td.Data(id="monkey"),
        train_domain=td.Interval(np.array([1.0, 11.0]), np.array([6.0, 31.0])),
        valid_domain=td.Interval(6.0, 8.5), test_domain=td.Interval(8.5, 11.0),
        domain=td.Interval(1.0, 31.0),
    )
    (tmp_path / "raw").mkdir()
    data.save(tmp_path / "raw" / "rec.h5")
    (s,) = [open_store(prepare_store("temporaldata", tmp_path / "raw", tmp_path / "st"))
            .session("rec")]
    assert s.t0 == 1.0 and s.n_bins == 3000 and s.unit_ids == ["u0", "u1", "u2", "u3"]
    assert s.subject == "monkey" and s.lfp is None
    assert int(s.spikes.sum()) == 3000
    np.testing.assert_array_equal(s.spikes[:, 2].sum(), (unit == 2).sum())
    assert s.segments[:, :2].tolist() == [[0, 500], [500, 750], [750, 1000], [1000, 3000]]
    assert s.segments[:, 2].tolist() == [0, 1, 2, 0]
    centres = 1.0 + (np.arange(2990) + 0.5) * 0.01  # interpolated at bin centres
    expected = np.interp(centres, 1.0 + np.arange(1500) / 50.0, vel[:, 0])
    np.testing.assert_allclose(s.velocity[:2990, 0], expected, rtol=1e-5, atol=1e-6)
