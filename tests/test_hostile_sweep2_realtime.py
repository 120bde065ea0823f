"""Issue #37, causes M and N: the real-time read-out saved with a run is not reused for other
data under the same session name (M), and the export's own check is relative to the scale of
the decoder's outputs, so a valid decoder whose velocities are large is not refused (N)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.conftest import make_session

from lfpdistill.cli import main
from lfpdistill.commands.realtime import causal_decoder, decode_run, readout_path
from lfpdistill.data import open_store, write_store

pytest.importorskip("onnxruntime")

TINY = ["--set", "max_epochs=1", "--set", "d_model=16", "--set", "n_layers=1", "--set",
        "n_heads=2", "--set", "patch_size=4", "--set", "window_s=0.2", "--set",
        "progress=false", "--set", "accelerator=cpu", "--set", "causal=true", "--set",
        "context_bins=6"]


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_rt")
    write_store([make_session("a", T=900, N=7, C=5, seed=0)], root / "store", segment_s=1.0)
    run = root / "run"
    assert main(["pretrain", "--modality", "lfp", "--store", str(root / "store"), "--out",
                 str(run), *TINY]) == 0
    return root, run


def test_m_decode_refits_the_readout_when_the_session_holds_other_data(causal_run):
    root, run = causal_run
    first = decode_run(run, root / "store", "a", readout="linear_probe")
    saved = np.load(readout_path(run, "a", "linear_probe"))["weight"].copy()
    # another store whose session 'a' has the same channel count but other data
    write_store([make_session("a", T=900, N=7, C=5, seed=9)], root / "other", segment_s=1.0)
    second = decode_run(run, root / "other", "a", readout="linear_probe")
    refit = np.load(readout_path(run, "a", "linear_probe"))["weight"]
    assert not np.allclose(saved, refit)  # fit again on the new data, not the cached one
    s = open_store(root / "other").session("a")
    dec, _ = causal_decoder(run, s, readout="linear_probe")
    np.testing.assert_allclose(dec.mean.numpy(), s.lfp[s.split_mask("train")].mean(0),
                               rtol=1e-5, atol=1e-6)
    assert first["test_r2"] != second["test_r2"]


def test_n_export_accepts_a_valid_decoder_with_large_outputs(causal_run, tmp_path):
    """Velocities scaled by 1e5 (units of µm/s, say): float32 rounding of the graph differs
    from the eager model by more than an absolute 1e-4, by far less relative to the output."""
    root, run = causal_run
    s = open_store(root / "store").session("a")
    causal_decoder(run, s, readout="linear_probe")  # fit and save the read-out
    path = readout_path(run, "a", "linear_probe")
    saved = dict(np.load(path))
    saved["weight"] = saved["weight"] * 1e5
    saved["bias"] = saved["bias"] * 1e5
    np.savez(path, **saved)
    out = tmp_path / "big.onnx"
    assert main(["export", str(run), "--store", str(root / "store"), "--session", "a",
                 "--out", str(out), "--readout", "linear_probe"]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    check = info["check"]
    assert check["output_scale"] > 100  # really large outputs
    assert check["max_abs_diff_vs_eager"] <= check["rtol"] * check["output_scale"]
