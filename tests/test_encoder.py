"""Pre-norm encoder: rotary time encoding, key-padding masks and its dropout."""

import pytest
import torch

from lfpdistill.models.encoder import (
    DROPOUT_LEVELS,
    Attention,
    Block,
    Dropout,
    Encoder,
    apply_rotary,
    dropout,
    rotary_cos_sin,
)


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    cos, sin = rotary_cos_sin(positions, x.shape[-1], base)
    return apply_rotary(x, cos[:, None], sin[:, None])


def scores(q, k, positions):
    return rotate(q, positions) @ rotate(k, positions).transpose(-1, -2)


@pytest.mark.parametrize("shift", [1.0, 17.0, 123.5])
def test_rotary_scores_depend_only_on_relative_time(shift):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 12, 8, generator=g, dtype=torch.float64).float()
    k = torch.randn(2, 3, 12, 8, generator=g, dtype=torch.float64).float()
    pos = torch.randint(0, 40, (2, 12), generator=g).float()
    s0 = scores(q, k, pos)
    s1 = scores(q, k, pos + shift)
    torch.testing.assert_close(s1, s0, rtol=1e-4, atol=1e-4)
    # ...and they do depend on the relative time: spreading positions changes them
    s2 = scores(q, k, pos * 2)
    assert not torch.allclose(s2, s0, atol=1e-2)


def test_rotary_is_a_rotation_and_identity_at_zero():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 16, generator=g)
    pos = torch.arange(5.0)[None] * 3.7
    r = rotate(x, pos)
    torch.testing.assert_close(r.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rotate(x, torch.zeros(1, 5)), x)


def test_rotary_dot_product_matches_relative_rotation():
    """q_m . k_n after rotation equals q . R(n - m) k: the score is a function of n - m."""
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 1, 1, 8, generator=g)
    k = torch.randn(1, 1, 1, 8, generator=g)
    for m, n in [(0.0, 5.0), (10.0, 15.0), (-3.0, 2.0)]:
        a = (rotate(q, torch.tensor([[m]])) * rotate(k, torch.tensor([[n]]))).sum()
        b = (q * rotate(k, torch.tensor([[n - m]]))).sum()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def tiny_encoder(n_layers=2, d=16, heads=2) -> Encoder:
    torch.manual_seed(0)
    return Encoder(d, n_layers, heads, 2 * d, dropout=0.0).eval()


def test_encoder_is_invariant_to_a_global_time_shift():
    enc = tiny_encoder()
    x = torch.randn(2, 10, 16)
    pos = torch.arange(10.0).repeat(2, 1)
    with torch.no_grad():
        a = enc(x, pos)
        b = enc(x, pos + 50)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_key_padding_mask_ignores_padded_keys():
    enc = tiny_encoder()
    x = torch.randn(2, 9, 16)
    pos = torch.arange(9.0).repeat(2, 1)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[0, 6:] = False
    valid[1, ::3] = False
    with torch.no_grad():
        ref = enc(x, pos, valid)
        x2 = x.clone()
        x2[~valid] = 1e4 * torch.randn(int((~valid).sum()), 16)
        out = enc(x2, pos, valid)
        torch.testing.assert_close(out[valid], ref[valid], rtol=1e-5, atol=1e-5)
        # same as running the encoder on the valid tokens alone
        alone = enc(x[:1, :6], pos[:1, :6])
        torch.testing.assert_close(ref[0, :6], alone[0], rtol=1e-5, atol=1e-5)
        keep = valid[1]
        alone = enc(x[1:, keep], pos[1:, keep])
        torch.testing.assert_close(ref[1, keep], alone[0], rtol=1e-5, atol=1e-5)
        # without a mask the garbage does leak
        assert not torch.allclose(enc(x2, pos)[valid], ref[valid], atol=1e-3)
    assert torch.isfinite(out).all()


def test_all_valid_mask_equals_no_mask():
    enc = tiny_encoder()
    x = torch.randn(2, 7, 16)
    pos = torch.arange(7.0).repeat(2, 1)
    with torch.no_grad():
        torch.testing.assert_close(enc(x, pos, torch.ones(2, 7, dtype=torch.bool)), enc(x, pos))


def test_attention_uses_sdpa_with_boolean_keep_mask():
    """Attention equals a hand-written softmax attention with the same rotary positions."""
    torch.manual_seed(0)
    att = Attention(16, 2, dropout=0.0).eval()
    x = torch.randn(1, 5, 16)
    pos = torch.arange(5.0)[None]
    cos, sin = rotary_cos_sin(pos, 8)
    cos, sin = cos[:, None], sin[:, None]
    keep = torch.tensor([[True, True, False, True, False]])
    with torch.no_grad():
        out = att(x, cos, sin, keep[:, None, None, :])
        q, k, v = att.qkv(x).view(1, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        s = q @ k.transpose(-1, -2) / 8 ** 0.5
        s = s.masked_fill(~keep[:, None, None, :], float("-inf"))
        y = torch.softmax(s, -1) @ v
        manual = att.out(y.transpose(1, 2).reshape(1, 5, 16))
    torch.testing.assert_close(out, manual, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_zeroes_a_share_p_and_keeps_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = dropout(x, p, training=True)
    dropped = float((y == 0).float().mean())
    # binomial sd of the share is below 5e-4 here
    assert abs(dropped - p) < 3e-3
    # the kept values are scaled by the inverse of the (rounded) keep probability
    q = 1 - round(p * DROPOUT_LEVELS) / DROPOUT_LEVELS
    torch.testing.assert_close(y[y > 0], torch.full_like(y[y > 0], 1 / q))
    # the mean stays 1 (5 sd of a mean of 1e6 values)
    assert abs(float(y.detach().mean()) - 1.0) < 5 * (p / (1 - p)) ** 0.5 / 1000
    # the gradient is the same mask and scale
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())


def test_dropout_is_identity_in_eval_or_at_zero_and_follows_the_seed():
    x = torch.randn(4, 7, 5)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    torch.manual_seed(3)
    a = dropout(x, 0.3)
    torch.manual_seed(3)
    b = dropout(x, 0.3)
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not torch.equal(a, dropout(x, 0.3))  # a new draw differs
    # an odd number of values (the 32-bit draws hold two values each)
    assert dropout(torch.ones(3, 5, 7), 0.5).shape == (3, 5, 7)


def test_dropout_draws_neighbouring_values_independently():
    # the two values of one 32-bit draw (and any two neighbours) are dropped together with
    # probability p^2, not p
    torch.manual_seed(1)
    p = 0.5
    zero = dropout(torch.ones(2_000_000), p) == 0
    both = float((zero[0::2] & zero[1::2]).float().mean())
    assert abs(both - p * p) < 3e-3  # binomial sd 3e-4
    across = float((zero[1:-1:2] & zero[2::2]).float().mean())
    assert abs(across - p * p) < 3e-3


def test_dropout_takes_any_layout_and_float64_and_refuses_a_bad_p():
    torch.manual_seed(0)
    empty = torch.ones(0, 5, requires_grad=True)
    dropout(empty, 0.3).sum().backward()
    assert empty.grad.shape == (0, 5)
    x = torch.ones(40, 30).t()  # not contiguous
    y = dropout(x, 0.3)
    assert y.shape == (30, 40) and set(y.unique().tolist()) <= {0.0, float(y.max())}
    y64 = dropout(torch.ones(1000, dtype=torch.float64), 0.1)
    q = 1 - round(0.1 * DROPOUT_LEVELS) / DROPOUT_LEVELS
    assert y64.dtype == torch.float64
    # the scale in double precision (a float32 scale is off by ~3e-8)
    torch.testing.assert_close(y64.max(), torch.tensor(1 / q, dtype=torch.float64),
                               rtol=1e-12, atol=0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            dropout(x, bad)


def test_dropout_keeps_a_low_precision_dtype_and_falls_back_near_one():
    x = torch.ones(10_000, dtype=torch.bfloat16)
    assert dropout(x, 0.2).dtype == torch.bfloat16
    # a p that rounds to 1 on the 15-bit grid is left to F.dropout
    y = dropout(torch.ones(10_000), 1 - 1e-6)
    assert float((y == 0).float().mean()) > 0.99


def test_blocks_use_the_dropout_and_eval_turns_it_off():
    torch.manual_seed(0)
    blk = Block(16, 2, 32, dropout=0.5)
    assert isinstance(blk.drop, Dropout) and isinstance(blk.drop, torch.nn.Dropout)
    assert isinstance(blk.mlp.drop, Dropout)
    x = torch.randn(2, 6, 16)
    cos, sin = rotary_cos_sin(torch.arange(6.0)[None].expand(2, 6), 8)
    cos, sin = cos[:, None], sin[:, None]
    blk.train()
    assert not torch.allclose(blk(x, cos, sin, None), blk(x, cos, sin, None))
    blk.eval()
    torch.testing.assert_close(blk(x, cos, sin, None), blk(x, cos, sin, None))
