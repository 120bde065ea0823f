"""``lfpdistill decode`` on a hostile exported decoder (issue #37, cause E and the ONNX part of
the allocation limits): metadata that is not JSON, not an object, missing fields, wrong types,
short normalisation, impossible or huge state shapes, and graphs that are empty, truncated or
garbage. Each is one ``error:`` line before anything is allocated from the metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import cli_error, make_session

from lfpdistill.commands.realtime import FORMAT
from lfpdistill.data import write_store

pytest.importorskip("onnxruntime")


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "store"
    write_store([make_session("a", T=600, N=7, C=5, seed=0)], root, segment_s=1.0)
    return root


def _meta(**changes) -> dict:
    meta = {"format": FORMAT, "session": "a", "n_channels": 5, "bin_size_s": 0.01,
            "context_bins": 12, "readout": "linear_probe",
            "state": {"names": ["kv", "ring"], "shapes": {"kv": [1, 2, 11, 16], "ring": [4, 2]},
                      "dtypes": {"kv": "float32", "ring": "float32"}},
            "normalisation": {"mean": [0.0] * 5, "std": [1.0] * 5}}
    for key, value in changes.items():
        if "." in key:
            head, sub = key.split(".")
            meta[head] = {**meta[head], sub: value}
        elif value is None:
            meta.pop(key)
        else:
            meta[key] = value
    return meta


def _decode(store: Path, onnx: Path) -> list:
    return ["decode", onnx, "--store", store, "--session", "a"]


@pytest.mark.parametrize(("meta", "fragment"), [
    (b"{not json", "is not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ([1, 2], "not an object"),
    (_meta(session=None), "no 'session'"),
    (_meta(state=None), "no 'state'"),
    (_meta(n_channels="5"), "n_channels '5'"),
    (_meta(bin_size_s="fast"), "bin_size_s 'fast'"),
    (_meta(**{"normalisation.mean": [0.0] * 3}), "mean that is not a list of 5"),
    (_meta(**{"normalisation.std": ["a"] * 5}), "std that is not a list of 5"),
    (_meta(**{"state.shapes": {"kv": [1, -2], "ring": [4]}}), "state 'kv' of shape [1, -2]"),
    (_meta(**{"state.shapes": {"kv": [1, 1, 1, 1, 1], "ring": [4]}}), "at most 4"),
    (_meta(**{"state.shapes": {"kv": [100_000, 100_000, 100], "ring": [4]}}),
     "more than 268435456 values"),
    (_meta(**{"state.shapes": {"kv": [1]}}), "state 'ring' of shape None"),
    (_meta(**{"state.names": "kv"}), "not a list of distinct strings"),
])
def test_e_bad_metadata_is_one_line(store, tmp_path, capsys, meta, fragment):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07")
    path = onnx.with_suffix(".json")
    path.write_bytes(meta if isinstance(meta, bytes) else json.dumps(meta).encode())
    cli_error(capsys, _decode(store, onnx), fragment, code=3)


@pytest.mark.parametrize("graph", [b"", b"garbage" * 10, b"\x08\x07\x12\x04onnx"])
def test_e_an_empty_truncated_or_garbage_graph_is_one_line(store, tmp_path, capsys, graph):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(graph)
    onnx.with_suffix(".json").write_text(json.dumps(_meta()))
    cli_error(capsys, _decode(store, onnx), "not a readable ONNX graph", code=3)


def test_e_any_state_names_are_accepted_by_the_metadata_check(tmp_path):
    from lfpdistill.commands.onnx_meta import read_onnx_meta

    path = tmp_path / "m.json"
    path.write_text(json.dumps(_meta(**{"state.names": ["a_new_buffer"],
                                        "state.shapes": {"a_new_buffer": [3, 0]},
                                        "state.dtypes": None})))
    assert read_onnx_meta(path, FORMAT)["state"]["names"] == ["a_new_buffer"]
