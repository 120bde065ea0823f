import numpy as np
import pytest
from tests.conftest import make_session

from lfpdistill.errors import DataValidationError
from lfpdistill.session import SPLITS, Session, check_unique_names, make_segments


def test_valid_session_properties():
    s = make_session(T=500, N=3, C=4)
    assert s.n_bins == 500 and s.n_units == 3 and s.n_channels == 4
    assert s.spikes.dtype == np.int32 and s.lfp.dtype == np.float32
    assert s.unit_ids[0] == "unit000" and len(s.channel_ids) == 4
    assert s.duration == pytest.approx(5.0)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"lfp": np.full((10, 3), np.nan, np.float32)}, ["'bad'", "'lfp'", "non-finite"]),
        ({"spikes": -np.ones((10, 3), np.int32)}, ["'spikes'", "non-negative"]),
        ({"spikes": np.full((10, 3), 0.5)}, ["'spikes'", "integer"]),
        ({"lfp": np.zeros((9, 3), np.float32)}, ["'lfp'", "T=10"]),
        ({"spikes": np.zeros((11, 3), np.int32)}, ["'spikes'", "T=10"]),
        ({"lfp": np.zeros((10, 0), np.float32)}, ["'lfp'", "C >= 1"]),
        ({"spikes": np.zeros((10, 0), np.int32)}, ["'spikes'", "N >= 1"]),
        ({}, ["'spikes/lfp'", "at least one"]),
        ({"lfp": np.zeros((10, 2), np.float32), "channel_ids": ["a", "a"]}, ["channel_ids", "unique"]),
        ({"lfp": np.zeros((10, 2), np.float32), "segments": [[0, 20, 0]]}, ["segments"]),
    ],
)
def test_validation_errors_name_session_and_field(kwargs, words):
    with pytest.raises(DataValidationError) as e:
        Session(name="bad", velocity=np.zeros((10, 2)), **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_nan_velocity_and_bad_shape():
    with pytest.raises(DataValidationError, match="velocity"):
        Session(name="v", velocity=np.full((5, 2), np.inf), lfp=np.zeros((5, 1)))
    with pytest.raises(DataValidationError, match=r"shape \[T, 2\]"):
        Session(name="v", velocity=np.zeros((5, 3)), lfp=np.zeros((5, 1)))


def test_duplicate_names_rejected():
    a, b = make_session("x", T=100), make_session("x", T=100)
    with pytest.raises(DataValidationError, match="duplicated"):
        check_unique_names([a, b])


def test_segments_deterministic_and_complete():
    a = make_segments(30_000, 0.01, 5.0, seed=3, session="s1")
    b = make_segments(30_000, 0.01, 5.0, seed=3, session="s1")
    c = make_segments(30_000, 0.01, 5.0, seed=4, session="s1")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 2], c[:, 2])
    assert a[0, 0] == 0 and a[-1, 1] == 30_000 and (a[1:, 0] == a[:-1, 1]).all()
    counts = np.bincount(a[:, 2], minlength=3)
    assert counts.tolist() == [48, 6, 6]


def test_split_mask_partitions_bins():
    s = make_session(T=3000)
    s.segments = make_segments(s.n_bins, s.bin_size, 5.0, seed=0)
    masks = [s.split_mask(k) for k in SPLITS]
    assert (sum(m.astype(int) for m in masks) == 1).all()


def test_too_short_for_splits():
    with pytest.raises(DataValidationError, match="at least 3"):
        make_segments(500, 0.01, 5.0, session="tiny")
