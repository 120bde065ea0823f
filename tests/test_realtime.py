"""Real-time decoding (issue #14): the causal model option, the causal velocity read-out, ONNX
export, bin-by-bin decoding and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.conftest import cli_error, make_session

from lfpdistill.cli import main
from lfpdistill.commands.realtime import (
    StreamingDecoder,
    causal_decoder,
    decode_run,
    eager_step,
    onnx_session,
    onnx_step,
    readout_path,
    zero_state,
)
from lfpdistill.config import ModelConfig, apply_overrides, recommended_model, recommended_train
from lfpdistill.data import open_store, write_store
from lfpdistill.errors import CheckpointMismatchError, ConfigError, DataValidationError
from lfpdistill.models import NeuralTransformer, load_checkpoint, load_model
from lfpdistill.models.encoder import Encoder
from lfpdistill.models.streaming import CausalStepper, causal_latents, receptive_bins

TINY = ["--set", "patch_size=8", "--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2",
        "--set", "window_s=0.2", "--set", "stride_s=0.2", "--set", "batch_size=8",
        "--set", "max_epochs=1", "--set", "progress=false", "--set", "accelerator=cpu"]
CAUSAL = ["--set", "causal=true", "--set", "context_bins=12"]


def causal_model(embedder: str = "filterbank", n_layers: int = 2, context: int = 8,
                 channels: int = 6) -> NeuralTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(modality="lfp", patch_size=4, d_model=16, n_heads=2, n_layers=n_layers,
                      embedder=embedder, causal=True, context_bins=context, dropout=0.0,
                      filter_bins=5, energy_bins=3)
    return NeuralTransformer(cfg, {"a": channels}).eval()


# ------------------------------------------------------------------ the causal option
def test_causal_option_reads_out_in_one_pass_and_reaches_the_cli_overrides():
    assert ModelConfig(causal=True).readout == "visible"
    assert ModelConfig().causal is False and ModelConfig().readout == "held_out"
    model, _, _ = apply_overrides(recommended_model("lfp"), recommended_train("distill"),
                                  ["causal=true", "context_bins=150"])
    assert model.causal and model.context_bins == 150 and model.readout == "visible"


@pytest.mark.parametrize("embedder", ["filterbank", "linear", "mlp"])
def test_causal_latents_never_depend_on_later_bins(embedder):
    model = causal_model(embedder)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 30, 6, generator=g)
    later = x.clone()
    later[:, 17:] += torch.randn(2, 13, 6, generator=g) * 3
    with torch.no_grad():
        z, z_later = model.encode(x, ["a", "a"]), model.encode(later, ["a", "a"])
    assert torch.equal(z[:, :17], z_later[:, :17])  # bit for bit: the future is masked out
    assert not torch.allclose(z[:, 17:], z_later[:, 17:], atol=1e-3)


def test_the_non_causal_model_does_depend_on_later_bins():
    torch.manual_seed(0)
    model = NeuralTransformer(ModelConfig(modality="lfp", patch_size=4, d_model=16, n_heads=2,
                                          dropout=0.0), {"a": 6}).eval()
    x = torch.randn(1, 30, 6)
    later = x.clone()
    later[:, 17:] += 3
    with torch.no_grad():
        assert not torch.allclose(model.encode(x, ["a"], readout="visible")[:, :17],
                                  model.encode(later, ["a"], readout="visible")[:, :17], atol=1e-4)


def test_one_causal_layer_sees_exactly_context_bins():
    torch.manual_seed(0)
    enc = Encoder(16, 1, 2, 32, dropout=0.0, causal_context=5).eval()
    x = torch.randn(1, 20, 16)
    pos = torch.arange(20.0)[None]
    with torch.no_grad():
        y = enc(x, pos)
        for t_changed, changes in ((14, False), (15, True), (19, True)):
            x2 = x.clone()
            x2[:, t_changed] += 1
            assert (not torch.equal(enc(x2, pos)[:, 19], y[:, 19])) is changes, t_changed


def test_causal_filterbank_sees_only_the_past_and_keeps_the_weights_shape():
    causal = causal_model()
    plain = NeuralTransformer(causal.cfg.model_copy(update={"causal": False}), {"a": 6})
    assert ({k: v.shape for k, v in causal.state_dict().items()}
            == {k: v.shape for k, v in plain.state_dict().items()})
    x = torch.randn(1, 1, 20, 1, 4)[0]  # [B, T, Np, P]
    valid = torch.ones(1, 1, 4, dtype=torch.bool)
    f = causal.tokenizer.filterbank(x, valid)
    x2 = x.clone()
    x2[:, 12:] += 1
    f2 = causal.tokenizer.filterbank(x2, valid)
    assert torch.equal(f[:, :12], f2[:, :12]) and not torch.equal(f[:, 12], f2[:, 12])


def test_causal_filterbank_is_a_left_padded_convolution_and_a_trailing_energy_mean():
    model = causal_model()
    tok = model.tokenizer
    x = torch.randn(2, 25, 2, 4)  # [B, T, Np, P]
    with torch.no_grad():
        got = tok.filterbank(x, torch.ones(2, 2, 4, dtype=torch.bool))
        B, T, NP, P = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(-1, 1, T)
        k, kb = tok.filters.kernel_size[0], 3
        h = torch.nn.functional.conv1d(torch.nn.functional.pad(flat, (k - 1, 0)), tok.filters.weight)
        e = torch.stack([h[..., max(0, t - kb + 1):t + 1].pow(2).mean(-1) for t in range(T)], -1)
        want = torch.cat([flat, h, torch.log(e + 1e-3)], 1).view(B, NP, P, -1, T)
        want = want.permute(0, 4, 1, 2, 3).reshape(B, T, NP, -1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("embedder", "channels", "context"),
                         [("filterbank", 6, 8), ("filterbank", 3, 1), ("linear", 7, 5),
                          ("mlp", 6, 3)])
def test_stepping_with_the_cache_equals_one_causal_pass(embedder, channels, context):
    """The key/value-cache step gives, bin by bin, the latents of one causal pass over the whole
    recording (several patches per bin, a padded patch, context 1 included)."""
    torch.manual_seed(0)
    model = causal_model(embedder, context=context, channels=channels)
    with torch.no_grad():
        for p in model.tokenizer.session_emb:
            p.normal_()
    x = torch.randn(60, channels)
    with torch.no_grad():
        one_pass = model(x[None], ["a"], reconstruct=False).latents[0]
    stepper = CausalStepper(model, "a")
    torch.testing.assert_close(stepper.run(x), one_pass, rtol=0, atol=1e-5)
    # the state keeps a fixed size however long the stream
    state = stepper.initial_state()
    shapes = [t.shape for t in state]
    with torch.no_grad():
        for t in range(3 * context + 20):
            _, *state = stepper(x[t % 60], *state)
    assert [t.shape for t in state] == shapes


def test_chunked_causal_latents_equal_one_pass():
    model = causal_model(context=6)
    x = torch.randn(97, 6)
    with torch.no_grad():
        one_pass = model(x[None], ["a"], reconstruct=False).latents[0]
    assert receptive_bins(model) == 2 * 5 + 4 + 2
    for chunk in (1, 10, 33, 500):
        torch.testing.assert_close(causal_latents(model, "a", x, chunk), one_pass,
                                   rtol=0, atol=1e-5)


def test_the_stepper_refuses_what_it_cannot_step():
    with pytest.raises(ConfigError, match="only a causal model"):
        CausalStepper(NeuralTransformer(ModelConfig(modality="lfp", patch_size=4, d_model=16,
                                                    n_heads=2), {"a": 6}), "a")
    with pytest.raises(ConfigError, match="session 'zz' is not in the model's vocabulary"):
        CausalStepper(causal_model(), "zz")


# ------------------------------------------------------------------ CLI: distil a causal student
@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("realtime")
    d = {"root": root, "store": root / "store", "other": root / "other"}
    write_store([make_session("a", T=1500, N=7, C=5, seed=0),
                 make_session("b", T=1500, N=9, C=6, seed=1)], d["store"], segment_s=1.0)
    write_store([make_session("zz", T=600, N=7, C=5, seed=3)], d["other"], segment_s=1.0)
    return d


@pytest.fixture(scope="module")
def teacher(dirs):
    out = dirs["root"] / "teacher"
    assert main(["pretrain", "--modality", "spikes", "--store", str(dirs["store"]),
                 "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def student(dirs, teacher):
    out = dirs["root"] / "student"
    assert main(["distill", "--teacher", str(teacher), "--store", str(dirs["store"]),
                 "--out", str(out), *TINY, *CAUSAL]) == 0
    return out


def test_distill_builds_a_causal_student_from_the_bidirectional_teacher(teacher, student):
    t, _ = load_model(teacher)
    model, meta = load_model(student, modality="lfp")
    assert not t.cfg.causal
    assert model.cfg.causal and model.cfg.context_bins == 12 and model.cfg.readout == "visible"
    assert meta["model_config"]["causal"] is True
    assert model.encoder.causal_context == 12


# ------------------------------------------------------------------ read-out, streaming, export
def test_linear_readout_is_saved_with_the_run_and_reused(dirs, student):
    s = open_store(dirs["store"]).session("a")
    dec, _ = causal_decoder(student, s, readout="linear_probe")
    path = readout_path(student, "a", "linear_probe")
    assert path.exists() and dec.readout_kind == "linear_probe"
    saved = np.load(path)
    assert saved["weight"].shape == (2, 16) and saved["mean"].shape == (5,)
    # the probe's fit: on the causal latents of the training bins, the least-squares optimum
    train = s.split_mask("train")
    z = dec.latents(s.lfp)
    pred = z @ saved["weight"].T + saved["bias"]
    resid = (s.velocity - pred)[train]
    np.testing.assert_allclose(z[train].T @ resid / train.sum(), 0, atol=1e-3)
    mtime = path.stat().st_mtime_ns
    causal_decoder(student, s, readout="linear_probe")
    assert path.stat().st_mtime_ns == mtime  # reused, not refit


def test_a_replaced_session_gets_a_new_readout(dirs, student, tmp_path):
    """The saved read-out is keyed by the session's data, not only its name and channel count:
    a store whose session 'a' holds other data fits (and saves) the read-out again."""
    s = open_store(dirs["store"]).session("a")
    first, _ = causal_decoder(student, s, readout="linear_probe")
    other = tmp_path / "other"
    write_store([make_session("a", T=1500, N=7, C=5, seed=11)], other, segment_s=1.0)
    s2 = open_store(other).session("a")
    second, _ = causal_decoder(student, s2, readout="linear_probe")
    assert not np.allclose(first.mean.numpy(), second.mean.numpy())
    np.testing.assert_allclose(second.mean.numpy(), s2.lfp[s2.split_mask("train")].mean(0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("readout", ["linear_probe", "wiener", "combined"])
def test_streamed_output_equals_the_offline_causal_output(dirs, student, readout):
    s = open_store(dirs["store"]).session("a")
    dec, _ = causal_decoder(student, s, readout=readout)
    assert dec.readout_kind == readout
    offline = dec.offline(s.lfp[:300])
    stream = StreamingDecoder(eager_step(dec), dec.initial_state(), 5, dec.mean.numpy())
    streamed = np.stack([stream.step(row) for row in s.lfp[:300]])
    # bounded state: the cache of the last context bins, whatever the stream's length
    assert [tuple(t.shape) for t in stream.state] == [tuple(t.shape) for t in dec.initial_state()]
    # float32 rounding of two orders of summation, scaled by the read-out (velocities reach ~4
    # here and used ~3e-6 of a fixed 1e-5, too close for another CPU's kernels)
    assert 0.1 < np.abs(offline).max() < 100  # a real output of velocity scale
    tol = 1e-5 * np.abs(offline).max()
    np.testing.assert_allclose(streamed, offline, rtol=0, atol=tol)
    stream.reset()
    np.testing.assert_allclose(stream.step(s.lfp[0]), offline[0], rtol=0, atol=tol)


def test_nan_bins_hold_the_last_value_or_are_refused():
    seen = []

    def step(x, state):
        seen.append(x.copy())
        return np.zeros(2), state

    dec = StreamingDecoder(step, (), 2, np.array([5.0, 6.0], dtype=np.float32))
    dec.step(np.array([np.nan, 1.0]))  # no finite value yet: the fill (normalisation mean)
    dec.step(np.array([2.0, 3.0]))
    dec.step(np.array([np.inf, np.nan]))
    np.testing.assert_array_equal(np.stack(seen), [[5.0, 1.0], [2.0, 3.0], [2.0, 3.0]])
    assert dec.n_held == 2 and dec.n_bins == 3
    strict = StreamingDecoder(lambda x, st: (np.zeros(2), st), (), 2, np.zeros(2),
                              nan_policy="error")
    strict.step(np.zeros(2))
    with pytest.raises(DataValidationError, match="bin 1 has NaN/inf in 1 of 2 channels"):
        strict.step(np.array([0.0, np.nan]))
    with pytest.raises(DataValidationError, match="reads one row of 2 channels"):
        strict.step(np.zeros(3))


@pytest.fixture(scope="module")
def exported(dirs, student):
    out = dirs["root"] / "onnx" / "model.onnx"
    assert main(["export", str(student), "--store", str(dirs["store"]), "--session", "a",
                 "--out", str(out)]) == 0
    return out


def test_onnx_graph_equals_the_eager_decoder(dirs, student, exported):
    """Tolerance: 1e-5 of the largest velocity (~4 here), over 200 stepped bins: float32
    rounding in onnxruntime's kernels and torch's, which another CPU may choose differently."""
    info = json.loads(exported.with_suffix(".json").read_text())
    assert info["session"] == "a" and info["n_channels"] == 5 and info["context_bins"] == 12
    assert info["input"]["shape"] == [5] and info["bin_size_s"] == 0.01
    names = info["state"]["names"]
    assert names[:5] == ["x_hist", "e_hist", "k_cache", "v_cache", "n_seen"]
    # the default read-out: the best of the three on validation bins
    scores = info["readout_detail"]["validation_r2"]
    assert set(scores) == {"linear_probe", "wiener", "combined"}
    assert info["readout"] == max(scores, key=scores.get)
    assert len(info["normalisation"]["mean"]) == 5
    assert info["check"]["max_abs_diff_vs_eager"] <= 1e-4 * info["check"]["output_scale"]
    s = open_store(dirs["store"]).session("a")
    dec, _ = causal_decoder(student, s)
    assert dec.readout_kind == info["readout"]
    graph = StreamingDecoder(onnx_step(onnx_session(exported), tuple(names)),
                             zero_state(info["state"]["shapes"], tuple(names),
                                        info["state"]["dtypes"]), 5, dec.mean.numpy())
    got = np.stack([graph.step(x) for x in s.lfp[:200]])
    want = dec.offline(s.lfp[:200])
    assert np.abs(want).max() > 0.1  # a real output, not a constant
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    # fixed state shapes: after 200 bins, every state tensor has its documented shape and dtype
    for name, t in zip(names, graph.state, strict=True):
        assert list(t.shape) == info["state"]["shapes"][name]
        assert str(t.dtype) == info["state"]["dtypes"][name]


@pytest.mark.parametrize("readout", ["wiener", "combined"])
def test_lagged_readouts_export_and_stream_as_offline(dirs, student, readout, tmp_path):
    """The past-lag Wiener read-out (a ring of past latents in the state) and the combined one
    (plus the band-power filters' double-precision state) stream through ONNX as offline."""
    out = tmp_path / f"{readout}.onnx"
    assert main(["export", str(student), "--store", str(dirs["store"]), "--session", "a",
                 "--out", str(out), "--readout", readout]) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    names = tuple(info["state"]["names"])
    assert info["readout"] == readout and "ring" in names
    assert info["state"]["shapes"]["ring"][0] == 18  # (10 lags - 1) x 2 bins
    if readout == "combined":
        assert info["state"]["dtypes"]["bp_z"] == "float64"
    s = open_store(dirs["store"]).session("a")
    dec, _ = causal_decoder(student, s, readout=readout)
    graph = StreamingDecoder(onnx_step(onnx_session(out), names),
                             zero_state(info["state"]["shapes"], names, info["state"]["dtypes"]),
                             5, dec.mean.numpy())
    got = np.stack([graph.step(x) for x in s.lfp[:300]])
    want = dec.offline(s.lfp[:300])
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    res = decode_run(out, dirs["store"], "a", stream=True)
    assert res["readout"] == readout and res["latency_ms_p99"] > 0


def test_decode_streams_onnx_and_eager_alike_with_r2_and_latency(dirs, student, exported, capsys):
    store = dirs["store"]
    out = dirs["root"] / "pred.npz"
    assert main(["decode", str(exported), "--store", str(store), "--session", "a", "--stream",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "latency per bin on 1 thread(s)" in text
    streamed_onnx = np.load(out)
    assert streamed_onnx["pred"].shape == (1500, 2) and streamed_onnx["latency_ms"].shape == (1500,)
    res = decode_run(student, store, "a")  # eager, offline batches (the same auto read-out)
    off = np.load(out)  # unchanged file
    eager = decode_run(student, store, "a", out=dirs["root"] / "eager.npz")
    np.testing.assert_allclose(np.load(dirs["root"] / "eager.npz")["pred"], off["pred"],
                               rtol=0, atol=1e-4)
    assert res["mode"] == "offline" and {"test_r2", "val_r2"} <= set(res)
    assert eager["test_r2"] == pytest.approx(res["test_r2"])
    streamed = decode_run(exported, store, "a", stream=True)
    assert streamed["test_r2"] == pytest.approx(res["test_r2"], abs=1e-4)
    assert 0 < streamed["latency_ms_median"] <= streamed["latency_ms_p99"]




def test_bad_input_is_one_line(dirs, student, exported, teacher, capsys, tmp_path):
    store, other = dirs["store"], dirs["other"]
    # a session the exported graph was not made for (another channel count, too)
    cli_error(capsys, ["decode", exported, "--store", store, "--session", "b"],
           "was exported for session 'a', not 'b'")
    # a session the model was never adapted to
    cli_error(capsys, ["decode", student, "--store", other, "--session", "zz"],
           "session 'zz' is not in the model's vocabulary")
    cli_error(capsys, ["export", student, "--store", other, "--session", "zz", "--out",
                    tmp_path / "m.onnx"], "session 'zz' is not in the model's vocabulary")
    # wrong channel count: a store whose session 'a' has 7 channels
    wide = tmp_path / "wide"
    write_store([make_session("a", T=400, N=7, C=7, seed=5)], wide, segment_s=1.0)
    cli_error(capsys, ["decode", exported, "--store", wide, "--session", "a"],
           "reads 5 channels but session 'a' has 7")
    cli_error(capsys, ["decode", student, "--store", wide, "--session", "a"],
           "session 'a' has 7 lfp channels but the model was built for 5")
    # a model that is not causal
    cli_error(capsys, ["export", teacher, "--store", store, "--session", "a", "--out",
                    tmp_path / "t.onnx"], "is a spikes model but a lfp model is needed")
    cli_error(capsys, ["decode", exported, "--store", store, "--session", "a", "--nan", "skip"],
           "Invalid value for '--nan': 'skip' is not one of 'hold', 'error'", code=2)
    cli_error(capsys, ["export", student, "--store", store, "--session", "a", "--out",
                    tmp_path / "m.pt"], "must end in .onnx")
    # a graph of the earlier, whole-window format
    old = tmp_path / "old.onnx"
    old.write_bytes(exported.read_bytes())
    info = json.loads(exported.with_suffix(".json").read_text())
    old.with_suffix(".json").write_text(json.dumps({**info, "format": "lfpdistill-realtime/1"}))
    cli_error(capsys, ["decode", old, "--store", store, "--session", "a"],
              "export the run again with lfpdistill export")


def test_a_non_causal_lfp_run_is_refused(dirs, capsys, tmp_path):
    run = tmp_path / "lfp"
    assert main(["pretrain", "--modality", "lfp", "--store", str(dirs["store"]), "--sessions", "a",
                 "--out", str(run), *TINY]) == 0
    cli_error(capsys, ["decode", run, "--store", dirs["store"], "--session", "a"],
           "is not a causal model")


def test_a_finetuned_causal_run_decodes_with_its_head(dirs, student, tmp_path):
    ft = tmp_path / "ft"
    assert main(["finetune", str(student), "--store", str(dirs["store"]), "--session", "a",
                 "--out", str(ft), "--set", "max_epochs=1", "--set", "window_s=0.2",
                 "--set", "progress=false", "--set", "accelerator=cpu"]) == 0
    s = open_store(dirs["store"]).session("a")
    dec, _ = causal_decoder(ft, s)
    assert dec.readout_kind == "finetune_head"
    # a lagged read-out of the fine-tuned latents can be asked for by name
    assert causal_decoder(ft, s, readout="wiener")[0].readout_kind == "wiener"
    state = load_checkpoint(ft)["state_dict"]
    z = torch.randn(4, 16)
    want = state["head.weight"]  # the head of FinetuneModule: velocity = head(z) * v_std + v_mean
    ref = (z @ want.T + state["head.bias"]) * state["v_std"] + state["v_mean"]
    torch.testing.assert_close(z @ dec.weight.T + dec.bias, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointMismatchError, match="was trained on session 'a', not 'b'"):
        causal_decoder(ft, open_store(dirs["store"]).session("b"))
