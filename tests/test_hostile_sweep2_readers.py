"""Raw files a hostile user could hand ``lfpdistill prepare`` (issue #37, causes F, G and the
NWB half of K) and a damaged store manifest for ``export-nwb`` (I): each is one ``error:`` line
or is read correctly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from tests.conftest import cli_error, make_session

from lfpdistill.cli import main
from lfpdistill.data import open_store, write_store

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_real import make_nwb2, make_odoherty  # noqa: E402

pytest.importorskip("pynwb")


@pytest.fixture
def nwb(tmp_path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    make_nwb2(raw / "rec1.nwb", extra_series=False, lfp_dur=6.0, pos_dur=5.0)
    return raw / "rec1.nwb"


def _prepare(raw: Path, out: Path) -> list:
    return ["prepare", "--format", "nwb", "--raw", raw, "--out", out, "--segment-s", "1"]


# ------------------------------------------------------------------ F: NWB times and data
@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda f: f["acquisition/raw/starting_time"].attrs.__setitem__("rate", 0.0),
     "'raw.rate' is 0.0"),
    (lambda f: f["acquisition/raw/starting_time"].attrs.__setitem__("rate", np.nan),
     "'raw.rate' is nan"),
    (lambda f: f["acquisition/raw/starting_time"].write_direct(np.array(np.nan)),
     "'raw.starting_time' is nan"),
])
def test_f_nwb_rate_zero_or_nan_times_are_one_line(nwb, tmp_path, capsys, edit, fragment):
    with h5py.File(nwb, "a") as f:
        edit(f)
    cli_error(capsys, _prepare(nwb.parent, tmp_path / "s"), fragment, code=3)


def test_f_nwb_string_velocity_is_one_line(nwb, tmp_path, capsys):
    with h5py.File(nwb, "a") as f:
        n = f["processing/behavior/Position/hand/data"].shape[0]
        del f["processing/behavior/Position/hand/data"]
        f.create_dataset("processing/behavior/Position/hand/data",
                         data=np.full((n, 2), b"fast", dtype=object), dtype=h5py.string_dtype())
    cli_error(capsys, _prepare(nwb.parent, tmp_path / "s"), "does not hold numbers", code=3)


def test_f_a_nan_trial_start_is_left_out_and_counted(nwb, tmp_path):
    with h5py.File(nwb, "a") as f:
        f["intervals/trials/start_time"][0] = np.nan
    assert main([str(a) for a in _prepare(nwb.parent, tmp_path / "s")]) == 0
    s = open_store(tmp_path / "s").session("rec1")
    assert s.trials is None and s.meta["trials_without_times"] == 1


# ------------------------------------------------------------------ K: flat NWB LFP
@pytest.mark.parametrize(("flat", "fragment"), [("constant", "constant on every channel"),
                                                ("same", "same on every channel")])
def test_k_nwb_lfp_without_signal_is_refused_not_stored_as_noise(nwb, tmp_path, capsys, flat,
                                                                 fragment):
    with h5py.File(nwb, "a") as f:
        data = f["acquisition/raw/data"]
        if flat == "constant":
            data[...] = 7
        else:
            data[...] = np.repeat(data[:, :1], data.shape[1], axis=1)
    cli_error(capsys, _prepare(nwb.parent, tmp_path / "s"), fragment, code=3)


# ------------------------------------------------------------------ G: O'Doherty chan_names
@pytest.mark.parametrize(("cell", "fragment"), [
    (np.nan, "chan_names"), (-3.0, "chan_names"), (1e20, "chan_names"), ("ref", "chan_names")])
def test_g_odoherty_chan_names_that_are_not_names(tmp_path, capsys, cell, fragment):
    raw = tmp_path / "raw"
    make_odoherty(raw, bb_t0=None, beh_dur=4.0, n_ch=4)
    path = raw / "indy_20160407_02.mat"
    with h5py.File(path, "a") as f:
        cells = f["chan_names"][()]
        if cell == "ref":  # a cell holding a reference instead of characters
            bad = f.create_dataset("#refs#/bad", data=np.array([[cells.ravel()[1]]],
                                                             dtype=h5py.ref_dtype))
        else:
            bad = f.create_dataset("#refs#/bad", data=np.array([[cell]]))
        cells.ravel()[0] = bad.ref
        f["chan_names"][...] = cells
    cli_error(capsys, ["prepare", "--format", "odoherty", "--raw", raw, "--out", tmp_path / "s",
                       "--no-lfp", "--segment-s", "1"], fragment, code=3)


# ------------------------------------------------------------------ I: manifest options
@pytest.mark.parametrize("options", [["a", "b"], "simulate"])
def test_i_export_nwb_on_a_manifest_whose_options_are_not_a_mapping(tmp_path, capsys, options):
    store = tmp_path / "store"
    write_store([make_session("a", T=400, N=3, C=2)], store, segment_s=1.0)
    mpath = store / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["options"] = options
    mpath.write_text(json.dumps(manifest))
    cli_error(capsys, ["export-nwb", store, tmp_path / "nwb", "--species", "Macaca mulatta",
                       "--sex", "M", "--age", "P8Y", "--session-start",
                       "2016-04-07T10:00:00+00:00"], "'options'", code=3)
    assert not (tmp_path / "nwb").exists()
