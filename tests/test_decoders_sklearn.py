"""The classic decoders as scikit-learn estimators (clone, params, score, check_estimator,
split-aware rows through ``groups``), the Kalman gain from the Riccati equation, and the probes
built on the same estimator."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lfpdistill.errors import ConfigError, DataValidationError
from lfpdistill.evaluation import (
    DecoderNotFittedError,
    KalmanDecoder,
    WienerDecoder,
    fit_predict,
    group_runs,
    linear_probe,
    linear_probe_decoder,
    mask_groups,
    probes,
    r2_mean,
)

SKLEARN = tuple(int(p) for p in sklearn.__version__.split(".")[:2])

#: The checks a time-bin decoder cannot pass: its prediction for a row depends on the rows
#: before it (lags, filter state), so predicting a subset or a permutation of the rows differs.
TIME_DEPENDENT = {
    "check_methods_subset_invariance": "a prediction depends on the preceding rows (lags, "
                                       "filter state)",
    "check_methods_sample_order_invariance": "a prediction depends on the preceding rows (lags, "
                                             "filter state)",
}


def _data(T: int = 1500, F: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, 2-D velocity driven by the features 4 bins earlier, and 100-bin segment ids."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((T, F))
    Y = np.zeros((T, 2))
    Y[4:] = X[:-4] @ rng.standard_normal((F, 2))
    Y += 0.1 * rng.standard_normal(Y.shape)
    return X, Y, np.arange(T) // 100


# ---------------------------------------------------------------------------- check_estimator
if SKLEARN >= (1, 6):
    from sklearn.utils.estimator_checks import parametrize_with_checks

    @parametrize_with_checks([WienerDecoder(), KalmanDecoder()],
                             expected_failed_checks=lambda est: TIME_DEPENDENT)
    def test_sklearn_estimator_checks(estimator, check):
        """scikit-learn's check_estimator, one test per check (all but TIME_DEPENDENT pass)."""
        check(estimator)


# ---------------------------------------------------------------------------- params, clone
def test_parameters_stored_as_given_and_checked_by_fit():
    alphas = [1.0, 10.0]
    dec = WienerDecoder(n_lags=3, alphas=alphas)
    assert dec.alphas is alphas and dec.get_params()["n_lags"] == 3
    twin = clone(dec)
    assert twin is not dec and twin.get_params() == dec.get_params()
    assert not hasattr(twin, "coef_") and not hasattr(twin, "n_features_in_")
    dec.set_params(n_lags=2, integrate=True)
    assert dec.n_lags == 2 and dec.integrate is True
    X, Y, _ = _data(300)
    for bad in (WienerDecoder(n_lags=0), WienerDecoder(lag_step=-1), WienerDecoder(cv_folds=1),
                WienerDecoder(alphas=[]), WienerDecoder(alphas=[0.0, 1.0]),
                WienerDecoder(alphas=[-1.0]), WienerDecoder(n_lags=2.5)):  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="WienerDecoder"):
            bad.fit(X, Y)
    for bad in (KalmanDecoder(n_pca=0), KalmanDecoder(obs_lag=-1), KalmanDecoder(ridge=-1.0)):
        with pytest.raises(ConfigError, match="KalmanDecoder"):
            bad.fit(X, Y)
    assert KalmanDecoder(n_pca=0).get_params()["n_pca"] == 0  # construction never refuses


@pytest.mark.parametrize("cls", [WienerDecoder, KalmanDecoder])
def test_fitted_attributes_score_and_1d_targets(cls):
    X, Y, _ = _data()
    dec = cls().fit(X[:1200], Y[:1200])
    assert dec.n_features_in_ == X.shape[1]
    pred = dec.predict(X[1200:])
    assert pred.shape == (300, 2)
    assert dec.score(X[1200:], Y[1200:]) == pytest.approx(r2_mean(Y[1200:], pred))
    one = cls().fit(X[:1200], Y[:1200, 0])
    assert one.predict(X[1200:]).shape == (300,)
    if cls is WienerDecoder:  # outputs are fit independently (the Kalman state couples them)
        np.testing.assert_allclose(one.predict(X[1200:]), pred[:, 0], rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------- rows and runs
def test_group_runs_and_mask_groups():
    assert group_runs(None, 3) == [(0, 3)] and group_runs(None, 0) == []
    assert group_runs(np.array([5, 5, 2, 2, 5]), 5) == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(DataValidationError, match="one label per row"):
        group_runs(np.zeros(4), 5)
    m = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    assert mask_groups(m).tolist() == [0, 0, 1, 2, 2]


@pytest.mark.parametrize("cls", [WienerDecoder, KalmanDecoder])
def test_groups_and_mask_are_the_same_split_aware_fit(cls):
    """``fit(X, Y, mask)`` / ``predict(X, mask)`` on a recording equal ``fit``/``predict`` on
    its rows with ``groups=mask_groups(mask)``; without groups every given row is predicted."""
    X, Y, seg = _data()
    test = seg % 5 == 2
    train = ~test
    a = cls().fit(X, Y, train)
    b = cls().fit(X[train], Y[train], groups=mask_groups(train))
    pa = a.predict(X, test)
    pb = b.predict(X[test], groups=mask_groups(test))
    assert pa.shape == pb.shape == (int(test.sum()), 2)
    np.testing.assert_array_equal(pa, pb)
    assert b.predict(X).shape == (len(X), 2)  # every row it is given
    # groups: a run's predictions never read another run's rows
    rows = X[test].copy()
    g = seg[test]
    first = g == g[0]
    rows[first] = 1e3  # wreck the first run
    wrecked = b.predict(rows, groups=g)
    np.testing.assert_allclose(wrecked[~first], pb[~first], rtol=0, atol=1e-9)
    assert not np.allclose(b.predict(rows)[~first], pb[~first])  # without groups they do
    with pytest.raises(ConfigError, match="either a mask"):
        b.predict(X, test, groups=seg)


def test_pipeline_gridsearch_and_group_cross_validation():
    X, Y, seg = _data(2000)
    pipe = make_pipeline(StandardScaler(), WienerDecoder(alphas=(1e-3, 1.0)))
    search = GridSearchCV(pipe, {"wienerdecoder__n_lags": [1, 3]}, cv=GroupKFold(4))
    search.fit(X, Y, groups=seg)
    assert search.best_params_ == {"wienerdecoder__n_lags": 3}  # Y reads X 4 bins back
    # the fit of every fold sees the segment runs (fit params are indexed like X)
    res = cross_validate(WienerDecoder(n_lags=3), X, Y, groups=seg, cv=GroupKFold(5),
                         params={"groups": seg})
    assert res["test_score"].shape == (5,) and (res["test_score"] > 0.8).all()
    kal = cross_validate(KalmanDecoder(n_pca=3), X, Y, groups=seg, cv=GroupKFold(5),
                         params={"groups": seg})
    assert np.isfinite(kal["test_score"]).all()


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", [WienerDecoder, KalmanDecoder])
def test_bad_input_is_one_line(cls):
    X, Y, _ = _data(300)
    name = cls.__name__
    bad = X.copy()
    bad[7, 2] = np.nan
    cases = [
        (lambda: cls().fit(bad, Y), "X contains NaN or inf \\(first at row 7, column 2\\)"),
        (lambda: cls().fit(X, Y[:-1]), "inconsistent numbers of samples"),
        (lambda: cls().fit(X, None), "requires y"),
        (lambda: cls().fit(X[:, 0], Y), "Expected 2D array"),
        (lambda: cls().fit(X[:5], Y[:5]), "5 samples to fit on"),
        (lambda: cls().fit(X, Y, np.ones(10, bool)), "mask must be a boolean array"),
        (lambda: cls().fit(X, Y, groups=np.zeros(5)), "one label per row"),
    ]
    fitted = cls().fit(X, Y)
    cases += [
        (lambda: fitted.predict(X[:, :3]), "X has 3 features, but"),
        (lambda: fitted.predict(bad), "X contains NaN"),
    ]
    for call, match in cases:
        with pytest.raises(DataValidationError, match=match) as info:
            call()
        assert "\n" not in str(info.value) and name in str(info.value)
    with pytest.raises(DecoderNotFittedError, match="not fitted") as info:
        cls().predict(X)
    assert isinstance(info.value, NotFittedError) and isinstance(info.value, DataValidationError)


# ---------------------------------------------------------------------------- Kalman gain
def _sda_prior(A: np.ndarray, W: np.ndarray, H: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Steady-state prior covariance of the Kalman filter by the structure-preserving doubling
    algorithm (an independent solver of the filtering Riccati equation)."""
    a, g, h = A.T.copy(), H.T @ np.linalg.solve(Q, H), W.copy()
    eye = np.eye(len(A))
    for _ in range(60):
        m = np.linalg.inv(eye + g @ h)
        a, g, h = a @ m @ a, g + a @ m @ g @ a.T, h + a.T @ h @ m @ a
    return h


def test_kalman_steady_gain_solves_the_riccati_equation():
    """A random walk seen through heavy noise: the filter converges so slowly that a fixed
    number of Riccati iterations stops far from the steady state (29 % off here)."""
    rng = np.random.default_rng(0)
    T = 20000
    x = np.cumsum(rng.normal(scale=1e-6, size=(T, 2)), axis=0)
    z = x @ rng.normal(size=(3, 2)).T + 10.0 * rng.normal(size=(T, 3))
    dec = KalmanDecoder(n_pca=None).fit(z, x)
    prior = _sda_prior(dec.A_, dec.W_, dec.H_, dec.Q_)
    post = np.linalg.inv(np.linalg.inv(prior) + dec.H_.T @ np.linalg.solve(dec.Q_, dec.H_))
    np.testing.assert_allclose(dec.A_ @ post @ dec.A_.T + dec.W_, prior, rtol=1e-9)  # fixed point
    gain = post @ dec.H_.T @ np.linalg.inv(dec.Q_)
    np.testing.assert_allclose(dec.K_, gain, rtol=1e-6)
    assert KalmanDecoder(n_pca=None, steady_state=False).fit(z, x).K_ is None


def test_kalman_without_a_steady_state_is_one_line(monkeypatch):
    from scipy import linalg

    def fail(*a, **k):
        raise np.linalg.LinAlgError("Failed to find a finite solution.")

    X, Y, _ = _data(300)
    monkeypatch.setattr(linalg, "solve_discrete_are", fail)
    with pytest.raises(DataValidationError, match="no steady-state filter.*steady_state=False"):
        KalmanDecoder().fit(X, Y)
    KalmanDecoder(steady_state=False).fit(X, Y)  # the time-varying filter does not need it


# ---------------------------------------------------------------------------- probes
def test_linear_probe_is_the_zero_lag_unpenalised_wiener_decoder(monkeypatch):
    rng = np.random.default_rng(4)
    T = 2000
    z = rng.normal(size=(T, 6)).astype(np.float32)
    vel = z @ rng.normal(size=(6, 2)) + rng.normal(size=(T, 2))
    train = np.arange(T) < 1500
    ref = LinearRegression().fit(z[train].astype(np.float64), vel[train]).predict(z)
    fits: list[WienerDecoder] = []
    real_fit = WienerDecoder.fit

    def spy(self, *args, **kwargs):
        fits.append(self)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(WienerDecoder, "fit", spy)
    res = linear_probe(z, vel, train, ~train)
    assert len(fits) == 1 and fits[0].get_params() == linear_probe_decoder().get_params()
    np.testing.assert_allclose(res["pred"], ref, rtol=1e-5, atol=1e-5)
    probes.wiener_probe(z, vel, train, ~train, n_lags=2)
    assert len(fits) == 2 and type(fits[1]) is WienerDecoder


def test_fit_predict_goes_through_groups():
    X, Y, seg = _data()
    test = seg % 5 == 1
    pred, r2 = fit_predict("wiener", X, Y, ~test, test, n_lags=3)
    dec = WienerDecoder(n_lags=3).fit(X[~test], Y[~test], groups=mask_groups(~test))
    np.testing.assert_array_equal(pred, dec.predict(X[test], groups=mask_groups(test)))
    assert r2 == pytest.approx(dec.score(X[test], Y[test], groups=mask_groups(test)))
