"""Session-specific neural tokenization.

At each time bin the channel vector of a session is cut into spatial patches of ``P`` channels
(the last patch zero-padded; padded channels are masked everywhere). A shared embedder (one per
modality) turns a patch into a ``d``-dim token and a learned per-session, per-patch embedding is
added — this is what lets one model read sessions whose channels mean different things.
Session embeddings are keyed by session name; :meth:`PatchTokenizer.extend` adds new sessions
without touching the existing rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import CheckpointMismatchError, ConfigError


def n_patches(n_channels: int, patch_size: int) -> int:
    """Number of patches needed for ``n_channels``.

    >>> n_patches(96, 16), n_patches(97, 16), n_patches(5, 16)
    (6, 7, 1)
    """
    return math.ceil(n_channels / patch_size)


#: windows up to this many bins average the filter-bank energy with one band-matrix product;
#: longer ones with average pooling, whose cost per value does not grow with the window (the
#: product's does: 2T flops). Forward and backward at the demo's sizes on this CPU: 4.9 vs
#: 17.5 ms at 100 bins, 31 vs 53 ms at 300, 106 vs 116 ms at 500 (measured)
BAND_MATRIX_MAX_BINS = 400


def band_average(T: int, width: int, device: torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[T, T]`` matrix ``A`` such that ``(e @ A)[..., t]`` is the mean of ``e`` over the bins
    within ``width // 2`` of ``t`` that exist (a centred moving average whose window shrinks at
    the edges); used for windows of up to ``BAND_MATRIX_MAX_BINS`` bins (timings there).

    >>> band_average(4, 3).tolist()[0]
    [0.5, 0.3333333432674408, 0.0, 0.0]
    """
    t = torch.arange(T, device=device)
    near = (t[:, None] - t[None, :]).abs() <= width // 2
    return near.to(dtype) / near.sum(0).to(dtype)


def _token_layout(rows: torch.Tensor, B: int, npatch: int) -> torch.Tensor:
    """``[B * Np, C, T]`` (time last, one row block per window and patch) -> ``[B, T, Np, C]``."""
    return rows.view(B, npatch, rows.shape[1], rows.shape[2]).permute(0, 3, 1, 2).contiguous()


def stored_vocab(state: torch.Tensor) -> dict[str, int]:
    """The session vocabulary (name -> channel count, in order) from a tokenizer's extra state."""
    return {str(k): int(v) for k, v in json.loads(bytes(state.tolist()).decode()).items()}


class PatchTokenizer(nn.Module):
    """Turns ``x [B, T, C_max]`` (+ session names) into tokens ``[B, T, Np_max, d]``."""

    def __init__(self, cfg: ModelConfig, sessions: dict[str, int]):
        super().__init__()
        self.cfg = cfg
        P, d = cfg.patch_size, cfg.d_model
        if cfg.embedder == "count":
            self.per_channel = max(1, math.ceil(d / P))
            self.count_emb = nn.Embedding(cfg.max_count + 1, self.per_channel)
            self.proj = nn.Linear(P * self.per_channel, d)
        elif cfg.embedder == "mlp":
            self.proj = nn.Sequential(nn.Linear(P, d), nn.GELU(), nn.Linear(d, d))
        elif cfg.embedder == "filterbank":
            k = cfg.filter_bins | 1  # odd length keeps the filters centred on their bin
            # causal: the same weights, applied to the k bins ending at each bin (left padding)
            self.filters = nn.Conv1d(1, cfg.n_filters, k, padding=0 if cfg.causal else k // 2,
                                     bias=False)
            self.proj = nn.Linear(P * (1 + 2 * cfg.n_filters), d)
        else:
            self.proj = nn.Linear(P, d)
        self.names: list[str] = []
        self.n_channels: dict[str, int] = {}
        self.session_emb = nn.ParameterList()
        # per-session, per-channel offset of the reconstruction (e.g. each unit's log mean rate),
        # so the shared decoder need not carry every channel's baseline through the encoder
        self.session_bias = nn.ParameterList()
        self.extend(sessions)

    # ------------------------------------------------------------------ vocabulary
    def vocab(self) -> dict[str, int]:
        """Session name -> channel count, in vocabulary order."""
        return {n: self.n_channels[n] for n in self.names}

    def get_extra_state(self) -> torch.Tensor:
        """The vocabulary travels in the state dict (``tokenizer._extra_state``), so a
        checkpoint's weights say which session each embedding row belongs to. It is stored as a
        tensor (UTF-8 JSON bytes) so that every state-dict entry stays a tensor."""
        return torch.tensor(list(json.dumps(self.vocab()).encode()), dtype=torch.uint8)

    def set_extra_state(self, state: torch.Tensor) -> None:
        vocab = stored_vocab(state)
        if vocab != self.vocab():
            raise CheckpointMismatchError(
                f"the weights belong to sessions {', '.join(vocab)} but the model was built for "
                f"{', '.join(self.vocab())}; build it from the checkpoint (lfpdistill's load_model)")

    def extend(self, sessions: dict[str, int], init_from: str | None = None) -> list[str]:
        """Add sessions (name -> channel count) not yet known; return the names added.

        Existing rows are never touched. A known session with a different channel count is an
        error. New rows start small and random, or as a copy of session ``init_from`` when it has
        the same number of patches.
        """
        added = []
        for name, c in sessions.items():
            c = int(c)
            if name in self.n_channels:
                if self.n_channels[name] != c:
                    raise CheckpointMismatchError(
                        f"session '{name}' has {c} {self.cfg.modality} channels but the model was "
                        f"built for {self.n_channels[name]}; use the matching data or a new session name"
                    )
                continue
            if c < 1:
                raise ConfigError(f"session '{name}' has no {self.cfg.modality} channels")
            # a session narrower than a patch is one zero-padded patch (padding is masked
            # everywhere, as in any last partial patch): arrays that lost units stay readable
            npatch = n_patches(c, self.cfg.patch_size)
            emb = torch.randn(npatch, self.cfg.d_model) * 0.02
            if init_from is not None and init_from in self.n_channels:
                src = self.session_emb[self.names.index(init_from)]
                if src.shape[0] == npatch:
                    emb = src.detach().clone()
            bias = torch.zeros(npatch * self.cfg.patch_size)
            if init_from is not None and init_from in self.n_channels:
                src_bias = self.session_bias[self.names.index(init_from)]
                if src_bias.shape == bias.shape:
                    bias = src_bias.detach().clone()
            self.session_emb.append(nn.Parameter(emb))
            self.session_bias.append(nn.Parameter(bias))
            self.names.append(name)
            self.n_channels[name] = c
            added.append(name)
        return added

    def session_parameters(self, names: Sequence[str]) -> list[nn.Parameter]:
        """The parameters that belong to sessions ``names`` (embeddings and output offsets)."""
        out = []
        for n in names:
            i = self.names.index(n)
            out += [self.session_emb[i], self.session_bias[i]]
        return out

    def output_bias(self, sessions: Sequence[str], npatch: int, device: torch.device) -> torch.Tensor:
        """``[B, Np, P]`` per-session, per-channel reconstruction offsets (zero on padding)."""
        P = self.cfg.patch_size
        out = torch.zeros(len(sessions), npatch * P, device=device)
        for i, name in enumerate(sessions):
            b = self.session_bias[self.names.index(name)]
            out[i, : b.shape[0]] = b
        return out.view(len(sessions), npatch, P)

    def check_sessions(self, sessions: Sequence[str], widths: Sequence[int]) -> None:
        for name, c in zip(sessions, widths, strict=True):
            if name not in self.n_channels:
                known = ", ".join(self.names[:8]) + (" ..." if len(self.names) > 8 else "")
                raise CheckpointMismatchError(
                    f"session '{name}' is not in the model's vocabulary (known: {known}); "
                    "adapt the model to it first (lfpdistill adapt) or read it as a known session"
                )
            if self.n_channels[name] != int(c):
                raise CheckpointMismatchError(
                    f"session '{name}' has {int(c)} {self.cfg.modality} channels but the model was "
                    f"built for {self.n_channels[name]}; use the matching data"
                )

    # ------------------------------------------------------------------ forward
    def patchify(self, x: torch.Tensor, widths: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cut ``x [B, T, C]`` into patches.

        Returns ``patches [B, T, Np, P]`` (padding zeroed), ``chan_valid [B, Np, P]`` and
        ``patch_valid [B, Np]``.
        """
        B, T, C = x.shape
        P = self.cfg.patch_size
        npatch = n_patches(C, P)
        pad = npatch * P - C
        if pad:
            x = nn.functional.pad(x, (0, pad))
        chan = torch.arange(npatch * P, device=x.device)
        chan_valid = (chan[None, :] < widths[:, None].to(x.device)).view(B, npatch, P)
        patches = x.view(B, T, npatch, P) * chan_valid[:, None].to(x.dtype)
        return patches, chan_valid, chan_valid.any(-1)

    def embed(self, patches: torch.Tensor, chan_valid: torch.Tensor) -> torch.Tensor:
        """Shared patch embedder: ``[B, T, Np, P]`` -> ``[B, T, Np, d]``."""
        cfg = self.cfg
        if cfg.embedder == "count":
            counts = patches.clamp(0, cfg.max_count).round().long()
            e = self.count_emb(counts) * chan_valid[:, None, :, :, None].to(self.count_emb.weight.dtype)
            return self.proj(e.flatten(-2))
        inp = torch.log1p(patches.clamp_min(0)) if cfg.modality == "spikes" else patches
        if cfg.embedder == "filterbank":
            B, npatch = inp.shape[0], inp.shape[2]
            # the projection as a 1x1 convolution reads the features in the layout the temporal
            # filters write them (time last); a Linear needs them time-major, a copy of the
            # largest tensor of the model (the demo student's step: 148 -> 132 ms, measured).
            # proj stays an nn.Linear (the streaming decoder calls it per bin); its forward,
            # and so any hook on it, is bypassed here
            out = nn.functional.conv1d(self.filterbank_rows(inp, chan_valid),
                                       self.proj.weight[:, :, None], self.proj.bias)
            return _token_layout(out, B, npatch)
        return self.proj(inp)

    def filterbank(self, x: torch.Tensor, chan_valid: torch.Tensor) -> torch.Tensor:
        """Per-channel features ``[B, T, Np, P * (1 + 2F)]`` of patches ``[B, T, Np, P]``: the
        value, ``F`` learned temporal filters (zero-phase-like, centred; causal: the bins up to
        each bin) and the log of their locally averaged energy (:meth:`filterbank_rows`, in
        the token layout that ``proj`` reads).

        Band power (e.g. beta suppression, firing-modulated broadband) is what classic LFP
        decoders read; this gives every token that information about its own time bin.
        """
        return _token_layout(self.filterbank_rows(x, chan_valid), x.shape[0], x.shape[2])

    def filterbank_rows(self, x: torch.Tensor, chan_valid: torch.Tensor) -> torch.Tensor:
        """:meth:`filterbank` with time last: ``[B * Np, P * (1 + 2F), T]``, row
        ``p * (1 + 2F) + g`` holding feature ``g`` (value, filters, log energies) of channel
        ``p``, the order of ``proj``'s inputs. Padded channels are zero."""
        B, T, npatch, P = x.shape
        F_ = self.cfg.n_filters
        flat = x.permute(0, 2, 3, 1).reshape(B * npatch * P, 1, T)
        k = self.filters.kernel_size[0]
        # causal: the filters see bin t and the k - 1 bins before it (zeros before the window)
        h = self.filters(nn.functional.pad(flat, (k - 1, 0)) if self.cfg.causal else flat)
        e = h.pow(2)  # [BNP, F, T]
        if self.cfg.energy_bins > 1:
            kb = self.cfg.energy_bins | 1
            if self.cfg.causal:
                # the mean of the last kb bins that exist, as a convolution with ones: exported
                # to ONNX, the demo-sized decoder ran ~1.5x faster than with a padded average
                # pooling (measured)
                ones = torch.ones(F_, 1, kb, device=e.device, dtype=e.dtype)
                total = nn.functional.conv1d(nn.functional.pad(e, (kb - 1, 0)), ones, groups=F_)
                count = torch.arange(1, T + 1, device=e.device, dtype=e.dtype).clamp_max(kb)
                e = total / count
            elif T <= BAND_MATRIX_MAX_BINS:
                e = e @ band_average(T, kb, e.device, e.dtype)
            else:  # the band matrix costs T multiply-adds per value: pool long windows
                e = nn.functional.avg_pool1d(e, kb, stride=1, padding=kb // 2,
                                             count_include_pad=False)
        # the value and the filter outputs of a padded (zeroed) channel are zero already
        loge = torch.log(e + 1e-3) * chan_valid.reshape(-1, 1, 1).to(e.dtype)
        return torch.cat([flat, h, loge], dim=1).view(B * npatch, P * (1 + 2 * F_), T)

    def session_embedding(self, sessions: Sequence[str], npatch: int, device: torch.device
                          ) -> torch.Tensor:
        """``[B, Np, d]`` per-sample session patch embeddings (zero on padded patches)."""
        out = torch.zeros(len(sessions), npatch, self.cfg.d_model, device=device)
        for i, name in enumerate(sessions):
            emb = self.session_emb[self.names.index(name)]
            out[i, : emb.shape[0]] = emb
        return out

    def forward(self, x: torch.Tensor, sessions: Sequence[str], widths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``tokens [B,T,Np,d]``, ``patches``, ``chan_valid``, ``patch_valid``."""
        patches, chan_valid, patch_valid = self.prepare(x, sessions, widths)
        return self.tokens(patches, chan_valid, sessions), patches, chan_valid, patch_valid

    def prepare(self, x: torch.Tensor, sessions: Sequence[str], widths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check the sessions and cut ``x`` into ``patches``, ``chan_valid``, ``patch_valid``."""
        if widths is None:
            widths = torch.full((x.shape[0],), x.shape[2], dtype=torch.long)
        self.check_sessions(sessions, widths.tolist())
        return self.patchify(x, widths)

    def tokens(self, patches: torch.Tensor, chan_valid: torch.Tensor, sessions: Sequence[str]
               ) -> torch.Tensor:
        """Embedded patches plus their session's patch embeddings, ``[B,T,Np,d]``."""
        tokens = self.embed(patches, chan_valid)
        return tokens + self.session_embedding(sessions, patches.shape[2], patches.device)[:, None]
