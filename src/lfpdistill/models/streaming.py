"""Stepping a causal model one bin at a time with a key/value cache.

A causal encoder (:class:`~.encoder.Encoder` with ``causal_context``) lets every token attend to
the tokens of its own and the previous ``context_bins - 1`` bins, at every layer. Run over a
whole recording in one pass, the latent of bin ``t`` therefore depends on the bins up to ``t``
only; :class:`CausalStepper` computes exactly that latent bin by bin, with bounded state:

- the filter-bank embedder's history: the last ``filter_bins - 1`` input bins and the last
  ``energy_bins - 1`` filter energies (zeros before the first bin, as the one-pass model pads);
- per layer, the keys and values of the last ``context_bins - 1`` bins (keys stored before the
  rotary rotation: every step rotates the cached keys to positions ``0 .. context_bins - 2`` and
  the new bin's to ``context_bins - 1``; attention depends on the difference of positions only,
  so this equals the one-pass model's absolute positions);
- the number of bins seen, so that slots before the first bin are never attended to.

Each step costs one token per patch through every layer (plus attention over the cached keys)
instead of a whole window, and every tensor of the state has a fixed shape, so the step exports
to ONNX as one graph with the state as inputs and outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .encoder import apply_rotary, rotary_cos_sin
from .tokenizer import n_patches
from .transformer import NeuralTransformer

#: the names of the state tensors, in the order of :meth:`CausalStepper.forward`'s arguments
STATE_NAMES = ("x_hist", "e_hist", "k_cache", "v_cache", "n_seen")


class CausalStepper(nn.Module):
    """``forward(x [C], *state) -> (latent [d], *new_state)`` of a causal model for one session.

    ``x`` is one bin of the model's input (already normalised as the model was trained);
    ``state`` is :meth:`initial_state` before the first bin. The latent equals that of the bin in
    a one-pass causal encoding of the recording so far (:meth:`NeuralTransformer.forward`).
    """

    def __init__(self, model: NeuralTransformer, session: str):
        super().__init__()
        cfg = model.cfg
        if not cfg.causal:
            raise ConfigError("only a causal model (causal: true) can be stepped bin by bin")
        if cfg.embedder == "count":
            raise ConfigError("the count embedder cannot be stepped; causal LFP models use the "
                              "filterbank, linear or mlp embedder")
        vocab = model.vocab()
        if session not in vocab:
            raise ConfigError(f"session '{session}' is not in the model's vocabulary; known: "
                              f"{', '.join(vocab)}")
        self.model = model.eval()
        self.cfg = cfg
        C, P = vocab[session], cfg.patch_size
        self.n_channels, self.npatch = C, n_patches(C, P)
        enc = model.encoder
        self.n_layers, self.d = len(enc.blocks), cfg.d_model
        self.n_heads = enc.blocks[0].attn.n_heads
        self.head_dim = self.d // self.n_heads
        self.context = int(cfg.context_bins)
        tok = model.tokenizer
        chan_valid = (torch.arange(self.npatch * P) < C).view(self.npatch, P)
        self.register_buffer("chan_valid", chan_valid.float(), persistent=False)
        self.register_buffer("patch_valid", chan_valid.any(-1).float(), persistent=False)
        emb = torch.zeros(self.npatch, self.d)
        own = tok.session_emb[tok.names.index(session)].detach()
        emb[: own.shape[0]] = own
        self.register_buffer("session_emb", emb, persistent=False)
        filterbank = cfg.embedder == "filterbank"
        self.k_filter = tok.filters.kernel_size[0] if filterbank else 1
        self.k_energy = (cfg.energy_bins | 1) if filterbank and cfg.energy_bins > 1 else 1
        # rotary tables of the cache slots (oldest first) and of the new bin
        S = self.context * self.npatch
        pos = torch.arange(self.context, dtype=torch.float32).repeat_interleave(self.npatch)
        cos, sin = rotary_cos_sin(pos, self.head_dim, enc.rope_base)  # [S, Dh]
        self.register_buffer("cos", cos[None], persistent=False)      # [1, S, Dh]
        self.register_buffer("sin", sin[None], persistent=False)
        self.register_buffer("slot_bin", pos, persistent=False)       # [S] bin of each slot
        self.cache_len = S - self.npatch

    # ------------------------------------------------------------------ state
    def initial_state(self) -> tuple[torch.Tensor, ...]:
        """The state before the first bin: empty histories, no cached key."""
        NP = self.npatch * self.cfg.patch_size
        F_ = self.cfg.n_filters
        return (torch.zeros(self.k_filter - 1, NP), torch.zeros(self.k_energy - 1, NP * F_),
                torch.zeros(self.n_layers, self.n_heads, self.cache_len, self.head_dim),
                torch.zeros(self.n_layers, self.n_heads, self.cache_len, self.head_dim),
                torch.zeros(1))

    # ------------------------------------------------------------------ step
    def _embed(self, x: torch.Tensor, x_hist: torch.Tensor, e_hist: torch.Tensor,
               n_seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens ``[Np, d]`` of one bin ``x [C]`` and the new embedder histories."""
        cfg, tok = self.cfg, self.model.tokenizer
        P = cfg.patch_size
        pad = self.npatch * P - self.n_channels
        flat = F.pad(x, (0, pad)) if pad else x                      # [NP]
        flat = flat * self.chan_valid.reshape(-1)
        if cfg.embedder != "filterbank":
            feats = flat.view(self.npatch, P)
            tokens = tok.proj(feats)
            return tokens + self.session_emb, x_hist, e_hist
        F_ = cfg.n_filters
        seq = torch.cat([x_hist, flat[None]], dim=0)                 # [k, NP] oldest first
        w = tok.filters.weight[:, 0, :]                              # [F, k]
        h = seq.T @ w.T                                              # [NP, F]
        e_now = h.pow(2).reshape(1, -1)                              # [1, NP*F]
        if self.k_energy > 1:
            count = torch.clamp(n_seen + 1, max=float(self.k_energy))
            e = (e_hist.sum(0, keepdim=True) + e_now) / count
            new_e = torch.cat([e_hist[1:], e_now], dim=0)
        else:
            e, new_e = e_now, e_hist
        feats = torch.cat([flat[:, None], h, torch.log(e.view(-1, F_) + 1e-3)], dim=1)  # [NP, 1+2F]
        feats = feats * self.chan_valid.reshape(-1, 1)
        tokens = tok.proj(feats.reshape(self.npatch, P * (1 + 2 * F_)))
        return tokens + self.session_emb, seq[1:], new_e

    def forward(self, x: torch.Tensor, x_hist: torch.Tensor, e_hist: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor, n_seen: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        tokens, x_hist, e_hist = self._embed(x, x_hist, e_hist, n_seen)   # [Np, d]
        H, Dh, Np = self.n_heads, self.head_dim, self.npatch
        # slots before the first bin (the cache starts empty) are never attended to
        first = (self.context - 1) - n_seen                                  # bin of bin 0
        allowed = (self.slot_bin >= first) & (self.patch_valid.repeat(self.context) > 0)
        mask = allowed[None, None, :].expand(1, Np, -1)                      # [1, Np, S]
        cos_q, sin_q = self.cos[:, -Np:], self.sin[:, -Np:]
        new_k, new_v = [], []
        h = tokens
        for i, blk in enumerate(self.model.encoder.blocks):
            a = blk.attn
            qkv = a.qkv(blk.norm1(h)).view(Np, 3, H, Dh).permute(1, 2, 0, 3)  # [3, H, Np, Dh]
            q, k, v = qkv[0], qkv[1], qkv[2]
            keys = torch.cat([k_cache[i], k], dim=1)                          # [H, S, Dh]
            vals = torch.cat([v_cache[i], v], dim=1)
            q = apply_rotary(q[None], cos_q[:, None], sin_q[:, None])[0]
            kr = apply_rotary(keys[None], self.cos[:, None], self.sin[:, None])[0]
            y = F.scaled_dot_product_attention(q[None], kr[None], vals[None], attn_mask=mask)
            h = h + a.out(y[0].transpose(0, 1).reshape(Np, self.d))
            h = h + blk.mlp(blk.norm2(h))
            new_k.append(keys[:, Np:])
            new_v.append(vals[:, Np:])
        out = self.model.encoder.norm(h)                                      # [Np, d]
        w = self.patch_valid[:, None]
        latent = (out * w).sum(0) / w.sum().clamp_min(1)
        n_next = torch.clamp(n_seen + 1, max=float(max(self.context, self.k_energy)))
        return (latent, x_hist, e_hist, torch.stack(new_k), torch.stack(new_v), n_next)

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``[T, d]`` of ``x [T, C]`` stepped from the initial state (the offline twin
        of a stream, and what :meth:`NeuralTransformer.forward` gives in one causal pass)."""
        state = self.initial_state()
        out = torch.empty(x.shape[0], self.d)
        for t in range(x.shape[0]):
            out[t], *state = self(x[t], *state)
        return out


def receptive_bins(model: NeuralTransformer) -> int:
    """How many bins before ``t`` can change the causal latent of bin ``t``: the filter-bank's
    filter and energy spans plus ``context_bins - 1`` per layer."""
    cfg = model.cfg
    span = len(model.encoder.blocks) * (cfg.context_bins - 1)
    if cfg.embedder == "filterbank":
        span += (cfg.filter_bins | 1) - 1 + ((cfg.energy_bins | 1) - 1 if cfg.energy_bins > 1 else 0)
    return span


@torch.no_grad()
def causal_latents(model: NeuralTransformer, session: str, x: torch.Tensor,
                   chunk: int = 2048) -> torch.Tensor:
    """Latents ``[T, d]`` of ``x [T, C]`` in one causal pass from the first bin, computed in
    chunks of ``chunk`` bins: each chunk is encoded together with the :func:`receptive_bins`
    bins before it (which fix every value its latents depend on), so the result equals one pass
    over the whole recording and :meth:`CausalStepper.run` (bounded memory, batched speed)."""
    if not model.cfg.causal:
        raise ConfigError("causal_latents needs a causal model (causal: true)")
    model.eval()
    T, span = x.shape[0], receptive_bins(model)
    out = torch.empty(T, model.cfg.d_model)
    for a in range(0, T, chunk):
        b = min(T, a + chunk)
        lo = max(0, a - span)
        z = model(x[lo:b][None], [session], reconstruct=False).latents[0]
        out[a:b] = z[a - lo:]
    return out


def state_bytes(stepper: CausalStepper) -> int:
    """Size of a stepper's state (bytes of float32): what a stream keeps between bins."""
    return sum(math.prod(s.shape) for s in stepper.initial_state()) * 4
