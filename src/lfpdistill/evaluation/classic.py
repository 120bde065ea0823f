"""The classic baselines of every study, on one session's own splits: spike Wiener filter,
raw-LFP and LMP+band-power Wiener filters, band-power Kalman filter."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..session import Session
from .decoders import fit_predict
from .features import band_power_features
from .metrics import r2_xy


def classic_decoders(s: Session, n_lags: int = 10, lag_step: int = 2
                     ) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Spike Wiener, raw-LFP Wiener, LMP+band-power Wiener and Kalman on one session's splits.

    Returns ``(row, full-length prediction with NaN outside test)`` pairs.
    """
    train, test = s.split_mask("train"), s.split_mask("test")
    out = []
    feats: list[tuple[str, str, np.ndarray]] = []
    if s.spikes is not None:
        feats.append(("wiener_spikes", "wiener", np.sqrt(s.spikes.astype(np.float32))))
    if s.lfp is not None:
        bp = band_power_features(s.lfp, fs=1.0 / s.bin_size)
        feats += [("wiener_lfp", "wiener", s.lfp), ("wiener_bandpower", "wiener", bp),
                  ("kalman_bandpower", "kalman", bp)]
    for model, kind, X in feats:
        kwargs = {"n_lags": n_lags, "lag_step": lag_step} if kind == "wiener" else {}
        pred_test, _ = fit_predict(kind, X, s.velocity, train, test, **kwargs)
        full = np.full(s.velocity.shape, np.nan, dtype=np.float32)
        full[test] = pred_test
        out.append(({"model": model, **r2_xy(s.velocity[test], pred_test)}, full))
    return out
