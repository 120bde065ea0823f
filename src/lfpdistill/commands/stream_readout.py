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
``bp_z``    ``[sections, 2, C]``        float64    the filters' delay lines (LMP, then bands)
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
        self.chain_sections = [int(c.shape[0]) for c in chains]
        sos = np.concatenate(chains, axis=0)                     # [S, 6]: b0 b1 b2 a0 a1 a2
        self.register_buffer("sos", torch.as_tensor(sos, dtype=torch.float64))
        self.channels, self.n_bands, self.win = int(channels), len(band_sos), int(win)

    def initial_state(self) -> tuple[torch.Tensor, ...]:
        S, C = int(self.sos.shape[0]), self.channels
        return (torch.zeros(S, 2, C, dtype=torch.float64),
                torch.zeros(max(self.win - 1, 0), self.n_bands * C, dtype=torch.float64),
                torch.zeros(1))

    def forward(self, x: torch.Tensor, bp_z: torch.Tensor, bp_hist: torch.Tensor,
                bp_n: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x64 = x.to(torch.float64)
        outs, new_z, i = [], [], 0
        for n_sec in self.chain_sections:
            y = x64
            for _ in range(n_sec):
                b0, b1, b2, _a0, a1, a2 = self.sos[i]
                z0, z1 = bp_z[i, 0], bp_z[i, 1]
                out = b0 * y + z0
                new_z.append(torch.stack([b1 * y - a1 * out + z1, b2 * y - a2 * out]))
                y = out
                i += 1
            outs.append(y)
        power = torch.cat([o * o for o in outs[1:]])               # [bands * C]
        count = torch.clamp(bp_n + 1, max=float(self.win)).to(torch.float64)
        if self.win > 1:
            avg = (bp_hist.sum(0) + power) / count
            hist = torch.cat([bp_hist[1:], power[None]], dim=0)
        else:
            avg, hist = power, bp_hist
        logp = torch.log(torch.clamp(avg, min=1e-30))
        feats = torch.cat([outs[0], logp]).to(torch.float32)
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
