"""Generic NWB 2.x reader (pynwb) and the store -> NWB 2.x exporter.

Reading (:func:`read_session`), per ``*.nwb`` file:

- **spikes** from the ``Units`` table (one column per unit; ids from a ``unit_name`` column if
  present, else the table ids);
- **LFP** from an ``ElectricalSeries``: the one named ``lfp_series``, else the first inside an
  ``LFP`` container, else the first anywhere. Raw/wide-band series go through the LFP chain
  (:func:`lfpdistill.preprocess.broadband_to_lfp_chunked`); a series already on the bin grid and
  marked as processed (``comments`` starting ``lfpdistill:``, as written by :func:`export_nwb`) is
  taken as is (``process_lfp='auto'``; force with ``'always'``/``'never'``). Channel ids from the
  electrodes table (``channel_name`` or ``label`` column, else ids), positions from
  ``rel_x/rel_y(/rel_z)`` or ``x/y(/z)`` when all finite;
- **velocity** from a ``TimeSeries`` (``velocity_series``, else the first whose name contains
  "vel"), or derived by ``gradient`` over time from a ``SpatialSeries`` of position
  (``position_series``, else the first ``SpatialSeries``); first two columns, times ``conversion``
  (+ ``offset``), linearly interpolated at bin centres;
- **trials** from the trials table, if any.

The bin grid covers the overlap of the behaviour and LFP time spans. A series sampled at the bin
rate counts as one value per bin centred on its timestamps, so a file written by
:func:`export_nwb` reads back on exactly the same bins.

Writing (:func:`export_nwb`): each stored session becomes ``OUT/<name>.nwb`` with the processed LFP
as ``processing/ecephys/LFP/LFP`` (an ``ElectricalSeries`` at the bin rate, starting at the first
bin centre), velocity as ``processing/behavior/velocity``, spikes as a ``Units`` table (a bin's
count becomes that many spike times at the bin centre) and trials as the trials table. The
train/val/test segments are not exported; a store prepared from these files recomputes them
deterministically (same seed and segment length -> same splits).

Why ~440 lines: reader and exporter share the NWB layout conventions (names, comments, units)
and are tested as a round trip; pynwb is imported inside the functions that use it (~1 s to
import), so the other readers never pay for it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pydantic

from ..errors import StoreError
from ..preprocess import LfpChainConfig, bin_spike_times, broadband_to_lfp_chunked, sample_at_bins
from ..session import Session
from ._common import RawDataError, file_kind, first_line, log, overlap_grid

PROCESSED_MARK = "lfpdistill:"


class NwbOptions(pydantic.BaseModel, extra="forbid"):
    """Reader options (series names are NWB object names; None = search)."""

    lfp_series: str | None = None
    velocity_series: str | None = None
    position_series: str | None = None
    process_lfp: Literal["auto", "always", "never"] = "auto"
    lfp: bool = True
    units: bool = True
    chunk_s: float = pydantic.Field(60.0, gt=0)


def list_sessions(raw_dir: Path) -> list[str]:
    """``*.nwb`` stems in ``raw_dir``, sorted."""
    return sorted(p.stem for p in Path(raw_dir).glob("*.nwb") if not p.name.startswith("."))


def session_files(raw_dir: Path, name: str) -> list[Path]:
    p = Path(raw_dir) / f"{name}.nwb"
    return [p] if p.exists() else []


# ------------------------------------------------------------------------------- helpers
def _times(ts: Any, n: int, path: Path) -> tuple[np.ndarray | None, float, float, float]:
    """``(timestamps or None, start, rate, last)`` of a TimeSeries with ``n`` samples."""
    if ts.timestamps is not None:
        t = np.asarray(ts.timestamps[()] if hasattr(ts.timestamps, "shape") else ts.timestamps,
                       dtype=np.float64).ravel()
        if len(t) != n:
            raise RawDataError(
                f"'{path}': field '{ts.name}.timestamps' has {len(t)} values; expected {n}"
            )
        if n > 1 and not (np.isfinite(t).all() and (np.diff(t) > 0).all()):
            raise RawDataError(f"'{path}': field '{ts.name}.timestamps' is not increasing")
        rate = (n - 1) / (t[-1] - t[0]) if n > 1 else float("nan")
        return t, float(t[0]), rate, float(t[-1])
    if ts.rate is None:
        raise RawDataError(f"'{path}': field '{ts.name}' has neither timestamps nor rate")
    start = float(ts.starting_time or 0.0)
    rate = float(ts.rate)
    return None, start, rate, start + (n - 1) / rate


def _is_bin_rate(rate: float, bin_size: float) -> bool:
    return bool(np.isfinite(rate) and abs(rate * bin_size - 1.0) < 1e-6)


def _span(start: float, last: float, rate: float, bin_size: float) -> tuple[float, float]:
    if _is_bin_rate(rate, bin_size):  # one value per bin, centred on its timestamp
        return start - bin_size / 2, last + bin_size / 2
    return start, last


def _by_type(nwb: Any, cls: type) -> list[Any]:
    return [o for o in nwb.objects.values() if isinstance(o, cls)]


def _pick(candidates: list[Any], name: str | None, kind: str, option: str, path: Path) -> Any:
    if name is None:
        return candidates[0] if candidates else None
    hits = [c for c in candidates if c.name == name]
    if not hits:
        names = ", ".join(sorted({c.name for c in candidates})) or "none"
        raise RawDataError(f"'{path}': no {kind} named '{name}' ({option}); found: {names}")
    return hits[0]


def _channel_info(es: Any) -> tuple[list[str] | None, np.ndarray | None]:
    try:
        region = es.electrodes
        idx = np.asarray(region.data[:], dtype=np.int64)
        table = region.table
    except Exception:  # noqa: BLE001 - electrodes are optional metadata here
        return None, None
    cols = set(table.colnames)
    ids = None
    for col in ("channel_name", "label"):
        if col in cols:
            vals = table[col].data[:]
            ids = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(vals)[idx]]
            break
    if ids is None:
        ids = [str(i) for i in np.asarray(table.id.data[:])[idx]]
    pos = None
    for names in (("rel_x", "rel_y", "rel_z"), ("x", "y", "z")):
        have = [c for c in names if c in cols]
        if len(have) >= 2 and have[:2] == list(names[:2]):
            arr = np.stack([np.asarray(table[c].data[:], dtype=np.float64)[idx] for c in have],
                           axis=1)
            if arr.shape[1] == 3 and not np.isfinite(arr[:, 2]).all():
                arr = arr[:, :2]
            if np.isfinite(arr).all():
                pos = arr
                break
    if len(set(ids)) != len(ids):
        ids = None
    return ids, pos


# ---------------------------------------------------------------------------------- reader
def _open(path: Path) -> Any:
    from pynwb import NWBHDF5IO

    kind = file_kind(path)
    if kind == "missing":
        raise RawDataError(f"'{path}' does not exist")
    if kind != "hdf5":
        raise RawDataError(f"'{path}' is not an HDF5/NWB file (no HDF5 signature; truncated?)")
    try:
        with h5py.File(path, "r") as f:
            ver = f.attrs.get("nwb_version", None)
            ver = ver.decode() if isinstance(ver, bytes) else (None if ver is None else str(ver))
            old = ver is None and "nwb_version" in f
    except OSError as e:
        raise RawDataError(f"'{path}' is unreadable (truncated or corrupt: {first_line(e)})") \
            from None
    if old or (ver is not None and not ver.startswith("2")):
        raise RawDataError(
            f"'{path}' is NWB 1.x; expected NWB 2.x (O'Doherty broadband files are read with "
            "--format odoherty)"
        )
    if ver is None:
        raise RawDataError(f"'{path}' has no 'nwb_version' attribute; expected an NWB 2.x file")
    try:
        io = NWBHDF5IO(str(path), "r", load_namespaces=True)
        return io, io.read()
    except Exception as e:  # noqa: BLE001 - pynwb/hdmf raise many types for bad files
        raise RawDataError(f"'{path}' is not a readable NWB 2.x file ({first_line(e)})") from None


def read_session(path: Path, bin_size: float = 0.01, options: NwbOptions | None = None,
                 chain: LfpChainConfig | None = None) -> Session:
    """Read one NWB 2.x file into a :class:`Session`."""
    from pynwb.base import TimeSeries
    from pynwb.behavior import SpatialSeries
    from pynwb.ecephys import LFP, ElectricalSeries

    opts = options or NwbOptions()
    chain = chain or LfpChainConfig()
    path = Path(path)
    io, nwb = _open(path)
    try:
        name = path.stem
        subject = "unknown"
        if nwb.subject is not None and nwb.subject.subject_id:
            subject = str(nwb.subject.subject_id)
        meta: dict[str, Any] = {"source": "nwb", "nwb_file": path.name}

        # --- behaviour
        vel_ts = None
        series = [o for o in _by_type(nwb, TimeSeries) if not isinstance(o, ElectricalSeries)]
        if opts.velocity_series is not None:
            vel_ts = _pick(series, opts.velocity_series, "TimeSeries", "velocity_series", path)
        elif opts.position_series is None:
            vel_ts = next((s for s in series if "vel" in s.name.lower()), None)
        if vel_ts is not None:
            data = np.asarray(vel_ts.data[()], dtype=np.float64)
            beh_field = vel_ts.name
        else:
            spatial = _by_type(nwb, SpatialSeries)
            pos_ts = _pick(spatial, opts.position_series, "SpatialSeries", "position_series",
                           path)
            if pos_ts is None:
                raise RawDataError(
                    f"'{path}': no velocity TimeSeries (name containing 'vel') or position "
                    "SpatialSeries found; name one with velocity_series/position_series"
                )
            data = np.asarray(pos_ts.data[()], dtype=np.float64)
            beh_field = pos_ts.name
        beh = vel_ts if vel_ts is not None else pos_ts
        if data.ndim != 2 or data.shape[1] < 2 or data.shape[0] < 2:
            raise RawDataError(
                f"'{path}': field '{beh_field}.data' has shape {list(data.shape)}; expected [n, 2+]"
            )
        data = data[:, :2] * float(beh.conversion or 1.0) + float(getattr(beh, "offset", 0.0)
                                                                   or 0.0)
        if not np.isfinite(data).all():
            raise RawDataError(f"'{path}': field '{beh_field}.data' contains NaN/inf")
        bt, b_start, b_rate, b_last = _times(beh, data.shape[0], path)
        if bt is None:
            bt = b_start + np.arange(data.shape[0]) / b_rate
        if vel_ts is None:
            data = np.gradient(data, bt, axis=0)
            meta["velocity_from"] = f"gradient of {beh_field}"
        else:
            meta["velocity_from"] = beh_field
        spans = [_span(b_start, b_last, b_rate, bin_size)]
        what = [f"'{beh_field}'"]

        # --- LFP
        es = None
        if opts.lfp:
            all_es = _by_type(nwb, ElectricalSeries)
            in_lfp = [s for c in _by_type(nwb, LFP) for s in c.electrical_series.values()]
            ordered = in_lfp + [s for s in all_es if s not in in_lfp]
            es = _pick(ordered, opts.lfp_series, "ElectricalSeries", "lfp_series", path)
        if es is not None:
            ed = es.data
            if len(ed.shape) == 1:
                raise RawDataError(
                    f"'{path}': field '{es.name}.data' is 1-D; expected [n_samples, channels]"
                )
            n_s, n_c = int(ed.shape[0]), int(ed.shape[1])
            et, e_start, e_rate, e_last = _times(es, n_s, path)
            if et is not None and n_s > 2:
                dev = np.abs(et - (e_start + np.arange(n_s) / e_rate)).max()
                if dev > 2.0 / e_rate:
                    raise RawDataError(
                        f"'{path}': field '{es.name}.timestamps' is not uniformly sampled "
                        f"(deviates by {dev:.4g} s); gaps are not supported"
                    )
            processed = opts.process_lfp == "never" or (
                opts.process_lfp == "auto" and _is_bin_rate(e_rate, bin_size)
                and str(es.comments or "").startswith(PROCESSED_MARK))
            spans.append(_span(e_start, e_last, e_rate, bin_size) if processed
                         else (e_start, e_last))
            what.append(f"'{es.name}'")
        grid_start, n_bins = overlap_grid(spans, bin_size, f"'{path}' {' and '.join(what)}")
        velocity = sample_at_bins(bt, data, grid_start, n_bins, bin_size)

        lfp = channel_ids = positions = None
        if es is not None:
            conv = float(es.conversion or 1.0)
            gains = None
            if getattr(es, "channel_conversion", None) is not None:
                gains = np.asarray(es.channel_conversion[()], dtype=np.float64).ravel()
                if gains.shape != (n_c,):
                    raise RawDataError(
                        f"'{path}': field '{es.name}.channel_conversion' has {gains.size} values; "
                        f"expected {n_c}"
                    )

            def read(a: int, b: int) -> np.ndarray:
                try:
                    x = ed[a:b]
                except OSError as e:
                    raise RawDataError(
                        f"'{path}': field '{es.name}.data' is unreadable at [{a}, {b}) "
                        f"({first_line(e)})"
                    ) from None
                return x if gains is None else x * gains

            if processed:
                x = np.asarray(read(0, n_s), dtype=np.float64) * conv
                if not np.isfinite(x).all():
                    raise RawDataError(f"'{path}': field '{es.name}.data' contains NaN/inf")
                tt = et if et is not None else e_start + np.arange(n_s) / e_rate
                lfp = sample_at_bins(tt, x, grid_start, n_bins, bin_size).astype(np.float32)
                meta["lfp_processing"] = "taken as processed (already on the bin grid)"
            else:
                lfp = broadband_to_lfp_chunked(
                    read, n_s, n_c, e_rate, bin_size, chain, e_start, chunk_s=opts.chunk_s,
                    grid_start=grid_start, n_bins=n_bins, what=f"'{path}' {es.name}",
                    scale=conv,
                )
                meta["lfp_processing"] = "lfp chain"
            channel_ids, positions = _channel_info(es)
            meta.update(lfp_source=es.name, lfp_rate=e_rate)
        else:
            meta["lfp_source"] = None
            log.info("session %s: no ElectricalSeries used; spikes only", name)

        # --- spikes
        spikes = unit_ids = None
        units = nwb.units if opts.units else None
        if units is not None and len(units) > 0:
            trains = [np.asarray(units.get_unit_spike_times(i), dtype=np.float64)
                      for i in range(len(units))]
            spikes = bin_spike_times(trains, grid_start, n_bins, bin_size)
            if "unit_name" in units.colnames:
                unit_ids = [v.decode() if isinstance(v, bytes) else str(v)
                            for v in units["unit_name"].data[:]]
            else:
                unit_ids = [str(i) for i in units.id.data[:]]
            if len(set(unit_ids)) != len(unit_ids):
                unit_ids = None
        if spikes is None and lfp is None:
            raise RawDataError(f"'{path}': has neither a Units table nor an ElectricalSeries")

        trials = None
        if nwb.trials is not None and len(nwb.trials) > 0:
            st = np.asarray(nwb.trials["start_time"].data[:], dtype=np.float64)
            sp = np.asarray(nwb.trials["stop_time"].data[:], dtype=np.float64)
            a = _to_bin(st, grid_start, bin_size, math.floor)
            b = _to_bin(sp, grid_start, bin_size, math.ceil)
            a, b = np.clip(a, 0, n_bins), np.clip(b, 0, n_bins)
            keep = b > a
            if keep.any():
                trials = np.stack([a[keep], b[keep]], axis=1)
    finally:
        io.close()
    return Session(
        name=name, subject=subject, velocity=velocity, spikes=spikes, lfp=lfp,
        bin_size=bin_size, unit_ids=unit_ids, channel_ids=channel_ids,
        electrode_positions=positions, trials=trials, t0=grid_start, meta=meta,
    )


def _to_bin(t: np.ndarray, grid_start: float, bin_size: float, rnd: Any) -> np.ndarray:
    x = (t - grid_start) / bin_size
    near = np.round(x)
    return np.where(np.abs(x - near) < 1e-6, near,
                    np.vectorize(rnd, otypes=[float])(x)).astype(np.int64)


def read_sessions(raw_dir: Path, sessions: list[str], bin_size: float = 0.01,
                  options: NwbOptions | None = None,
                  chain: LfpChainConfig | None = None) -> Iterator[Session]:
    for name in sessions:
        yield read_session(Path(raw_dir) / f"{name}.nwb", bin_size, options, chain)


# ---------------------------------------------------------------------------------- writer
def write_session_nwb(session: Session, path: Path) -> Path:
    """Write one :class:`Session` as an NWB 2.x file (atomically)."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.ecephys import LFP
    from pynwb.file import Subject

    from ..data import atomic_path

    s = session
    b = s.bin_size
    centres0 = s.t0 + b / 2
    nwb = NWBFile(
        session_description=f"lfpdistill session {s.name}",
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"lfpdistill/{s.name}/{s.t0}")),
        session_start_time=datetime(1970, 1, 1, tzinfo=UTC),
        session_id=s.name, subject=Subject(subject_id=s.subject),
    )
    beh = nwb.create_processing_module("behavior", "behaviour on the bin grid")
    unit = str(s.meta.get("velocity_units", "unknown"))
    beh.add(TimeSeries(
        name="velocity", data=s.velocity, unit=unit, starting_time=centres0, rate=1.0 / b,
        description="velocity (x, y), one value per bin centred on its timestamp",
        comments=f"{PROCESSED_MARK} velocity per bin",
    ))
    if s.lfp is not None:
        device = nwb.create_device(name="array", description="recording array")
        group = nwb.create_electrode_group(name="array", description="all channels",
                                           location="unknown", device=device)
        nwb.add_electrode_column(name="channel_name", description="lfpdistill channel id")
        pos = s.electrode_positions
        for c, cid in enumerate(s.channel_ids or []):
            kw: dict[str, Any] = {}
            if pos is not None:
                kw.update(rel_x=float(pos[c, 0]), rel_y=float(pos[c, 1]))
                if pos.shape[1] > 2:
                    kw["rel_z"] = float(pos[c, 2])
            nwb.add_electrode(group=group, location="unknown", channel_name=cid, **kw)
        region = nwb.create_electrode_table_region(list(range(s.n_channels)), "all channels")
        ecephys = nwb.create_processing_module("ecephys", "processed LFP")
        lfp_container = LFP(name="LFP")
        ecephys.add(lfp_container)
        lfp_container.create_electrical_series(
            name="LFP", data=s.lfp, electrodes=region, starting_time=centres0, rate=1.0 / b,
            description="processed LFP (z-scored per channel), one value per bin",
            comments=f"{PROCESSED_MARK} processed LFP on the bin grid",
            filtering="lfpdistill LFP chain (see session meta)",
        )
    if s.spikes is not None:
        nwb.add_unit_column(name="unit_name", description="lfpdistill unit id")
        centres = centres0 + np.arange(s.n_bins) * b
        for i, uid in enumerate(s.unit_ids or []):
            times = np.repeat(centres, s.spikes[:, i])
            nwb.add_unit(spike_times=times, unit_name=uid)
    if s.trials is not None:
        for a, z in s.trials:
            nwb.add_trial(start_time=s.t0 + int(a) * b, stop_time=s.t0 + int(z) * b)
    path = Path(path)
    with atomic_path(path, suffix=".nwb") as tmp, NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwb)
    return path


def export_nwb(store_dir: Path, out_dir: Path, sessions: list[str] | None = None) -> list[Path]:
    """Write every (or each selected) session of the store as ``OUT/<name>.nwb``."""
    from ..data import open_store

    store = open_store(Path(store_dir))
    names = store.select(sessions) if sessions else store.names
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreError(f"output '{out_dir}' exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        paths.append(write_session_nwb(store.session(name, cache=False), out_dir / f"{name}.nwb"))
    return paths
