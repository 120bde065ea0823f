"""Helpers shared by the raw-data readers: errors, file-kind sniffing, bin grids."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..errors import DataValidationError

log = logging.getLogger("lfpdistill.readers")

#: Text that starts the 128-byte header of MAT-files of each version.
_MAT73 = b"MATLAB 7.3 MAT-file"
_MAT5 = b"MATLAB 5.0 MAT-file"
_HDF5_SIG = b"\x89HDF\r\n\x1a\n"


class RawDataError(DataValidationError):
    """A raw data file (or folder) is missing, unreadable or not in the expected layout."""


def file_kind(path: Path) -> str:
    """Sniff ``path``: ``'mat7.3'``, ``'mat5'``, ``'hdf5'`` (plain), ``'missing'``, ``'empty'``
    or ``'unknown'``.

    A MATLAB v7.3 file is HDF5 behind a 512-byte user block whose text starts
    ``MATLAB 7.3 MAT-file``; v5 (and v6/v7) files start with ``MATLAB 5.0 MAT-file``.
    """
    path = Path(path)
    if not path.is_file():
        return "missing"
    with open(path, "rb") as fh:
        head = fh.read(128)
        if not head:
            return "empty"
        if head.startswith(_MAT73):
            return "mat7.3"
        if head.startswith(_MAT5):
            return "mat5"
        if head.startswith(_HDF5_SIG):
            return "hdf5"
        for off in (512, 1024, 2048):  # HDF5 superblock after a user block
            fh.seek(off)
            if fh.read(8) == _HDF5_SIG:
                return "hdf5"
    return "unknown"



def require_hdf5(path: Path, what: str) -> None:
    """One-line :class:`RawDataError` unless ``path`` exists and starts with the HDF5
    signature (``what`` names the expected kind of file in the message)."""
    kind = file_kind(path)
    if kind == "missing":
        raise RawDataError(f"'{path}' does not exist")
    if kind != "hdf5":
        raise RawDataError(f"'{path}' is not {what} (no HDF5 signature; truncated?)")

def first_line(e: BaseException) -> str:
    """The first line of an exception's message (for one-line user errors)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def overlap_grid(spans: list[tuple[float, float]], bin_size: float, what: str) -> tuple[float,
                                                                                        int]:
    """Bin grid covering the intersection of time ``spans``: ``(grid_start, n_bins)``.

    Raises :class:`RawDataError` naming ``what`` when the spans do not overlap by one bin.
    """
    start = max(a for a, _ in spans)
    stop = min(b for _, b in spans)
    n = int(math.floor((stop - start) / bin_size + 1e-9)) if stop > start else 0
    if n < 1:
        desc = ", ".join(f"[{a:.3f}, {b:.3f}] s" for a, b in spans)
        raise RawDataError(f"{what}: time spans {desc} do not overlap (no common bin)")
    return float(start), n


def trials_from_changes(t: np.ndarray, marker: np.ndarray, grid_start: float, n_bins: int,
                        bin_size: float) -> np.ndarray | None:
    """Trials as ``[K, 2]`` (start_bin, stop_bin): a new trial starts where any column of
    ``marker`` (sampled at times ``t``) changes value. NaN == NaN here."""
    m = np.asarray(marker, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    same = (m[1:] == m[:-1]) | (np.isnan(m[1:]) & np.isnan(m[:-1]))
    change = np.flatnonzero(~same.all(axis=1)) + 1
    starts_t = np.concatenate([[t[0]], t[change]])
    b = np.floor((starts_t - grid_start) / bin_size).astype(np.int64)
    b = np.unique(np.clip(b, 0, n_bins))
    if b[0] != 0:
        b = np.concatenate([[0], b])
    bounds = np.concatenate([b, [n_bins]])
    bounds = np.unique(bounds)
    if len(bounds) < 2:
        return None
    return np.stack([bounds[:-1], bounds[1:]], axis=1).astype(np.int64)
