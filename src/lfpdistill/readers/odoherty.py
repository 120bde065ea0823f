"""O'Doherty, Cardoso, Makin & Sabes reaching data (monkey I, "indy"), Zenodo record 583331.

Per session ``indy_YYYYMMDD_NN`` the raw folder holds

- ``indy_YYYYMMDD_NN.mat`` -- MATLAB v7.3 (HDF5 behind a 512-byte user block, read with h5py, so
  MATLAB's column-major arrays appear transposed): ``t`` (1, k) s at 250 Hz on an absolute clock;
  ``cursor_pos`` (2, k) mm; ``finger_pos`` (3 or 6, k); ``target_pos`` (2, k) (a change marks a
  new trial); ``spikes`` (u, n) object references, u units per channel (the first unsorted),
  n = 96 or 192 channels, each to a vector of spike times in s -- an empty cell references a
  (2,) uint64 dataset carrying the attribute ``MATLAB_empty``; ``wf`` (skipped); ``chan_names``
  (1, n) references to uint16 character arrays ('M1 001', ...).
- optionally ``indy_YYYYMMDD_NN.nwb`` -- broadband, NWB 1.0.6 read with h5py:
  ``acquisition/timeseries/broadband/data`` (N, C) int16 with attribute ``conversion`` (V per
  count), ``.../timestamps`` (N,) s at ~24 414 Hz on the .mat clock (or ``starting_time`` with
  attribute ``rate``), ``.../electrode_names`` (C,).

The session's bins cover the overlap of the behaviour clock ``t`` and (if present) the broadband
clock; ``Session.t0`` is the absolute time of the first bin's start. Spikes are counted per
channel (``bin_by="channel"``: threshold crossings, all units of a channel summed) or per sorted
unit (``bin_by="unit"``: unsorted units dropped). Velocity is ``gradient(cursor_pos, t)`` (mm/s)
linearly interpolated at bin centres. LFP is the broadband signal through
:func:`lfpdistill.preprocess.broadband_to_lfp_chunked`. A session without a broadband file is
spikes-only (``lfp=None``; logged, and ``meta['lfp_source']`` says why).

Why ~400 lines: two file formats of one dataset (MATLAB v7.3 spikes, NWB 1.0.6 broadband)
and their clock alignment, which only make sense together.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pydantic

from ..preprocess import LfpChainConfig, bin_spike_times, broadband_to_lfp_chunked, sample_at_bins
from ..session import Session
from ._common import RawDataError, file_kind, first_line, log, overlap_grid, trials_from_changes

BROADBAND = "acquisition/timeseries/broadband"


class ODohertyOptions(pydantic.BaseModel, extra="forbid"):
    """Reader options. ``lfp=False`` ignores broadband files (spikes only)."""

    bin_by: Literal["channel", "unit"] = "channel"
    lfp: bool = True
    chunk_s: float = pydantic.Field(60.0, gt=0)


def list_sessions(raw_dir: Path) -> list[str]:
    """Session names (``*.mat`` stems) in ``raw_dir``, sorted."""
    return sorted(p.stem for p in Path(raw_dir).glob("*.mat") if not p.name.startswith("."))


def session_files(raw_dir: Path, name: str) -> list[Path]:
    """The raw files a session is read from (for change detection)."""
    files = [Path(raw_dir) / f"{name}.mat", Path(raw_dir) / f"{name}.nwb"]
    return [p for p in files if p.exists()]


# --------------------------------------------------------------------------------- .mat v7.3
def _open_mat73(path: Path) -> h5py.File:
    kind = file_kind(path)
    if kind == "missing":
        raise RawDataError(f"'{path}' does not exist")
    if kind == "mat5":
        raise RawDataError(
            f"'{path}' is a MATLAB v5/v7 MAT-file; expected MATLAB v7.3 (HDF5) as released on "
            "Zenodo (re-save with save(..., '-v7.3') or use the original file)"
        )
    if kind in ("empty", "unknown"):
        raise RawDataError(f"'{path}' is not a MATLAB v7.3 file (no MAT/HDF5 header; truncated?)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise RawDataError(f"'{path}' is unreadable (truncated or corrupt: {first_line(e)})") \
            from None


def _field(f: h5py.File, name: str, path: Path) -> h5py.Dataset:
    if name not in f:
        raise RawDataError(f"'{path}': field '{name}' is missing")
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise RawDataError(f"'{path}': field '{name}' is not an array")
    return obj


def _numeric(ds: h5py.Dataset, name: str, path: Path) -> np.ndarray:
    try:
        arr = ds[()]
    except OSError as e:
        raise RawDataError(f"'{path}': field '{name}' is unreadable ({first_line(e)})") from None
    if not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype,
                                                                      np.complexfloating)):
        raise RawDataError(f"'{path}': field '{name}' has dtype {arr.dtype}; expected numbers")
    return np.asarray(arr, dtype=np.float64)


def _samples_by_columns(arr: np.ndarray, k: int, name: str, path: Path,
                        n_cols: tuple[int, ...]) -> np.ndarray:
    """Orient a MATLAB (h5py-transposed) matrix as [k, d]."""
    if arr.ndim != 2:
        raise RawDataError(f"'{path}': field '{name}' has shape {list(arr.shape)}; expected 2-D")
    if arr.shape[1] == k and arr.shape[0] in n_cols:
        arr = arr.T
    elif not (arr.shape[0] == k and arr.shape[1] in n_cols):
        raise RawDataError(
            f"'{path}': field '{name}' has shape {list(arr.shape)}; expected ({n_cols[0]}, {k}) "
            "to match 't'"
        )
    return arr


def _cell_values(f: h5py.File, ref: Any, name: str, path: Path) -> np.ndarray:
    """Contents of one cell: float64 vector (empty for MATLAB_empty / null references)."""
    if not ref:
        return np.empty(0)
    try:
        obj = f[ref]
    except (ValueError, KeyError, OSError) as e:
        raise RawDataError(f"'{path}': field '{name}' has a broken reference ({first_line(e)})") \
            from None
    if not isinstance(obj, h5py.Dataset):
        raise RawDataError(f"'{path}': field '{name}' references a group; expected an array")
    if obj.attrs.get("MATLAB_empty", 0):
        return np.empty(0)
    return _numeric(obj, name, path).ravel()


def _char_cell(f: h5py.File, ref: Any, path: Path) -> str:
    """A ``chan_names`` cell: MATLAB characters (UTF-16 code units stored as numbers)."""
    if not ref:
        return ""
    try:
        obj = f[ref]
    except (ValueError, KeyError, OSError) as e:
        raise RawDataError(f"'{path}': field 'chan_names' has a broken reference "
                           f"({first_line(e)})") from None
    if not isinstance(obj, h5py.Dataset):
        raise RawDataError(f"'{path}': field 'chan_names' references a group; expected text")
    if obj.attrs.get("MATLAB_empty", 0):
        return ""
    codes = np.asarray(obj[()]).ravel()
    if codes.dtype.kind not in "fiu" or not np.isfinite(codes).all() \
            or (codes < 0).any() or (codes > 0x10FFFF).any() or (codes != np.round(codes)).any():
        raise RawDataError(f"'{path}': field 'chan_names' holds a cell that is not text "
                           f"({codes.dtype}, e.g. {codes[:3].tolist()!r}); expected a cell array "
                           "of channel names")
    return "".join(chr(int(c)) for c in codes)


def _read_mat(path: Path) -> dict[str, Any]:
    with _open_mat73(path) as f:
        t = _numeric(_field(f, "t", path), "t", path).ravel()
        k = len(t)
        if k < 2:
            raise RawDataError(f"'{path}': field 't' has {k} sample(s); expected at least 2")
        if not np.isfinite(t).all() or not (np.diff(t) > 0).all():
            raise RawDataError(f"'{path}': field 't' is not finite and strictly increasing")
        cursor = _samples_by_columns(_numeric(_field(f, "cursor_pos", path), "cursor_pos", path),
                                     k, "cursor_pos", path, (2,))
        if not np.isfinite(cursor).all():
            raise RawDataError(f"'{path}': field 'cursor_pos' contains NaN/inf")
        target = None
        if "target_pos" in f:
            target = _samples_by_columns(_numeric(f["target_pos"], "target_pos", path), k,
                                         "target_pos", path, (2, 3))
        sp = _field(f, "spikes", path)
        if h5py.check_ref_dtype(sp.dtype) is not h5py.Reference or sp.ndim != 2:
            raise RawDataError(
                f"'{path}': field 'spikes' is not a 2-D cell array of references "
                f"(dtype {sp.dtype}, shape {list(sp.shape)})"
            )
        refs = sp[()]
        names: list[str] | None = None
        if "chan_names" in f:
            cn = f["chan_names"]
            if h5py.check_ref_dtype(cn.dtype) is not h5py.Reference:
                raise RawDataError(f"'{path}': field 'chan_names' is not a cell array of strings")
            names = [_char_cell(f, r, path) for r in cn[()].ravel()]
        # the documented orientation is (units, channels); accept the transpose when names say so
        if names is not None and refs.shape[1] != len(names) and refs.shape[0] == len(names):
            refs = refs.T
        n_ch = refs.shape[1]
        if names is None:
            names = [f"ch{i + 1:03d}" for i in range(n_ch)]
        elif len(names) != n_ch:
            raise RawDataError(
                f"'{path}': field 'chan_names' has {len(names)} names but 'spikes' has {n_ch} "
                "channels"
            )
        cells = [[_cell_values(f, refs[u, c], "spikes", path) for u in range(refs.shape[0])]
                 for c in range(n_ch)]
    for c, ch in enumerate(cells):
        for u, times in enumerate(ch):
            if times.size and not np.isfinite(times).all():
                raise RawDataError(
                    f"'{path}': field 'spikes' cell (unit {u + 1}, channel {c + 1}) has NaN/inf"
                )
    return {"t": t, "cursor": cursor, "target": target, "cells": cells,
            "names": _unique(names)}


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        n = n.strip() or "ch"
        if n in seen:
            seen[n] += 1
            n = f"{n}#{seen[n]}"
        else:
            seen[n] = 0
        out.append(n)
    return out


# --------------------------------------------------------------------------- NWB 1.0.6 broadband
class Broadband:
    """An opened NWB 1.0.6 broadband file (use as a context manager)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        kind = file_kind(self.path)
        if kind in ("mat5", "mat7.3"):
            raise RawDataError(f"'{path}' is a MAT-file; expected an NWB 1.0.6 (HDF5) broadband file")
        if kind != "hdf5":
            raise RawDataError(f"'{path}' is not an HDF5/NWB file (no HDF5 signature; truncated?)")
        try:
            self.f = h5py.File(self.path, "r")
        except OSError as e:
            raise RawDataError(f"'{path}' is unreadable (truncated or corrupt: {first_line(e)})") \
                from None
        try:
            self._load()
        except BaseException:
            self.f.close()
            raise

    def _load(self) -> None:
        f, path = self.f, self.path
        if BROADBAND not in f:
            hint = ""
            ver = f.attrs.get("nwb_version", b"")
            ver = ver.decode() if isinstance(ver, bytes) else str(ver)
            if ver.startswith("2"):
                hint = f" (this is NWB {ver}; read it with --format nwb)"
            raise RawDataError(f"'{path}': field '{BROADBAND}' is missing{hint}")
        g = f[BROADBAND]
        if "data" not in g or not isinstance(g["data"], h5py.Dataset):
            raise RawDataError(f"'{path}': field '{BROADBAND}/data' is missing")
        d = g["data"]
        if d.ndim != 2 or d.shape[0] < 2:
            raise RawDataError(
                f"'{path}': field '{BROADBAND}/data' has shape {list(d.shape)}; expected [N, C]"
            )
        if not np.issubdtype(d.dtype, np.number):
            raise RawDataError(f"'{path}': field '{BROADBAND}/data' has dtype {d.dtype}")
        self.data = d
        self.n, self.c = int(d.shape[0]), int(d.shape[1])
        self.conversion = float(d.attrs.get("conversion", 1.0))
        if not (np.isfinite(self.conversion) and self.conversion > 0):
            raise RawDataError(
                f"'{path}': attribute '{BROADBAND}/data.conversion' is {self.conversion}; "
                "expected a positive number"
            )
        if "timestamps" in g:
            ts = g["timestamps"]
            if ts.shape != (self.n,):
                raise RawDataError(
                    f"'{path}': field '{BROADBAND}/timestamps' has shape {list(ts.shape)}; "
                    f"expected [{self.n}] (one per sample of data)"
                )
            self.t0, t_last = float(ts[0]), float(ts[self.n - 1])
            if not (np.isfinite([self.t0, t_last]).all() and t_last > self.t0):
                raise RawDataError(f"'{path}': field '{BROADBAND}/timestamps' is not increasing")
            self.fs = (self.n - 1) / (t_last - self.t0)
            probe = np.unique(np.linspace(0, self.n - 1, 17).astype(np.int64))
            got = np.array([float(ts[i]) for i in probe])
            dev = np.abs(got - (self.t0 + probe / self.fs)).max()
            if not np.isfinite(got).all() or dev > 2.0 / self.fs + 1e-9 * abs(t_last):
                raise RawDataError(
                    f"'{path}': field '{BROADBAND}/timestamps' is not uniformly sampled (deviates "
                    f"by {dev:.4g} s); gaps are not supported"
                )
        elif "starting_time" in g and "rate" in g["starting_time"].attrs:
            self.t0 = float(g["starting_time"][()])
            self.fs = float(g["starting_time"].attrs["rate"])
        else:
            raise RawDataError(
                f"'{path}': field '{BROADBAND}/timestamps' (or 'starting_time' with 'rate') is "
                "missing"
            )
        self.t_last = self.t0 + (self.n - 1) / self.fs
        if "electrode_names" in g:
            raw = np.asarray(g["electrode_names"][()]).ravel()
            names = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
            if len(names) != self.c:
                raise RawDataError(
                    f"'{path}': field '{BROADBAND}/electrode_names' has {len(names)} names but "
                    f"data has {self.c} channels"
                )
            self.names = _unique(names)
        else:
            self.names = [f"ch{i + 1:03d}" for i in range(self.c)]

    def read(self, a: int, b: int) -> np.ndarray:
        try:
            return self.data[a:b]
        except OSError as e:
            raise RawDataError(
                f"'{self.path}': field '{BROADBAND}/data' is unreadable at samples [{a}, {b}) "
                f"(truncated or corrupt: {first_line(e)})"
            ) from None

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> Broadband:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------- session
def read_session(mat_path: Path, nwb_path: Path | None = None, bin_size: float = 0.01,
                 options: ODohertyOptions | None = None,
                 chain: LfpChainConfig | None = None) -> Session:
    """Read one O'Doherty session from its .mat file and (optionally) its broadband .nwb."""
    opts = options or ODohertyOptions()
    chain = chain or LfpChainConfig()
    mat_path = Path(mat_path)
    name = mat_path.stem
    m = _read_mat(mat_path)
    t, cells, names = m["t"], m["cells"], m["names"]

    if opts.bin_by == "channel":
        trains = [np.sort(np.concatenate(ch)) if ch else np.empty(0) for ch in cells]
        unit_ids = names
    else:
        trains, unit_ids = [], []
        for c, ch in enumerate(cells):
            for u, times in enumerate(ch[1:], start=1):
                if times.size:
                    trains.append(np.sort(times))
                    unit_ids.append(f"{names[c]}#u{u}")
        if not trains:
            raise RawDataError(
                f"'{mat_path}': field 'spikes' has no sorted units; use bin_by='channel'"
            )

    meta: dict[str, Any] = {"source": "odoherty", "mat_file": mat_path.name,
                            "bin_by": opts.bin_by, "behaviour_span_s": [t[0], t[-1]],
                            "velocity_units": "mm/s"}
    bb = None
    if nwb_path is not None and opts.lfp:
        bb = Broadband(nwb_path)
    try:
        spans = [(float(t[0]), float(t[-1]))]
        if bb is not None:
            if bb.c != len(names) and not set(bb.names) <= set(names):
                raise RawDataError(
                    f"'{bb.path}': broadband has {bb.c} channels but '{mat_path}' field 'spikes' "
                    f"has {len(names)} channels (and the electrode names do not match its "
                    "chan_names)"
                )
            spans.append((bb.t0, bb.t_last))
            what = f"'{mat_path}' field 't' and '{bb.path}' broadband timestamps"
        else:
            what = f"'{mat_path}' field 't'"
        grid_start, n_bins = overlap_grid(spans, bin_size, what)
        lfp = None
        channel_ids = None
        if bb is not None:
            lfp = broadband_to_lfp_chunked(
                bb.read, bb.n, bb.c, bb.fs, bin_size, chain, bb.t0, chunk_s=opts.chunk_s,
                grid_start=grid_start, n_bins=n_bins, what=f"'{bb.path}' {BROADBAND}/data",
                scale=bb.conversion,
            )
            channel_ids = bb.names
            meta.update(lfp_source=bb.path.name, broadband_fs=bb.fs,
                        broadband_span_s=[bb.t0, bb.t_last], conversion=bb.conversion)
        else:
            why = "disabled (lfp=False)" if not opts.lfp else f"no broadband file {name}.nwb"
            meta["lfp_source"] = None
            meta["lfp_note"] = f"spikes only: {why}"
            log.info("session %s: %s; spikes only", name, why)
    finally:
        if bb is not None:
            bb.close()

    velocity = sample_at_bins(t, np.gradient(m["cursor"], t, axis=0), grid_start, n_bins,
                              bin_size)
    spikes = bin_spike_times(trains, grid_start, n_bins, bin_size)
    trials = None
    if m["target"] is not None:
        trials = trials_from_changes(t, m["target"], grid_start, n_bins, bin_size)
    return Session(
        name=name, subject=name.split("_")[0], velocity=velocity, spikes=spikes, lfp=lfp,
        bin_size=bin_size, unit_ids=unit_ids, channel_ids=channel_ids, trials=trials,
        t0=grid_start, meta=meta,
    )


def read_sessions(raw_dir: Path, sessions: list[str], bin_size: float = 0.01,
                  options: ODohertyOptions | None = None,
                  chain: LfpChainConfig | None = None) -> Iterator[Session]:
    """Yield the named sessions from ``raw_dir`` (``NAME.mat`` plus optional ``NAME.nwb``)."""
    raw_dir = Path(raw_dir)
    for name in sessions:
        mat = raw_dir / f"{name}.mat"
        nwb = raw_dir / f"{name}.nwb"
        yield read_session(mat, nwb if nwb.exists() else None, bin_size, options, chain)
