"""Masked neural transformer: masks, reconstruction losses, latents, a tiny overfit."""

import pytest
import torch

from lfpdistill.models import (
    ModelConfig,
    ModelOutput,
    NeuralTransformer,
    held_out_patterns,
    make_mask,
    masked_loss,
    spike_null_nll,
)


def cfg(**kw) -> ModelConfig:
    base = dict(modality="lfp", patch_size=4, d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def _patch_valid(B: int, npatch: int) -> torch.Tensor:
    """Samples with 2..npatch valid leading patches (the rest padding)."""
    pv = torch.zeros(B, npatch, dtype=torch.bool)
    for b in range(B):
        pv[b, : 2 + b % (npatch - 1)] = True
    return pv


def _check_mask(mask, pv):
    B, T, npatch = mask.shape
    valid = pv[:, None, :].expand(B, T, npatch)
    assert mask.dtype == torch.bool
    assert not (mask & ~valid).any(), "padding was masked"
    for b in range(B):
        assert mask[b][valid[b]].any(), "no hidden token"
        assert (~mask[b][valid[b]]).any(), "no visible token"
    return mask[valid].float().mean().item()


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_random_mask_respects_ratio_and_padding(ratio):
    pv = _patch_valid(32, 6)
    mask = make_mask("random", ratio, 32, 40, 6, pv, generator=torch.Generator().manual_seed(0))
    assert abs(_check_mask(mask, pv) - ratio) < 0.03


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_time_mask_hides_contiguous_spans_of_all_patches(ratio):
    pv = _patch_valid(32, 6)
    mask = make_mask("time", ratio, 32, 100, 6, pv, span_bins=10,
                     generator=torch.Generator().manual_seed(0))
    r = _check_mask(mask, pv)
    assert 0.5 * ratio < r < ratio + 0.05  # overlapping spans make it a bit lower
    for b in range(32):
        m = mask[b][:, pv[b]]
        per_t = m[:, 0]
        # whole time bins are hidden (the one forced-visible token excepted)
        assert (m != per_t[:, None]).sum() <= 1
        # spans: each run of hidden bins is at least span_bins long (or touches a window edge)
        t = per_t.int().tolist()
        runs, cur = [], 0
        for v in t + [0]:
            if v:
                cur += 1
            elif cur:
                runs.append(cur)
                cur = 0
        assert all(n >= 9 for n in runs), runs


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_patch_mask_hides_whole_patches(ratio):
    pv = torch.ones(64, 8, dtype=torch.bool)
    pv[::2, 6:] = False
    mask = make_mask("patch", ratio, 64, 20, 8, pv, generator=torch.Generator().manual_seed(0))
    r = _check_mask(mask, pv)
    assert abs(r - ratio) < 0.1
    same_over_time = (mask == mask[:, :1]).all(1)  # [B, Np]
    assert same_over_time.float().mean() > 0.97


def test_mixed_mask_uses_all_three_modes_and_is_reproducible():
    pv = torch.ones(4, 6, dtype=torch.bool)
    kinds = set()
    for seed in range(30):
        m = make_mask("mixed", 0.4, 4, 30, 6, pv, span_bins=5,
                      generator=torch.Generator().manual_seed(seed))
        again = make_mask("mixed", 0.4, 4, 30, 6, pv, span_bins=5,
                          generator=torch.Generator().manual_seed(seed))
        assert torch.equal(m, again)
        _check_mask(m, pv)
        if (m == m[:, :, :1]).all():
            kinds.add("time")
        elif (m == m[:, :1]).all():
            kinds.add("patch")
        else:
            kinds.add("random")
    assert kinds == {"random", "time", "patch"}


@pytest.mark.parametrize("mode", ["random", "time", "patch"])
def test_extreme_ratios_still_hide_and_show_one_token(mode):
    pv = _patch_valid(8, 4)
    for ratio, seed in [(0.01, 0), (0.99, 1)]:
        m = make_mask(mode, ratio, 8, 3, 4, pv, span_bins=10,
                      generator=torch.Generator().manual_seed(seed))
        _check_mask(m, pv)


def test_unknown_mask_mode():
    with pytest.raises(ValueError, match="unknown mask mode"):
        make_mask("bogus", 0.5, 1, 4, 2, torch.ones(1, 2, dtype=torch.bool))


# ---------------------------------------------------------------------------- losses
def _output(modality: str, seed: int = 0) -> ModelOutput:
    g = torch.Generator().manual_seed(seed)
    B, T, npatch, P = 3, 6, 3, 4
    chan_valid = torch.ones(B, npatch, P, dtype=torch.bool)
    chan_valid[0, 2] = False           # sample 0: last patch is padding
    chan_valid[1, 2, 2:] = False       # sample 1: last patch half padding
    patch_valid = chan_valid.any(-1)
    if modality == "spikes":
        y = torch.poisson(2 * torch.rand(B, T, npatch, P, generator=g), generator=g)
    else:
        y = torch.randn(B, T, npatch, P, generator=g)
    y = y * chan_valid[:, None]
    pred = torch.randn(B, T, npatch, P, generator=g)
    mask = make_mask("random", 0.5, B, T, npatch, patch_valid, generator=g)
    return ModelOutput(torch.zeros(B, T, 8), torch.zeros(B, T, npatch, 8), pred, y, chan_valid,
                       patch_valid, mask)


def _with(out: ModelOutput, **kw) -> ModelOutput:
    d = dict(out.__dict__)
    d.update(kw)
    return ModelOutput(**d)


@pytest.mark.parametrize("modality", ["spikes", "lfp"])
def test_loss_uses_masked_non_padding_entries_only(modality):
    out = _output(modality)
    loss, stats = masked_loss(out, modality)
    sel = out.mask[..., None] & out.chan_valid[:, None]
    assert stats["n"].item() == sel.sum().item()
    ignored = ~sel
    # change targets and predictions wherever the loss must not look
    noise = 100 * torch.rand_like(out.patches).round()
    changed = _with(out, patches=torch.where(ignored, noise, out.patches),
                    pred=torch.where(ignored, -noise, out.pred))
    loss2, _ = masked_loss(changed, modality)
    assert torch.equal(loss, loss2)
    # a masked, valid target does matter
    idx = sel.nonzero()[0].tolist()
    poked = out.patches.clone()
    poked[tuple(idx)] += 3
    assert masked_loss(_with(out, patches=poked), modality)[0] != loss


def test_poisson_loss_matches_torch_reference():
    out = _output("spikes")
    loss, stats = masked_loss(out, "spikes")
    sel = out.mask[..., None] & out.chan_valid[:, None]
    ref = torch.nn.functional.poisson_nll_loss(out.pred[sel], out.patches[sel], log_input=True)
    torch.testing.assert_close(loss, ref)
    assert stats["spikes_sum"].item() == out.patches[sel].sum().item()


def test_mse_loss_and_r2_sums():
    out = _output("lfp")
    loss, stats = masked_loss(out, "lfp")
    sel = out.mask[..., None] & out.chan_valid[:, None]
    y, p = out.patches[sel], out.pred[sel]
    torch.testing.assert_close(loss, ((p - y) ** 2).mean())
    torch.testing.assert_close(stats["sse"], ((p - y) ** 2).sum())
    torch.testing.assert_close(stats["y_sum"], y.sum())
    torch.testing.assert_close(stats["y2_sum"], (y * y).sum())


def test_null_model_gives_zero_bits_per_spike():
    out = _output("spikes")
    valid = out.chan_valid[:, None].float()
    rate = (out.patches * valid).sum(1, keepdim=True) / out.patches.shape[1]
    pred = torch.log(rate.clamp_min(1e-6)).expand_as(out.patches)
    _, stats = masked_loss(_with(out, pred=pred), "spikes")
    torch.testing.assert_close(spike_null_nll(out), stats["nll_sum"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("modality", ["spikes", "lfp"])
def test_loss_counts_are_exact_under_bf16_autocast(modality):
    """Under bf16 autocast the prediction is bf16; the entry count must still be exact."""
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(modality=modality, d_model=16), {"s": 16})
    x = torch.poisson(torch.full((8, 60, 16), 2.0)) if modality == "spikes" else torch.randn(8, 60, 16)
    mask = torch.zeros(8, 60, 4, dtype=torch.bool)
    mask[:, :, :3] = True
    mask[0, 0, 0] = False  # 8*60*3*4 - 4 = 5756 masked channels: not representable in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, ["s"] * 8, hide=mask)
        loss, stats = masked_loss(out, modality)
    assert stats["n"].item() == 5756
    ref, _ = masked_loss(_with(out, pred=out.pred.float()), modality)
    torch.testing.assert_close(loss.float(), ref, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- model
@pytest.mark.parametrize("embedder,modality", [("linear", "lfp"), ("mlp", "lfp"),
                                               ("filterbank", "lfp"), ("count", "spikes"),
                                               ("linear", "spikes"), ("filterbank", "spikes")])
def test_hidden_inputs_do_not_leak_into_the_output(embedder, modality):
    """MAE must not see what it reconstructs: hidden values cannot change any output.

    (With ``keep_ratio`` > 0 some scored tokens are deliberately left visible, BERT-style, so the
    property is checked with keep_ratio=0.)"""
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(embedder=embedder, modality=modality, filter_bins=5, keep_ratio=0.0),
                              {"a": 7, "b": 13}).eval()
    x = torch.poisson(2 * torch.rand(2, 8, 13))
    widths = torch.tensor([7, 13])
    with torch.no_grad():
        out = model.forward_masked(x, ["a", "b"], widths, generator=torch.Generator().manual_seed(0))
        hidden = out.mask[..., None].expand(2, 8, 4, 4).reshape(2, 8, 16)[..., :13]
        x2 = torch.where(hidden, torch.poisson(50 * torch.rand_like(x)), x)
        out2 = model(x2, ["a", "b"], widths, hide=out.mask)
    torch.testing.assert_close(out2.pred, out.pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out2.latents, out.latents, rtol=1e-5, atol=1e-5)


def test_latents_are_mean_of_valid_patch_tokens_and_encode_is_unmasked():
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(), {"a": 7, "b": 13}).eval()
    x = torch.randn(2, 5, 13)
    widths = torch.tensor([7, 13])
    out = model(x, ["a", "b"], widths)
    assert out.mask is None
    torch.testing.assert_close(out.latents[0], out.tokens[0, :, :2].mean(1))
    torch.testing.assert_close(out.latents[1], out.tokens[1].mean(1))
    z = model.encode(x, ["a", "b"], widths, readout="visible")
    assert not z.requires_grad
    torch.testing.assert_close(z, out.latents)
    assert out.pred.shape == (2, 5, 4, 4)


@pytest.mark.parametrize("embedder,block,shifts", [("linear", 1, 1), ("filterbank", 3, 2),
                                                   ("linear", 4, 3), ("linear", 50, 2)])
def test_held_out_readout_describes_each_bin_by_its_context(embedder, block, shifts):
    """held_out: a bin's latent cannot depend on that bin's own input, only on its context;
    the one-pass (visible) read-out does depend on it."""
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(embedder=embedder, filter_bins=5, readout_block=block,
                                  readout_shifts=shifts), {"a": 7, "b": 13}).eval()
    assert model.cfg.readout == "held_out"  # the default for masked autoencoders
    x = torch.randn(2, 9, 13)
    widths = torch.tensor([7, 13])
    z = model.encode(x, ["a", "b"], widths)
    assert z.shape == (2, 9, 16) and torch.isfinite(z).all()
    for t in (0, 4, 8):
        x2 = x.clone()
        x2[:, t] = 100 * torch.randn(2, 13)
        z2 = model.encode(x2, ["a", "b"], widths)
        torch.testing.assert_close(z2[:, t], z[:, t], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(z2, z)  # its neighbours do see it
        zv, zv2 = (model.encode(v, ["a", "b"], widths, readout="visible") for v in (x, x2))
        assert not torch.allclose(zv2[:, t], zv[:, t])
    # batch composition does not change a sample's latents
    torch.testing.assert_close(model.encode(x[1:], ["b"], widths[1:]), z[1:], rtol=1e-5, atol=1e-5)


def test_held_out_latent_is_the_mean_over_the_passes_that_hide_the_bin():
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(readout_block=2, readout_shifts=2), {"s": 8}).eval()
    x = torch.randn(1, 6, 8)
    pats = held_out_patterns(6, 2, 2)
    assert len(pats) == 4 and torch.equal(torch.stack(pats).sum(0), torch.full((6,), 2))
    with torch.no_grad():
        outs = [model(x, ["s"], hide=p[None, :, None].expand(1, 6, 2), reconstruct=False).latents
                for p in pats]
    want = sum(o * p[None, :, None] for o, p in zip(outs, pats, strict=True)) / 2
    torch.testing.assert_close(model.encode(x, ["s"]), want, rtol=1e-5, atol=1e-6)


def test_forward_mask_argument_forms():
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(), {"s": 8}).eval()
    x = torch.randn(1, 4, 8)
    assert model(x, ["s"]).mask is None
    sampled = model.forward_masked(x, ["s"]).mask
    assert sampled.shape == (1, 4, 2) and sampled.any() and not sampled.all()
    given = torch.zeros(1, 4, 2, dtype=torch.bool)
    given[0, 1, 1] = True
    assert torch.equal(model(x, ["s"], hide=given).mask, given)


def test_tiny_lfp_mae_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(d_model=32, n_layers=2, mask_ratio=0.3, mask_mode="random"),
                              {"s": 8})
    x = torch.randn(4, 20, 8, generator=torch.Generator().manual_seed(0))
    mask = model.forward_masked(x, ["s"] * 4, generator=torch.Generator().manual_seed(0)).mask
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss, _ = masked_loss(model(x, ["s"] * 4, hide=mask), "lfp")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # far below both the first loss and the variance of the hidden values (predicting the mean)
    assert losses[-1] < 0.05 * losses[0], losses[::25]
    assert losses[-1] < 0.05 * x.var().item()


def test_tiny_spike_mae_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(modality="spikes", d_model=32, n_layers=2, mask_ratio=0.3,
                                  mask_mode="random"), {"s": 8})
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(3 * torch.rand(4, 20, 8, generator=g), generator=g)
    mask = model.forward_masked(x, ["s"] * 4, generator=torch.Generator().manual_seed(0)).mask
    sel = mask[..., None].expand(4, 20, 2, 4).reshape(4, 20, 8)
    y = x[sel]
    floor = (y - torch.xlogy(y, y)).mean().item()  # NLL of the perfect rate (= the counts)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        loss, _ = masked_loss(model(x, ["s"] * 4, hide=mask), "spikes")
        if step == 0:
            first = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() - floor < 0.1 * (first - floor), (first, loss.item(), floor)


def test_keep_ratio_leaves_some_scored_tokens_visible():
    torch.manual_seed(0)
    model = NeuralTransformer(cfg(keep_ratio=0.5, mask_mode="random"), {"a": 8}).eval()
    x = torch.randn(4, 20, 8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = model.forward_masked(x, ["a"] * 4, generator=g)
        # a scored token whose input changes changes the output only if it was kept visible
        x2 = x + 100 * out.mask[..., None].expand(4, 20, 2, 4).reshape(4, 20, 8)
        out2 = model.forward_masked(x2, ["a"] * 4, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out2.latents, out.latents)


def test_with_readout_sets_the_shared_config_and_validates_it():
    from pydantic import ValidationError

    model = NeuralTransformer(cfg(readout_shifts=2), {"s": 8})
    model.with_readout("held_out", 5)
    assert (model.cfg.readout, model.cfg.readout_shifts) == ("held_out", 5)
    assert model.tokenizer.cfg is model.cfg  # one config object for model and tokenizer
    model.with_readout("visible")  # shifts kept when not given
    assert (model.cfg.readout, model.cfg.readout_shifts) == ("visible", 5)
    with pytest.raises(ValidationError):
        model.with_readout("held_out", 0)
