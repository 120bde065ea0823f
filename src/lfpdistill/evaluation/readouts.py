"""Deployable read-outs: lagged linear maps from per-bin features to velocity, in a form a
stream can run bin by bin.

A :class:`LaggedReadout` is ``velocity[t] = b + sum_j W_j f[t - j * lag_step]`` for
``j = 0 .. n_lags - 1`` (zeros before the recording's first bin), on raw features ``f``: the
fitted decoder's standardisation is folded into ``W`` and ``b``. Three kinds are fit here:

- ``linear_probe``: one lag, ordinary least squares on the latents (the paper's probe);
- ``wiener``: :class:`~.decoders.WienerDecoder` on the latents (ridge on the classic lags,
  penalty by contiguous cross-validation on the training bins);
- ``combined``: one ridge on the latents **and** the classic LMP + band-power features
  (:func:`~.features.band_power_features`, causal), lagged alike, with a penalty per block
  (:class:`BlockWienerDecoder`) chosen on the **validation** bins — test bins never choose.

:func:`deployable_choice` picks, per session, the decoder with the best validation R² among
candidates (model read-outs and classic decoders alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import linalg

from ..errors import ConfigError, DataValidationError
from .decoders import DEFAULT_ALPHAS, WienerDecoder, _centre, _gram
from .features import band_power_features, check_mask, lagged, mask_groups
from .metrics import r2_mean, r2_xy

#: feature sets a lagged read-out reads: the model's latents, or the latents followed by the
#: classic LMP + band-power features of the same bins
FEATURES = ("latents", "latents+bandpower")
#: read-out kinds and the features each reads
KINDS = {"linear_probe": "latents", "finetune_head": "latents", "wiener": "latents",
         "combined": "latents+bandpower"}
#: ratios of the latent block's penalty to the band-power block's that the combined read-out
#: tries at the best common penalty (1 is always tried first)
BLOCK_RATIOS: tuple[float, ...] = (1 / 256, 1 / 64, 1 / 16, 1 / 4, 4.0, 16.0, 64.0, 256.0)


@dataclass
class LaggedReadout:
    """``velocity[t] = bias + weight @ [f[t], f[t - s], ..., f[t - (n_lags-1) s]]`` with
    ``s = lag_step`` and ``f`` the ``features`` of each bin (``weight`` ``[2, n_lags * F]``, lag
    blocks in that order; zeros before the first bin)."""

    kind: str
    weight: np.ndarray
    bias: np.ndarray
    n_lags: int = 1
    lag_step: int = 1
    features: str = "latents"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def history(self) -> int:
        """Bins of features before ``t`` the read-out reads (the stream's ring buffer)."""
        return (self.n_lags - 1) * self.lag_step

    def predict(self, f: np.ndarray) -> np.ndarray:
        """Velocity ``[T, 2]`` of every bin of one continuous recording's features ``[T, F]``."""
        X = lagged(np.asarray(f, np.float32), self.n_lags, self.lag_step) if self.n_lags > 1 \
            else np.asarray(f, np.float32)
        return (X @ self.weight.T + self.bias).astype(np.float32)


def _folded(dec: WienerDecoder) -> tuple[np.ndarray, np.ndarray]:
    """A fitted Wiener decoder's coefficients on raw (unstandardised) lagged features."""
    coef = np.asarray(dec.coef_, np.float64) / np.asarray(dec._sd, np.float64)[:, None]
    bias = np.asarray(dec._ymu, np.float64) - np.asarray(dec._mu, np.float64) @ coef
    return coef.T.astype(np.float32), bias.astype(np.float32)


class BlockWienerDecoder(WienerDecoder):
    """Wiener filter (ridge on causal lags) whose features come in two blocks — the first
    ``n_first`` columns of ``X`` and the rest — each with its own penalty, chosen on
    **validation** rows passed to :meth:`fit` (never by the rows scored later).

    The search, coordinate-wise: a common penalty ``a`` over ``alphas``; then the first block's
    penalty over ``a`` times ``ratios`` (and 1) with the second's at ``a``; then the second
    block's over the same values with the first's at its best. Each search is bracketed on its
    log grid (the validation score assumed unimodal, as the Wiener filter's large-design
    search). The pair with the best validation R² is kept; the model is the fit on the training
    rows with it. Fitted attributes as :class:`WienerDecoder`, plus ``alphas_``
    (first block, second block) and ``val_scores_`` (validation R² of every pair tried).
    """

    def __init__(self, n_first: int = 0, n_lags: int = 10, lag_step: int = 2,
                 alphas: Sequence[float] = DEFAULT_ALPHAS,
                 ratios: Sequence[float] = BLOCK_RATIOS) -> None:
        super().__init__(n_lags=n_lags, lag_step=lag_step, alphas=alphas)
        self.n_first = n_first
        self.ratios = ratios

    def fit(self, X: Any, y: Any, mask: np.ndarray | None = None, *, groups: Any = None,
            val: tuple[Any, Any, Any] | None = None) -> BlockWienerDecoder:  # type: ignore[override]
        """Fit on ``X``/``y`` rows (runs from ``groups``, or ``mask`` of a recording), choosing
        the penalties on ``val = (X_val, y_val, groups_val)``."""
        n_lags, _, alphas, _ = self._checked_params()
        if val is None:
            raise ConfigError("BlockWienerDecoder.fit needs validation rows (val=...) to choose "
                              "its penalties on")
        X, Y, runs = self._fit_inputs(X, y, mask, groups)
        F = X.shape[1]
        if not 0 < int(self.n_first) < F:
            raise ConfigError(f"BlockWienerDecoder: n_first={self.n_first} must split the {F} "
                              "features into two non-empty blocks")
        Xv, Yv, vruns = self._fit_inputs(val[0], val[1], None, val[2])
        self.n_features_in_ = F
        n = X.shape[0]
        if n < 2 or Xv.shape[0] < 2:
            raise DataValidationError(f"BlockWienerDecoder.fit: {n} training and {Xv.shape[0]} "
                                      "validation rows; expected at least 2 of each")
        if 0.0 in alphas:
            raise ConfigError("BlockWienerDecoder: alphas must be positive")
        ratios = tuple(float(r) for r in self.ratios)
        if not all(np.isfinite(r) and r > 0 for r in ratios):
            raise ConfigError(f"BlockWienerDecoder: ratios={self.ratios!r} must be positive")
        D = self._design(X, runs).astype(np.float32, copy=False)
        mu, sd = _centre(D)
        sd[sd < 1e-12] = 1.0
        D /= sd.astype(D.dtype)
        ymu = Y.mean(axis=0)
        Yc = Y - ymu
        G = _gram(D, full=False)                      # upper triangle [p, p] float32
        b = (D.T.astype(np.float64) @ Yc).astype(np.float32)
        del D
        Dv = ((self._design(Xv, vruns) - mu) / sd).astype(np.float32)
        first = np.zeros(G.shape[0], dtype=bool)
        for j in range(n_lags):                       # lag blocks of F columns each
            first[j * F: j * F + int(self.n_first)] = True
        diag = np.diag_indices_from(G)
        base = G[diag].copy()
        scores: dict[tuple[float, float], float] = {}
        coefs: dict[tuple[float, float], np.ndarray] = {}

        def score(a1: float, a2: float) -> float:
            key = (a1, a2)
            if key not in scores:
                A = G.copy(order="F")
                A[diag] = base + np.where(first, a1, a2).astype(np.float32) * n
                try:
                    w = linalg.cho_solve(linalg.cho_factor(A, lower=False, overwrite_a=True,
                                                           check_finite=False),
                                         b, check_finite=False)
                except linalg.LinAlgError:
                    A = G.astype(np.float64)
                    A[diag] = base + np.where(first, a1, a2) * n
                    w = linalg.solve(A, b.astype(np.float64), assume_a="sym", check_finite=False)
                coefs[key] = np.asarray(w, np.float64)
                scores[key] = r2_mean(Yv, (Dv @ w.astype(np.float32)).astype(np.float64) + ymu)
            return scores[key]

        grid = np.sort(np.asarray(alphas, dtype=np.float64))
        best_a = _bracket(grid, lambda a: score(a, a))
        ratios_sorted = np.sort(np.asarray((1.0, *ratios)))
        a1 = _bracket(best_a * ratios_sorted, lambda a: score(a, best_a))
        _bracket(best_a * ratios_sorted, lambda a: score(a1, a))
        key = max(scores, key=lambda k: scores[k])
        self.alphas_ = key
        self.alpha_ = key[1]
        self.val_scores_ = {f"{k[0]:.3g}|{k[1]:.3g}": v for k, v in scores.items()}
        self.cv_scores_ = np.full(1, np.nan)
        self.coef_ = coefs[key]
        self._mu, self._sd, self._ymu = mu, sd, ymu
        return self


def _bracket(grid: np.ndarray, score: Any) -> float:
    """The point of an increasing ``grid`` with the best ``score``, by a ternary search that
    assumes the score unimodal along the grid (about ``2 log2(len(grid))`` evaluations)."""
    lo, hi = 0, len(grid) - 1
    while hi - lo > 2:
        m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        if score(float(grid[m1])) < score(float(grid[m2])):
            lo = m1
        else:
            hi = m2
    return max((float(a) for a in grid[lo:hi + 1]), key=score)


# ------------------------------------------------------------------------------- fitting
def readout_features(latents: np.ndarray, lfp: np.ndarray | None, features: str,
                     fs: float) -> np.ndarray:
    """The per-bin features ``[T, F]`` a read-out of ``features`` reads: the latents, or the
    latents followed by the LMP + band-power features of ``lfp`` (sampled at ``fs`` Hz)."""
    z = np.asarray(latents, np.float32)
    if features == "latents":
        return z
    if features != "latents+bandpower":
        raise ConfigError(f"unknown read-out features '{features}'; expected one of "
                          f"{', '.join(FEATURES)}")
    if lfp is None or len(lfp) != len(z):
        raise DataValidationError("the combined read-out needs the session's LFP, one row per "
                                  "latent bin")
    return np.concatenate([z, band_power_features(lfp, fs=fs)], axis=1)


def fit_readout(kind: str, latents: np.ndarray, velocity: np.ndarray, train: np.ndarray,
                val: np.ndarray | None = None, lfp: np.ndarray | None = None, fs: float = 100.0,
                n_lags: int = 10, lag_step: int = 2) -> LaggedReadout:
    """Fit a read-out of ``kind`` (``linear_probe``, ``wiener``, ``combined``) on the bins of
    ``train`` of one recording (lags inside each run of the mask); ``combined`` chooses its
    penalties on the bins of ``val``."""
    T = latents.shape[0]
    if velocity.shape[0] != T:
        raise DataValidationError(f"latents have {T} bins but velocity has {velocity.shape[0]}")
    train = check_mask(train, T, "train")
    if not train.any():
        raise DataValidationError("no training bins to fit a read-out on")
    if kind not in ("linear_probe", "wiener", "combined"):
        raise ConfigError(f"unknown read-out '{kind}'; expected linear_probe, wiener or combined")
    f = _finite_features(latents, lfp, KINDS[kind], fs)
    if kind == "linear_probe":
        dec = WienerDecoder(n_lags=1, lag_step=1, alphas=(0.0,))
        dec.fit(f[train], velocity[train], groups=mask_groups(train))
        w, b = _folded(dec)
        return LaggedReadout(kind, w, b, 1, 1, "latents")
    if kind == "wiener":
        dec = WienerDecoder(n_lags=n_lags, lag_step=lag_step)
        dec.fit(f[train], velocity[train], groups=mask_groups(train))
        w, b = _folded(dec)
        return LaggedReadout(kind, w, b, n_lags, lag_step, "latents",
                             {"alpha": float(dec.alpha_)})
    bdec, _ = _fit_combined(f, latents.shape[1], velocity, train, val, n_lags, lag_step)
    w, b = _folded(bdec)
    return LaggedReadout(kind, w, b, n_lags, lag_step, "latents+bandpower",
                         {"alpha_latents": float(bdec.alphas_[0]),
                          "alpha_bandpower": float(bdec.alphas_[1])})


def _finite_features(latents: np.ndarray, lfp: np.ndarray | None, features: str,
                     fs: float) -> np.ndarray:
    """:func:`readout_features`, refused in one line where not finite."""
    f = readout_features(latents, lfp, features, fs)
    if not np.isfinite(f).all():
        raise DataValidationError("read-out features contain NaN/inf (latents of a diverged "
                                  "model, or LFP that is not finite); retrain or repair the data")
    return f


def _fit_combined(f: np.ndarray, n_latents: int, velocity: np.ndarray, train: np.ndarray,
                  val: np.ndarray | None, n_lags: int, lag_step: int
                  ) -> tuple[BlockWienerDecoder, np.ndarray]:
    """The combined read-out's block-penalised Wiener filter on features ``f`` (the first
    ``n_latents`` columns the latents), fit on ``train``, penalties chosen on ``val``; returns
    it and the checked validation mask."""
    T = f.shape[0]
    val = check_mask(val, T, "val") if val is not None else None
    if val is None or not val.any():
        raise DataValidationError("the combined read-out chooses its penalties on validation "
                                  "bins, and this session has none")
    if (train & val).any():
        raise DataValidationError("train and validation bins overlap")
    dec = BlockWienerDecoder(n_first=n_latents, n_lags=n_lags, lag_step=lag_step)
    dec.fit(f[train], velocity[train], groups=mask_groups(train),
            val=(f[val], velocity[val], mask_groups(val)))
    return dec, val


def combined_probe(latents: np.ndarray, lfp: np.ndarray, velocity: np.ndarray,
                   train: np.ndarray, val: np.ndarray, test: np.ndarray, fs: float,
                   n_lags: int = 10, lag_step: int = 2) -> dict[str, Any]:
    """The combined read-out (latents + LMP + band power, one block-penalised Wiener filter,
    penalties chosen on ``val``) fit on ``train`` and scored on ``test`` and ``val``, lags
    inside each run of a split as the other probes: R² dict plus ``r2_val``, the penalties and
    ``pred`` (NaN outside test)."""
    T = latents.shape[0]
    train, test = check_mask(train, T, "train"), check_mask(test, T, "test")
    if (train & test).any() or (check_mask(val, T, "val") & test).any():
        raise DataValidationError("test bins overlap the training or validation bins")
    f = _finite_features(latents, lfp, "latents+bandpower", fs)
    dec, val = _fit_combined(f, latents.shape[1], velocity, train, val, n_lags, lag_step)
    pv = dec.predict(f[val], groups=mask_groups(val))
    pt = dec.predict(f[test], groups=mask_groups(test))
    pred = np.full(velocity.shape, np.nan, dtype=np.float32)
    pred[test] = pt
    return {**r2_xy(velocity[test], pt), "r2_val": r2_xy(velocity[val], pv)["r2"],
            "alpha_latents": float(dec.alphas_[0]), "alpha_bandpower": float(dec.alphas_[1]),
            "pred": pred}


# ----------------------------------------------------------------------- the choice
def deployable_choice(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Of candidate rows for one session (each with ``r2_val`` and ``r2``), the one with the
    best validation R² (ties: the first); None when no candidate has a validation score."""
    scored = [r for r in rows if r.get("r2_val") is not None and np.isfinite(r["r2_val"])]
    if not scored:
        return None
    return max(scored, key=lambda r: r["r2_val"])
