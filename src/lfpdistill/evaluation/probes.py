"""Read-outs of frozen latents: the paper's per-timestep linear probe and the classic Wiener
filter fit on latents (the decoder-matched comparison with hand-made features). Both are the
same estimator, :class:`~lfpdistill.evaluation.decoders.WienerDecoder`: the linear probe is its
zero-lag, unpenalised member (:func:`linear_probe_decoder`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DataValidationError
from ..session import Session
from .decoders import WienerDecoder, side_by_side, wiener_memory
from .features import check_mask, mask_groups
from .latents import lag_latents
from .metrics import r2_xy


def linear_probe_decoder() -> WienerDecoder:
    """The per-timestep linear probe as a decoder: ordinary least squares with an intercept on
    the same bin's latents (one lag, no penalty)."""
    return WienerDecoder(n_lags=1, lag_step=1, alphas=(0.0,))


def linear_probe(latents: np.ndarray, velocity: np.ndarray, train_mask: np.ndarray,
                 test_mask: np.ndarray, lag_bins: int = 0) -> dict[str, Any]:
    """Fit linear regression latents -> velocity on train bins, score R² on test bins.

    ``lag_bins`` > 0 reads velocity at ``t`` from the latent at ``t - lag_bins`` (motor cortex
    leads movement by ~100 ms); 0 is the paper's protocol (same bin).
    """
    if latents.shape[0] != velocity.shape[0]:
        raise DataValidationError(
            f"latents have {latents.shape[0]} bins but velocity has {velocity.shape[0]}")
    if not np.isfinite(latents).all():
        raise DataValidationError("latents contain NaN/inf; the model diverged — retrain it")
    train_mask = check_mask(train_mask, latents.shape[0], "train_mask")
    test_mask = check_mask(test_mask, latents.shape[0], "test_mask")
    latents = lag_latents(latents, lag_bins)
    reg = linear_probe_decoder().fit(latents[train_mask], velocity[train_mask])
    pred = reg.predict(latents)  # one lag: no row reads another, so every bin is predicted
    return {**r2_xy(velocity[test_mask], pred[test_mask]), "pred": pred.astype(np.float32)}


def wiener_probe(latents: np.ndarray, velocity: np.ndarray, train_mask: np.ndarray,
                 test_mask: np.ndarray, n_lags: int = 10, lag_step: int = 2,
                 val_mask: np.ndarray | None = None) -> dict[str, Any]:
    """The classic Wiener filter (:class:`~lfpdistill.evaluation.decoders.WienerDecoder`: ridge on
    ``n_lags`` causal lags ``lag_step`` bins apart, penalty by contiguous CV on train bins) fit on
    frozen latents instead of hand-made features.

    The decoder-matched comparison with the classic decoders: same lags, same penalty search,
    same splits; only the features differ. Lags stay inside each run of a split. ``pred`` is
    NaN outside the test bins. With ``val_mask``, the same fit is also scored on those bins
    (``r2_val``).
    """
    if latents.shape[0] != velocity.shape[0]:
        raise DataValidationError(
            f"latents have {latents.shape[0]} bins but velocity has {velocity.shape[0]}")
    if not np.isfinite(latents).all():
        raise DataValidationError("latents contain NaN/inf; the model diverged — retrain it")
    train_mask = check_mask(train_mask, latents.shape[0], "train_mask")
    test_mask = check_mask(test_mask, latents.shape[0], "test_mask")
    if (train_mask & test_mask).any():
        raise DataValidationError("train and test bins overlap; the Wiener probe needs disjoint splits")
    dec = WienerDecoder(n_lags=n_lags, lag_step=lag_step).fit(
        latents[train_mask], velocity[train_mask], groups=mask_groups(train_mask))
    # scored in float64, as the classic decoders
    test_pred = dec.predict(latents[test_mask], groups=mask_groups(test_mask))
    pred = np.full(velocity.shape, np.nan, dtype=np.float32)
    pred[test_mask] = test_pred
    out: dict[str, Any] = {**r2_xy(velocity[test_mask], test_pred), "pred": pred}
    if val_mask is not None:
        val_mask = check_mask(val_mask, latents.shape[0], "val_mask")
        if val_mask.any():
            vp = dec.predict(latents[val_mask], groups=mask_groups(val_mask))
            out["r2_val"] = r2_xy(velocity[val_mask], vp)["r2"]
    return out


def wiener_fits(jobs: Sequence[tuple[np.ndarray, Session]], n_lags: int = 10, lag_step: int = 2,
                workers: int | None = None, split: str = "test") -> list[dict[str, float]]:
    """:func:`wiener_probe` of many ``(latents, session)`` pairs; returns their R² dicts in order,
    the fits :func:`~lfpdistill.evaluation.decoders.side_by_side` (``workers`` at a time)."""
    def one(job: tuple[np.ndarray, Session]) -> dict[str, float]:
        z, s = job
        val = s.split_mask("val") if split == "test" else None
        res = wiener_probe(z, s.velocity, s.split_mask("train"), s.split_mask(split), n_lags,
                           lag_step, val_mask=val)
        return {k: v for k, v in res.items() if k != "pred"}

    # each fit refuses alone what cannot fit; side by side they must fit together
    need = max((wiener_memory(len(z), int(np.prod(np.shape(z)[1:])), n_lags) for z, _ in jobs),
               default=0)
    return side_by_side(one, jobs, need, workers)


def check_probe_options(decoder: str, lag_s: float = 0.0) -> None:
    """Refuse an unknown probe decoder, or a lag given to the Wiener probe."""
    if decoder not in ("linear", "wiener"):
        raise ConfigError(f"unknown probe decoder '{decoder}'; expected 'linear' or 'wiener'")
    if decoder == "wiener" and lag_s:
        raise ConfigError("a lag applies to the linear probe only; the Wiener probe already "
                          "reads n_lags earlier bins")


def probe_sessions(latents: dict[str, np.ndarray], sessions: Sequence[Session],
                   split: str = "test", lag_s: float = 0.0, decoder: str = "linear",
                   n_lags: int = 10, lag_step: int = 2) -> list[dict[str, Any]]:
    """Probe per session; rows with session, split, decoder, lag_s, r2, r2_x, r2_y.

    ``decoder``: ``linear`` (the paper's per-timestep linear probe, optionally read ``lag_s``
    earlier) or ``wiener`` (:func:`wiener_probe` with ``n_lags`` x ``lag_step`` bins).
    """
    check_probe_options(decoder, lag_s)
    for s in sessions:
        if np.ndim(latents[s.name]) != 2:
            raise DataValidationError(
                f"latents of '{s.name}' have shape {list(np.shape(latents[s.name]))}; expected "
                "[bins, features] as lfpdistill embed writes them — embed the session again")
    if decoder == "wiener":
        fits = wiener_fits([(latents[s.name], s) for s in sessions], n_lags, lag_step, split=split)
        return [{"session": s.name, "split": split, "decoder": decoder, "lag_s": 0.0, **res}
                for s, res in zip(sessions, fits, strict=True)]
    rows = []
    for s in sessions:
        lag = int(round(lag_s / s.bin_size))
        res = linear_probe(latents[s.name], s.velocity, s.split_mask("train"),
                           s.split_mask(split), lag_bins=lag)
        rows.append({"session": s.name, "split": split, "decoder": decoder,
                     "lag_s": lag * s.bin_size, **{k: v for k, v in res.items() if k != "pred"}})
    return rows
