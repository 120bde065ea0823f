"""Deployable read-outs: the lagged read-out's folded coefficients, the combined (latents +
band power) read-out's penalties chosen on validation bins only, and the streamed band-power
features and lag ring against their offline twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfpdistill.commands.stream_readout import BandPowerStepper, LagRing
from lfpdistill.errors import ConfigError, DataValidationError
from lfpdistill.evaluation import WienerDecoder, band_power_features, lagged, mask_groups
from lfpdistill.evaluation.readouts import (
    BlockWienerDecoder,
    combined_probe,
    deployable_choice,
    fit_readout,
    readout_features,
)


def _data(T=3000, d=8, C=4, seed=0):
    rng = np.random.default_rng(seed)
    lfp = rng.standard_normal((T, C)).astype(np.float32)
    z = rng.standard_normal((T, d)).astype(np.float32)
    bp = band_power_features(lfp)
    # velocity: a latent two bins back and the LMP of channel 0, plus noise
    zc = np.r_[np.zeros(2), z[:-2, 0]]
    v = np.stack([zc + 2.0 * bp[:, 0], z[:, 1]], 1) + 0.3 * rng.standard_normal((T, 2))
    seg = np.arange(T) // 100
    return lfp, z, v.astype(np.float64), seg % 5 < 3, seg % 5 == 3, seg % 5 == 4


def test_streamed_band_power_equals_the_offline_features():
    rng = np.random.default_rng(1)
    lfp = (rng.standard_normal((400, 3)) * 50).astype(np.float32)
    want = band_power_features(lfp, fs=100.0)
    bp = BandPowerStepper(3, 100.0)
    state = bp.initial_state()
    got = []
    with torch.no_grad():
        for x in lfp:
            f, *state = bp(torch.from_numpy(x), *state)
            got.append(f.numpy())
    np.testing.assert_allclose(np.stack(got), want, rtol=1e-5, atol=1e-4)
    assert [tuple(t.shape) for t in state] == [tuple(t.shape) for t in bp.initial_state()]


def test_lag_ring_gives_the_offline_lags():
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    ring = LagRing(2, n_lags=4, lag_step=3)
    (state,) = ring.initial_state()
    rows = []
    for x in X:
        row, state = ring(torch.from_numpy(x), state)
        rows.append(row.numpy())
    np.testing.assert_array_equal(np.stack(rows), lagged(X, 4, 3))


@pytest.mark.parametrize("kind", ["linear_probe", "wiener", "combined"])
def test_folded_readout_predicts_as_its_decoder(kind):
    lfp, z, v, train, val, test = _data()
    r = fit_readout(kind, z, v, train, val, lfp, 100.0, n_lags=5, lag_step=2)
    f = readout_features(z, lfp, r.features, 100.0)
    pred = r.predict(f)
    assert pred.shape == v.shape and np.isfinite(pred).all()
    if kind == "wiener":  # the folded coefficients are the decoder's, on one continuous run
        dec = WienerDecoder(n_lags=5, lag_step=2).fit(z[train], v[train],
                                                      groups=mask_groups(train))
        np.testing.assert_allclose(pred, dec.predict(z), rtol=1e-4, atol=1e-4)
    assert r.weight.shape == (2, r.n_lags * f.shape[1])


def test_combined_readout_uses_both_blocks_and_beats_either_alone():
    lfp, z, v, train, val, test = _data()
    res = combined_probe(z, lfp, v, train, val, test, 100.0, n_lags=5, lag_step=2)
    lat = WienerDecoder(n_lags=5, lag_step=2).fit(z[train], v[train], groups=mask_groups(train))
    r2_lat = lat.score(z[test], v[test], groups=mask_groups(test))
    assert res["r2"] > r2_lat + 0.05  # the band-power block carries the LMP term
    assert np.isnan(res["pred"][~test]).all() and np.isfinite(res["pred"][test]).all()


def test_combined_penalties_never_read_a_test_bin():
    lfp, z, v, train, val, test = _data()
    a = combined_probe(z, lfp, v, train, val, test, 100.0, n_lags=3, lag_step=2)
    v2 = v.copy()
    v2[test] = np.random.default_rng(5).standard_normal((int(test.sum()), 2)) * 100
    b = combined_probe(z, lfp, v2, train, val, test, 100.0, n_lags=3, lag_step=2)
    assert (a["alpha_latents"], a["alpha_bandpower"], a["r2_val"]) == \
        (b["alpha_latents"], b["alpha_bandpower"], b["r2_val"])
    # changing the validation targets does change what is chosen or how it scores
    v3 = v.copy()
    v3[val] = np.random.default_rng(6).standard_normal((int(val.sum()), 2))
    c = combined_probe(z, lfp, v3, train, val, test, 100.0, n_lags=3, lag_step=2)
    assert c["r2_val"] != a["r2_val"]


def test_combined_readout_refuses_bad_splits():
    lfp, z, v, train, val, test = _data(T=1000)
    with pytest.raises(DataValidationError, match="overlap"):
        combined_probe(z, lfp, v, train, val | test, test, 100.0)
    with pytest.raises(DataValidationError, match="has none"):
        fit_readout("combined", z, v, train, np.zeros_like(val), lfp)
    with pytest.raises(ConfigError, match="unknown read-out"):
        fit_readout("kalman", z, v, train, val, lfp)
    with pytest.raises(ConfigError, match="validation rows"):
        BlockWienerDecoder(n_first=4).fit(z, v)
    bad = z.copy()
    bad[3, 0] = np.nan
    with pytest.raises(DataValidationError, match="NaN/inf"):
        fit_readout("wiener", bad, v, train, val)
    # the study's probe refuses as the deployed read-out does
    with pytest.raises(DataValidationError, match="has none"):
        combined_probe(z, lfp, v, train, np.zeros_like(val), test, 100.0)
    with pytest.raises(DataValidationError, match="train and validation bins overlap"):
        combined_probe(z, lfp, v, train, val | train, test, 100.0)
    bad_lfp = lfp.copy()
    bad_lfp[5, 1] = np.inf
    with pytest.raises(DataValidationError, match="LFP that is not finite"):
        combined_probe(z, bad_lfp, v, train, val, test, 100.0)


def test_deployable_choice_reads_validation_only():
    rows = [{"model": "a", "r2_val": 0.2, "r2": 0.9}, {"model": "b", "r2_val": 0.3, "r2": 0.1},
            {"model": "c", "r2_val": None, "r2": 1.0}]
    assert deployable_choice(rows)["model"] == "b"
    assert deployable_choice([{"model": "c", "r2": 1.0}]) is None
