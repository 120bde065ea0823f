"""Session-specific patch tokenizer: padding, masking of padded channels, embedders, vocabulary."""

import pydantic
import pytest
import torch
from tests.conftest import make_session

from lfpdistill.data import collate_windows
from lfpdistill.errors import CheckpointMismatchError, ConfigError
from lfpdistill.models import ModelConfig, NeuralTransformer, PatchTokenizer, n_patches
from lfpdistill.models import tokenizer as tokenizer_module


def cfg(**kw) -> ModelConfig:
    base = dict(modality="lfp", patch_size=4, d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("C", [7, 13, 4, 16])
def test_shapes_and_padding_with_odd_channel_counts(C):
    torch.manual_seed(0)
    tok = PatchTokenizer(cfg(), {"s": C})
    x = torch.randn(3, 5, C)
    tokens, patches, chan_valid, patch_valid = tok(x, ["s"] * 3)
    npatch = -(-C // 4)
    assert n_patches(C, 4) == npatch
    assert tokens.shape == (3, 5, npatch, 16)
    assert patches.shape == (3, 5, npatch, 4)
    assert chan_valid.shape == (3, npatch, 4) and patch_valid.shape == (3, npatch)
    flat_valid = chan_valid.reshape(3, -1)
    assert flat_valid[:, :C].all() and not flat_valid[:, C:].any()
    assert patch_valid.all()  # every patch holds at least one real channel
    flat = patches.reshape(3, 5, -1)
    torch.testing.assert_close(flat[..., :C], x, rtol=0, atol=0)
    assert (flat[..., C:] == 0).all()


def test_padded_channel_values_are_zeroed_and_do_not_change_tokens():
    torch.manual_seed(0)
    tok = PatchTokenizer(cfg(), {"a": 7, "b": 13})
    x = torch.randn(2, 6, 13)
    widths = torch.tensor([7, 13])
    t1, p1, cv, pv = tok(x, ["a", "b"], widths)
    x2 = x.clone()
    x2[0, :, 7:] = 1e6 * torch.randn(6, 6)  # garbage where session 'a' has no channels
    t2, p2, _, _ = tok(x2, ["a", "b"], widths)
    assert torch.equal(p1, p2) and torch.equal(t1, t2)
    # sample 0 ('a', 7 channels) has 2 real patches out of 4; the last real one is part padding
    assert pv.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert cv[0, 1].tolist() == [True, True, True, False]
    assert (p1[0, :, 2:] == 0).all() and (p1[0, :, 1, 3] == 0).all()


@pytest.mark.parametrize("embedder,modality", [("linear", "lfp"), ("mlp", "lfp"),
                                               ("filterbank", "lfp"), ("filterbank", "spikes"),
                                               ("linear", "spikes"), ("count", "spikes"),
                                               ("mlp", "spikes")])
def test_mixed_channel_counts_in_one_batch_match_single_session(embedder, modality):
    """A session's latents do not depend on which (wider) sessions share its batch."""
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(embedder=embedder, modality=modality), {"a": 7, "b": 13}).eval()
    sa, sb = make_session("a", T=40, N=7, C=7, seed=1), make_session("b", T=40, N=13, C=13, seed=2)

    def item(s):
        return {"session": s.name, "start": 0, "t_index": torch.arange(20),
                "velocity": torch.from_numpy(s.velocity[:20]),
                modality: torch.from_numpy(getattr(s, modality)[:20].astype("float32"))}

    batch = collate_windows([item(sa), item(sb)])
    assert batch[modality].shape == (2, 20, 13)
    assert batch[f"n_{modality}"].tolist() == [7, 13]
    with torch.no_grad():
        mixed = model(batch[modality], batch["session"], batch[f"n_{modality}"])
        alone_a = model(batch[modality][:1, :, :7], ["a"])
        alone_b = model(batch[modality][1:], ["b"])
    torch.testing.assert_close(mixed.latents[0], alone_a.latents[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed.latents[1], alone_b.latents[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed.tokens[0, :, :2], alone_a.tokens[0], rtol=1e-5, atol=1e-5)


def test_tokens_of_padded_patches_are_never_attended():
    """Whatever the tokens of fully padded patches contain, valid outputs are unchanged."""
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(), {"a": 7, "b": 13}).eval()
    x = torch.randn(2, 10, 13)
    widths = torch.tensor([7, 13])
    with torch.no_grad():
        ref = model(x, ["a", "b"], widths)

    embed_tokens = model.tokenizer.tokens

    def scrambled(patches, chan_valid, sessions):
        tokens = embed_tokens(patches, chan_valid, sessions)
        noise = 1e3 * torch.randn_like(tokens)
        return torch.where(chan_valid.any(-1)[:, None, :, None], tokens, noise)

    model.tokenizer.tokens = scrambled
    with torch.no_grad():
        out = model(x, ["a", "b"], widths)
    valid = ref.patch_valid[:, None, :].expand(2, 10, 4)
    torch.testing.assert_close(out.tokens[valid], ref.tokens[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.latents, ref.latents, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out.tokens[~valid], ref.tokens[~valid])  # the hook did act


def test_count_embedder_clamps_and_ignores_padding():
    torch.manual_seed(0)
    tok = PatchTokenizer(cfg(modality="spikes", embedder="count", max_count=4), {"s": 6})
    x = torch.tensor([[[0, 1, 2, 3, 4, 5]]], dtype=torch.float32)
    x_clamped = x.clamp(max=4)
    t1, *_ = tok(x, ["s"])
    t2, *_ = tok(x_clamped, ["s"])
    assert torch.equal(t1, t2)  # 5 counts as max_count
    x3 = x.clone()
    x3[0, 0, 2] = 1
    t3, *_ = tok(x3, ["s"])
    assert not torch.allclose(t1[0, 0, 0], t3[0, 0, 0])  # counts 1 and 2 embed differently
    torch.testing.assert_close(t1[0, 0, 1], t3[0, 0, 1])  # other patch untouched
    # the padded channels of patch 1 (channels 6, 7) contribute nothing at all
    e = tok.count_emb(torch.tensor([4, 4]))
    manual = tok.proj(torch.cat([e.flatten(), torch.zeros(2 * tok.per_channel)]))
    torch.testing.assert_close(t1[0, 0, 1], manual + tok.session_emb[0][1])


def test_linear_embedders_use_log_counts_for_spikes_and_raw_values_for_lfp():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8) * 5
    sp = PatchTokenizer(cfg(modality="spikes", embedder="linear"), {"s": 8})
    t, *_ = sp(x, ["s"])
    manual = sp.proj(torch.log1p(x).view(1, 3, 2, 4)) + sp.session_emb[0]
    torch.testing.assert_close(t, manual)
    lf = PatchTokenizer(cfg(modality="lfp", embedder="linear"), {"s": 8})
    t, *_ = lf(x - 2.5, ["s"])
    manual = lf.proj((x - 2.5).view(1, 3, 2, 4)) + lf.session_emb[0]
    torch.testing.assert_close(t, manual)
    mlp = PatchTokenizer(cfg(modality="lfp", embedder="mlp"), {"s": 8})
    t, *_ = mlp(x, ["s"])
    manual = mlp.proj(x.view(1, 3, 2, 4)) + mlp.session_emb[0]
    torch.testing.assert_close(t, manual)
    assert isinstance(mlp.proj, torch.nn.Sequential)


@pytest.mark.parametrize(("modality", "band_max"), [("lfp", 400), ("spikes", 400), ("lfp", 4)])
def test_filterbank_tokens_equal_the_features_written_out_and_projected_by_a_linear(
        modality, band_max, monkeypatch):
    """The fast path (features with time last, band-average matrix or, for windows longer than
    ``BAND_MATRIX_MAX_BINS``, pooling; 1x1 convolution) gives the tokens of the plain
    formulation: convolution, average pooling that ignores the padding, features time-major,
    padded channels zeroed, ``proj`` as a Linear."""
    monkeypatch.setattr(tokenizer_module, "BAND_MATRIX_MAX_BINS", band_max)
    torch.manual_seed(0)
    F = torch.nn.functional
    tok = PatchTokenizer(cfg(modality=modality, embedder="filterbank", n_filters=3, filter_bins=5,
                             energy_bins=3), {"a": 7, "b": 5})
    x = torch.rand(2, 11, 7) * 3
    x[1, :, 5:] = 0  # session b's two missing channels (its width is 5)
    widths = torch.tensor([7, 5])
    tokens, patches, chan_valid, _ = tok(x, ["a", "b"], widths)
    B, T, NP, P = patches.shape
    inp = torch.log1p(patches) if modality == "spikes" else patches
    flat = inp.permute(0, 2, 3, 1).reshape(-1, 1, T)
    h = F.conv1d(flat, tok.filters.weight, padding=2)
    e = F.avg_pool1d(h.pow(2), 3, stride=1, padding=1, count_include_pad=False)
    feats = torch.cat([flat, h, torch.log(e + 1e-3)], 1).view(B, NP, P, -1, T)
    feats = feats.permute(0, 4, 1, 2, 3) * chan_valid[:, None, :, :, None]
    want = tok.proj(feats.reshape(B, T, NP, -1)) + tok.session_embedding(["a", "b"], NP, x.device)[:, None]
    torch.testing.assert_close(tokens, want, rtol=1e-5, atol=1e-5)
    fb = tok.filterbank(inp, chan_valid)  # [B, T, Np, P * 7]: 7 features per channel
    assert not fb[1, :, 1, :7].eq(0).all()  # session b's channel 4 (patch 1, first place)
    assert fb[1, :, 1, 7:].eq(0).all() and fb[0, :, 1, 21:].eq(0).all()  # padded: zero


def test_count_embedder_is_refused_for_lfp():
    with pytest.raises(pydantic.ValidationError, match="count"):
        cfg(modality="lfp", embedder="count")


def test_session_embeddings_are_per_session_and_per_patch():
    torch.manual_seed(0)
    tok = PatchTokenizer(cfg(), {"a": 8, "b": 8})
    x = torch.randn(1, 2, 8)
    ta, *_ = tok(x, ["a"])
    tb, *_ = tok(x, ["b"])
    torch.testing.assert_close(ta - tb, (tok.session_emb[0] - tok.session_emb[1]).expand_as(ta))


def test_extend_keeps_existing_rows_bit_identical():
    torch.manual_seed(0)
    tok = PatchTokenizer(cfg(), {"a": 7, "b": 13})
    with torch.no_grad():
        for p in tok.session_emb:
            p.add_(torch.randn_like(p))  # as if trained
    # the weights; the vocabulary (also in the state dict) grows by design
    before = {k: v.clone() for k, v in tok.state_dict().items() if k != "_extra_state"}
    assert tok.extend({"a": 7, "c": 9, "d": 8}, init_from="b") == ["c", "d"]
    after = tok.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert tok.vocab() == {"a": 7, "b": 13, "c": 9, "d": 8}
    assert [p.shape[0] for p in tok.session_emb] == [2, 4, 3, 2]
    # 'b' has 4 patches, 'c'/'d' 3 and 2 -> random init; init from a session with as many patches copies
    assert tok.extend({"e": 5}, init_from="a") == ["e"]
    assert torch.equal(tok.session_emb[4], tok.session_emb[0])
    assert tok.session_emb[4] is not tok.session_emb[0]
    assert tok.extend({"a": 7}) == []


def test_extended_model_reproduces_old_sessions_exactly():
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(), {"a": 7}).eval()
    x = torch.randn(2, 6, 7)
    ref = model.encode(x, ["a", "a"])
    model.tokenizer.extend({"new": 11})
    assert torch.equal(model.encode(x, ["a", "a"]), ref)
    # a state dict round trip through the vocabulary rebuilds the same model
    clone = NeuralTransformer(model.cfg, model.vocab()).eval()
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.encode(x, ["a", "a"]), ref)


def test_unknown_session_is_a_clear_error():
    tok = PatchTokenizer(cfg(), {"a": 7})
    with pytest.raises(CheckpointMismatchError, match="'zz' is not in the model's vocabulary") as e:
        tok(torch.zeros(1, 2, 7), ["zz"])
    _one_line(e.value)


def test_wrong_channel_count_is_a_clear_error():
    tok = PatchTokenizer(cfg(), {"a": 7})
    with pytest.raises(CheckpointMismatchError,
                       match="has 9 lfp channels but the model was built for 7") as e:
        tok(torch.zeros(1, 2, 9), ["a"])
    _one_line(e.value)
    with pytest.raises(CheckpointMismatchError, match="built for 7") as e:
        tok.extend({"a": 8})
    _one_line(e.value)


def test_a_session_narrower_than_a_patch_is_one_padded_patch():
    torch.manual_seed(0)
    tok = PatchTokenizer(cfg(patch_size=16), {"s": 5})
    x = torch.randn(2, 3, 5)
    tokens, patches, chan_valid, patch_valid = tok(x, ["s", "s"])
    assert tokens.shape[2] == 1 and patch_valid.all() and chan_valid[0, 0].sum() == 5
    # what sits in the padding never matters
    wide = torch.cat([x, torch.randn(2, 3, 11) * 100], dim=2)
    assert torch.equal(tok(wide, ["s", "s"], torch.tensor([5, 5]))[0], tokens)
    with pytest.raises(ConfigError, match="has no lfp channels") as e:
        tok.extend({"empty": 0})
    _one_line(e.value)
    assert tok.vocab() == {"s": 5}  # nothing half-added


def test_non_contiguous_input_is_accepted():
    """Slicing a batch on the channel axis (no padding needed) must not break patchify."""
    torch.manual_seed(0)
    tok = PatchTokenizer(cfg(), {"s": 8})
    wide = torch.randn(2, 5, 12)
    x = wide[:, :, :8]
    assert not x.is_contiguous()
    t1, *_ = tok(x, ["s", "s"])
    t2, *_ = tok(x.contiguous(), ["s", "s"])
    assert torch.equal(t1, t2)
