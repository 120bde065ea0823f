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

Also read: a plain ``TimeSeries`` of LFP or of binned spike counts written by :func:`export_nwb`
(``comments`` starting ``lfpdistill:``; counts are taken as they are, their unit names from the
``Units`` table), and the subject's species/sex/age and the session start time into
``meta['nwb_subject']`` and ``meta['session_start_time']``, so a re-export keeps them.

Writing (:func:`export_nwb`, in :mod:`.nwb_export`): each stored session becomes
``OUT/<name>.nwb`` with DANDI's required metadata, the LFP in the unit it has and the spike counts
as a binned series. The train/val/test segments are not exported; a store prepared from these
files recomputes them deterministically (same seed and segment length -> same splits).

Reader and exporter share the NWB layout conventions (names, comments, units) and are tested as
a round trip; pynwb is imported inside the functions that use it (~1 s to import), so the other
readers never pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pydantic

from ..preprocess import LfpChainConfig, bin_spike_times, broadband_to_lfp_chunked, sample_at_bins
from ..session import Session
from ._common import RawDataError, first_line, log, overlap_grid, require_hdf5
from .nwb_export import (
    COUNTS_MARK,
    LFP_MARK,
    PROCESSED_MARK,
    UNITS_TABLE,
    ZSCORE_UNIT,
    ExportMetadata,
    export_nwb,
    nwb_subject_meta,
    write_session_nwb,
)

__all__ = ["ExportMetadata", "NwbOptions", "export_nwb", "read_session", "read_sessions",
           "write_session_nwb"]


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
        if not np.isfinite(t).all() or (n > 1 and not (np.diff(t) > 0).all()):
            raise RawDataError(f"'{path}': field '{ts.name}.timestamps' is not increasing "
                               "finite times")
        rate = (n - 1) / (t[-1] - t[0]) if n > 1 else float("nan")
        return t, float(t[0]), rate, float(t[-1])
    if ts.rate is None:
        raise RawDataError(f"'{path}': field '{ts.name}' has neither timestamps nor rate")
    try:
        start, rate = float(ts.starting_time or 0.0), float(ts.rate)
    except (TypeError, ValueError):
        raise RawDataError(f"'{path}': field '{ts.name}' has rate {ts.rate!r} or starting_time "
                           f"{ts.starting_time!r} that is not a number") from None
    if not (math.isfinite(rate) and rate > 0):
        raise RawDataError(f"'{path}': field '{ts.name}.rate' is {rate}; expected a positive "
                           "sampling rate in Hz")
    if not math.isfinite(start):
        raise RawDataError(f"'{path}': field '{ts.name}.starting_time' is {start}; expected a "
                           "finite time in seconds")
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


def _channel_info(es: Any, nwb: Any = None,
                  n_c: int = 0) -> tuple[list[str] | None, np.ndarray | None]:
    """Channel ids and positions of an ElectricalSeries' electrodes, or, for a series written by
    :func:`export_nwb` as a plain TimeSeries, of the electrodes table's rows in order."""
    try:
        region = es.electrodes
        idx = np.asarray(region.data[:], dtype=np.int64)
        table = region.table
    except Exception:  # noqa: BLE001 - electrodes are optional metadata here
        table = getattr(nwb, "electrodes", None) if nwb is not None else None
        if table is None or len(table) != n_c:
            return None, None
        idx = np.arange(n_c)
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


def _counts_unit_names(nwb: Any) -> list[str] | None:
    """Unit names of a ``spike_counts`` series written by :func:`export_nwb`."""
    for module in nwb.processing.values():
        table = module.data_interfaces.get(UNITS_TABLE)
        if table is not None and "unit_name" in table.colnames:
            return [v.decode() if isinstance(v, bytes) else str(v)
                    for v in table["unit_name"].data[:]]
    return None


# ---------------------------------------------------------------------------------- reader
def _open(path: Path) -> Any:
    from pynwb import NWBHDF5IO

    require_hdf5(path, "an HDF5/NWB file")
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
        meta: dict[str, Any] = {"source": "nwb", "nwb_file": path.name, **nwb_subject_meta(nwb)}

        # --- behaviour
        vel_ts = None
        series = [o for o in _by_type(nwb, TimeSeries) if not isinstance(o, ElectricalSeries)]
        marked_lfp = [o for o in series if str(o.comments or "").startswith(LFP_MARK)]
        counts_ts = next((o for o in series if str(o.comments or "").startswith(COUNTS_MARK)),
                         None)
        if opts.velocity_series is not None:
            vel_ts = _pick(series, opts.velocity_series, "TimeSeries", "velocity_series", path)
        elif opts.position_series is None:
            vel_ts = next((s for s in series if "vel" in s.name.lower()), None)
        if vel_ts is not None:
            data = _numbers(vel_ts, path)
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
            data = _numbers(pos_ts, path)
            beh_field = pos_ts.name
        beh = vel_ts if vel_ts is not None else pos_ts
        if vel_ts is not None and str(vel_ts.unit or "unknown") != "unknown":
            meta["velocity_units"] = str(vel_ts.unit)
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
            ordered = marked_lfp + in_lfp + [s for s in all_es if s not in in_lfp]
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
        if counts_ts is not None and opts.units:
            c_n = int(counts_ts.data.shape[0])
            _, c_start, c_rate, c_last = _times(counts_ts, c_n, path)
            if not _is_bin_rate(c_rate, bin_size):
                raise RawDataError(
                    f"'{path}': field '{counts_ts.name}' holds spike counts in "
                    f"{1000.0 / c_rate:g} ms bins; prepare it with --bin-size {1.0 / c_rate:g}")
            spans.append(_span(c_start, c_last, c_rate, bin_size))
            what.append(f"'{counts_ts.name}'")
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

            flat = _FlatCheck(n_c)

            def read(a: int, b: int) -> np.ndarray:
                try:
                    x = ed[a:b]
                except OSError as e:
                    raise RawDataError(
                        f"'{path}': field '{es.name}.data' is unreadable at [{a}, {b}) "
                        f"({first_line(e)})"
                    ) from None
                x = x if gains is None else x * gains
                flat.see(x)
                return x

            if processed:
                x = np.asarray(read(0, n_s), dtype=np.float64) * conv
                if not np.isfinite(x).all():
                    raise RawDataError(f"'{path}': field '{es.name}.data' contains NaN/inf")
                flat.check(path, es.name, car=False)
                tt = et if et is not None else e_start + np.arange(n_s) / e_rate
                lfp = sample_at_bins(tt, x, grid_start, n_bins, bin_size).astype(np.float32)
                meta["lfp_processing"] = "taken as processed (already on the bin grid)"
                meta["lfp_unit"] = (str(es.unit) if not isinstance(es, ElectricalSeries)
                                    else "volts")
            else:
                lfp = broadband_to_lfp_chunked(
                    read, n_s, n_c, e_rate, bin_size, chain, e_start, chunk_s=opts.chunk_s,
                    grid_start=grid_start, n_bins=n_bins, what=f"'{path}' {es.name}",
                    scale=conv,
                )
                flat.check(path, es.name, car=chain.car)
                meta["lfp_processing"] = "lfp chain"
                meta["lfp_unit"] = ZSCORE_UNIT if chain.zscore else "volts"
            channel_ids, positions = _channel_info(es, nwb, n_c)
            meta.update(lfp_source=es.name, lfp_rate=e_rate)
        else:
            meta["lfp_source"] = None
            log.info("session %s: no ElectricalSeries used; spikes only", name)

        # --- spikes
        spikes = unit_ids = None
        units = nwb.units if opts.units else None
        if counts_ts is not None and opts.units:
            skip = int(round((grid_start - (c_start - bin_size / 2)) / bin_size))
            spikes = np.asarray(counts_ts.data[()])[max(skip, 0):max(skip, 0) + n_bins]
            if skip < 0 or spikes.ndim != 2 or spikes.shape[0] != n_bins:
                raise RawDataError(f"'{path}': field '{counts_ts.name}' does not cover the bins "
                                   f"of {' and '.join(what)}")
            names = _counts_unit_names(nwb)
            if names is not None and len(names) == spikes.shape[1] \
                    and len(set(names)) == len(names):
                unit_ids = names
            meta["spikes_from"] = f"{counts_ts.name} (binned counts)"
        elif units is not None and len(units) > 0:
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
            finite = np.isfinite(st) & np.isfinite(sp)
            if not finite.all():  # a trial without a time cannot be placed: it is left out
                meta["trials_without_times"] = int((~finite).sum())
                st, sp = st[finite], sp[finite]
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


class _FlatCheck:
    """Watches the LFP samples as they are read: a recording constant on every channel, or (when
    the chain subtracts the common average) the same on every channel, holds no LFP -- the
    chain would z-score its rounding noise into unit-variance noise."""

    def __init__(self, n_channels: int):
        self.lo = np.full(n_channels, np.inf)
        self.hi = np.full(n_channels, -np.inf)
        self.spread = 0.0  # largest difference between channels at one sample
        self.peak = 0.0

    def see(self, x: Any) -> None:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != self.lo.shape[0]:
            return
        with np.errstate(invalid="ignore"):
            self.lo = np.fmin(self.lo, x.min(axis=0))
            self.hi = np.fmax(self.hi, x.max(axis=0))
            self.spread = max(self.spread, float(np.nanmax(x.max(axis=1) - x.min(axis=1))))
            self.peak = max(self.peak, float(np.nanmax(np.abs(x))))

    def check(self, path: Path, field: str, car: bool) -> None:
        if (self.hi <= self.lo).all():
            raise RawDataError(f"'{path}': field '{field}.data' is constant on every channel; it "
                               "holds no LFP (prepare with --no-lfp for spikes only)")
        if car and self.lo.shape[0] > 1 and not self.spread > 1e-9 * self.peak:
            raise RawDataError(f"'{path}': field '{field}.data' is the same on every channel, so "
                               "the common average reference leaves nothing; set chain.car=false "
                               "or prepare with --no-lfp")


def _numbers(ts: Any, path: Path) -> np.ndarray:
    """A behaviour TimeSeries' data as float64, or one line saying it holds no numbers."""
    try:
        data = np.asarray(ts.data[()], dtype=np.float64)
    except (TypeError, ValueError):
        raise RawDataError(f"'{path}': field '{ts.name}.data' does not hold numbers; expected "
                           "[n, 2] velocities or positions") from None
    return data


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
