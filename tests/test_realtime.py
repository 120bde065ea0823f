"""Real-time decoding (issue #14): the causal model option, the causal velocity read-out, ONNX
export, bin-by-bin decoding and its errors."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import make_session

from lfpdistill.cli import main
from lfpdistill.config import ModelConfig, apply_overrides, recommended_model, recommended_train
from lfpdistill.data import write_store
from lfpdistill.models import NeuralTransformer, load_model
from lfpdistill.models.encoder import Encoder

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


def test_last_latent_is_the_last_bin_of_the_one_pass_latents():
    model = causal_model()
    x = torch.randn(3, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(model.last_latent(x, "a"), model.encode(x, ["a"] * 3)[:, -1],
                                   rtol=0, atol=1e-6)


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
