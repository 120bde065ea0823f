"""``export-nwb`` writes files that DANDI accepts: nwbinspector's DANDI configuration finds no
critical or violation-level problem; subject fields and the start time come from the source or
the command line (else one line naming the options); LFP carries its real unit; spikes are
binned counts, not spike times invented at bin centres."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from lfpdistill.data import open_store, write_store
from lfpdistill.errors import ConfigError
from lfpdistill.readers import export_nwb, prepare_store
from lfpdistill.readers.nwb_export import ExportMetadata

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import cli_error, make_session  # noqa: E402
from fixtures_real import make_odoherty  # noqa: E402

GIVEN = ExportMetadata(species="Macaca mulatta", sex="M", age="P8Y",
                       session_start="2016-04-07T10:00:00+00:00")
BAD = ("CRITICAL", "BEST_PRACTICE_VIOLATION")


def _problems(path: Path) -> list[str]:
    from nwbinspector import inspect_nwbfile, load_config

    messages = list(inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi")))
    return [f"{m.importance.name} {m.check_function_name}: {m.message}" for m in messages
            if m.importance.name in BAD]


def _read(path: Path):
    from pynwb import NWBHDF5IO

    io = NWBHDF5IO(str(path), "r")
    return io, io.read()


@pytest.fixture
def zscored_store(tmp_path: Path) -> Path:
    s = make_session("s0", T=3000, N=6, C=4)
    s.meta["velocity_units"] = "cm/s"
    write_store([s], tmp_path / "st", options={"source": "simulate"})
    return tmp_path / "st"


def test_zscored_export_passes_dandi_inspection(zscored_store: Path, tmp_path: Path) -> None:
    (path,) = export_nwb(zscored_store, tmp_path / "nwb", metadata=GIVEN)
    assert _problems(path) == []
    s = open_store(zscored_store).session("s0")
    io, nwb = _read(path)
    try:
        subj = nwb.subject
        assert (subj.species, subj.sex, subj.age, subj.subject_id) == ("Macaca mulatta", "M", "P8Y",
                                                                       "test")
        assert nwb.session_start_time == datetime(2016, 4, 7, 10, tzinfo=UTC)
        lfp = nwb.processing["ecephys"]["LFP"]
        # z-scored LFP is unitless: not an ElectricalSeries (always volts), and it says so
        assert type(lfp).__name__ == "TimeSeries" and lfp.unit == "z-score"
        assert "z-scored per channel" in lfp.description and "simulat" in lfp.description
        np.testing.assert_array_equal(lfp.data[()], s.lfp)
        counts = nwb.processing["ecephys"]["spike_counts"]
        assert counts.unit == "spikes" and counts.rate == pytest.approx(100.0)
        np.testing.assert_array_equal(counts.data[()], s.spikes)
        names = nwb.processing["ecephys"]["spike_count_units"]["unit_name"].data[:]
        assert [str(n) for n in names] == s.unit_ids
        assert nwb.units is None  # no spike times are invented
    finally:
        io.close()


def test_volts_export_is_an_electrical_series_and_passes(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", beh_dur=6.0, bb_t0=1000.0, bb_dur=7.0)
    store = prepare_store("odoherty", tmp_path / "raw", tmp_path / "st", segment_s=1.0,
                          chain={"zscore": False})
    (path,) = export_nwb(store, tmp_path / "nwb", metadata=GIVEN)
    assert _problems(path) == []
    io, nwb = _read(path)
    try:
        es = nwb.processing["ecephys"]["LFP"]["LFP"]
        assert type(es).__name__ == "ElectricalSeries" and es.unit == "volts"
        assert "zscore=False" in es.description
    finally:
        io.close()


def test_missing_subject_fields_are_one_line_and_write_nothing(zscored_store: Path,
                                                               tmp_path: Path, capsys) -> None:
    out = tmp_path / "nwb"
    with pytest.raises(ConfigError, match=r"records no subject species, subject sex, subject age "
                                          r"or session start time, which DANDI requires; pass "
                                          r"--species .* --sex M --age P8Y --session-start"):
        export_nwb(zscored_store, out)
    assert not out.exists()
    cli_error(capsys, ["export-nwb", zscored_store, out, "--species", "Macaca mulatta",
                       "--sex", "F"], "records no subject age or session start time",
              "--age P8Y --session-start")
    base = ["export-nwb", zscored_store, out, "--species", "Macaca mulatta", "--sex", "F",
            "--age", "P8Y"]
    cli_error(capsys, [*base, "--session-start", "2016-04-07T10:00:00"], "has no time zone")
    cli_error(capsys, [*base, "--session-start", "yesterday"], "is not an ISO 8601 date")
    cli_error(capsys, [*base[:-1], "eight", "--session-start", "2016-04-07T10:00:00Z"],
              "--age 'eight' is not an ISO 8601 duration")
    cli_error(capsys, [*base[:6], "X"], "Invalid value for '--sex'", "'M', 'F', 'U', 'O'")
    assert not out.exists()


def test_reexport_takes_subject_and_start_from_the_nwb_source(zscored_store: Path,
                                                              tmp_path: Path) -> None:
    from lfpdistill.cli import main

    assert main(["export-nwb", str(zscored_store), str(tmp_path / "a"), "--species",
                 "Macaca mulatta", "--sex", "F", "--age", "P6Y", "--subject-id", "monkey-k",
                 "--session-start", "2020-01-01T09:30:00-05:00"]) == 0
    prepare_store("nwb", tmp_path / "a", tmp_path / "st2")
    s = open_store(tmp_path / "st2").session("s0")
    assert s.subject == "monkey-k" and s.meta["nwb_subject"] == {
        "species": "Macaca mulatta", "sex": "F", "age": "P6Y"}
    assert s.meta["lfp_unit"] == "z-score"
    # nothing on the command line: everything from the source
    (path,) = export_nwb(tmp_path / "st2", tmp_path / "b")
    assert _problems(path) == []
    io, nwb = _read(path)
    try:
        assert (nwb.subject.species, nwb.subject.sex, nwb.subject.age,
                nwb.subject.subject_id) == ("Macaca mulatta", "F", "P6Y", "monkey-k")
        assert nwb.session_start_time == datetime(2020, 1, 1, 9, 30,
                                                  tzinfo=timezone(timedelta(hours=-5)))
        assert nwb.processing["ecephys"]["LFP"].unit == "z-score"
    finally:
        io.close()
    # the command line wins over the source
    (path,) = export_nwb(tmp_path / "st2", tmp_path / "c",
                         metadata=ExportMetadata(species="Macaca fascicularis"))
    io, nwb = _read(path)
    try:
        assert nwb.subject.species == "Macaca fascicularis" and nwb.subject.sex == "F"
    finally:
        io.close()
