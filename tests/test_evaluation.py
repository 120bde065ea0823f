"""Centre-crop stitching of session latents and the linear probe."""

import numpy as np
import pytest
import torch
from tests.conftest import make_session

from lfpdistill.data.windows import split_runs
from lfpdistill.errors import CheckpointMismatchError, ConfigError, DataValidationError
from lfpdistill.evaluation import (
    compute_latents,
    linear_probe,
    probe_sessions,
    r2_xy,
    session_latents,
    stitch_plan,
    wiener_fits,
    wiener_probe,
)
from lfpdistill.models import ModelConfig, NeuralTransformer
from lfpdistill.session import SPLITS, make_segments


@pytest.mark.parametrize("a", [0, 7])
def test_stitch_plan_covers_every_bin_exactly_once(a):
    for n in range(1, 45):
        for L in range(1, 13):
            b = a + n
            plan = stitch_plan(a, b, L)
            covered = np.zeros(b, dtype=int)
            prev_to = a
            for s, e, kf, kt in plan:
                assert a <= s < e <= b and e - s == min(L, n), (a, b, L, plan)
                assert s <= kf < kt <= e, (a, b, L, plan)  # non-empty crop inside its window
                assert kf == prev_to  # in order, no gaps
                prev_to = kt
                covered[kf:kt] += 1
            assert prev_to == b
            assert (covered[a:b] == 1).all() and (covered[:a] == 0).all()
            # centre crop: each bin comes from (one of) the window(s) whose centre is nearest
            centres = np.array([s + (e - s) / 2 for s, e, _, _ in plan])
            for s, e, kf, kt in plan:
                for t in range(kf, kt):
                    d = abs(t + 0.5 - centres)
                    assert abs(t + 0.5 - (s + (e - s) / 2)) <= d.min() + 1e-9


def _segmented(T=1234, C=3, seg_s=0.5, seed=0):
    seg = make_segments(T, 0.01, segment_s=seg_s, seed=seed)
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, C)).astype(np.float32), seg


@pytest.mark.parametrize("window,batch_size", [(20, 64), (37, 3), (60, 1), (400, 8)])
def test_compute_latents_identity_reproduces_the_input(window, batch_size):
    x, seg = _segmented()
    calls = []

    def fn(xb):
        calls.append(tuple(xb.shape))
        return xb * 1.0

    out = compute_latents(fn, x, seg, window, batch_size=batch_size)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, x)
    assert all(b <= batch_size and length <= window for b, length, _ in calls)


@pytest.mark.parametrize("window", [10, 25, 64, 300])
def test_no_window_crosses_splits_and_bins_get_central_context(window):
    T = 2000
    x, seg = _segmented(T=T, C=1, seg_s=0.6, seed=3)
    code = np.zeros(T, dtype=np.float32)
    for s, e, c in seg:
        code[s:e] = c
    inp = np.stack([np.arange(T, dtype=np.float32), code], 1)

    def fn(xb):
        # per bin: its own time, the min/max split code seen in its window, window start/len
        B, L, _ = xb.shape
        lo = xb[..., 1].min(1).values[:, None].expand(B, L)
        hi = xb[..., 1].max(1).values[:, None].expand(B, L)
        start = xb[:, :1, 0].expand(B, L)
        return torch.stack([xb[..., 0], lo, hi, start, torch.full((B, L), float(L))], -1)

    out = compute_latents(fn, inp, seg, window)
    np.testing.assert_array_equal(out[:, 0], np.arange(T))
    np.testing.assert_array_equal(out[:, 1], code)   # window never saw another split
    np.testing.assert_array_equal(out[:, 2], code)
    # bins far from their run's edges sit within a quarter window (+1) of their window's centre
    for split in SPLITS:
        for a, b in split_runs(seg, split):
            if b - a <= window:
                assert (out[a:b, 4] == b - a).all() and (out[a:b, 3] == a).all()
                continue
            for t in range(a + window // 2, b - window // 2):
                centre = out[t, 3] + out[t, 4] / 2
                assert abs(t + 0.5 - centre) <= window / 4 + 1


def test_compute_latents_rejects_segments_that_miss_bins():
    x, seg = _segmented(T=500)
    with pytest.raises(DataValidationError, match="do not cover every bin"):
        compute_latents(lambda xb: xb, x, seg[:-1], 20)


def _model(modality="lfp", **kw):
    torch.manual_seed(0)
    c = dict(modality=modality, patch_size=2, d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    c.update(kw)
    return NeuralTransformer(ModelConfig(**c), {"s": 5, "t": 5, "u": 7})


def test_session_latents_match_direct_encoding_of_each_bins_window():
    model = _model()
    s = make_session("s", T=900, C=5, seed=1)
    s.segments = make_segments(s.n_bins, s.bin_size, segment_s=1.0, seed=0, session="s")
    z = session_latents(model, s, window_s=0.3, batch_size=5)
    assert z.shape == (900, 16) and np.isfinite(z).all()
    a, b = split_runs(s.segments, "train")[0]
    plan = stitch_plan(a, b, 30)
    for st, e, kf, kt in plan[:3]:
        ref = model.encode(torch.from_numpy(s.lfp[None, st:e]), ["s"])[0].numpy()
        np.testing.assert_allclose(z[kf:kt], ref[kf - st:kt - st], rtol=1e-5, atol=1e-5)
    # as_session reads the same data with another session's embeddings
    z_as = session_latents(model, s, 0.3, as_session="t")
    assert z_as.shape == z.shape and not np.allclose(z_as, z)
    with pytest.raises(CheckpointMismatchError, match="'zz' is not in the model's vocabulary"):
        session_latents(model, s, 0.3, as_session="zz")
    with pytest.raises(CheckpointMismatchError, match="built for 7"):
        session_latents(model, s, 0.3, as_session="u")


def test_session_latents_needs_the_models_modality():
    model = _model("spikes")
    s = make_session("s", T=600, C=5, spikes=False)
    s.segments = make_segments(s.n_bins, s.bin_size, segment_s=1.0)
    with pytest.raises(DataValidationError, match="has no spikes for a spikes model"):
        session_latents(model, s, 0.3)


def _masks(T, seed=0):
    seg = make_segments(T, 0.01, segment_s=1.0, seed=seed)
    mask = {}
    for split, c in SPLITS.items():
        m = np.zeros(T, dtype=bool)
        for a, b, cc in seg:
            if cc == c:
                m[a:b] = True
        mask[split] = m
    return mask


def test_linear_probe_recovers_a_linear_readout_and_rejects_noise():
    rng = np.random.default_rng(0)
    T = 3000
    m = _masks(T)
    z = rng.normal(size=(T, 8)).astype(np.float32)
    w = rng.normal(size=(8, 2))
    vel = (z @ w + np.array([0.5, -1.0])).astype(np.float32)
    res = linear_probe(z, vel, m["train"], m["test"])
    assert res["r2"] > 0.9999 and res["r2_x"] > 0.9999 and res["r2_y"] > 0.9999
    assert res["pred"].shape == (T, 2) and res["pred"].dtype == np.float32
    noise = rng.normal(size=(T, 8)).astype(np.float32)
    res = linear_probe(noise, vel, m["train"], m["test"])
    assert res["r2"] < 0.05
    # the fit uses the train bins only: a readout that differs on test bins is not learnt
    vel2 = vel.copy()
    vel2[m["test"]] = rng.normal(size=(int(m["test"].sum()), 2))
    assert linear_probe(z, vel2, m["train"], m["test"])["r2"] < 0.1
    # one fit predicts every bin: scoring its prediction on validation bins is the probe of
    # those bins (how the study scores r2_val without a second fit)
    res = linear_probe(noise + 0.3 * z, vel, m["train"], m["test"])
    want = linear_probe(noise + 0.3 * z, vel, m["train"], m["val"])["r2"]
    assert r2_xy(vel[m["val"]], res["pred"][m["val"]])["r2"] == pytest.approx(want, abs=1e-6)


def test_linear_probe_errors():
    z = np.zeros((10, 3), dtype=np.float32)
    m = np.ones(10, dtype=bool)
    with pytest.raises(DataValidationError, match="latents have 10 bins but velocity has 9"):
        linear_probe(z, np.zeros((9, 2)), m, m)
    z[3, 1] = np.nan
    with pytest.raises(DataValidationError, match="NaN"):
        linear_probe(z, np.zeros((10, 2)), m, m)


def test_probe_sessions_and_r2_xy():
    s = make_session("p", T=1500, C=4, seed=2)
    s.segments = make_segments(s.n_bins, s.bin_size, segment_s=1.0, seed=1, session="p")
    rows = probe_sessions({"p": np.concatenate([s.velocity, s.lfp], 1)}, [s])
    assert rows == [{"session": "p", "split": "test", "decoder": "linear", "lag_s": 0.0,
                     "r2": pytest.approx(1.0),
                     "r2_x": pytest.approx(1.0), "r2_y": pytest.approx(1.0)}]
    lagged = probe_sessions({"p": np.concatenate([s.velocity, s.lfp], 1)}, [s], lag_s=0.1)
    assert lagged[0]["lag_s"] == pytest.approx(0.1) and lagged[0]["r2"] < rows[0]["r2"]
    y = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
    r = r2_xy(y, np.stack([y[:, 0], np.full(3, 2.0)], 1))
    assert r == {"r2": 0.5, "r2_x": 1.0, "r2_y": 0.0}


def test_lagged_probe_reads_velocity_from_earlier_latents():
    """Velocity that follows the latents by 7 bins is recovered exactly with lag 7 only."""
    rng = np.random.default_rng(0)
    T = 3000
    z = rng.normal(size=(T, 4)).cumsum(0) * 0.1 + rng.normal(size=(T, 4))
    W = rng.normal(size=(4, 2))
    vel = np.zeros((T, 2))
    vel[7:] = z[:-7] @ W
    train = np.zeros(T, bool)
    train[100:2000] = True
    test = np.zeros(T, bool)
    test[2200:] = True
    assert linear_probe(z, vel, train, test, lag_bins=7)["r2"] == pytest.approx(1.0, abs=1e-6)
    assert linear_probe(z, vel, train, test)["r2"] < 0.9
    with pytest.raises(ConfigError, match="lag"):
        linear_probe(z, vel, train, test, lag_bins=-1)
    with pytest.raises(ConfigError, match="longer than the session"):
        linear_probe(z, vel, train, test, lag_bins=T)


def test_wiener_probe_reads_history_the_same_bin_probe_cannot():
    """Velocity driven by the latents 10 bins earlier (inside the 10 lags x 2 bins of the
    classic Wiener filter): the decoder-matched probe recovers it, the same-bin probe does not."""
    rng = np.random.default_rng(1)
    T = 4000
    z = rng.normal(size=(T, 6))
    vel = np.zeros((T, 2))
    vel[10:] = z[:-10] @ rng.normal(size=(6, 2))
    m = _masks(T)
    res = wiener_probe(z, vel, m["train"], m["test"])
    # lags never reach across a split boundary: the first 10 bins of each 100-bin test segment
    # have no history, so ~0.9 of the variance is explained
    assert 0.85 < res["r2"] < 0.95
    assert linear_probe(z, vel, m["train"], m["test"])["r2"] < 0.05
    # predictions only where they were scored; the same numbers through probe_sessions
    assert np.isnan(res["pred"][~m["test"]]).all() and np.isfinite(res["pred"][m["test"]]).all()
    s = make_session("w", T=T, C=4, seed=2)
    s.velocity = vel.astype(np.float32)
    s.segments = make_segments(s.n_bins, s.bin_size, segment_s=5.0, seed=1, session="w")
    row = probe_sessions({"w": z}, [s], decoder="wiener")[0]
    assert row["decoder"] == "wiener" and row["r2"] > 0.9
    # too few lags to reach 10 bins back: nothing to read
    assert probe_sessions({"w": z}, [s], decoder="wiener", n_lags=3, lag_step=2)[0]["r2"] < 0.05


def test_wiener_probe_errors():
    z = np.zeros((40, 3), dtype=np.float32)
    m = np.ones(40, dtype=bool)
    with pytest.raises(DataValidationError, match="latents have 40 bins but velocity has 9"):
        wiener_probe(z, np.zeros((9, 2)), m, m)
    with pytest.raises(DataValidationError, match="train and test bins overlap"):
        wiener_probe(z, np.zeros((40, 2)), m, m)
    z[3, 1] = np.inf
    with pytest.raises(DataValidationError, match="NaN"):
        wiener_probe(z, np.zeros((40, 2)), m, m)
    s = make_session("p", T=600, C=4, seed=2)
    with pytest.raises(ConfigError, match="unknown probe decoder 'ridge'"):
        probe_sessions({"p": s.lfp}, [s], decoder="ridge")
    with pytest.raises(ConfigError, match="lag applies to the linear probe only"):
        probe_sessions({"p": s.lfp}, [s], decoder="wiener", lag_s=0.1)


def test_wiener_fits_in_parallel_match_one_at_a_time():
    rng = np.random.default_rng(3)
    jobs = []
    for k in range(3):
        s = make_session(f"s{k}", T=2000, C=4, seed=k)
        s.segments = make_segments(s.n_bins, s.bin_size, segment_s=2.0, seed=k, session=s.name)
        jobs.append((np.concatenate([s.velocity, rng.normal(size=(2000, 5))], 1), s))
    serial = wiener_fits(jobs, n_lags=4, workers=1)
    parallel = wiener_fits(jobs, n_lags=4, workers=2)
    # test R² and the same fit scored on the validation bins
    assert [set(r) for r in serial] == [{"r2", "r2_x", "r2_y", "r2_val"}] * 3
    for a, b in zip(serial, parallel, strict=True):
        assert a["r2"] == pytest.approx(b["r2"], abs=1e-9)
    direct = wiener_probe(jobs[1][0], jobs[1][1].velocity, jobs[1][1].split_mask("train"),
                          jobs[1][1].split_mask("test"), n_lags=4)
    assert serial[1]["r2"] == pytest.approx(direct["r2"])
    assert wiener_fits([], workers=2) == []
