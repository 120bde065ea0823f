import numpy as np
import pytest
import torch
from tests.conftest import make_session
from torch.utils.data import DataLoader

from lfpdistill.data import (
    LazySession,
    SessionBatchSampler,
    WindowDataset,
    collate_windows,
    open_store,
    write_store,
)
from lfpdistill.errors import DataValidationError
from lfpdistill.session import SPLITS


@pytest.fixture
def store(tmp_path):
    sessions = [make_session("a", T=6000, C=5, seed=0), make_session("b", T=4000, C=9, seed=1)]
    return open_store(write_store(sessions, tmp_path).root)


@pytest.mark.parametrize("split", list(SPLITS))
def test_windows_stay_inside_split(store, split):
    sessions = [store.session(n) for n in store.names]
    ds = WindowDataset(sessions, split, window_s=1.0, stride_s=0.37)
    for i in range(len(ds)):
        item = ds[i]
        s = store.session(item["session"])
        mask = s.split_mask(split)
        assert mask[item["t_index"].numpy()].all()
    # every bin of the split is covered
    for s in sessions:
        covered = np.zeros(s.n_bins, bool)
        for i in range(len(ds)):
            if ds.session_of(i) == s.name:
                covered[ds[i]["t_index"].numpy()] = True
        assert (covered == s.split_mask(split)).all()


def test_lazy_and_memory_sources_agree(store):
    mem = WindowDataset([store.session("a")], "val", 0.5)
    lazy = WindowDataset([LazySession(store.path("a"))], "val", 0.5)
    assert len(mem) == len(lazy)
    for k in ("spikes", "lfp", "velocity"):
        torch.testing.assert_close(mem[3][k], lazy[3][k])


def test_collate_pads_mixed_channel_counts(store):
    ds = WindowDataset([store.session("a"), store.session("b")], "train", 0.5)
    ia = next(i for i in range(len(ds)) if ds.session_of(i) == "a")
    ib = next(i for i in range(len(ds)) if ds.session_of(i) == "b")
    batch = collate_windows([ds[ia], ds[ib]])
    assert batch["lfp"].shape == (2, 50, 9)
    assert batch["n_lfp"].tolist() == [5, 9]
    assert batch["session"] == ["a", "b"]
    assert (batch["lfp"][0, :, 5:] == 0).all()


@pytest.mark.parametrize("mode", ["mixed", "per_session"])
def test_sampler_modes(store, mode):
    ds = WindowDataset([store.session("a"), store.session("b")], "train", 0.5)
    sampler = SessionBatchSampler(ds, batch_size=8, mode=mode, seed=1)
    batches = list(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(ds)))
    if mode == "per_session":
        assert all(len({ds.session_of(i) for i in b}) == 1 for b in batches)
    else:
        assert any(len({ds.session_of(i) for i in b}) == 2 for b in batches)
    sampler.set_epoch(1)
    assert list(sampler) != batches
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_windows)
    first = next(iter(loader))
    assert first["velocity"].shape[1:] == (50, 2)


def test_window_longer_than_segments(store):
    with pytest.raises(DataValidationError, match="longer than every 'test'"):
        WindowDataset([store.session("a")], "test", window_s=30.0)


def test_requires_modality(store, tmp_path):
    s = make_session("nolfp", T=3000, lfp=False)
    write_store([s], tmp_path / "x")
    with pytest.raises(DataValidationError, match="has no lfp"):
        WindowDataset([open_store(tmp_path / "x").session("nolfp")], "train", 1.0, require=["lfp"])
