"""temporaldata files (the format of torch_brain/brainsets): export and reading.

**Export** (:func:`export_temporaldata`, ``lfpdistill export-temporaldata``): one temporaldata
``Data`` object per session, saved as ``OUT/<name>.h5`` (``Data.load`` reads it)::

    brainset            "lfpdistill"
    session             Data(id, bin_size, lfpdistill_format, lfpdistill_meta (JSON))
    subject             Data(id)
    domain              Interval [t0, t0 + T * bin_size)
    cursor              RegularTimeSeries(vel [T, 2])            velocity per bin
    binned_spikes       RegularTimeSeries(counts [T, N])         spikes per bin (if any)
    units               ArrayDict(id [N])
    lfp                 RegularTimeSeries(signal [T, C])         processed LFP per bin (if any)
    channels            ArrayDict(id [C], x, y(, z) [C])
    latents             RegularTimeSeries(values [T, L])         (if the store has them)
    trials              Interval(start, end, start_bin, end_bin) (if any)
    train_domain, valid_domain, test_domain
                        Interval(start, end, start_bin, end_bin) the store's split segments

Every time series has ``sampling_rate = 1 / bin_size`` and starts at ``t0``: sample ``k``
covers the bin ``[t0 + k * bin_size, t0 + (k + 1) * bin_size)``. The store holds spike counts,
not spike times, so spikes are a binned series (no ``IrregularTimeSeries`` of invented times).
Reading such a file back (``prepare --format temporaldata``) gives the same session bit for bit:
arrays, ids, bin size, ``t0``, subject, metadata and the split segments.

**Reading other temporaldata files** (torch_brain style): spikes from an ``IrregularTimeSeries``
``spikes`` (``timestamps`` + ``unit_index``, names from ``units.id``) binned on the grid; velocity
from ``velocity_key`` (default ``cursor.vel``) and LFP from ``lfp_key`` (default the first array
of ``lfp``), interpolated at bin centres, the LFP through the LFP chain unless it is already at
the bin rate; ``train/valid/test_domain`` and ``trials`` become bins. The grid covers the
object's ``domain``.

temporaldata is an optional dependency (``pip install 'lfpdistill[temporaldata]'``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from ..errors import DataValidationError, StoreError
from ..preprocess import LfpChainConfig, bin_spike_times, broadband_to_lfp_chunked, sample_at_bins
from ..session import SPLITS, Session
from ._common import RawDataError, first_line, require_hdf5

FORMAT_VERSION = 1
#: the Data attribute of each split's Interval
DOMAINS = {"train": "train_domain", "val": "valid_domain", "test": "test_domain"}


class TemporaldataOptions(pydantic.BaseModel, extra="forbid"):
    """Reader options for files not written by :func:`export_temporaldata`."""

    velocity_key: str = "cursor.vel"
    lfp_key: str | None = None
    lfp: bool = True
    units: bool = True
    chunk_s: float = pydantic.Field(60.0, gt=0)


def _td() -> Any:
    try:
        import temporaldata
    except ImportError:
        raise StoreError("the temporaldata package is not installed; run "
                         "pip install 'lfpdistill[temporaldata]'") from None
    return temporaldata


# ---------------------------------------------------------------------------------- export
def _ascii_ids(session: str, what: str, ids: list[str]) -> np.ndarray:
    bad = next((i for i in ids if not i.isascii()), None)
    if bad is not None:
        raise DataValidationError(f"session '{session}': {what} id '{bad}' is not ASCII; "
                                  "temporaldata stores ids as ASCII text")
    return np.array(ids, dtype=str)


def _intervals(td: Any, bins: np.ndarray, t0: float, b: float) -> Any:
    bins = np.asarray(bins, dtype=np.int64).reshape(-1, 2)
    return td.Interval(start=t0 + bins[:, 0] * b, end=t0 + bins[:, 1] * b,
                       start_bin=bins[:, 0].copy(), end_bin=bins[:, 1].copy())


def session_to_data(s: Session) -> Any:
    """One session as a temporaldata ``Data`` object (layout in the module docstring)."""
    td = _td()
    b, t0, rate = s.bin_size, float(s.t0), 1.0 / s.bin_size

    def series(**arrays: np.ndarray) -> Any:
        return td.RegularTimeSeries(sampling_rate=rate, domain_start=t0, **arrays)

    parts: dict[str, Any] = {
        "brainset": "lfpdistill",
        "session": td.Data(id=s.name, bin_size=b, lfpdistill_format=FORMAT_VERSION,
                           lfpdistill_meta=json.dumps(s.meta, sort_keys=True)),
        "subject": td.Data(id=s.subject),
        "cursor": series(vel=s.velocity),
    }
    if s.spikes is not None:
        parts["binned_spikes"] = series(counts=s.spikes)
        parts["units"] = td.ArrayDict(id=_ascii_ids(s.name, "unit", list(s.unit_ids or [])))
    if s.lfp is not None:
        cols: dict[str, np.ndarray] = {"id": _ascii_ids(s.name, "channel",
                                                        list(s.channel_ids or []))}
        if s.electrode_positions is not None:
            for k, axis in enumerate("xyz"[: s.electrode_positions.shape[1]]):
                cols[axis] = s.electrode_positions[:, k].copy()
        parts["lfp"] = series(signal=s.lfp)
        parts["channels"] = td.ArrayDict(**cols)
    if s.latents is not None:
        parts["latents"] = series(values=s.latents)
    if s.trials is not None:
        parts["trials"] = _intervals(td, s.trials, t0, b)
    if s.segments is not None:
        for split, key in DOMAINS.items():
            parts[key] = _intervals(td, s.segments[s.segments[:, 2] == SPLITS[split], :2], t0, b)
    return td.Data(domain=td.Interval(t0, t0 + s.n_bins * b), **parts)


def export_temporaldata(store_dir: Path, out_dir: Path,
                        sessions: list[str] | None = None) -> list[Path]:
    """Write every (or each selected) session of the store as ``OUT/<name>.h5``."""
    import h5py

    from ..data import atomic_path, open_store

    _td()
    store = open_store(Path(store_dir))
    names = store.select(sessions) if sessions else store.names
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreError(f"output '{out_dir}' exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        data = session_to_data(store.session(name, cache=False))
        path = out_dir / f"{name}.h5"
        with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
            data.to_hdf5(f)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------- reading
def list_sessions(raw_dir: Path) -> list[str]:
    """``*.h5`` stems in ``raw_dir``, sorted."""
    return sorted(p.stem for p in Path(raw_dir).glob("*.h5") if not p.name.startswith("."))


def session_files(raw_dir: Path, name: str) -> list[Path]:
    p = Path(raw_dir) / f"{name}.h5"
    return [p] if p.exists() else []


def _load(path: Path) -> Any:
    td = _td()
    require_hdf5(path, "an HDF5 file")
    try:
        return td.Data.load(path, lazy=False)
    except Exception as e:  # noqa: BLE001 - temporaldata/h5py raise many types for bad files
        raise RawDataError(f"'{path}' is not a readable temporaldata file ({first_line(e)})") \
            from None


def _get(data: Any, key: str, path: Path) -> Any:
    try:
        return data.get_nested_attribute(key)
    except AttributeError:
        raise RawDataError(f"'{path}': has no '{key}' (set the reader option to the right "
                           "attribute, e.g. --set velocity_key=hand.vel)") from None


def _bins(interval: Any, t0: float, b: float, n_bins: int) -> np.ndarray:
    """``[K, 2]`` bins of an Interval (its ``start_bin``/``end_bin`` when it has them)."""
    if "start_bin" in interval and "end_bin" in interval:
        a, z = np.asarray(interval.start_bin), np.asarray(interval.end_bin)
    else:
        a = np.round((np.asarray(interval.start, dtype=np.float64) - t0) / b)
        z = np.round((np.asarray(interval.end, dtype=np.float64) - t0) / b)
        a, z = np.clip(a, 0, n_bins), np.clip(z, 0, n_bins)
    out = np.stack([a, z], axis=1).astype(np.int64).reshape(-1, 2)
    return out[out[:, 1] > out[:, 0]]


def _segments(data: Any, t0: float, b: float, n_bins: int) -> np.ndarray | None:
    """The split segments ``[S, 3]`` from the train/valid/test domains (None: none there)."""
    rows = []
    for split, key in DOMAINS.items():
        if key in data:
            bins = _bins(getattr(data, key), t0, b, n_bins)
            rows.append(np.column_stack([bins, np.full(len(bins), SPLITS[split], np.int64)]))
    if not rows:
        return None
    seg = np.concatenate(rows, axis=0)
    return seg[np.argsort(seg[:, 0], kind="stable")]


def _own(data: Any, path: Path, bin_size: float) -> Session:
    """A session written by :func:`session_to_data`, bit for bit."""
    sess = data.session
    b = float(sess.bin_size)
    if abs(b - bin_size) > 1e-12 and not math.isclose(b, bin_size, rel_tol=1e-9):
        raise RawDataError(f"'{path}' holds {b:g} s bins (lfpdistill export); prepare it with "
                           f"--bin-size {b:g}")
    t0 = float(data.domain.start[0])
    n_bins = int(len(data.cursor))
    keys = data.keys()
    pos = None
    if "channels" in keys:
        axes = [a for a in "xyz" if a in data.channels]
        if axes:
            pos = np.stack([np.asarray(getattr(data.channels, a)) for a in axes], axis=1)
    return Session(
        name=path.stem, subject=str(data.subject.id), bin_size=b, t0=t0,
        velocity=np.asarray(data.cursor.vel),
        spikes=np.asarray(data.binned_spikes.counts) if "binned_spikes" in keys else None,
        unit_ids=[str(u) for u in data.units.id] if "binned_spikes" in keys else None,
        lfp=np.asarray(data.lfp.signal) if "lfp" in keys else None,
        channel_ids=[str(c) for c in data.channels.id] if "lfp" in keys else None,
        electrode_positions=pos,
        latents=np.asarray(data.latents.values) if "latents" in keys else None,
        trials=_bins(data.trials, t0, b, n_bins) if "trials" in keys else None,
        segments=_segments(data, t0, b, n_bins),
        meta=json.loads(str(sess.lfpdistill_meta)),
    )


def _field(series: Any, key: str | None, what: str, path: Path) -> tuple[str, np.ndarray]:
    names = list(series.keys())
    if key is None:
        if not names:
            raise RawDataError(f"'{path}': '{what}' holds no arrays")
        key = names[0]
    if key not in names:
        raise RawDataError(f"'{path}': '{what}' has no '{key}' (has: {', '.join(names)})")
    return key, np.asarray(getattr(series, key))


def read_session(path: Path, bin_size: float = 0.01, options: TemporaldataOptions | None = None,
                 chain: LfpChainConfig | None = None) -> Session:
    """Read one temporaldata ``Data`` file into a :class:`Session`."""
    opts = options or TemporaldataOptions()
    chain = chain or LfpChainConfig()
    path = Path(path)
    data = _load(path)
    keys = data.keys()
    if "session" in keys and "lfpdistill_format" in data.session:
        return _own(data, path, bin_size)
    if data.domain is None or len(data.domain) == 0:
        raise RawDataError(f"'{path}': the Data object has no time domain")
    grid_start = float(data.domain.start[0])
    n_bins = int(math.floor((float(data.domain.end[-1]) - grid_start) / bin_size + 1e-9))
    if n_bins < 1:
        raise RawDataError(f"'{path}': its domain is shorter than one {bin_size:g} s bin")
    parent_key, _, field_key = opts.velocity_key.rpartition(".")
    parent = _get(data, parent_key, path) if parent_key else data
    vel = np.asarray(_get(data, opts.velocity_key, path), dtype=np.float64)
    if vel.ndim != 2 or vel.shape[1] < 2:
        raise RawDataError(f"'{path}': '{opts.velocity_key}' has shape {list(vel.shape)}; "
                           "expected [n, 2+]")
    velocity = sample_at_bins(np.asarray(parent.timestamps), vel[:, :2], grid_start, n_bins,
                              bin_size)
    meta: dict[str, Any] = {"source": "temporaldata", "temporaldata_file": path.name,
                            "velocity_from": opts.velocity_key}
    spikes = unit_ids = None
    if opts.units and "spikes" in keys:
        t = np.asarray(data.spikes.timestamps, dtype=np.float64)
        idx = np.asarray(data.spikes.unit_index, dtype=np.int64)
        n_units = len(data.units) if "units" in keys else int(idx.max(initial=-1)) + 1
        spikes = bin_spike_times([t[idx == u] for u in range(n_units)], grid_start, n_bins,
                                 bin_size)
        if "units" in keys and "id" in data.units:
            unit_ids = [str(u) for u in data.units.id]
    lfp = channel_ids = None
    if opts.lfp and "lfp" in keys:
        name, x = _field(data.lfp, opts.lfp_key, "lfp", path)
        rate = float(data.lfp.sampling_rate)
        start = float(data.lfp.domain.start[0])
        if abs(rate * bin_size - 1.0) < 1e-6:
            t = start + (np.arange(len(x)) + 0.5) / rate  # sample k covers one bin
            lfp = sample_at_bins(t, x, grid_start, n_bins, bin_size).astype(np.float32)
            meta.update(lfp_processing="taken as processed (already on the bin grid)")
        else:
            lfp = broadband_to_lfp_chunked(lambda a, z: x[a:z], x.shape[0], x.shape[1], rate,
                                           bin_size, chain, start, chunk_s=opts.chunk_s,
                                           grid_start=grid_start, n_bins=n_bins,
                                           what=f"'{path}' lfp.{name}")
            meta.update(lfp_processing="lfp chain",
                        lfp_unit="z-score" if chain.zscore else "volts")
        if "channels" in keys and "id" in data.channels \
                and len(data.channels) == lfp.shape[1]:
            channel_ids = [str(c) for c in data.channels.id]
    if spikes is None and lfp is None:
        raise RawDataError(f"'{path}': has neither 'spikes' nor 'lfp'")
    subject = "unknown"
    if "subject" in keys and "id" in data.subject:
        subject = str(data.subject.id)
    return Session(
        name=path.stem, subject=subject, velocity=velocity, spikes=spikes, unit_ids=unit_ids,
        lfp=lfp, channel_ids=channel_ids, bin_size=bin_size, t0=grid_start,
        trials=_bins(data.trials, grid_start, bin_size, n_bins) if "trials" in keys else None,
        segments=_segments(data, grid_start, bin_size, n_bins), meta=meta,
    )


def read_sessions(raw_dir: Path, sessions: list[str], bin_size: float = 0.01,
                  options: TemporaldataOptions | None = None,
                  chain: LfpChainConfig | None = None) -> Iterator[Session]:
    for name in sessions:
        yield read_session(Path(raw_dir) / f"{name}.h5", bin_size, options, chain)


__all__ = ["TemporaldataOptions", "export_temporaldata", "list_sessions",
           "read_session", "read_sessions", "session_to_data"]
