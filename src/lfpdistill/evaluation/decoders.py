"""The classic velocity decoders a neuroscientist reaches for first, as scikit-learn regressors.

- :class:`WienerDecoder` -- ridge regression on causally lagged features (a Wiener filter),
  the penalty chosen by contiguous cross-validation on the training rows only;
- :class:`KalmanDecoder` -- linear-Gaussian Kalman filter with velocity as the state;
- :func:`fit_predict` -- fit on one mask of a recording, predict another, report R².

Both are scikit-learn estimators (``clone``, ``get_params``/``set_params``, ``score``, usable in
a ``Pipeline`` or ``GridSearchCV``). Unlike most regressors their rows are *time bins*, in order:
a prediction depends on the rows before it in its run (lags, filter state). ``fit`` and
``predict`` take ``groups`` (one label per row): a new run starts wherever the label changes,
lags are zero-padded and the Kalman filter restarts there, so no prediction uses features from
another run. Split-aware use on one recording, two equivalent spellings::

    dec.fit(X[train], Y[train], groups=mask_groups(train)); dec.predict(X[test], groups=mask_groups(test))
    dec.fit(X, Y, train); dec.predict(X, test)      # mask: the rows of the mask, run by run

Cross-validation over segments: ``cross_validate(dec, X, Y, groups=seg, cv=GroupKFold(5),
params={"groups": seg})`` (the fit sees the segment runs; scoring does not without
scikit-learn's metadata routing). Nothing outside the training rows (features or targets)
enters a fit. (Features themselves, e.g. causal band power, are computed by the caller on the
whole recording; they only ever look backwards in time.) The same :class:`WienerDecoder` reads
frozen latents in :mod:`.probes`: the decoder-matched comparison with hand-made features, and
(zero lags, no penalty) the per-timestep linear probe.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from ..errors import ConfigError, DataValidationError
from .features import check_mask, group_runs, lagged_in_runs, mask_groups
from .metrics import r2_mean

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6
    def _validate_data(est: Any, X: Any = "no_validation", y: Any = "no_validation",
                       **kw: Any) -> Any:
        kw["force_all_finite"] = kw.pop("ensure_all_finite", True)
        return est._validate_data(X, y, **kw)

#: Default ridge penalties, as multiples of the number of training rows (features standardised).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-4, 2, 13))


class DecoderNotFittedError(DataValidationError, NotFittedError):
    """A decoder was asked to predict before it was fit (scikit-learn's ``NotFittedError``)."""


def _one_line(e: Exception) -> str:
    """A scikit-learn validation message on one line (without the echoed array)."""
    return " ".join(ln.strip() for ln in str(e).splitlines()
                    if ln.strip() and not ln.lstrip().startswith("array="))


def _check_finite(A: np.ndarray, what: str) -> None:
    if not np.isfinite(A).all():
        r, *c = np.argwhere(~np.isfinite(A))[0]
        where = f"row {r}" + (f", column {c[0]}" if c else "")
        raise DataValidationError(f"{what} contains NaN or inf (first at {where}); decoders need "
                                  "finite values")


class _TimeBinRegressor(RegressorMixin, BaseEstimator):
    """Input handling shared by the decoders: scikit-learn validation, the optional ``mask``
    of a whole recording or ``groups`` of the rows, and the runs that follow from them."""

    def _fit_inputs(self, X: Any, y: Any, mask: np.ndarray | None, groups: Any
                    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
        name = type(self).__name__
        if y is None:
            raise DataValidationError(f"{name} requires y to be passed, but the target y is None")
        try:
            X, y = _validate_data(self, X, y, reset=True, dtype="numeric", multi_output=True,
                                  y_numeric=True, ensure_all_finite=False)
        except ValueError as e:
            raise DataValidationError(f"{name}.fit: {_one_line(e)}") from None
        X = X.astype(np.result_type(X.dtype, np.float32), copy=False)
        y = np.asarray(y, dtype=np.float64)
        _check_finite(X, f"{name}.fit: X")
        _check_finite(y, f"{name}.fit: y")
        self._y_1d = y.ndim == 1
        Y = y[:, None] if y.ndim == 1 else y
        X, Y, runs = self._rows(X, Y, mask, groups, "fit")
        return X, Y, runs

    def _predict_inputs(self, X: Any, mask: np.ndarray | None, groups: Any
                        ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        name = type(self).__name__
        if not hasattr(self, "n_features_in_"):
            raise DecoderNotFittedError(f"this {name} is not fitted yet; call fit first")
        try:
            X = _validate_data(self, X, reset=False, dtype="numeric", ensure_all_finite=False)
        except ValueError as e:
            raise DataValidationError(f"{name}.predict: {_one_line(e)}") from None
        X = X.astype(np.result_type(X.dtype, np.float32), copy=False)
        _check_finite(X, f"{name}.predict: X")
        X, _, runs = self._rows(X, None, mask, groups, "predict")
        return X, runs

    def _rows(self, X: np.ndarray, Y: np.ndarray | None, mask: np.ndarray | None, groups: Any,
              method: str) -> tuple[np.ndarray, np.ndarray | None, list[tuple[int, int]]]:
        where = f"{type(self).__name__}.{method}"
        if mask is not None:
            if groups is not None:
                raise ConfigError(f"{where}: pass either a mask of the recording or groups of "
                                  "its rows, not both")
            m = check_mask(mask, X.shape[0], f"{where}: mask")
            X = X[m]
            Y = None if Y is None else Y[m]
            groups = mask_groups(m)
        try:
            return X, Y, group_runs(groups, X.shape[0])
        except DataValidationError as e:
            raise DataValidationError(f"{where}: {e}") from None

    def _output(self, pred: np.ndarray) -> np.ndarray:
        return pred[:, 0] if self._y_1d else pred

    def score(self, X: Any, y: Any, sample_weight: Any = None, *, groups: Any = None) -> float:
        """R² of :meth:`predict` (with ``groups``) against ``y``, averaged over the outputs."""
        return float(r2_score(y, self.predict(X, groups=groups), sample_weight=sample_weight))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _gram(A: np.ndarray, full: bool = True) -> np.ndarray:
    """``A.T @ A`` in ``A``'s precision (symmetric rank-k update: half the work of a
    product). ``full=False`` returns only the upper triangle (zeros below), Fortran-ordered:
    what a Cholesky factorisation of the upper triangle reads in place."""
    if A.shape[0] == 0:
        return np.zeros((A.shape[1], A.shape[1]), dtype=A.dtype, order="F")
    syrk = linalg.blas.ssyrk if A.dtype == np.float32 else linalg.blas.dsyrk
    # syrk writes only the upper triangle of c: the rest stays zero. A row-major A is its
    # transpose in column-major order, which BLAS reads without a copy.
    At, trans = (A.T, 0) if A.flags.c_contiguous else (np.asfortranarray(A), 1)
    U = syrk(1.0, At, trans=trans, lower=0, beta=0.0, overwrite_c=1,
             c=np.zeros((A.shape[1], A.shape[1]), dtype=A.dtype, order="F"))
    if not full:
        return U
    G = np.triu(U)
    G += np.triu(G, 1).T
    return G


def _centre(D: np.ndarray, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the column means from ``D`` in place; returns the means and standard deviations
    in double precision. The squares are summed over blocks of rows converted to double, which
    keeps the working set in cache (``D.std`` makes a double copy of the whole design: 5x
    slower for the 4 800-feature band-power design)."""
    n = max(len(D), 1)
    mu = D.mean(axis=0, dtype=np.float64)
    D -= mu.astype(D.dtype)
    # the rounded mean leaves a small offset in each column: the sum of the rows removes it
    s1, ss = np.zeros(D.shape[1]), np.zeros(D.shape[1])
    for a in range(0, len(D), block):
        c = D[a:a + block].astype(np.float64)
        s1 += c.sum(axis=0)
        ss += np.einsum("ij,ij->j", c, c)
    return mu, np.sqrt(np.maximum(ss / n - (s1 / n) ** 2, 0.0))


def _fold_grams(Xs: np.ndarray, Yc: np.ndarray, n_folds: int, full: bool = True
                ) -> tuple[list[slice], list[np.ndarray], list[np.ndarray]]:
    """Gram matrices (see :func:`_gram` for ``full``) and cross products of ``n_folds``
    contiguous blocks of rows."""
    edges = np.linspace(0, len(Xs), n_folds + 1).round().astype(int)
    folds = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    grams = [_gram(Xs[f], full) for f in folds]
    cross = [Xs[f].T.astype(np.float64) @ Yc[f] for f in folds]
    return folds, grams, cross


#: Above this many features the penalty search uses Cholesky solves on a bracketing search
#: of the grid instead of one eigendecomposition per fold (cubic cost, 10x larger constant).
#: Measured on a 2-core CPU: 1220 features 2.6 s -> 1.3 s, 1280 features 2.4 s -> 1.8 s, with
#: the same penalty picked.
_EIGH_MAX_FEATURES = 1000


#: Designs with more features than this are built and standardised in single precision.
_F32_DESIGN_FEATURES = 1500


#: With fewer training rows than this share of the features (and more features than
#: ``_EIGH_MAX_FEATURES``) the penalty search works on the rows' kernel: one ``n x n``
#: eigendecomposition per fold gives every penalty's score, instead of a ``p x p`` Cholesky
#: factorisation per penalty and fold. Few labelled seconds of a 4 800-feature band-power design.
_DUAL_MAX_ROWS_RATIO = 0.9


def _ridge_dual(Xs: np.ndarray, Yc: np.ndarray, n_folds: int, alphas: Sequence[float]
                ) -> tuple[float, np.ndarray, np.ndarray]:
    """The same ridge as the primal path (contiguous K-fold CV of the penalty on standardised,
    centred rows, then the fit on all rows) solved through the rows' kernel ``Xs Xs^T``; for
    ``n < p`` it is cheaper and gives the same penalty and coefficients, and the scores of the
    primal path's double-precision search (that search factors in single precision). Returns
    ``(alpha, scores over the whole grid, coef [p, D])``."""
    n = Xs.shape[0]
    X64 = Xs.astype(np.float64, copy=False)
    K = _gram(X64.T)  # [n, n]
    edges = np.linspace(0, n, n_folds + 1).round().astype(int)
    alphas = np.sort(np.asarray(alphas, dtype=np.float64))
    scores = np.zeros(len(alphas))
    rows = np.arange(n)
    for a0, b0 in zip(edges[:-1], edges[1:], strict=True):
        tr = np.concatenate([rows[:a0], rows[b0:]])
        lam, U = linalg.eigh(K[np.ix_(tr, tr)], driver="evd", check_finite=False)
        lam = np.maximum(lam, 0.0)
        c = U.T @ Yc[tr]
        P = K[a0:b0][:, tr] @ U
        for i, a in enumerate(alphas):
            scores[i] += r2_mean(Yc[a0:b0], P @ (c / (lam + a * len(tr))[:, None])) / n_folds
    alpha = float(alphas[int(np.argmax(scores))])
    K[np.diag_indices_from(K)] += alpha * n
    coef = X64.T @ linalg.solve(K, Yc, assume_a="pos", check_finite=False)
    return alpha, scores, coef


def _select_alpha(Xs: np.ndarray, Yc: np.ndarray, folds: list[slice],
                  grams: list[np.ndarray], cross: list[np.ndarray], G: np.ndarray,
                  b: np.ndarray, alphas: Sequence[float]) -> tuple[float, np.ndarray]:
    """Contiguous K-fold CV of the ridge penalty on standardised, centred training rows.

    Returns the alpha with the best mean validation R^2 and the scores per alpha (NaN where a
    large problem's search did not evaluate it). Small problems: one eigendecomposition per
    fold gives the whole path. Large problems: the validation score is assumed unimodal in
    log(alpha) and the grid is searched by bracketing (about 2*log2(len(alphas)) points), each
    point a single-precision Cholesky factorisation per fold.
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

    # Large problems factor one matrix per (penalty, fold): the upper triangles (``grams`` and
    # ``G`` hold only those, Fortran-ordered) in single precision, in one reused buffer. That
    # halves the time of a double-precision factorisation; the validation scores move by less
    # than 2e-5 (measured on the band-power and spike designs of the demo's sessions; below 1e-8
    # at the best penalty), against 1e-3 to 7e-2 between the best penalty and its neighbours. A
    # factorisation single precision cannot complete (a nearly singular matrix at a tiny
    # penalty) is redone in double.
    G32 = G.astype(np.float32, order="F")
    A = np.empty_like(G32, order="F")
    diag = np.diag_indices(p)

    def solve(k: int, alpha: float) -> np.ndarray:
        ntr = n - (folds[k].stop - folds[k].start)
        np.subtract(G32, grams[k], out=A, casting="same_kind")
        A[diag] += np.float32(alpha * ntr)
        rhs = b - cross[k]
        try:
            c = linalg.cho_factor(A, lower=False, overwrite_a=True, check_finite=False)
            return linalg.cho_solve(c, rhs.astype(np.float32), check_finite=False)
        except linalg.LinAlgError:
            A64 = G - grams[k]
            A64[diag] += alpha * ntr
            c = linalg.cho_factor(A64, lower=False, overwrite_a=True, check_finite=False)
            return linalg.cho_solve(c, rhs, check_finite=False)

    def score(i: int) -> float:
        if np.isnan(scores[i]):
            tot = 0.0
            for k, f in enumerate(folds):
                w = solve(k, float(alphas[i]))
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


def side_by_side(fn: Callable[[Any], Any], jobs: Sequence[Any], need_bytes: int = 0,
                 workers: int | None = None) -> list[Any]:
    """``fn`` of every job, in order, ``workers`` at a time (default: one per usable core, at
    most 4) with single-threaded BLAS, and no more at once than ``need_bytes`` each fit into
    :func:`memory_budget`. Ridge fits of ~1000 features gain little from a second BLAS thread and
    nearly twice as much from running two side by side (measured: 4 fits 6.4 s -> 3.7 s on 2
    cores)."""
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = min(4, cores or 1)
    workers = max(1, min(len(jobs), workers))
    budget = memory_budget()
    if budget is not None and need_bytes > 0:
        workers = max(1, min(workers, int(budget // need_bytes)))
    if workers == 1:
        return [fn(j) for j in jobs]
    with threadpool_limits(1), ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, jobs))


def wiener_memory(n_rows: int, n_inputs: int, n_lags: int, cv_folds: int = 5,
                  itemsize: int = 8) -> int:
    """Peak bytes of one :meth:`WienerDecoder.fit`: the lagged design (built, then standardised:
    about two copies) and the ``cv_folds + 3`` Gram-sized matrices of the penalty search."""
    p = n_lags * n_inputs
    b = 4 if p > _F32_DESIGN_FEATURES else itemsize
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


class WienerDecoder(_TimeBinRegressor):
    """Wiener filter: ridge regression on causally lagged features.

    Features are lagged inside every run of the rows (see the module docstring), standardised
    with the training rows' mean and standard deviation, targets centred with the training mean
    (intercept). The penalty ``alpha`` (a multiple of the number of training rows, i.e. on the
    mean-squared-error scale) is picked from ``alphas`` by ``cv_folds``-fold cross-validation
    over *contiguous* blocks of the training rows, then the model is refit on all of them. A
    single alpha skips the search; a single ``0`` is ordinary least squares (the per-timestep
    linear probe is ``WienerDecoder(n_lags=1, lag_step=1, alphas=(0.0,))``).

    Parameters: ``n_lags`` and ``lag_step`` as in :func:`.features.lagged` (default 10 lags x
    20 ms at 10 ms bins); ``integrate=True`` sums the bins between lags (use for spike counts).
    They are stored as given and checked by :meth:`fit`.

    Fitted attributes: ``alpha_``, ``cv_scores_`` (mean validation R² per alpha, NaN where not
    evaluated), ``coef_`` (``[n_lags * n_features_in_, n_outputs]``, on standardised features),
    ``n_features_in_``.
    """

    def __init__(self, n_lags: int = 10, lag_step: int = 2, integrate: bool = False,
                 alphas: Sequence[float] = DEFAULT_ALPHAS, cv_folds: int = 5) -> None:
        self.n_lags = n_lags
        self.lag_step = lag_step
        self.integrate = integrate
        self.alphas = alphas
        self.cv_folds = cv_folds

    def _checked_params(self) -> tuple[int, int, tuple[float, ...], int]:
        n_lags, lag_step, cv_folds = self.n_lags, self.lag_step, self.cv_folds
        for name, v, lo in (("n_lags", n_lags, 1), ("lag_step", lag_step, 1),
                            ("cv_folds", cv_folds, 2)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"WienerDecoder: {name}={v!r} must be an integer >= {lo}")
        try:
            alphas = tuple(float(a) for a in np.ravel(np.asarray(self.alphas, dtype=np.float64)))
        except (TypeError, ValueError):
            alphas = ()
        if not alphas or not all(np.isfinite(a) and a >= 0 for a in alphas) or (
                0.0 in alphas and len(alphas) > 1):
            raise ConfigError(f"WienerDecoder: alphas={self.alphas!r} must be positive numbers "
                              "(or a single 0: ordinary least squares)")
        return int(n_lags), int(lag_step), alphas, int(cv_folds)

    def _design(self, X: np.ndarray, runs: list[tuple[int, int]]) -> np.ndarray:
        return lagged_in_runs(X, runs, int(self.n_lags), int(self.lag_step), bool(self.integrate))

    def fit(self, X: Any, y: Any, mask: np.ndarray | None = None, *, groups: Any = None
            ) -> WienerDecoder:
        """Fit on the rows of ``X`` ``[n, F]`` and ``y`` ``[n]`` or ``[n, D]`` (runs from
        ``groups``), or, with ``mask``, on the bins of ``mask`` of a whole recording. Returns
        ``self``."""
        n_lags, _, alphas, cv_folds = self._checked_params()
        X, Y, runs = self._fit_inputs(X, y, mask, groups)
        n = X.shape[0]
        need = 2 if alphas == (0.0,) else 2 * cv_folds
        if n < need:
            raise DataValidationError(f"WienerDecoder.fit: {n} sample{'s' * (n != 1)} to fit on; "
                                      f"expected at least {need}")
        check_wiener_memory(n, X.shape[1], n_lags, cv_folds, X.dtype.itemsize)
        D = self._design(X, runs)
        if D.shape[1] > _F32_DESIGN_FEATURES:  # float32 halves memory and time
            D = D.astype(np.float32, copy=False)
        mu, sd = _centre(D)
        sd[sd < 1e-12] = 1.0
        D /= sd.astype(D.dtype)
        ymu = Y.mean(axis=0)
        Yc = Y - ymu
        if alphas == (0.0,):  # ordinary least squares (minimum norm where rank deficient)
            alpha, scores = 0.0, np.full(1, np.nan)
            coef = linalg.lstsq(D.astype(np.float64), Yc, check_finite=False)[0]
        elif len(alphas) == 1:
            alpha, scores = alphas[0], np.full(1, np.nan)
            G = _gram(D).astype(np.float64)
            G[np.diag_indices_from(G)] += alpha * n
            coef = linalg.solve(G, D.T.astype(np.float64) @ Yc, assume_a="pos",
                                check_finite=False)
        elif D.shape[1] > _EIGH_MAX_FEATURES and n < _DUAL_MAX_ROWS_RATIO * D.shape[1]:
            alpha, scores, coef = _ridge_dual(D, Yc, cv_folds, alphas)
        else:  # large designs keep only the upper triangles of the Gram matrices
            folds, grams, cross = _fold_grams(D, Yc, cv_folds,
                                              full=D.shape[1] <= _EIGH_MAX_FEATURES)
            G = np.zeros(grams[0].shape, order="F")
            for g in grams:
                G += g
            rhs = sum(cross)
            alpha, scores = _select_alpha(D, Yc, folds, grams, cross, G, rhs, alphas)
            del grams
            G[np.diag_indices_from(G)] += alpha * n
            coef = linalg.cho_solve(linalg.cho_factor(G, lower=False, overwrite_a=True,
                                                      check_finite=False),
                                    rhs, check_finite=False)
        self.alpha_, self.cv_scores_, self.coef_ = alpha, scores, coef
        self._mu, self._sd, self._ymu = mu, sd, ymu
        return self

    def predict(self, X: Any, mask: np.ndarray | None = None, *, groups: Any = None
                ) -> np.ndarray:
        """Predictions for every row of ``X`` (runs from ``groups``), in order: ``[n]`` or
        ``[n, D]`` as ``y`` was. With ``mask`` (``X`` a whole recording): for the bins of
        ``mask`` only, lagged inside each of its runs."""
        X, runs = self._predict_inputs(X, mask, groups)
        D = self._design(X, runs)
        return self._output(((D - self._mu) / self._sd) @ self.coef_ + self._ymu)


# ------------------------------------------------------------------------------------- Kalman
class KalmanDecoder(_TimeBinRegressor):
    """Linear-Gaussian Kalman filter decoder with the (centred) velocity as the state.

    Model, fit by least squares on the training rows (transitions only between consecutive
    rows of one run)::

        x[t+1] = A x[t] + w,   w ~ N(0, W)        x: velocity minus its training mean
        z[t]   = H x[t] + q,   q ~ N(0, Q)        z: features at t - obs_lag, standardised,
                                                     optionally projected on n_pca components

    ``obs_lag`` (bins) pairs the state with *earlier* features (neural activity leads
    movement). ``n_pca`` (``None``: no projection) keeps the observation model well conditioned
    with many channels; the PCA, like the standardisation, is fit on training rows only.
    ``steady_state=True`` uses the steady-state gain, from the discrete algebraic Riccati
    equation (:func:`scipy.linalg.solve_discrete_are`); ``False`` runs the full time-varying
    filter. The filter restarts from the training mean (with the stationary covariance) at
    every run. Parameters are stored as given and checked by :meth:`fit`.

    Fitted attributes: ``A_``, ``W_``, ``H_``, ``Q_``, ``P0_`` (the model), ``K_`` (the
    steady-state gain; ``None`` with ``steady_state=False``), ``n_features_in_``.
    """

    def __init__(self, n_pca: int | None = 30, obs_lag: int = 0, steady_state: bool = True,
                 ridge: float = 1e-6) -> None:
        self.n_pca = n_pca
        self.obs_lag = obs_lag
        self.steady_state = steady_state
        self.ridge = ridge

    def _check_params(self) -> None:
        n_pca, obs_lag = self.n_pca, self.obs_lag
        if n_pca is not None and (isinstance(n_pca, bool) or not isinstance(n_pca, (int, np.integer))
                                  or n_pca < 1):
            raise ConfigError(f"KalmanDecoder: n_pca={n_pca!r} must be an integer >= 1 or None")
        if isinstance(obs_lag, bool) or not isinstance(obs_lag, (int, np.integer)) or obs_lag < 0:
            raise ConfigError(f"KalmanDecoder: obs_lag={obs_lag!r} must be an integer >= 0")
        try:
            ridge = float(self.ridge)
        except (TypeError, ValueError):
            ridge = -1.0
        if not (np.isfinite(ridge) and ridge >= 0):
            raise ConfigError(f"KalmanDecoder: ridge={self.ridge!r} must be a number >= 0")

    def _obs(self, X: np.ndarray, runs: list[tuple[int, int]]) -> np.ndarray:
        L = int(self.obs_lag)
        parts = []
        for a, b in runs:
            seg = X[a:b].astype(np.float64)
            if L:
                sh = np.zeros_like(seg)
                if len(seg) > L:
                    sh[L:] = seg[:-L]
                seg = sh
            parts.append(seg)
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, X.shape[1]))

    def _project(self, Z: np.ndarray) -> np.ndarray:
        Z = (Z - self._mu) / self._sd
        return Z if self._proj is None else Z @ self._proj

    def fit(self, X: Any, y: Any, mask: np.ndarray | None = None, *, groups: Any = None
            ) -> KalmanDecoder:
        """Fit on the rows of ``X`` ``[n, F]`` and ``y`` ``[n]`` or ``[n, D]`` (runs from
        ``groups``), or, with ``mask``, on the bins of ``mask`` of a whole recording. Returns
        ``self``."""
        self._check_params()
        X, Y, runs = self._fit_inputs(X, y, mask, groups)
        n = X.shape[0]
        if n < 10:
            raise DataValidationError(f"KalmanDecoder.fit: {n} sample{'s' * (n != 1)} to fit on; "
                                      "expected at least 10")
        if n - len(runs) < 2:
            raise DataValidationError("KalmanDecoder.fit: fewer than 2 transitions between "
                                      "consecutive rows of one run; the state model needs them")
        ridge = float(self.ridge)
        Z = self._obs(X, runs)
        self._mu = Z.mean(axis=0)
        sd = Z.std(axis=0)
        sd[sd < 1e-12] = 1.0
        self._sd = sd
        Zs = (Z - self._mu) / sd
        self._proj = None
        if self.n_pca is not None and self.n_pca < Zs.shape[1]:
            _, _, Vt = np.linalg.svd(Zs, full_matrices=False)
            self._proj = Vt[: int(self.n_pca)].T
            Zs = Zs @ self._proj
        self._ymu = Y.mean(axis=0)
        S = Y - self._ymu
        d = S.shape[1]
        # transitions inside runs only
        Sp = np.concatenate([S[a: b - 1] for a, b in runs])
        Sn = np.concatenate([S[a + 1: b] for a, b in runs])
        reg = ridge * np.trace(Sp.T @ Sp) / d * np.eye(d)
        A = np.linalg.solve(Sp.T @ Sp + reg, Sp.T @ Sn).T
        R = Sn - Sp @ A.T
        W = R.T @ R / len(R)
        reg = ridge * np.trace(S.T @ S) / d * np.eye(d)
        H = np.linalg.solve(S.T @ S + reg, S.T @ Zs).T
        E = Zs - S @ H.T
        Q = E.T @ E / len(E)
        Q += ridge * np.trace(Q) / len(Q) * np.eye(len(Q))
        self.A_, self.W_, self.H_, self.Q_ = A, W, H, Q
        self.P0_ = np.cov(S.T).reshape(d, d)
        self._HtQi = np.linalg.solve(Q, H).T  # H^T Q^-1  [d, k]
        self._HtQiH = self._HtQi @ H  # [d, d]
        self.K_ = self._steady_gain() if self.steady_state else None
        return self

    def _update(self, P_prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Information-form measurement update: posterior covariance and gain."""
        P_post = np.linalg.inv(np.linalg.inv(P_prior) + self._HtQiH)
        return P_post, P_post @ self._HtQi

    def _steady_gain(self) -> np.ndarray:
        """The gain of the converged filter: the prior covariance solves the filtering DARE
        ``P = A P A' - A P H' (H P H' + Q)^-1 H P A' + W`` (the control DARE of ``A'``, ``H'``)."""
        try:
            prior = linalg.solve_discrete_are(self.A_.T, self.H_.T, self.W_, self.Q_)
        except (np.linalg.LinAlgError, ValueError) as e:
            raise DataValidationError(
                "KalmanDecoder.fit: the fitted model has no steady-state filter (Riccati "
                f"equation: {_one_line(e)}); use steady_state=False") from None
        return self._update(prior)[1]

    def predict(self, X: Any, mask: np.ndarray | None = None, *, groups: Any = None
                ) -> np.ndarray:
        """Filtered velocity for every row of ``X`` (the filter restarts at each run of
        ``groups``): ``[n]`` or ``[n, D]`` as ``y`` was. With ``mask`` (``X`` a whole
        recording): for the bins of ``mask`` only, restarting at each of its runs."""
        X, runs = self._predict_inputs(X, mask, groups)
        Zp = self._project(self._obs(X, runs))
        A = self.A_
        d = A.shape[0]
        out = np.empty((len(Zp), d))
        for a, b in runs:
            x = np.zeros(d)
            if self.steady_state:
                K = self.K_
                F = A - K @ self.H_ @ A
                KZ = Zp[a:b] @ K.T
                for t in range(b - a):
                    x = F @ x + KZ[t]
                    out[a + t] = x
            else:
                P = self.P0_
                for t in range(a, b):
                    xp = A @ x
                    Pp = A @ P @ A.T + self.W_
                    P, K = self._update(Pp)
                    x = xp + K @ (Zp[t] - self.H_ @ xp)
                    out[t] = x
        return self._output(out + self._ymu)


# -------------------------------------------------------------------------------- convenience
def fit_predict(kind: Literal["wiener", "kalman"], X: np.ndarray, Y: np.ndarray,
                train_mask: np.ndarray, test_mask: np.ndarray, **kwargs: Any
                ) -> tuple[np.ndarray, float]:
    """Fit a ``kind`` decoder on the bins of ``train_mask`` of a recording and predict the bins
    of ``test_mask`` (every run of a mask its own recording).

    ``kwargs`` go to :class:`WienerDecoder` or :class:`KalmanDecoder`. Returns the test
    predictions ``[test_mask.sum(), D]`` and their :func:`r2_mean` against ``Y[test_mask]``.
    """
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or Y.ndim not in (1, 2) or X.shape[0] != Y.shape[0]:
        raise DataValidationError(f"X {list(X.shape)} and Y {list(Y.shape)} must be [T, F] and "
                                  "[T, D] with the same T")
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
    model.fit(X[train_mask], Y[train_mask], groups=mask_groups(train_mask))
    pred = model.predict(X[test_mask], groups=mask_groups(test_mask))
    return pred, r2_mean(Y[test_mask], pred)
