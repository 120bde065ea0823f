"""The classic baselines of every study, on one session's own splits: spike Wiener filter,
raw-LFP and LMP+band-power Wiener filters, band-power Kalman filter."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..session import Session
from .decoders import KalmanDecoder, WienerDecoder, fit_predict
from .features import band_power_features, mask_groups
from .metrics import r2_xy

#: the classic decoders, by name: spike Wiener, then the LFP ones
CLASSIC = ("wiener_spikes", "wiener_lfp", "wiener_bandpower", "kalman_bandpower")
#: the classic decoders that read LFP only (the baselines an LFP model is compared with)
CLASSIC_LFP = CLASSIC[1:]


def classic_features(s: Session) -> list[tuple[str, str, np.ndarray]]:
    """``(decoder name, kind, features [T, F])`` of every classic decoder the session's
    modalities allow (band power computed once for the Wiener and the Kalman filter)."""
    feats: list[tuple[str, str, np.ndarray]] = []
    if s.spikes is not None:
        feats.append(("wiener_spikes", "wiener", np.sqrt(s.spikes.astype(np.float32))))
    if s.lfp is not None:
        bp = band_power_features(s.lfp, fs=1.0 / s.bin_size)
        feats += [("wiener_lfp", "wiener", s.lfp), ("wiener_bandpower", "wiener", bp),
                  ("kalman_bandpower", "kalman", bp)]
    return feats


def classic_fit(kind: str, X: np.ndarray, s: Session, train: np.ndarray, test: np.ndarray,
                n_lags: int = 10, lag_step: int = 2) -> np.ndarray:
    """One classic decoder fit on the bins of ``train`` and its predictions of ``test``."""
    kwargs = {"n_lags": n_lags, "lag_step": lag_step} if kind == "wiener" else {}
    pred, _ = fit_predict(kind, X, s.velocity, train, test, **kwargs)  # type: ignore[arg-type]
    return pred


def classic_decoders(s: Session, n_lags: int = 10, lag_step: int = 2
                     ) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Spike Wiener, raw-LFP Wiener, LMP+band-power Wiener and Kalman on one session's splits.

    Returns ``(row, full-length prediction with NaN outside test)`` pairs; each row also holds
    ``r2_val``, the same fit scored on the validation bins (what a choice between decoders may
    read; none without validation bins).
    """
    train, test, val = s.split_mask("train"), s.split_mask("test"), s.split_mask("val")
    out = []
    for model, kind, X in classic_features(s):
        dec = (WienerDecoder(n_lags=n_lags, lag_step=lag_step) if kind == "wiener"
               else KalmanDecoder())
        dec.fit(X[train], s.velocity[train], groups=mask_groups(train))
        pred_test = dec.predict(X[test], groups=mask_groups(test))
        full = np.full(s.velocity.shape, np.nan, dtype=np.float32)
        full[test] = pred_test
        row: dict[str, Any] = {"model": model, **r2_xy(s.velocity[test], pred_test)}
        if val.any():
            row["r2_val"] = r2_xy(s.velocity[val],
                                  dec.predict(X[val], groups=mask_groups(val)))["r2"]
        out.append((row, full))
    return out
