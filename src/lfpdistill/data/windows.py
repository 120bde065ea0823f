"""Fixed-length windows for models: dataset, collate and batch sampler.

Windows are cut only inside runs of contiguous segments of one split, so no window ever
straddles two splits. Sources may be in-memory :class:`~lfpdistill.session.Session` objects or
lazily read :class:`~lfpdistill.data.store.LazySession` files; both expose ``read``-able arrays.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataValidationError
from ..session import SPLITS, Session, pick_segments
from .store import LazySession

MODALITIES = ("spikes", "lfp")


class _Source(Protocol):
    name: str
    n_bins: int
    bin_size: float
    segments: np.ndarray | None

    def has(self, modality: str) -> bool: ...


def _read(src: Session | LazySession, key: str, start: int, stop: int) -> np.ndarray:
    if isinstance(src, LazySession):
        return src.read(key, start, stop)
    arr = getattr(src, key)
    return arr[start:stop]


def split_runs(segments: np.ndarray, split: str) -> list[tuple[int, int]]:
    """Merge contiguous segments of ``split`` into runs ``(start, stop)`` of bins.

    >>> seg = np.array([[0, 5, 0], [5, 10, 0], [10, 15, 2], [15, 20, 0]])
    >>> split_runs(seg, "train")
    [(0, 10), (15, 20)]
    """
    code = SPLITS[split]
    runs: list[tuple[int, int]] = []
    for a, b, c in sorted(segments.tolist()):
        if c != code:
            continue
        if runs and runs[-1][1] == a:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return runs


def budget_runs(src: Any, split: str, budget_s: float | None = None, seed: int = 0
                ) -> list[tuple[int, int]]:
    """The runs of ``split`` bins of ``src`` (a session with segments), or, with ``budget_s``,
    of exactly that many seconds of them: whole segments drawn at random (``seed`` and the
    session's name), then the start of one more."""
    if budget_s is None:
        return split_runs(src.segments, split)
    segs = src.segments[src.segments[:, 2] == SPLITS[split]][:, :2]
    need = int(round(budget_s / src.bin_size))
    have = int((segs[:, 1] - segs[:, 0]).sum())
    if need > have:
        raise DataValidationError(
            f"a budget of {budget_s:g} s exceeds the {have * src.bin_size:.0f} s of '{split}' "
            f"bins of session '{src.name}'; lower train_seconds to at most that")
    rng = np.random.default_rng([int(seed), zlib.crc32(src.name.encode())])
    picked = sorted(pick_segments(segs, need, rng))
    return split_runs(np.array([(a, b, SPLITS[split]) for a, b in picked]), split)


def runs_mask(runs: list[tuple[int, int]], n_bins: int) -> np.ndarray:
    """Boolean ``[n_bins]`` mask of the bins in ``runs``."""
    mask = np.zeros(n_bins, dtype=bool)
    for a, b in runs:
        mask[a:b] = True
    return mask


class WindowDataset(Dataset):
    """Windows of ``window_s`` seconds from one split of one or more sessions.

    Each item is a dict with ``session`` (name), ``start`` (first bin), ``t_index`` (``[L]``
    bin indices) and, per requested modality present in the session, ``spikes`` ``[L, N]``
    float32 counts, ``lfp`` ``[L, C]`` float32; always ``velocity`` ``[L, 2]``.

    ``stride_s`` defaults to the window length (non-overlapping). Windows start at the beginning
    of each run; the final partial window of a run is shifted to end at the run's end so every bin
    of the split is covered (``cover_tail=True``).

    ``budget_s`` keeps only that many seconds of each session's ``split``: whole segments drawn
    at random (from ``budget_seed`` and the session's name), the start of one more to meet it
    exactly; a piece shorter than a window gives no window.
    """

    def __init__(self, sources: Sequence[Session | LazySession], split: str, window_s: float,
                 stride_s: float | None = None,
                 modalities: Sequence[str] = MODALITIES, cover_tail: bool = True,
                 require: Sequence[str] = (), budget_s: float | None = None,
                 budget_seed: int = 0):
        if split not in SPLITS:
            raise DataValidationError(f"unknown split '{split}'; expected one of {list(SPLITS)}")
        if not sources:
            raise DataValidationError("no sessions given to the window dataset")
        self.sources = list(sources)
        self.split = split
        self.modalities = tuple(m for m in modalities if m in MODALITIES)
        bin_sizes = {round(s.bin_size, 9) for s in self.sources}
        if len(bin_sizes) != 1:
            raise DataValidationError(f"sessions have different bin sizes {sorted(bin_sizes)}; "
                                      "prepare them on one bin grid")
        self.bin_size = self.sources[0].bin_size
        self.window = int(round(window_s / self.bin_size))
        if self.window < 1:
            raise DataValidationError(f"window {window_s}s is shorter than one bin")
        self.stride = self.window if stride_s is None else max(1, int(round(stride_s / self.bin_size)))
        for src in self.sources:
            for m in require:
                if not src.has(m):
                    raise DataValidationError(
                        f"session '{src.name}' has no {m}; a {m} model needs sessions with {m} "
                        "(choose other --sessions)"
                    )
        self.index: list[tuple[int, int]] = []
        longest = 0
        for i, src in enumerate(self.sources):
            if src.segments is None:
                raise DataValidationError(f"session '{src.name}' has no split segments; "
                                          "load it from a store or run make_segments")
            for a, b in budget_runs(src, split, budget_s, budget_seed):
                longest = max(longest, b - a)
                if b - a < self.window:
                    continue
                starts = list(range(a, b - self.window + 1, self.stride))
                if cover_tail and starts[-1] + self.window < b:
                    starts.append(b - self.window)
                self.index.extend((i, s) for s in starts)
        if not self.index:
            raise DataValidationError(
                f"window of {window_s}s ({self.window} bins) is longer than every '{split}' "
                f"stretch of the sessions (longest {longest * self.bin_size:.2f}s); "
                "use a shorter window"
            )

    def __len__(self) -> int:
        return len(self.index)

    def session_of(self, idx: int) -> str:
        return self.sources[self.index[idx][0]].name

    def __getitem__(self, idx: int) -> dict[str, Any]:
        si, start = self.index[idx]
        src = self.sources[si]
        stop = start + self.window
        item: dict[str, Any] = {
            "session": src.name,
            "start": start,
            "t_index": torch.arange(start, stop, dtype=torch.long),
            "velocity": torch.from_numpy(np.asarray(_read(src, "velocity", start, stop),
                                                    dtype=np.float32)),
        }
        for m in self.modalities:
            if src.has(m):
                item[m] = torch.from_numpy(np.asarray(_read(src, m, start, stop), dtype=np.float32))
        return item


def collate_windows(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch windows of equal length; keep session names.

    Windows of sessions with different channel counts are zero-padded on the channel axis to the
    widest in the batch, and ``n_<modality>`` ``[B]`` gives each sample's true channel count.
    A modality is batched only when every window in the batch has it.
    """
    if not items:
        raise DataValidationError("cannot collate an empty batch")
    lengths = {it["velocity"].shape[0] for it in items}
    if len(lengths) != 1:
        raise DataValidationError(f"windows in a batch have different lengths {sorted(lengths)}")
    out: dict[str, Any] = {
        "session": [it["session"] for it in items],
        "start": torch.tensor([it["start"] for it in items], dtype=torch.long),
        "t_index": torch.stack([it["t_index"] for it in items]),
        "velocity": torch.stack([it["velocity"] for it in items]),
    }
    for m in MODALITIES:
        if all(m in it for it in items):
            widths = [it[m].shape[1] for it in items]
            wmax = max(widths)
            out[m] = torch.stack([
                torch.nn.functional.pad(it[m], (0, wmax - it[m].shape[1])) for it in items
            ])
            out[f"n_{m}"] = torch.tensor(widths, dtype=torch.long)
    return out


class SessionBatchSampler(Sampler[list[int]]):
    """Batches of window indices, either mixing sessions or keeping each batch to one session.

    ``mode="mixed"``: shuffle all windows together. ``mode="per_session"``: shuffle within each
    session, cut into batches, then shuffle the batch order. Under ``torch.distributed`` the batch
    list is sharded across ranks (each rank gets the same number of batches). A new permutation is
    drawn each epoch from ``seed + epoch`` (call :meth:`set_epoch`, as Lightning does).
    """

    def __init__(self, dataset: WindowDataset, batch_size: int, mode: str = "mixed",
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if mode not in ("mixed", "per_session"):
            raise DataValidationError(f"unknown batch mode '{mode}'; expected 'mixed' or 'per_session'")
        if batch_size < 1:
            raise DataValidationError(f"batch size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.mode = dataset, batch_size, mode
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.dataset)
        if self.mode == "mixed":
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            groups = [order]
        else:
            by_sess: dict[int, list[int]] = {}
            for i, (si, _) in enumerate(self.dataset.index):
                by_sess.setdefault(si, []).append(i)
            groups = [rng.permutation(v) if self.shuffle else np.array(v)
                      for _, v in sorted(by_sess.items())]
        batches: list[list[int]] = []
        for g in groups:
            for k in range(0, len(g), self.batch_size):
                b = [int(x) for x in g[k:k + self.batch_size]]
                if len(b) < self.batch_size and self.drop_last:
                    continue
                batches.append(b)
        if self.mode == "per_session" and self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _shard(self, batches: list[list[int]]) -> list[list[int]]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
            per_rank = math.ceil(len(batches) / world) if not self.drop_last else len(batches) // world
            padded = (batches * (1 + (per_rank * world) // max(len(batches), 1)))[: per_rank * world]
            return padded[rank::world]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._shard(self._batches()))

    def __len__(self) -> int:
        return len(self._shard(self._batches()))
