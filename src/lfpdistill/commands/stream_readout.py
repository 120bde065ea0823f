"""The parts of a streamed read-out after the causal model, as fixed-state torch modules that
export to ONNX with the rest of :class:`~.realtime.CausalDecoder`:

- :class:`BandPowerStepper`: the classic LMP + log band-power features
  (:func:`~lfpdistill.evaluation.features.band_power_features`) one bin at a time: the same
  second-order sections (direct form II transposed, as ``scipy.signal.sosfilt``, in double
  precision), and the same causal moving average of the band powers;
- :class:`LagRing`: the past bins a lagged (Wiener) read-out reads, as a ring of the last
  ``(n_lags - 1) * lag_step`` feature rows (zeros before the first bin, as the offline lags).

State tensors (every shape fixed by the session and the read-out):

==========  ==========================  =========  =============================================
name        shape                       dtype      holds
==========  ==========================  =========  =============================================
``bp_z``    ``[depth, 2, chains, C]``   float64    the filters' delay lines (chain 0 the LMP,
                                                   then one chain per band; ``depth`` the most
                                                   sections of a chain)
``bp_hist`` ``[win - 1, bands * C]``    float64    the last ``win - 1`` squared band outputs
``bp_n``    ``[1]``                     float32    bins seen, up to ``win`` (the average's count)
``ring``    ``[(n_lags-1)*lag_step, F]`` float32   the read-out's features of the past bins
==========  ==========================  =========  =============================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..evaluation.features import DEFAULT_BANDS, band_power_filters

#: state names of the band-power stepper, in argument order
BANDPOWER_STATE = ("bp_z", "bp_hist", "bp_n")
#: state name of the read-out's lag ring
RING_STATE = ("ring",)


class BandPowerStepper(nn.Module):
    """``forward(x [C], bp_z, bp_hist, bp_n) -> (features [C * (1 + bands)], *new_state)``: the
    LMP and log band power of one bin, equal to the row of
    :func:`~lfpdistill.evaluation.features.band_power_features` over the recording so far."""

    def __init__(self, channels: int, fs: float,
                 bands: Sequence[tuple[float, float]] = DEFAULT_BANDS) -> None:
        super().__init__()
        lmp, band_sos, win = band_power_filters(fs, bands)
        chains = [lmp, *band_sos]
        # every chain padded to the same depth with identity sections (b0 = 1, all else 0: with
        # a zero state they pass their input through), so each depth is one vectorised step
        depth = max(int(c.shape[0]) for c in chains)
        sos = np.zeros((depth, 6, len(chains)))
        sos[:, 0, :] = 1.0
        for j, c in enumerate(chains):
            sos[: c.shape[0], :, j] = c
        self.register_buffer("sos", torch.as_tensor(sos[..., None], dtype=torch.float64))
        self.channels, self.n_bands, self.win = int(channels), len(band_sos), int(win)
        self.depth, self.n_chains = depth, len(chains)

    def initial_state(self) -> tuple[torch.Tensor, ...]:
        C = self.channels
        return (torch.zeros(self.depth, 2, self.n_chains, C, dtype=torch.float64),
                torch.zeros(max(self.win - 1, 0), self.n_bands * C, dtype=torch.float64),
                torch.zeros(1))

    def forward(self, x: torch.Tensor, bp_z: torch.Tensor, bp_hist: torch.Tensor,
                bp_n: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = x.to(torch.float64)[None].expand(self.n_chains, -1)      # [chains, C]
        new_z = []
        for d in range(self.depth):  # direct form II transposed, every chain at once
            b0, b1, b2, _a0, a1, a2 = self.sos[d]                    # each [chains, 1]
            out = b0 * y + bp_z[d, 0]
            new_z.append(torch.stack([b1 * y - a1 * out + bp_z[d, 1], b2 * y - a2 * out]))
            y = out
        power = (y[1:] * y[1:]).reshape(-1)                          # [bands * C]
        count = torch.clamp(bp_n + 1, max=float(self.win)).to(torch.float64)
        if self.win > 1:
            avg = (bp_hist.sum(0) + power) / count
            hist = torch.cat([bp_hist[1:], power[None]], dim=0)
        else:
            avg, hist = power, bp_hist
        logp = torch.log(torch.clamp(avg, min=1e-30))
        feats = torch.cat([y[0], logp]).to(torch.float32)
        return (feats, torch.stack(new_z), hist, torch.clamp(bp_n + 1, max=float(self.win)))


class LagRing(nn.Module):
    """``forward(f [F], ring) -> (lagged [n_lags * F], new ring)``: ``f`` and the rows
    ``lag_step, 2 lag_step, ...`` bins before it, in the order of
    :func:`~lfpdistill.evaluation.features.lagged`."""

    def __init__(self, n_features: int, n_lags: int, lag_step: int) -> None:
        super().__init__()
        self.n_features, self.n_lags, self.lag_step = int(n_features), int(n_lags), int(lag_step)
        self.history = (self.n_lags - 1) * self.lag_step
        self.register_buffer("rows", torch.arange(1, self.n_lags) * self.lag_step - 1,
                             persistent=False)

    def initial_state(self) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(self.history, self.n_features),)

    def forward(self, f: torch.Tensor, ring: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past = ring.index_select(0, self.rows).reshape(-1)
        return torch.cat([f, past]), torch.cat([f[None], ring[:-1]], dim=0)
