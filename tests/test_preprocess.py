"""Tests of the broadband -> LFP chain (in-memory and streamed)."""

from __future__ import annotations

import h5py
import numpy as np
import pydantic
import pytest

from lfpdistill.errors import ConfigError, DataValidationError, LfpDistillError
from lfpdistill.preprocess import (
    LfpChainConfig,
    _decimate_block,
    broadband_to_lfp,
    broadband_to_lfp_chunked,
    plan_chain,
)

FS = 24414.0625  # TDT rate of the O'Doherty broadband files
RAW = LfpChainConfig(car=False, zscore=False, highpass_hz=0.0)  # linear, unit gain in band


def _sines(fs: float, dur: float, freqs_amps: list[tuple[float, float]], n_ch: int = 2,
           t0: float = 0.0) -> np.ndarray:
    t = t0 + np.arange(int(np.ceil(fs * dur))) / fs
    x = sum(a * np.sin(2 * np.pi * f * t) for f, a in freqs_amps)
    return np.repeat(np.asarray(x)[:, None], n_ch, axis=1)


def test_plan_rational_factor_and_notches() -> None:
    p = plan_chain(FS)
    assert (p.up, p.down, p.fi) == (128, 3125, 1000.0)
    assert p.notch_freqs == tuple(60.0 * k for k in range(1, 9))  # below 500 Hz
    assert plan_chain(2000.0).down == 2 and plan_chain(1000.0).fir is None
    assert plan_chain(FS, cfg=LfpChainConfig(n_harmonics=2)).notch_freqs == (60.0, 120.0)


def test_sine_in_band_kept_at_bin_centres_and_line_noise_removed() -> None:
    t0 = 12.345
    x = _sines(FS, 8.0, [(7.0, 1.0), (60.0, 0.5), (120.0, 0.3), (180.0, 0.2)], t0=t0)
    y = broadband_to_lfp(x, FS, 0.01, RAW, t0=t0)
    assert y.dtype == np.float32 and y.shape == (800, 2)
    tc = t0 + (np.arange(800) + 0.5) * 0.01  # bin centres
    err = np.abs(y[100:-100, 0] - np.sin(2 * np.pi * 7.0 * tc[100:-100]))
    assert err.max() < 2e-3


def test_grid_start_and_n_bins_shift_the_grid() -> None:
    x = _sines(FS, 6.0, [(5.0, 1.0)])
    y = broadband_to_lfp(x, FS, 0.01, RAW, t0=100.0, grid_start=101.2037, n_bins=300)
    tc = 101.2037 + (np.arange(300) + 0.5) * 0.01
    ref = np.sin(2 * np.pi * 5.0 * (tc - 100.0))
    assert np.abs(y[50:-50, 0] - ref[50:-50]).max() < 2e-3


def test_out_of_band_attenuated() -> None:
    # 880/960/1030 Hz would alias to 120/40/30 Hz at the 1 kHz intermediate rate
    for f in (90.0, 300.0, 880.0, 960.0, 1030.0, 2000.0, 11000.0):
        y = broadband_to_lfp(_sines(FS, 4.0, [(f, 1.0)]), FS, 0.01, RAW)
        assert np.abs(y[100:-100]).max() < 0.01, f


def test_highpass_removes_drift_and_keeps_band() -> None:
    t = np.arange(int(60 * 2000)) / 2000.0
    x = (np.sin(2 * np.pi * 10 * t) + 5.0 * t / 60 + 100.0)[:, None] * np.ones((1, 3))
    y = broadband_to_lfp(x, 2000.0, 0.01, LfpChainConfig(car=False, zscore=False))
    tc = (np.arange(len(y)) + 0.5) * 0.01
    core = slice(2000, -2000)
    assert np.abs(y[core, 0] - np.sin(2 * np.pi * 10 * tc[core])).max() < 0.03


def test_car_and_zscore() -> None:
    rng = np.random.default_rng(0)
    n = int(2000 * 20)
    common = rng.standard_normal(n)
    x = rng.standard_normal((n, 4)) * [1, 2, 3, 4] + common[:, None] * 10
    y = broadband_to_lfp(x, 2000.0, 0.01, LfpChainConfig(zscore=False))
    assert np.abs(y.sum(axis=1)).max() < 1e-4  # common average removed exactly
    z = broadband_to_lfp(x, 2000.0, 0.01)
    assert np.allclose(z.mean(axis=0), 0, atol=1e-5) and np.allclose(z.std(axis=0), 1, atol=1e-4)


def test_integer_input_and_scale_invariance() -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((int(np.ceil(FS * 3)), 3)) * 300).astype(np.int16)
    a = broadband_to_lfp(x, FS)
    b = broadband_to_lfp(x.astype(np.float64) * 0.195e-6, FS)
    assert a.shape == (300, 3) and np.abs(a - b).max() < 1e-4


def test_decimation_blocks_are_exact() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30011, 3))
    p = plan_chain(FS)
    n_int = -(-len(x) * p.up // p.down)

    def read(a: int, b: int) -> np.ndarray:
        return x[a:b]

    whole = _decimate_block(read, len(x), 3, p, 0, n_int, "x")
    parts = np.concatenate(
        [_decimate_block(read, len(x), 3, p, a, min(a + 97, n_int), "x") for a in range(0, n_int, 97)]
    )
    assert np.abs(whole - parts).max() < 1e-12


@pytest.mark.parametrize("fs,chunk_s", [(FS, 2.0), (2000.0, 1.3), (1000.0, 3.0)])
def test_chunked_equals_in_memory(tmp_path, fs: float, chunk_s: float) -> None:
    rng = np.random.default_rng(3)
    n = int(fs * 14)
    t = np.arange(n) / fs
    x = (rng.standard_normal((n, 5)) * 200 + 400 * np.sin(2 * np.pi * 60 * t)[:, None]
         + np.cumsum(rng.standard_normal((n, 5)), axis=0)).astype(np.int16)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("data", data=x, chunks=(4096, 5))
    ref = broadband_to_lfp(x, fs, 0.01, t0=5.0)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        d = f["data"]
        y = broadband_to_lfp_chunked(lambda a, b: d[a:b], n, 5, fs, 0.01, None, 5.0,
                                     chunk_s=chunk_s)
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 1e-4


def test_chunked_with_custom_grid_matches() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((int(FS * 10), 2))
    kw = dict(grid_start=1.234, n_bins=700)
    ref = broadband_to_lfp(x, FS, 0.01, t0=0.5, **kw)
    y = broadband_to_lfp_chunked(lambda a, b: x[a:b], len(x), 2, FS, 0.01, None, 0.5,
                                 chunk_s=1.0, **kw)
    assert np.abs(y - ref).max() < 1e-4


def test_bad_input_rejected_in_one_line() -> None:
    x = np.random.default_rng(5).standard_normal((20000, 2))
    x[15000, 1] = np.nan
    with pytest.raises(DataValidationError, match="non-finite.*sample 15000 channel 1") as e:
        broadband_to_lfp(x, 2000.0)
    assert "\n" not in str(e.value)
    with pytest.raises(DataValidationError, match="non-finite"):
        broadband_to_lfp_chunked(lambda a, b: x[a:b], len(x), 2, 2000.0, chunk_s=1.0)
    x[15000, 1] = np.inf
    with pytest.raises(DataValidationError, match="non-finite"):
        broadband_to_lfp(x, 2000.0)
    with pytest.raises(DataValidationError, match="expected at least"):
        broadband_to_lfp(np.zeros((100, 2)), 2000.0)
    with pytest.raises(DataValidationError, match="shape"):
        broadband_to_lfp(np.zeros(1000), 2000.0)
    with pytest.raises(DataValidationError, match="at least 2 channels"):
        broadband_to_lfp(np.zeros((20000, 1)), 2000.0)
    with pytest.raises(DataValidationError, match="not inside the signal"):
        broadband_to_lfp(np.zeros((20000, 2)), 2000.0, grid_start=5.0, n_bins=600)
    with pytest.raises(DataValidationError, match=r"gave shape \[10, 3\]; expected \[20000, 2\]"):
        broadband_to_lfp_chunked(lambda a, b: np.zeros((10, 3)), 20000, 2, 2000.0)


def test_config_errors() -> None:
    with pytest.raises(pydantic.ValidationError):
        LfpChainConfig(notch=50)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="lowpass_hz"):
        plan_chain(FS, cfg=LfpChainConfig(lowpass_hz=400.0))
    with pytest.raises(LfpDistillError, match="bin rate"):
        plan_chain(50.0, 0.01)


def test_general_grid_path_matches_polyphase_path() -> None:
    from lfpdistill.preprocess import _bin_grid, _stage2

    p = plan_chain(2000.0)
    rng = np.random.default_rng(6)
    v = rng.standard_normal((4000, 3))
    base, frac, step = _bin_grid(p, 0.01237, 300)
    assert step == 10
    fast = _stage2(v, 0, len(v), p, base, frac, step)
    slow = _stage2(v, 0, len(v), p, base, frac, 0)
    assert np.abs(fast - slow).max() < 1e-12


def test_non_integer_samples_per_bin_chunked_and_in_band() -> None:
    fs, bin_size = 2000.0, 1 / 300  # 3.33 intermediate samples per bin: general path
    x = _sines(fs, 10.0, [(11.0, 1.0)], n_ch=3)
    cfg = LfpChainConfig(car=False, zscore=False, highpass_hz=0.0, lowpass_hz=100.0)
    y = broadband_to_lfp(x, fs, bin_size, cfg)
    tc = (np.arange(len(y)) + 0.5) * bin_size
    assert np.abs(y[300:-300, 0] - np.sin(2 * np.pi * 11 * tc[300:-300])).max() < 2e-3
    y2 = broadband_to_lfp_chunked(lambda a, b: x[a:b], len(x), 3, fs, bin_size, cfg,
                                  chunk_s=1.7)
    assert np.abs(y2 - y).max() < 1e-6


def test_scale_is_applied_before_zscore() -> None:
    x = _sines(2000.0, 5.0, [(9.0, 100.0)], n_ch=2)
    a = broadband_to_lfp(x, 2000.0, cfg=RAW, scale=0.01)
    b = broadband_to_lfp(x * 0.01, 2000.0, cfg=RAW)
    assert np.abs(a - b).max() < 1e-6


def test_flat_channel_stays_flat() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((20000, 3))
    x[:, 1] = 0.0
    y = broadband_to_lfp(x, 2000.0, cfg=LfpChainConfig(car=False))
    assert np.abs(y[:, 1]).max() < 1e-6 and abs(float(y[:, 0].std()) - 1) < 1e-4
