"""The classic velocity decoders a neuroscientist reaches for first (numpy in, numpy out).

- :class:`WienerDecoder` -- ridge regression on causally lagged features (a Wiener filter),
  the penalty chosen by contiguous cross-validation on the training bins only;
- :class:`KalmanDecoder` -- linear-Gaussian Kalman filter with velocity as the state;
- :func:`fit_predict` -- fit on one mask, predict another, report R².

Decoders treat every run of a mask as its own recording (:mod:`.features`): lags are zero-padded
and the Kalman filter restarts at the start of each run, so no prediction uses features from
outside its run and nothing outside the training mask (features or targets) enters the fit.
(Features themselves, e.g. causal band power, are computed by the caller on the whole recording;
they only ever look backwards in time.) The same :class:`WienerDecoder` reads frozen latents in
:mod:`.probes`: the decoder-matched comparison with hand-made features.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import linalg

from ..errors import ConfigError, DataValidationError
from .features import check_mask, lagged_runs, mask_runs
from .metrics import r2_mean

#: Default ridge penalties, as multiples of the number of training rows (features standardised).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-4, 2, 13))


def _check_xy(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise DataValidationError(f"X {list(X.shape)} and Y {list(Y.shape)} must be [T, F] and "
                                  "[T, D] with the same T")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise DataValidationError("X and Y must be finite (no NaN/inf)")
    return X, Y


def _gram(A: np.ndarray) -> np.ndarray:
    """``A.T @ A`` in ``A``'s precision (symmetric rank-k update: half the work of a
    product)."""
    if A.shape[0] == 0:
        return np.zeros((A.shape[1], A.shape[1]), dtype=A.dtype)
    syrk = linalg.blas.ssyrk if A.dtype == np.float32 else linalg.blas.dsyrk
    G = np.triu(syrk(1.0, np.asfortranarray(A), trans=1, lower=0))
    G += np.triu(G, 1).T
    return G


def _fold_grams(Xs: np.ndarray, Yc: np.ndarray, n_folds: int
                ) -> tuple[list[slice], list[np.ndarray], list[np.ndarray]]:
    """Gram matrices and cross products of ``n_folds`` contiguous blocks of rows."""
    edges = np.linspace(0, len(Xs), n_folds + 1).round().astype(int)
    folds = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    grams = [_gram(Xs[f]) for f in folds]
    cross = [Xs[f].T.astype(np.float64) @ Yc[f] for f in folds]
    return folds, grams, cross


#: Above this many features the penalty search uses Cholesky solves on a bracketing search
#: of the grid instead of one eigendecomposition per fold (cubic cost, 10x larger constant).
#: Measured on a 2-core CPU: 1220 features 2.6 s -> 1.3 s, 1280 features 2.4 s -> 1.8 s, with
#: the same penalty picked.
_EIGH_MAX_FEATURES = 1000


def _select_alpha(Xs: np.ndarray, Yc: np.ndarray, folds: list[slice],
                  grams: list[np.ndarray], cross: list[np.ndarray], G: np.ndarray,
                  b: np.ndarray, alphas: Sequence[float]) -> tuple[float, np.ndarray]:
    """Contiguous K-fold CV of the ridge penalty on standardised, centred training rows.

    Returns the alpha with the best mean validation R^2 and the scores per alpha (NaN where a
    large problem's search did not evaluate it). Small problems: one eigendecomposition per
    fold gives the whole path. Large problems: the validation score is assumed unimodal in
    log(alpha) and the grid is searched by bracketing (about 2*log2(len(alphas)) points).
    """
    n, p = Xs.shape
    alphas = np.sort(np.asarray(alphas, dtype=np.float64))
    scores = np.full(len(alphas), np.nan)
    if p <= _EIGH_MAX_FEATURES:
        scores[:] = 0.0
        for k, f in enumerate(folds):
            lam, V = linalg.eigh(G - grams[k], driver="evd", check_finite=False)
            lam = np.maximum(lam, 0.0)
            c = V.T @ (b - cross[k])
            P = Xs[f].astype(np.float64) @ V
            ntr = n - (f.stop - f.start)
            for i, a in enumerate(alphas):
                scores[i] += r2_mean(Yc[f], P @ (c / (lam + a * ntr)[:, None])) / len(folds)
        return float(alphas[int(np.argmax(scores))]), scores

    def score(i: int) -> float:
        if np.isnan(scores[i]):
            tot = 0.0
            for k, f in enumerate(folds):
                A = G - grams[k]
                A[np.diag_indices_from(A)] += alphas[i] * (n - (f.stop - f.start))
                # A is symmetric: its transpose is a Fortran-ordered view LAPACK factors in place
                w = linalg.cho_solve(linalg.cho_factor(A.T, overwrite_a=True, check_finite=False),
                                     b - cross[k], check_finite=False)
                del A
                tot += r2_mean(Yc[f], (Xs[f] @ w.astype(Xs.dtype)).astype(np.float64))
            scores[i] = tot / len(folds)
        return float(scores[i])

    lo, hi = 0, len(alphas) - 1
    while hi - lo > 2:
        m1 = lo + (hi - lo) // 3
        m2 = hi - (hi - lo) // 3
        if score(m1) < score(m2):
            lo = m1
        else:
            hi = m2
    best = max(range(lo, hi + 1), key=score)
    return float(alphas[best]), scores


# ------------------------------------------------------------------------------------- Wiener
def memory_budget() -> int | None:
    """Bytes this process can still allocate: the system's available memory, capped by an
    address-space limit (``ulimit -v``) if one is set; None where neither can be read."""
    budget = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                budget = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            used = 0
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmSize:"):
                    used = int(line.split()[1]) * 1024
            budget = soft - used if budget is None else min(budget, soft - used)
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return budget


def wiener_memory(n_rows: int, n_inputs: int, n_lags: int, cv_folds: int = 5,
                  itemsize: int = 8) -> int:
    """Peak bytes of one :meth:`WienerDecoder.fit`: the lagged design (built, then standardised:
    about two copies) and the ``cv_folds + 3`` Gram-sized matrices of the penalty search."""
    p = n_lags * n_inputs
    b = 4 if p > 1500 else itemsize
    return 2 * n_rows * p * b + (cv_folds * b + 24) * p * p


def check_wiener_memory(n_rows: int, n_inputs: int, n_lags: int, cv_folds: int = 5,
                        itemsize: int = 8) -> int:
    """Refuse (one line, with the size and the fix) a Wiener fit that cannot fit in memory;
    returns its estimated peak bytes."""
    need = wiener_memory(n_rows, n_inputs, n_lags, cv_folds, itemsize)
    budget = memory_budget()
    if budget is not None and need > budget:
        p = n_lags * n_inputs
        raise ConfigError(
            f"the Wiener filter would need about {need / 2**30:.1f} GiB ({n_rows} bins x {p} "
            f"features = {n_lags} lags x {n_inputs} inputs, and {p}x{p} matrices) but "
            f"{max(budget, 0) / 2**30:.1f} GiB is available; lower --n-lags (the default is 10)")
    return need


class WienerDecoder:
    """Wiener filter: ridge regression on causally lagged features.

    Features are lagged inside every run of the mask (:func:`lagged_runs`), standardised with
    the training rows' mean and standard deviation, targets centred with the training mean
    (intercept). The penalty ``alpha`` (a multiple of the number of training rows, i.e. on the
    mean-squared-error scale) is picked from ``alphas`` by ``cv_folds``-fold cross-validation
    over *contiguous* blocks of the training rows, then the model is refit on all of them.
    Fitting never looks at bins outside ``train_mask``.

    Parameters: ``n_lags`` and ``lag_step`` as in :func:`lagged` (default 10 lags x 20 ms at
    10 ms bins); ``integrate=True`` sums the bins between lags (use for spike counts).
    """

    def __init__(self, n_lags: int = 10, lag_step: int = 2, integrate: bool = False,
                 alphas: Sequence[float] = DEFAULT_ALPHAS, cv_folds: int = 5) -> None:
        if n_lags < 1 or lag_step < 1:
            raise ConfigError(f"n_lags={n_lags} and lag_step={lag_step} must be >= 1")
        if cv_folds < 2:
            raise ConfigError(f"cv_folds={cv_folds} must be >= 2")
        if len(alphas) < 1 or min(alphas) <= 0:
            raise ConfigError("alphas must be a non-empty sequence of positive numbers")
        self.n_lags, self.lag_step, self.integrate = int(n_lags), int(lag_step), bool(integrate)
        self.alphas = tuple(float(a) for a in alphas)
        self.cv_folds = int(cv_folds)
        self.alpha_: float | None = None
        self.cv_scores_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None
        self._mu: np.ndarray | None = None
        self._sd: np.ndarray | None = None
        self._ymu: np.ndarray | None = None
        self._n_features: int | None = None

    def _design(self, X: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        return lagged_runs(X, mask, self.n_lags, self.lag_step, self.integrate)

    def fit(self, X: np.ndarray, Y: np.ndarray, train_mask: np.ndarray | None = None
            ) -> WienerDecoder:
        """Fit on the bins of ``train_mask`` (all bins if ``None``). Returns ``self``."""
        X, Y = _check_xy(X, Y)
        m = check_mask(train_mask, X.shape[0], "train_mask")
        n = int(m.sum())
        if n < 2 * self.cv_folds:
            raise DataValidationError(f"WienerDecoder.fit: only {n} training bins; expected at "
                                      f"least {2 * self.cv_folds}")
        check_wiener_memory(X.shape[0], X.shape[1], self.n_lags, self.cv_folds,
                            np.result_type(X.dtype, np.float32).itemsize)
        D = self._design(X, m)
        if D.shape[1] > 1500:  # large designs: float32 halves memory and time
            D = D.astype(np.float32, copy=False)
        mu = D.mean(axis=0, dtype=np.float64)
        sd = D.std(axis=0, dtype=np.float64)
        sd[sd < 1e-12] = 1.0
        D -= mu.astype(D.dtype)
        D /= sd.astype(D.dtype)
        Yt = Y[m]
        ymu = Yt.mean(axis=0)
        Yc = Yt - ymu
        folds, grams, cross = _fold_grams(D, Yc, self.cv_folds)
        G = np.zeros(grams[0].shape)
        for g in grams:
            G += g
        rhs = sum(cross)
        if len(self.alphas) > 1:
            alpha, scores = _select_alpha(D, Yc, folds, grams, cross, G, rhs, self.alphas)
        else:
            alpha, scores = self.alphas[0], np.full(1, np.nan)
        del grams
        G[np.diag_indices_from(G)] += alpha * n
        coef = linalg.solve(G, rhs, assume_a="pos", check_finite=False)
        self.alpha_, self.cv_scores_, self.coef_ = alpha, scores, coef
        self._mu, self._sd, self._ymu, self._n_features = mu, sd, ymu, X.shape[1]
        return self

    def predict(self, X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Predictions ``[n, D]`` for the bins of ``mask`` (all bins if ``None``), in order."""
        if self.coef_ is None:
            raise DataValidationError("WienerDecoder.predict called before fit")
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape[1] != self._n_features:
            raise DataValidationError(f"WienerDecoder.predict: X has {X.shape[1]} features; the "
                                      f"decoder was fit on {self._n_features}")
        D = self._design(X, None if mask is None else check_mask(mask, X.shape[0], "mask"))
        return ((D - self._mu) / self._sd) @ self.coef_ + self._ymu


# ------------------------------------------------------------------------------------- Kalman
class KalmanDecoder:
    """Linear-Gaussian Kalman filter decoder with the (centred) velocity as the state.

    Model, fit by least squares on the training bins (transitions only between consecutive
    bins of one run)::

        x[t+1] = A x[t] + w,   w ~ N(0, W)        x: velocity minus its training mean
        z[t]   = H x[t] + q,   q ~ N(0, Q)        z: features at t - obs_lag, standardised,
                                                     optionally projected on n_pca components

    ``obs_lag`` (bins) pairs the state with *earlier* features (neural activity leads
    movement). ``n_pca`` (``None``: no projection) keeps the observation model well conditioned
    with many channels; the PCA, like the standardisation, is fit on training bins only.
    ``steady_state=True`` uses the converged gain; ``False`` runs the full time-varying filter.
    The filter restarts from the training mean (with the stationary covariance) at every run.
    """

    def __init__(self, n_pca: int | None = 30, obs_lag: int = 0, steady_state: bool = True,
                 ridge: float = 1e-6) -> None:
        if n_pca is not None and n_pca < 1:
            raise ConfigError(f"n_pca={n_pca} must be >= 1 or None")
        if obs_lag < 0:
            raise ConfigError(f"obs_lag={obs_lag} must be >= 0")
        self.n_pca, self.obs_lag, self.steady_state = n_pca, int(obs_lag), bool(steady_state)
        self.ridge = float(ridge)
        self.A_: np.ndarray | None = None
        self.W_: np.ndarray | None = None
        self.H_: np.ndarray | None = None
        self.Q_: np.ndarray | None = None
        self.K_: np.ndarray | None = None
        self.P0_: np.ndarray | None = None
        self._mu = self._sd = self._proj = self._ymu = None
        self._n_features: int | None = None

    def _obs(self, X: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        runs = mask_runs(mask)
        L = self.obs_lag
        parts = []
        for a, b in runs:
            seg = X[a:b].astype(np.float64)
            if L:
                sh = np.zeros_like(seg)
                if len(seg) > L:
                    sh[L:] = seg[:-L]
                seg = sh
            parts.append(seg)
        Z = np.concatenate(parts, axis=0) if parts else np.zeros((0, X.shape[1]))
        return Z, runs

    def _project(self, Z: np.ndarray) -> np.ndarray:
        Z = (Z - self._mu) / self._sd
        return Z if self._proj is None else Z @ self._proj

    def fit(self, X: np.ndarray, Y: np.ndarray, train_mask: np.ndarray | None = None
            ) -> KalmanDecoder:
        """Fit on the bins of ``train_mask`` (all bins if ``None``). Returns ``self``."""
        X, Y = _check_xy(X, Y)
        m = check_mask(train_mask, X.shape[0], "train_mask")
        if m.sum() < 10:
            raise DataValidationError(f"KalmanDecoder.fit: only {int(m.sum())} training bins")
        Z, runs = self._obs(X, m)
        self._mu = Z.mean(axis=0)
        sd = Z.std(axis=0)
        sd[sd < 1e-12] = 1.0
        self._sd = sd
        Zs = (Z - self._mu) / sd
        self._proj = None
        if self.n_pca is not None and self.n_pca < Zs.shape[1]:
            _, _, Vt = np.linalg.svd(Zs, full_matrices=False)
            self._proj = Vt[: self.n_pca].T
            Zs = Zs @ self._proj
        Yt = Y[m]
        self._ymu = Yt.mean(axis=0)
        S = Yt - self._ymu
        d = S.shape[1]
        # transitions inside runs only
        prev, nxt, off = [], [], 0
        for a, b in runs:
            n = b - a
            prev.append(S[off: off + n - 1])
            nxt.append(S[off + 1: off + n])
            off += n
        Sp, Sn = np.concatenate(prev), np.concatenate(nxt)
        reg = self.ridge * np.trace(Sp.T @ Sp) / d * np.eye(d)
        A = np.linalg.solve(Sp.T @ Sp + reg, Sp.T @ Sn).T
        R = Sn - Sp @ A.T
        W = R.T @ R / len(R)
        reg = self.ridge * np.trace(S.T @ S) / d * np.eye(d)
        H = np.linalg.solve(S.T @ S + reg, S.T @ Zs).T
        E = Zs - S @ H.T
        Q = E.T @ E / len(E)
        Q += self.ridge * np.trace(Q) / len(Q) * np.eye(len(Q))
        self.A_, self.W_, self.H_, self.Q_ = A, W, H, Q
        self.P0_ = np.cov(S.T).reshape(d, d)
        self._HtQi = np.linalg.solve(Q, H).T  # H^T Q^-1  [d, k]
        self._HtQiH = self._HtQi @ H  # [d, d]
        self.K_ = self._steady_gain()
        self._n_features = X.shape[1]
        return self

    def _update(self, P_prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Information-form measurement update: posterior covariance and gain."""
        P_post = np.linalg.inv(np.linalg.inv(P_prior) + self._HtQiH)
        return P_post, P_post @ self._HtQi

    def _steady_gain(self) -> np.ndarray:
        A, W = self.A_, self.W_
        P = self.P0_.copy()
        K = None
        for _ in range(10000):
            prior = A @ P @ A.T + W
            P_new, K = self._update(prior)
            if np.max(np.abs(P_new - P)) < 1e-12 * max(1.0, float(np.max(np.abs(P)))):
                P = P_new
                break
            P = P_new
        return K

    def predict(self, X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Filtered velocity ``[n, D]`` for the bins of ``mask`` (all bins if ``None``)."""
        if self.A_ is None:
            raise DataValidationError("KalmanDecoder.predict called before fit")
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape[1] != self._n_features:
            raise DataValidationError(f"KalmanDecoder.predict: X has {X.shape[1]} features; the "
                                      f"decoder was fit on {self._n_features}")
        m = check_mask(mask, X.shape[0], "mask")
        Z, runs = self._obs(X, m)
        Zp = self._project(Z)
        A = self.A_
        d = A.shape[0]
        out = np.empty((len(Zp), d))
        off = 0
        for a, b in runs:
            n = b - a
            x = np.zeros(d)
            if self.steady_state:
                K = self.K_
                F = A - K @ self.H_ @ A
                KZ = Zp[off: off + n] @ K.T
                for t in range(n):
                    x = F @ x + KZ[t]
                    out[off + t] = x
            else:
                P = self.P0_
                for t in range(n):
                    xp = A @ x
                    Pp = A @ P @ A.T + self.W_
                    P, K = self._update(Pp)
                    x = xp + K @ (Zp[off + t] - self.H_ @ xp)
                    out[off + t] = x
            off += n
        return out + self._ymu


# -------------------------------------------------------------------------------- convenience
def fit_predict(kind: Literal["wiener", "kalman"], X: np.ndarray, Y: np.ndarray,
                train_mask: np.ndarray, test_mask: np.ndarray, **kwargs
                ) -> tuple[np.ndarray, float]:
    """Fit a ``kind`` decoder on ``train_mask`` and predict ``test_mask``.

    ``kwargs`` go to :class:`WienerDecoder` or :class:`KalmanDecoder`. Returns the test
    predictions ``[test_mask.sum(), D]`` and their :func:`r2_mean` against ``Y[test_mask]``.
    """
    X, Y = _check_xy(X, Y)
    train_mask = check_mask(train_mask, X.shape[0], "train_mask")
    test_mask = check_mask(test_mask, X.shape[0], "test_mask")
    if (train_mask & test_mask).any():
        raise DataValidationError("train_mask and test_mask overlap")
    if kind == "wiener":
        model: WienerDecoder | KalmanDecoder = WienerDecoder(**kwargs)
    elif kind == "kalman":
        model = KalmanDecoder(**kwargs)
    else:
        raise ConfigError(f"unknown decoder kind '{kind}'; expected 'wiener' or 'kalman'")
    model.fit(X, Y, train_mask)
    pred = model.predict(X, test_mask)
    return pred, r2_mean(Y[test_mask], pred)
