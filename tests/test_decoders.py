"""Tests of the classic decoders and LFP features (lfpdistill.evaluation)."""

from __future__ import annotations

import numpy as np
import pytest

from lfpdistill.errors import ConfigError, DataValidationError
from lfpdistill.evaluation import (
    KalmanDecoder,
    WienerDecoder,
    band_power_feature_names,
    band_power_features,
    decoders,
    fit_predict,
    lagged,
    lagged_runs,
    mask_runs,
    r2_mean,
)


def _segment_masks(T: int, seg: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train/test masks made of whole segments (like Session.split_mask)."""
    rng = np.random.default_rng(seed)
    codes = rng.permutation(np.arange(T // seg) % 5 == 0)  # 1 in 5 segments is test
    test = np.repeat(codes, seg)
    test = np.r_[test, np.zeros(T - len(test), dtype=bool)]
    return ~test, test


def test_r2_mean_known_case():
    y = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [4.0, 8.0]])
    pred = y.copy()
    pred[:, 1] = y[:, 1].mean()  # column y: R^2 = 0
    pred[0, 0] = 2.0  # column x: SSE 1, SST 5 -> R^2 = 0.8
    assert r2_mean(y, pred) == pytest.approx((0.8 + 0.0) / 2)
    with pytest.raises(DataValidationError):
        r2_mean(y, pred[:, :1])


def test_lagged_causal_and_integrated():
    x = np.arange(1.0, 9.0)[:, None]
    lag = lagged(x, n_lags=3, lag_step=2)
    assert lag.shape == (8, 3)
    np.testing.assert_array_equal(lag[5], [6.0, 4.0, 2.0])
    np.testing.assert_array_equal(lag[1], [2.0, 0.0, 0.0])
    integ = lagged(x, n_lags=2, lag_step=2, integrate=True)
    np.testing.assert_array_equal(integ[5], [6.0 + 5.0, 4.0 + 3.0])
    np.testing.assert_array_equal(integ[0], [1.0, 0.0])
    # inside runs: lags never reach across a gap
    mask = np.array([1, 1, 1, 0, 1, 1, 1, 1], dtype=bool)
    assert mask_runs(mask) == [(0, 3), (4, 8)]
    lr = lagged_runs(x, mask, n_lags=2, lag_step=1)
    np.testing.assert_array_equal(lr[3], [5.0, 0.0])  # first bin of the second run


def _lagged_reference(x: np.ndarray, n_lags: int, step: int, integrate: bool) -> np.ndarray:
    """Causal lags written out loop by loop (zeros before the start)."""
    T, F = x.shape
    base = x.astype(np.float64)
    if integrate:
        base = np.array([base[max(t - step + 1, 0):t + 1].sum(0) for t in range(T)])
    out = np.zeros((T, n_lags * F))
    for t in range(T):
        for j in range(n_lags):
            if t - j * step >= 0:
                out[t, j * F:(j + 1) * F] = base[t - j * step]
    return out


@pytest.mark.parametrize("integrate", [False, True])
def test_lagged_in_runs_matches_lags_written_out_for_every_run(integrate):
    """Every run lagged on its own into one output, runs shorter than the lags' reach and
    single-row runs included; an empty list of runs gives no rows."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 5, size=(60, 3)).astype(np.float32)
    runs = [(0, 4), (4, 5), (7, 30), (30, 60)]
    got = decoders.lagged_in_runs(x, runs, 5, 3, integrate)
    want = np.concatenate([_lagged_reference(x[a:b], 5, 3, integrate) for a, b in runs])
    assert got.dtype == np.float32 and got.shape == (58, 15)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(lagged(x, 5, 3, integrate), _lagged_reference(x, 5, 3, integrate))
    assert decoders.lagged_in_runs(x, [], 5, 3, integrate).shape == (0, 15)
    with pytest.raises(ConfigError, match="n_lags=0"):
        decoders.lagged_in_runs(x, runs, 0, 3, integrate)


def test_centre_subtracts_means_and_returns_sds_in_double():
    rng = np.random.default_rng(5)
    D = (rng.standard_normal((1000, 4)) * [1.0, 3.0, 0.0, 1e-3] + [5.0, -2.0, 7.0, 1e4]).astype(
        np.float32)
    ref_mu = D.astype(np.float64).mean(0)
    ref_sd = D.astype(np.float64).std(0)
    mu, sd = decoders._centre(D, block=64)  # several blocks and a partial one
    np.testing.assert_allclose(mu, ref_mu, rtol=1e-12)
    np.testing.assert_allclose(sd, ref_sd, rtol=1e-6, atol=1e-12)
    assert sd[2] == 0.0  # a constant column: no spread (fit then scales it by 1)
    np.testing.assert_allclose(D.mean(0), 0.0, atol=1e-3)


def test_wiener_recovers_linear_lagged_mapping():
    rng = np.random.default_rng(0)
    T, F = 4000, 6
    X = rng.standard_normal((T, F))
    B = rng.standard_normal((3, F, 2))
    Y = np.zeros((T, 2))
    for j, d in enumerate((0, 2, 6)):  # lags 0, 20 and 60 ms at lag_step=2
        Y[d:] += X[: T - d] @ B[j]
    Y += 0.01 * rng.standard_normal(Y.shape)
    train = np.zeros(T, dtype=bool)
    train[: int(0.8 * T)] = True
    pred, r2 = fit_predict("wiener", X, Y, train, ~train, n_lags=5, lag_step=2)
    assert pred.shape == (int((~train).sum()), 2)
    assert r2 > 0.995
    dec = WienerDecoder(n_lags=5, lag_step=2).fit(X, Y, train)
    assert dec.alpha_ == min(dec.alphas)  # almost noiseless: the smallest penalty wins


def test_wiener_large_design_search(monkeypatch):
    """Designs above the eigendecomposition limit use the bracketing search (same answer on a
    unimodal validation curve)."""
    rng = np.random.default_rng(1)
    T, F = 3000, 30
    X = rng.standard_normal((T, F))
    w = rng.standard_normal((F, 2)) * 0.3
    Y = X @ w + 1.0 * rng.standard_normal((T, 2))
    train = np.arange(T) < 2400
    full = WienerDecoder(n_lags=3, lag_step=1).fit(X, Y, train)
    assert not np.isnan(full.cv_scores_).any()
    monkeypatch.setattr(decoders, "_EIGH_MAX_FEATURES", 10)
    fast = WienerDecoder(n_lags=3, lag_step=1).fit(X, Y, train)
    assert np.isnan(fast.cv_scores_).any()  # not every alpha was evaluated
    assert fast.alpha_ == full.alpha_
    ok = ~np.isnan(fast.cv_scores_)
    # the bracketing search factors in single precision; the final fit is double on both paths
    np.testing.assert_allclose(fast.cv_scores_[ok], full.cv_scores_[ok], atol=1e-7)
    np.testing.assert_allclose(fast.predict(X, ~train), full.predict(X, ~train), atol=1e-8)
    assert r2_mean(Y[~train], fast.predict(X, ~train)) > 0.5


def test_wiener_single_precision_design_picks_the_double_precision_penalty(monkeypatch):
    """Designs above the single-precision limit are built, standardised and searched in float32
    (float32 Gram matrices into the float32 buffer): same penalty as the double-precision
    full-grid path, scores and predictions to float32 accuracy."""
    rng = np.random.default_rng(6)
    T, F = 3000, 30
    X = rng.standard_normal((T, F)) * rng.uniform(0.5, 20, F) + rng.uniform(-50, 50, F)
    Y = (X - X.mean(0)) / X.std(0) @ (rng.standard_normal((F, 2)) * 0.3) \
        + rng.standard_normal((T, 2))
    train = np.arange(T) < 2400
    full = WienerDecoder(n_lags=3, lag_step=1).fit(X, Y, train)
    monkeypatch.setattr(decoders, "_EIGH_MAX_FEATURES", 10)
    monkeypatch.setattr(decoders, "_F32_DESIGN_FEATURES", 50)
    single = WienerDecoder(n_lags=3, lag_step=1).fit(X, Y, train)
    assert single.alpha_ == full.alpha_
    ok = ~np.isnan(single.cv_scores_)
    assert 0 < ok.sum() < len(ok)  # the bracketing search, not the whole grid
    np.testing.assert_allclose(single.cv_scores_[ok], full.cv_scores_[ok], atol=1e-4)
    np.testing.assert_allclose(single.predict(X, ~train), full.predict(X, ~train), atol=1e-3)
    assert r2_mean(Y[~train], single.predict(X, ~train)) > 0.5


def test_wiener_search_redoes_in_double_what_single_precision_cannot_factor(monkeypatch):
    """The large-design search factors in single precision; where that fails (a nearly singular
    fold matrix) the factorisation is redone in double and the search goes on."""
    rng = np.random.default_rng(3)
    T, F = 3000, 30
    X = rng.standard_normal((T, F))
    Y = X @ (rng.standard_normal((F, 2)) * 0.3) + rng.standard_normal((T, 2))
    monkeypatch.setattr(decoders, "_EIGH_MAX_FEATURES", 10)
    single = WienerDecoder(n_lags=3, lag_step=1).fit(X, Y)
    cho_factor = decoders.linalg.cho_factor
    calls = {"float32": 0, "float64": 0}

    def no_single(a, *args, **kwargs):
        calls[str(np.asarray(a).dtype)] += 1
        if np.asarray(a).dtype == np.float32:
            raise decoders.linalg.LinAlgError("not positive definite")
        return cho_factor(a, *args, **kwargs)

    monkeypatch.setattr(decoders.linalg, "cho_factor", no_single)
    double = WienerDecoder(n_lags=3, lag_step=1).fit(X, Y)
    assert calls["float32"] > 0 and calls["float64"] == calls["float32"] + 1  # + the final fit
    assert double.alpha_ == single.alpha_
    ok = ~np.isnan(single.cv_scores_)
    np.testing.assert_array_equal(ok, ~np.isnan(double.cv_scores_))
    np.testing.assert_allclose(double.cv_scores_[ok], single.cv_scores_[ok], atol=2e-5)
    np.testing.assert_allclose(double.coef_, single.coef_, atol=1e-10)


def test_wiener_few_rows_many_features_kernel_path(monkeypatch):
    """Fewer rows than features: the kernel (dual) path gives the primal path's penalty, scores
    and predictions."""
    rng = np.random.default_rng(2)
    T, F = 700, 60  # fit on 200 rows, 3 lags: 180 features
    X = rng.standard_normal((T, F))
    w = rng.standard_normal((F, 2)) * 0.2
    Y = X @ w + 1.0 * rng.standard_normal((T, 2))
    monkeypatch.setattr(decoders, "_EIGH_MAX_FEATURES", 10)
    monkeypatch.setattr(decoders, "_DUAL_MAX_ROWS_RATIO", 0.0)  # force the primal path
    primal = WienerDecoder(n_lags=3, lag_step=1).fit(X[:200], Y[:200])
    monkeypatch.setattr(decoders, "_DUAL_MAX_ROWS_RATIO", 100.0)
    dual = WienerDecoder(n_lags=3, lag_step=1).fit(X[:200], Y[:200])
    assert not np.isnan(dual.cv_scores_).any()  # the whole grid at once
    assert dual.alpha_ == primal.alpha_
    ok = ~np.isnan(primal.cv_scores_)
    # the primal search factors in single precision; the final fit is double on both paths
    np.testing.assert_allclose(dual.cv_scores_[ok], primal.cv_scores_[ok], atol=2e-5)
    np.testing.assert_allclose(dual.coef_, primal.coef_, atol=1e-8)
    np.testing.assert_allclose(dual.predict(X[200:]), primal.predict(X[200:]), atol=1e-8)


def _linear_gaussian(T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    th = 0.1
    A = 0.97 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    W = 0.05 * np.eye(2)
    k = 20
    H = rng.standard_normal((k, 2))
    Q = 4.0 * np.eye(k)
    x = np.zeros((T, 2))
    for t in range(1, T):
        x[t] = A @ x[t - 1] + rng.multivariate_normal(np.zeros(2), W)
    z = x @ H.T + rng.multivariate_normal(np.zeros(k), Q, size=T)
    return x, z, (A, W, H, Q)


def _oracle_filter(z: np.ndarray, A, W, H, Q) -> np.ndarray:
    P = np.eye(2)
    for _ in range(2000):  # steady-state covariance
        Pp = A @ P @ A.T + W
        K = Pp @ H.T @ np.linalg.inv(H @ Pp @ H.T + Q)
        P = (np.eye(2) - K @ H) @ Pp
    x = np.zeros(2)
    out = np.empty((len(z), 2))
    for t in range(len(z)):
        xp = A @ x
        x = xp + K @ (z[t] - H @ xp)
        out[t] = x
    return out


def test_kalman_close_to_optimal():
    x, z, (A, W, H, Q) = _linear_gaussian(12000)
    train = np.arange(len(x)) < 9000
    test = ~train
    oracle = r2_mean(x[test], _oracle_filter(z, A, W, H, Q)[test])
    _, r2_ss = fit_predict("kalman", z, x, train, test, n_pca=None)
    _, r2_full = fit_predict("kalman", z, x, train, test, n_pca=None, steady_state=False)
    _, r2_pca = fit_predict("kalman", z, x, train, test, n_pca=10)
    assert oracle > 0.5  # the problem is informative but not trivial
    assert r2_ss > oracle - 0.02
    assert r2_full > oracle - 0.02
    assert r2_pca > oracle - 0.05
    # the raw observations alone (no dynamics) do worse than the filter
    _, r2_static = fit_predict("wiener", z, x, train, test, n_lags=1, lag_step=1)
    assert r2_ss > r2_static


@pytest.mark.parametrize("kind", ["wiener", "kalman"])
def test_no_test_leakage(kind):
    rng = np.random.default_rng(3)
    T = 3000
    X = rng.standard_normal((T, 8))
    Y = np.cumsum(rng.standard_normal((T, 2)), axis=0) * 0.05 + X[:, :2]
    train, test = _segment_masks(T)
    Y2 = Y.copy()
    Y2[test] = rng.standard_normal((int(test.sum()), 2)) * 100.0
    X2 = X.copy()
    X2[test] = rng.standard_normal((int(test.sum()), 8)) * 100.0
    kw = {"n_pca": 4} if kind == "kalman" else {"n_lags": 5}
    preds = []
    for Xi, Yi in ((X, Y), (X, Y2), (X2, Y2)):
        model = WienerDecoder(**kw) if kind == "wiener" else KalmanDecoder(**kw)
        model.fit(Xi, Yi, train)
        preds.append(model.predict(Xi, train))
    np.testing.assert_allclose(preds[1], preds[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(preds[2], preds[0], rtol=0, atol=1e-9)


def test_band_power_detects_20hz_burst():
    fs = 100.0
    rng = np.random.default_rng(0)
    T = 3000
    t = np.arange(T) / fs
    x = rng.standard_normal((T, 2)) * 0.5
    burst = (t >= 10) & (t < 15)
    x[burst, 0] += 2.0 * np.sin(2 * np.pi * 20 * t[burst])
    feats = band_power_features(x, fs=fs)
    assert feats.shape == (T, 2 * 5)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    names = band_power_feature_names(["a", "b"])
    assert names[4] == "8-13Hz:a" and names[6] == "13-30Hz:a" and len(names) == 10
    beta_a, beta_b = feats[:, 6], feats[:, 7]
    theta_a = feats[:, 2]
    inside = (t >= 10.5) & (t < 15)
    outside = ((t >= 2) & (t < 9)) | (t >= 16)
    assert beta_a[inside].mean() - beta_a[outside].mean() > 2.0  # log power, ~e^2 x
    assert abs(beta_b[inside].mean() - beta_b[outside].mean()) < 0.3  # other channel: no burst
    assert abs(theta_a[inside].mean() - theta_a[outside].mean()) < 0.5  # other band: little
    # causal: features before the burst do not depend on what comes after
    early = band_power_features(x[:1000], fs=fs)
    np.testing.assert_allclose(early[:, :8], feats[:1000, :8], rtol=1e-5, atol=1e-5)


def test_band_power_nyquist_band_and_validation():
    fs = 100.0
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 1))
    x[1000:, 0] += 3.0 * np.sin(2 * np.pi * 45 * np.arange(1000) / fs)
    f = band_power_features(x, fs=fs, bands=((30, 50),))
    assert f[1200:, 1].mean() - f[200:900, 1].mean() > 1.5
    with pytest.raises(ConfigError):
        band_power_features(x, fs=fs, bands=((55, 60),))
    with pytest.raises(ConfigError):
        band_power_features(x, fs=fs, lmp_hz=60.0)


def test_fit_predict_validation():
    X = np.zeros((100, 2))
    Y = np.zeros((100, 2))
    m = np.ones(100, dtype=bool)
    with pytest.raises(DataValidationError):
        fit_predict("wiener", X, Y, m, m)
    with pytest.raises(ConfigError):
        fit_predict("lda", X, Y, m, ~m)  # type: ignore[arg-type]
    with pytest.raises(DataValidationError):
        WienerDecoder().predict(X)
    with pytest.raises(DataValidationError):
        fit_predict("wiener", X, Y, m[:50], ~m)
