"""The masked neural transformer shared by the spike teacher and the LFP models.

Tokens are all (time, patch) pairs of a window; rotary positions encode the time index (tokens of
one time bin share a position). The per-timestep latent ``z[B, T, d]`` is the mean of that bin's
output tokens over its valid patches. Masked autoencoding hides tokens (random tokens, contiguous
time spans or whole patches), replaces them by a learned mask token and reconstructs the hidden
inputs: Poisson NLL on log-rates for spikes, MSE for LFP, on masked non-padding channels only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from .encoder import Encoder
from .tokenizer import PatchTokenizer, n_patches


@dataclass
class ModelOutput:
    latents: torch.Tensor      # [B, T, d]
    tokens: torch.Tensor       # [B, T, Np, d] output tokens
    pred: torch.Tensor | None  # [B, T, Np, P] reconstruction (log-rate for spikes)
    patches: torch.Tensor      # [B, T, Np, P] inputs cut into patches
    chan_valid: torch.Tensor   # [B, Np, P]
    patch_valid: torch.Tensor  # [B, Np]
    mask: torch.Tensor | None  # [B, T, Np] True where scored by the reconstruction loss


def make_mask(mode: str, ratio: float, B: int, T: int, npatch: int, patch_valid: torch.Tensor,
              span_bins: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample a ``[B, T, Np]`` boolean mask (True = hidden) over valid tokens.

    Modes: ``random`` tokens, ``time`` (contiguous spans of ``span_bins`` bins, all patches),
    ``patch`` (whole patches over all time), ``mixed`` (one of the three per call).
    Every sample gets at least one hidden and one visible valid token.
    """
    dev = patch_valid.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device="cpu").to(dev)

    if mode == "mixed":
        mode = ("random", "time", "patch")[int(rand(1).item() * 3) % 3]
    if mode == "random":
        mask = rand(B, T, npatch) < ratio
    elif mode == "time":
        n_spans = max(1, round(ratio * T / span_bins))
        starts = (rand(B, n_spans) * max(T - span_bins + 1, 1)).long()
        t = torch.arange(T, device=dev)
        hit = (t[None, None, :] >= starts[..., None]) & (t[None, None, :] < starts[..., None] + span_bins)
        mask = hit.any(1)[:, :, None].expand(B, T, npatch)
    elif mode == "patch":
        mask = (rand(B, 1, npatch) < ratio).expand(B, T, npatch)
    else:
        raise ValueError(f"unknown mask mode '{mode}'")
    mask = mask & patch_valid[:, None, :]
    # guarantee at least one hidden and one visible token per sample
    flat = mask.reshape(B, -1).clone()
    valid = patch_valid[:, None, :].expand(B, T, npatch).reshape(B, -1)
    for b in range(B):
        idx = valid[b].nonzero().flatten()
        if not flat[b].any():
            flat[b, idx[int(rand(1).item() * len(idx)) % len(idx)]] = True
        if flat[b, idx].all():
            flat[b, idx[0]] = False
    return flat.view(B, T, npatch)


class NeuralTransformer(nn.Module):
    """Tokenizer + encoder + masked-reconstruction branch for one modality."""

    def __init__(self, cfg: ModelConfig, sessions: dict[str, int]):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = PatchTokenizer(cfg, sessions)
        self.mask_token = nn.Parameter(torch.randn(cfg.d_model) * 0.02)
        # a causal model's encoder attends to the past only, within context_bins; its
        # reconstruction branch (training only, never read out) stays bidirectional
        self.encoder = Encoder(cfg.d_model, cfg.n_layers, cfg.n_heads,
                               int(cfg.mlp_ratio * cfg.d_model), cfg.dropout, cfg.rope_base,
                               cfg.attn_dropout, cfg.context_bins if cfg.causal else None)
        # reconstruction branch (masked autoencoding only; never a decoder of behaviour): the
        # encoder's outputs (the latents) must carry what it needs to fill in the hidden tokens,
        # so visible tokens' outputs are trained too
        self.recon_blocks = (Encoder(cfg.d_model, cfg.recon_layers, cfg.n_heads,
                                     int(cfg.mlp_ratio * cfg.d_model), cfg.dropout, cfg.rope_base)
                             if cfg.recon_layers > 0 else None)
        if cfg.recon_from == "latent":
            # reconstruction from the pooled per-timestep latent (+ the patch's session
            # embedding): the latent must hold the population state of its time bin
            self.recon_head: nn.Module = nn.Sequential(
                nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.patch_size))
        else:
            self.recon_head = nn.Linear(cfg.d_model, cfg.patch_size)
        if cfg.modality == "spikes":
            # start near a typical rate (~10 Hz at 10 ms bins) instead of e^0 = 1 spike per bin
            last = (self.recon_head[-1] if isinstance(self.recon_head, nn.Sequential)
                    else self.recon_head)
            nn.init.constant_(last.bias, -2.3)

    @property
    def modality(self) -> str:
        return self.cfg.modality

    def vocab(self) -> dict[str, int]:
        return self.tokenizer.vocab()

    def with_readout(self, readout: str, shifts: int | None = None) -> None:
        """Set how frozen latents are read out (``visible`` or ``held_out``; ``shifts``: the
        held-out read-out's phase shifts, else kept), in the one config object that the model
        and its tokenizer share."""
        update: dict[str, Any] = {"readout": readout}
        if shifts is not None:
            update["readout_shifts"] = shifts
        self.cfg = ModelConfig(**{**self.cfg.model_dump(), **update})  # validated
        self.tokenizer.cfg = self.cfg

    def forward(self, x: torch.Tensor, sessions: Sequence[str], widths: torch.Tensor | None = None,
                hide: torch.Tensor | None = None, reconstruct: bool = True) -> ModelOutput:
        """Encode ``x [B, T, C]`` of the named ``sessions`` (``widths``: valid channels per row).

        ``hide`` (``[B, T, Np]`` bool, optional): tokens replaced by the mask token; they are
        also the tokens ``output.mask`` marks for the reconstruction loss. ``None``: nothing
        hidden (inference). ``reconstruct=False`` skips the reconstruction branch (``pred`` None).
        For a masked-autoencoding training pass use :meth:`forward_masked`.
        """
        patches, chan_valid, patch_valid = self.tokenizer.prepare(x, sessions, widths)
        return self._encode(patches, chan_valid, patch_valid, sessions, hide, hide, reconstruct)

    def forward_masked(self, x: torch.Tensor, sessions: Sequence[str],
                       widths: torch.Tensor | None = None, generator: torch.Generator | None = None,
                       reconstruct: bool = True) -> ModelOutput:
        """A masked-autoencoding pass: sample the scored tokens with the config's ``mask_mode``
        and ``mask_ratio``; hide all of them except ``keep_ratio`` (BERT-style, so the outputs
        at visible tokens must also be good estimates, not copies of their inputs)."""
        patches, chan_valid, patch_valid = self.tokenizer.prepare(x, sessions, widths)
        B, T, npatch = patches.shape[:3]
        cfg = self.cfg
        scored = make_mask(cfg.mask_mode, cfg.mask_ratio, B, T, npatch, patch_valid, cfg.span_bins,
                           generator)
        hide = scored
        if cfg.keep_ratio > 0:
            u = torch.rand(scored.shape, generator=generator, device="cpu").to(scored.device)
            hide = scored & (u >= cfg.keep_ratio)
        return self._encode(patches, chan_valid, patch_valid, sessions, hide, scored, reconstruct)

    def _encode(self, patches: torch.Tensor, chan_valid: torch.Tensor, patch_valid: torch.Tensor,
                sessions: Sequence[str], hide: torch.Tensor | None, scored: torch.Tensor | None,
                reconstruct: bool) -> ModelOutput:
        B, T, npatch = patches.shape[:3]
        d = self.cfg.d_model
        dev = patches.device
        if hide is not None and self.cfg.embedder == "filterbank":
            # temporal filters would carry the hidden values into visible neighbouring tokens:
            # embed with the hidden channels zeroed
            tokens = self.tokenizer.tokens(patches * ~hide[..., None], chan_valid, sessions)
        else:
            tokens = self.tokenizer.tokens(patches, chan_valid, sessions)
        if hide is not None:
            sess = self.tokenizer.session_embedding(sessions, npatch, dev)[:, None]
            tokens = torch.where(hide[..., None], self.mask_token + sess, tokens)
        positions = torch.arange(T, device=dev, dtype=torch.float32)
        positions = positions[None, :, None].expand(B, T, npatch).reshape(B, T * npatch)
        key_valid = patch_valid[:, None, :].expand(B, T, npatch).reshape(B, T * npatch)
        flat = self.encoder(tokens.reshape(B, T * npatch, d), positions, key_valid)
        out = flat.view(B, T, npatch, d)
        w = patch_valid[:, None, :, None].to(out.dtype)
        latents = (out * w).sum(2) / w.sum(2).clamp_min(1)
        pred = None
        if reconstruct:
            if self.cfg.recon_from == "latent":
                sess = self.tokenizer.session_embedding(sessions, npatch, dev)
                rec = latents[:, :, None, :] + sess[:, None]
            else:
                rec = (flat if self.recon_blocks is None
                       else self.recon_blocks(flat, positions, key_valid))
                rec = rec.view(B, T, npatch, d)
            pred = self.recon_head(rec)
            pred = pred + self.tokenizer.output_bias(sessions, npatch, dev)[:, None]
        return ModelOutput(latents, out, pred, patches, chan_valid, patch_valid, scored)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sessions: Sequence[str],
               widths: torch.Tensor | None = None, readout: str | None = None) -> torch.Tensor:
        """Per-timestep latents ``[B, T, d]`` of the frozen model (``cfg.readout`` unless given).

        ``visible``: one pass with nothing hidden (always, for a causal model). ``held_out``:
        alternate blocks of ``readout_block`` bins are hidden (all patches), at ``readout_shifts``
        phase shifts and both parities; a bin's latent is the mean of its outputs over the passes
        that hid it, so it never depends on the bin's own input, only on its context.
        """
        readout = readout or self.cfg.readout
        T = x.shape[1]
        if readout == "visible" or T < 2 or self.cfg.causal:  # causal: one pass, see ModelConfig
            return self.forward(x, sessions, widths, reconstruct=False).latents
        if readout != "held_out":
            raise ValueError(f"unknown readout '{readout}'")
        npatch = n_patches(x.shape[2], self.cfg.patch_size)
        acc: torch.Tensor | None = None
        count = torch.zeros(T, device=x.device)
        for sel in held_out_patterns(T, self.cfg.readout_block, self.cfg.readout_shifts, x.device):
            hide = sel[None, :, None].expand(x.shape[0], T, npatch)
            lat = self.forward(x, sessions, widths, hide=hide, reconstruct=False).latents
            acc = torch.zeros_like(lat) if acc is None else acc
            acc[:, sel] += lat[:, sel]
            count += sel
        assert acc is not None
        return acc / count.clamp_min(1)[None, :, None].to(acc.dtype)


def held_out_patterns(T: int, block: int, shifts: int, device: torch.device | None = None
                      ) -> list[torch.Tensor]:
    """Boolean ``[T]`` hide-patterns of the held-out read-out: alternate blocks of ``block``
    bins, both parities, at ``shifts`` evenly spaced phase offsets. Every bin is hidden in
    exactly ``shifts`` patterns (and visible in the rest); patterns that hide nothing or
    everything are dropped (short windows).

    >>> [p.int().tolist() for p in held_out_patterns(6, 2, 1)]
    [[1, 1, 0, 0, 1, 1], [0, 0, 1, 1, 0, 0]]
    >>> torch.stack(held_out_patterns(50, 10, 2)).sum(0).unique().tolist()
    [2]
    """
    t = torch.arange(T, device=device)
    block = max(1, min(block, T))
    out = []
    for j in range(shifts):
        offset = round(j * block / shifts)
        phase = ((t + offset) // block) % 2
        for parity in (0, 1):
            sel = phase == parity
            if 0 < int(sel.sum()) < T:
                out.append(sel)
    if not out:  # T == 1 cannot be hidden and read: fall back to alternate bins
        out = [t % 2 == 0, t % 2 == 1]
    return out


def masked_loss(out: ModelOutput, modality: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reconstruction loss on masked, non-padding channels, plus sums for metrics.

    Spikes: Poisson NLL of counts given predicted log-rates (constant term dropped).
    LFP: mean squared error. Returns ``(loss, stats)`` where stats hold sums used to compute
    bits/spike or R² over many batches.
    """
    assert out.mask is not None and out.pred is not None, "masked_loss needs a masked forward pass"
    # [B,T,Np,P] in fp32: under bf16 autocast pred is bf16, whose sums of ones are inexact (> 256)
    sel = (out.mask[..., None] & out.chan_valid[:, None]).float()
    n = sel.sum().clamp_min(1)
    y, pred = out.patches, out.pred.float()
    if modality == "spikes":
        pred = pred.clamp(-10, 10)
        nll = torch.exp(pred) - y * pred
        loss = (nll * sel).sum() / n
        stats = {"n": n.detach(), "nll_sum": (nll * sel).sum().detach(),
                 "spikes_sum": (y * sel).sum().detach()}
    else:
        err = (pred - y) ** 2
        loss = (err * sel).sum() / n
        stats = {"n": n.detach(), "sse": (err * sel).sum().detach(),
                 "y_sum": (y * sel).sum().detach(), "y2_sum": (y * y * sel).sum().detach()}
    return loss, stats


def spike_null_nll(out: ModelOutput) -> torch.Tensor:
    """Poisson NLL sum of a per-channel constant-rate model (rate = channel mean in the window
    batch), on the same masked entries as :func:`masked_loss` — the baseline for bits/spike."""
    assert out.mask is not None
    y = out.patches
    valid = out.chan_valid[:, None].to(y.dtype)
    rate = ((y * valid).sum(1, keepdim=True) / y.shape[1]).clamp_min(1e-6)  # [B,1,Np,P]
    sel = (out.mask[..., None] & out.chan_valid[:, None]).to(y.dtype)
    nll = rate - y * torch.log(rate)
    return (nll * sel).sum()
