"""The one data model that flows through lfpdistill: a recording :class:`Session`.

A session holds aligned arrays on one bin grid (default 10 ms):

- ``spikes``   ``[T, N]`` non-negative integer counts (units or channels), optional
- ``lfp``      ``[T, C]`` float32, processed LFP (z-scored, 0.05-50 Hz content), optional
- ``velocity`` ``[T, 2]`` float32 hand/cursor velocity (x, y)

at least one of ``spikes`` and ``lfp`` must be present. Readers produce sessions, the store
saves them, loaders cut them into windows for models. LFP values must lie within
:data:`LFP_MAX_ABS` (1e6) of zero: processed LFP is z-scored, and far larger values overflow the
models' float32 energies into NaN latents.

Splits are made of whole *segments* (default 5 s): ``segments`` is an ``[S, 3]`` int64 array of
``(start_bin, stop_bin, split)`` with ``split`` one of :data:`SPLITS` codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataValidationError

#: Split names and their integer codes in ``Session.segments[:, 2]``.
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
SPLIT_NAMES: dict[int, str] = {v: k for k, v in SPLITS.items()}
#: largest |LFP| a session may hold (z-scored LFP is within a few tens; float32 squares of
#: values much beyond this overflow inside the models)
LFP_MAX_ABS = 1e6


def _fail(session: str, field_name: str, expected: str, got: str) -> DataValidationError:
    return DataValidationError(
        f"session '{session}': field '{field_name}' {got}; expected {expected}"
    )


@dataclass
class Session:
    """A recording session on a common bin grid.

    Construction validates every field and raises :class:`DataValidationError` with a one-line
    message naming the session, the field and what was expected.
    """

    name: str
    velocity: np.ndarray
    spikes: np.ndarray | None = None
    lfp: np.ndarray | None = None
    subject: str = "unknown"
    bin_size: float = 0.01
    unit_ids: list[str] | None = None
    channel_ids: list[str] | None = None
    electrode_positions: np.ndarray | None = None
    trials: np.ndarray | None = None
    segments: np.ndarray | None = None
    latents: np.ndarray | None = None
    t0: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name or "/" in name:
            raise DataValidationError(
                f"session name {name!r} is invalid; expected a non-empty string without '/'"
            )
        if not (np.isfinite(self.bin_size) and self.bin_size > 0):
            raise _fail(name, "bin_size", "a positive number of seconds", f"is {self.bin_size}")
        self.bin_size = float(self.bin_size)

        vel = np.asarray(self.velocity)
        if vel.ndim != 2 or vel.shape[1] != 2:
            raise _fail(name, "velocity", "shape [T, 2]", f"has shape {list(vel.shape)}")
        if vel.shape[0] < 1:
            raise _fail(name, "velocity", "at least one time bin", "is empty")
        if not np.issubdtype(vel.dtype, np.number):
            raise _fail(name, "velocity", "numeric values", f"has dtype {vel.dtype}")
        vel = vel.astype(np.float32, copy=False)
        _check_finite(name, "velocity", vel)
        self.velocity = vel
        T = vel.shape[0]

        if self.spikes is None and self.lfp is None:
            raise _fail(name, "spikes/lfp", "at least one of spikes and lfp", "are both missing")

        if self.spikes is not None:
            self.spikes = _check_counts(name, np.asarray(self.spikes), T)
            self.unit_ids = _check_ids(name, "unit_ids", self.unit_ids, self.spikes.shape[1], "unit")
        elif self.unit_ids is not None:
            raise _fail(name, "unit_ids", "no unit ids when spikes are absent", "is set")

        if self.lfp is not None:
            lfp = np.asarray(self.lfp)
            if lfp.ndim != 2:
                raise _fail(name, "lfp", "shape [T, C]", f"has shape {list(lfp.shape)}")
            if lfp.shape[0] != T:
                raise _fail(name, "lfp", f"T={T} time bins (as velocity)", f"has T={lfp.shape[0]}")
            if lfp.shape[1] < 1:
                raise _fail(name, "lfp", "C >= 1 channels", "has 0 channels")
            if not np.issubdtype(lfp.dtype, np.number):
                raise _fail(name, "lfp", "numeric values", f"has dtype {lfp.dtype}")
            lfp = lfp.astype(np.float32, copy=False)
            _check_finite(name, "lfp", lfp)
            peak = float(np.abs(lfp).max()) if lfp.size else 0.0
            if peak > LFP_MAX_ABS:
                raise _fail(name, "lfp", f"processed (z-scored) LFP within +-{LFP_MAX_ABS:g}",
                            f"has values up to {peak:.3g}; scale it (lfpdistill prepare applies "
                            "the LFP chain, which z-scores each channel)")
            self.lfp = lfp
            self.channel_ids = _check_ids(name, "channel_ids", self.channel_ids, lfp.shape[1], "ch")
            if self.electrode_positions is not None:
                pos = np.asarray(self.electrode_positions, dtype=np.float32)
                if pos.ndim != 2 or pos.shape[0] != lfp.shape[1]:
                    raise _fail(
                        name, "electrode_positions", f"shape [C={lfp.shape[1]}, 2 or 3]",
                        f"has shape {list(pos.shape)}",
                    )
                _check_finite(name, "electrode_positions", pos)
                self.electrode_positions = pos
        elif self.channel_ids is not None:
            raise _fail(name, "channel_ids", "no channel ids when lfp is absent", "is set")

        if self.latents is not None:
            lat = np.asarray(self.latents, dtype=np.float32)
            if lat.ndim != 2 or lat.shape[0] != T:
                raise _fail(name, "latents", f"shape [T={T}, L]", f"has shape {list(lat.shape)}")
            _check_finite(name, "latents", lat)
            self.latents = lat

        if self.trials is not None:
            self.trials = _check_intervals(name, "trials", np.asarray(self.trials), T, ncols=2)
        if self.segments is not None:
            seg = _check_intervals(name, "segments", np.asarray(self.segments), T, ncols=3)
            if not np.isin(seg[:, 2], list(SPLIT_NAMES)).all():
                raise _fail(name, "segments", "split codes 0 (train), 1 (val), 2 (test)",
                            "has other codes")
            self.segments = seg

    # ------------------------------------------------------------------ properties
    @property
    def n_bins(self) -> int:
        return int(self.velocity.shape[0])

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.n_bins * self.bin_size

    @property
    def n_units(self) -> int:
        return 0 if self.spikes is None else int(self.spikes.shape[1])

    @property
    def n_channels(self) -> int:
        return 0 if self.lfp is None else int(self.lfp.shape[1])

    def has(self, modality: str) -> bool:
        """Whether the session carries ``modality`` ('spikes' or 'lfp')."""
        if modality not in ("spikes", "lfp"):
            raise DataValidationError(f"unknown modality '{modality}'; expected 'spikes' or 'lfp'")
        return getattr(self, modality) is not None

    def split_mask(self, split: str) -> np.ndarray:
        """Boolean ``[T]`` mask of the bins in ``split`` ('train', 'val' or 'test')."""
        if split not in SPLITS:
            raise DataValidationError(f"unknown split '{split}'; expected one of {list(SPLITS)}")
        if self.segments is None:
            raise _fail(self.name, "segments", "a split table (run make_segments)", "is missing")
        mask = np.zeros(self.n_bins, dtype=bool)
        for start, stop, code in self.segments:
            if code == SPLITS[split]:
                mask[start:stop] = True
        return mask

    def split_segments(self, split: str) -> np.ndarray:
        """``[K, 2]`` (start, stop) bins of the segments in ``split``."""
        if self.segments is None:
            raise _fail(self.name, "segments", "a split table (run make_segments)", "is missing")
        if split not in SPLITS:
            raise DataValidationError(f"unknown split '{split}'; expected one of {list(SPLITS)}")
        seg = self.segments[self.segments[:, 2] == SPLITS[split]]
        return seg[:, :2].copy()


def pick_segments(segs: np.ndarray, need: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A random subset of the segments ``segs`` (``[K, 2]`` start, stop bins) holding exactly
    ``need`` bins: whole segments in the order of ``rng.permutation``, then the start of one
    more. Returned in that order; the caller checks that ``need`` does not exceed the total."""
    out: list[tuple[int, int]] = []
    got = 0
    for k in rng.permutation(len(segs)):
        a, b = (int(v) for v in segs[k])
        take = min(b - a, need - got)
        out.append((a, a + take))
        got += take
        if got == need:
            break
    return out


# ---------------------------------------------------------------------- helpers
def _check_finite(session: str, field_name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.argwhere(bad)[0].tolist()
        n = int(bad.sum())
        raise _fail(session, field_name, "finite values (clean or interpolate NaN/inf first)",
                    f"has {n} non-finite value(s), first at index {idx}")


def _check_counts(session: str, arr: np.ndarray, T: int) -> np.ndarray:
    if arr.ndim != 2:
        raise _fail(session, "spikes", "shape [T, N]", f"has shape {list(arr.shape)}")
    if arr.shape[0] != T:
        raise _fail(session, "spikes", f"T={T} time bins (as velocity)", f"has T={arr.shape[0]}")
    if arr.shape[1] < 1:
        raise _fail(session, "spikes", "N >= 1 units", "has 0 units")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise _fail(session, "spikes", "finite integer counts", "has NaN/inf values")
        if not np.array_equal(arr, np.round(arr)):
            raise _fail(session, "spikes", "integer spike counts per bin", "has non-integer values")
    elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise _fail(session, "spikes", "integer spike counts", f"has dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise _fail(session, "spikes", "non-negative counts", f"has minimum {arr.min()}")
    if arr.size and arr.max() > np.iinfo(np.int32).max:
        raise _fail(session, "spikes", "counts below 2**31", f"has maximum {arr.max()}")
    return arr.astype(np.int32, copy=False)


def _check_ids(session: str, field_name: str, ids: Sequence[str] | None, n: int,
               prefix: str) -> list[str]:
    if ids is None:
        return [f"{prefix}{i:03d}" for i in range(n)]
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise _fail(session, field_name, f"{n} identifiers (one per column)", f"has {len(ids)}")
    if len(set(ids)) != n:
        raise _fail(session, field_name, "unique identifiers", "has duplicates")
    return ids


def _check_intervals(session: str, field_name: str, arr: np.ndarray, T: int,
                     ncols: int) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[1] != ncols:
        raise _fail(session, field_name, f"shape [K, {ncols}]", f"has shape {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
        raise _fail(session, field_name, "integer bin indices", "has non-integer values")
    arr = arr.astype(np.int64)
    if len(arr) and (
        (arr[:, 0] < 0).any() or (arr[:, 1] > T).any() or (arr[:, 1] <= arr[:, 0]).any()
    ):
        raise _fail(session, field_name, f"0 <= start < stop <= T={T}", "has intervals outside")
    return arr


def check_unique_names(sessions: Iterable[Session]) -> None:
    """Raise if two sessions share a name (names key session embeddings and files)."""
    seen: set[str] = set()
    for s in sessions:
        if s.name in seen:
            raise DataValidationError(
                f"session '{s.name}': field 'name' is duplicated; expected unique session names"
            )
        seen.add(s.name)


def make_segments(n_bins: int, bin_size: float, segment_s: float = 5.0,
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 0, session: str = "") -> np.ndarray:
    """Cut ``n_bins`` into whole segments and assign each to train/val/test.

    The last partial segment (shorter than half a segment) is merged into the one before it.
    Assignment is a seeded permutation, deterministic for the same (n_bins, seed, session).
    Returns ``[S, 3]`` int64 (start, stop, split code).

    >>> seg = make_segments(1000, 0.01, segment_s=1.0, seed=0)
    >>> seg.shape, int(seg[-1, 1])
    ((10, 3), 1000)
    >>> sorted(set(seg[:, 2].tolist()))
    [0, 1, 2]
    """
    seg_len = int(round(segment_s / bin_size))
    if seg_len < 1:
        raise DataValidationError(f"segment length {segment_s}s is shorter than one bin")
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise DataValidationError(f"split fractions {fractions} must be >= 0 and sum to 1")
    starts = list(range(0, n_bins, seg_len))
    bounds = [(s, min(s + seg_len, n_bins)) for s in starts]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < seg_len / 2:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    n = len(bounds)
    needed = 1 + sum(f > 0 for f in fractions[1:])
    if n < needed:
        raise DataValidationError(
            f"session '{session}' has only {n} segment(s) of {segment_s}s; "
            f"expected at least {needed} for train/val/test (record longer or use shorter segments)"
        )
    n_val = max(int(round(fractions[1] * n)), 1 if fractions[1] > 0 else 0)
    n_test = max(int(round(fractions[2] * n)), 1 if fractions[2] > 0 else 0)
    n_train = n - n_val - n_test
    # seed from the session name so sessions of one store get different permutations
    name_key = int.from_bytes(session.encode()[:8].ljust(8, b"\0"), "little") if session else 0
    rng = np.random.default_rng([seed, n_bins, name_key])
    order = rng.permutation(n)
    codes = np.zeros(n, dtype=np.int64)
    codes[order[n_train:n_train + n_val]] = SPLITS["val"]
    codes[order[n_train + n_val:]] = SPLITS["test"]
    out = np.array([(a, b, c) for (a, b), c in zip(bounds, codes, strict=True)], dtype=np.int64)
    return out
