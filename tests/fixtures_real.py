"""Builders of small raw-data files in the exact layouts of the real datasets (docs/real_data.md).

- :func:`write_mat73` -- a MATLAB v7.3 MAT-file: HDF5 behind a 512-byte user block whose text
  starts ``MATLAB 7.3 MAT-file``; arrays stored transposed (column-major), cells as object
  references into ``#refs#``, empty cells as a (2,) uint64 dataset with ``MATLAB_empty``.
- :func:`make_odoherty` -- ``indy_*.mat`` (+ NWB 1.0.6 broadband ``indy_*.nwb``) with known
  spike times, cursor trajectory and broadband signal.
- :func:`make_flint` -- ``Flint_2012_e<k>.mat`` (MAT 5 via scipy.io.savemat).

Everything returned alongside the files is the ground truth the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

BB_FS = 24414.0625


# ------------------------------------------------------------------------------ MAT v7.3
class Cell:
    """A MATLAB cell array (shape in MATLAB order) of numeric arrays, strings or None."""

    def __init__(self, items: list[list[Any]]):
        self.items = items  # items[i][j] = MATLAB cell (i, j)


def _mat_header(text: str = "MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
                "Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 .") -> bytes:
    head = text.encode().ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    return head.ljust(512, b"\x00")


def write_mat73(path: Path, fields: dict[str, Any], header: bool = True) -> Path:
    """Write ``fields`` (numeric arrays in MATLAB shape, or :class:`Cell`) as a v7.3 file."""
    path = Path(path)
    counter = [0]

    def ref_name() -> str:
        counter[0] += 1
        n, s = counter[0], ""
        while n:
            n, r = divmod(n - 1, 26)
            s = chr(97 + r) + s
        return s

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")

        def put_value(group: h5py.Group, name: str, value: Any) -> h5py.Dataset:
            if value is None:
                d = group.create_dataset(name, data=np.zeros(2, dtype=np.uint64))
                d.attrs["MATLAB_class"] = np.bytes_("double")
                d.attrs["MATLAB_empty"] = np.uint8(1)
                return d
            if isinstance(value, str):
                codes = np.array([[ord(ch) for ch in value]], dtype=np.uint16)  # MATLAB 1 x L
                d = group.create_dataset(name, data=codes.T)
                d.attrs["MATLAB_class"] = np.bytes_("char")
                d.attrs["MATLAB_int_decode"] = np.int32(2)
                return d
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 1:
                arr = arr[:, None]  # MATLAB column vector
            d = group.create_dataset(name, data=arr.T)  # column-major -> transposed in HDF5
            d.attrs["MATLAB_class"] = np.bytes_("double")
            return d

        for key, value in fields.items():
            if isinstance(value, Cell):
                rows, cols = len(value.items), len(value.items[0])
                arr = np.empty((cols, rows), dtype=h5py.ref_dtype)  # transposed
                for i in range(rows):
                    for j in range(cols):
                        arr[j, i] = put_value(refs, ref_name(), value.items[i][j]).ref
                d = f.create_dataset(key, data=arr)
                d.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                put_value(f, key, value)
    if header:
        with open(path, "r+b") as fh:
            fh.write(_mat_header())
    return path


# ------------------------------------------------------------------------------ O'Doherty
@dataclass
class ODohertyTruth:
    name: str
    t: np.ndarray
    cursor: np.ndarray  # [k, 2]
    target: np.ndarray  # [k, 2]
    spikes: list[list[np.ndarray | None]]  # [channel][unit] times (None = empty cell)
    chan_names: list[str]
    grid_start: float
    n_bins: int
    bb: np.ndarray | None = None  # [N, C] int16
    bb_t0: float = 0.0
    conversion: float = 0.25e-6
    electrode_names: list[str] = field(default_factory=list)


def make_odoherty(raw_dir: Path, name: str = "indy_20160407_02", n_ch: int = 8,
                  n_units: int = 3, beh_t0: float = 1000.25, beh_dur: float = 12.0,
                  bb_t0: float | None = 999.1, bb_dur: float = 12.5, bb_channels: int | None = None,
                  seed: int = 0, bin_size: float = 0.01) -> ODohertyTruth:
    """Write ``NAME.mat`` (and ``NAME.nwb`` unless ``bb_t0`` is None) into ``raw_dir``.

    Spike times sit at ``grid_start + (k + 0.5 +- 0.3) * bin_size`` so the expected counts per
    bin are unambiguous; cells (unit u, channel c) are empty for some units.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    k = int(beh_dur * 250)
    t = beh_t0 + np.arange(k) / 250.0
    cursor = np.stack([30 * np.sin(2 * np.pi * 0.3 * (t - beh_t0)),
                       20 * np.cos(2 * np.pi * 0.2 * (t - beh_t0))], axis=1)
    target = np.repeat(rng.uniform(-50, 50, size=(k // 500 + 1, 2)), 500, axis=0)[:k]

    if bb_t0 is not None:
        start = max(beh_t0, bb_t0)
        stop = min(t[-1], bb_t0 + (int(bb_dur * BB_FS) - 1) / BB_FS)
    else:
        start, stop = beh_t0, t[-1]
    n_bins = max(0, int(np.floor((stop - start) / bin_size + 1e-9)))

    spikes: list[list[np.ndarray | None]] = []
    for c in range(n_ch):
        units: list[np.ndarray | None] = []
        for u in range(n_units):
            if (c + u) % 4 == 3:
                units.append(None)  # empty cell
                continue
            nk = rng.integers(20, 200)
            bins = rng.integers(-50, n_bins + 50, size=nk)  # some outside the grid
            times = start + (bins + 0.5 + rng.uniform(-0.3, 0.3, nk)) * bin_size
            units.append(np.sort(times))
        spikes.append(units)
    chan_names = [f"{'M1' if c < 96 else 'S1'} {c % 96 + 1:03d}" for c in range(n_ch)]
    cell_items = [[spikes[c][u] for c in range(n_ch)] for u in range(n_units)]  # MATLAB n x u
    fields = {
        "t": t[:, None],  # MATLAB k x 1
        "cursor_pos": cursor,  # k x 2
        "finger_pos": np.concatenate([cursor, np.zeros((k, 1))], axis=1),
        "target_pos": target,
        "spikes": Cell([[cell_items[u][c] for u in range(n_units)] for c in range(n_ch)]),
        "wf": Cell([[None for _ in range(n_units)] for _ in range(n_ch)]),
        "chan_names": Cell([[s] for s in chan_names]),
    }
    write_mat73(raw_dir / f"{name}.mat", fields)
    truth = ODohertyTruth(name, t, cursor, target, spikes, chan_names, start, n_bins)
    if bb_t0 is not None:
        c_bb = bb_channels or n_ch
        truth.bb, truth.bb_t0 = write_broadband(raw_dir / f"{name}.nwb", bb_t0, bb_dur, c_bb,
                                                seed, chan_names[:c_bb] if c_bb <= n_ch else None)
        truth.electrode_names = chan_names[:c_bb]
    return truth


def write_broadband(path: Path, t0: float, dur: float, n_ch: int, seed: int = 0,
                    names: list[str] | None = None, conversion: float = 0.25e-6,
                    timestamps: np.ndarray | None = None, dtype: str = "int16",
                    nan_at: int | None = None) -> tuple[np.ndarray, float]:
    """NWB 1.0.6 broadband file as written by the O'Doherty release (h5py, int16 counts)."""
    rng = np.random.default_rng(seed + 1)
    n = int(dur * BB_FS)
    tt = np.arange(n) / BB_FS
    x = rng.normal(0, 80, size=(n, n_ch))
    x += (300 * np.sin(2 * np.pi * 60 * tt))[:, None]
    for c in range(n_ch):
        x[:, c] += 500 * np.sin(2 * np.pi * (3 + c) * tt + c)
    data = np.round(x).astype(dtype)
    if nan_at is not None:
        data[nan_at, 0] = np.nan
    with h5py.File(path, "w") as f:
        f.create_dataset("nwb_version", data=np.bytes_("NWB-1.0.6"))
        g = f.create_group("acquisition/timeseries/broadband")
        d = g.create_dataset("data", data=data, chunks=(8192, n_ch), compression="gzip",
                             compression_opts=1)
        d.attrs["conversion"] = conversion
        d.attrs["unit"] = np.bytes_("volt")
        ts = t0 + tt if timestamps is None else timestamps
        g.create_dataset("timestamps", data=ts)
        nm = names or [f"elec {c + 1}" for c in range(n_ch)]
        g.create_dataset("electrode_names", data=np.array([s.encode() for s in nm]))
    return data, t0


def expected_counts(times_per_unit: list[np.ndarray], grid_start: float, n_bins: int,
                    bin_size: float = 0.01) -> np.ndarray:
    out = np.zeros((n_bins, len(times_per_unit)), dtype=np.int64)
    for i, times in enumerate(times_per_unit):
        for s in times:
            k = int(np.floor((s - grid_start) / bin_size))
            if 0 <= k < n_bins:
                out[k, i] += 1
    return out


# ------------------------------------------------------------------------------ Flint 2012
@dataclass
class FlintTruth:
    sessions: dict[str, dict[str, Any]]  # name -> {"trials": [...], ...}


def struct_array(records: list[dict[str, Any]]) -> np.ndarray:
    """A MATLAB 1 x n struct array for scipy.io.savemat (a numpy record array of objects)."""
    keys = list(records[0])
    arr = np.empty((1, len(records)), dtype=[(k, object) for k in keys])
    for i, rec in enumerate(records):
        for k in keys:
            arr[0, i][k] = rec[k]
    return arr


def make_flint(raw_dir: Path, exp: int = 1, n_subjects: int = 2, n_trials: int = 4,
               n_neurons: int = 6, n_lfp: int = 4, seed: int = 0,
               trial_s: tuple[float, float] = (2.0, 3.0), gap_s: float = 0.0,
               mutate: Any = None) -> dict[str, dict[str, Any]]:
    """Write ``Flint_2012_e<exp>.mat`` (MAT 5) and return per-session ground truth.

    ``gap_s`` separates consecutive trials; ``mutate(trials)`` may edit subject 1's trial
    records (dicts; ``"Neuron"`` is a list of dicts) before they are written.
    """
    rng = np.random.default_rng(seed + 10 * exp)
    truth: dict[str, dict[str, Any]] = {}
    subj = []
    for i in range(n_subjects):
        trials = []
        clock = 10.0 + 100 * i
        tr_truth = []
        for j in range(n_trials):
            n_t = int(rng.uniform(*trial_s) * 100)
            time = clock + np.arange(n_t) / 100.0
            clock = time[-1] + 0.01 + gap_s
            vel = rng.normal(0, 5, size=(n_t, 3))
            pos = np.cumsum(vel, axis=0) * 0.01
            target = np.full((n_t, 3), np.nan)
            target[n_t // 3:, :2] = rng.uniform(-8, 8, 2)
            neurons = []
            spikes, lfps = [], []
            for k in range(n_neurons):
                nk = int(rng.integers(0, 40))
                idx = rng.integers(0, n_t, size=nk)
                st = np.sort(time[idx] + rng.uniform(-0.003, 0.003, nk))
                lfp = (rng.normal(0, 1, (n_t * 20, 1)) + 3 * np.sin(
                    2 * np.pi * (4 + k) * (time[0] + np.arange(n_t * 20)[:, None] / 2000.0))
                       if k < n_lfp else np.zeros((0, 0)))
                neurons.append({"Spike": st.reshape(-1, 1) if nk else np.zeros((0, 0)),
                                "LFP": lfp})
                spikes.append(st)
                lfps.append(lfp)
            trials.append({"Time": time.reshape(-1, 1), "HandPos": pos, "HandVel": vel,
                           "TargetPos": target, "Condition": np.array([[j % 8 + 1]]),
                           "Neuron": neurons})
            tr_truth.append({"time": time, "vel": vel, "spikes": spikes, "lfp": lfps})
        if mutate is not None and i == 0:
            mutate(trials)
        for tr in trials:
            tr["Neuron"] = struct_array(tr["Neuron"])
        subj.append({"Trial": struct_array(trials)})
        truth[f"e{exp}_{i + 1}"] = {"trials": tr_truth}
    scipy.io.savemat(Path(raw_dir) / f"Flint_2012_e{exp}.mat", {"Subject": struct_array(subj)})
    return truth


# ------------------------------------------------------------------------------ NWB 2.x
def make_nwb2(path: Path, fs: float = 2000.0, lfp_t0: float = 4.0, lfp_dur: float = 12.0,
              pos_t0: float = 5.0, pos_dur: float = 10.0, pos_rate: float = 60.0,
              n_ch: int = 5, n_units: int = 4, seed: int = 0, bin_size: float = 0.01,
              extra_series: bool = True) -> dict[str, Any]:
    """NWB 2.x file (pynwb) with a raw ElectricalSeries, a position SpatialSeries and a Units
    table; returns the ground truth (signal, times, spike trains, bin grid)."""
    from datetime import UTC, datetime

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.behavior import Position
    from pynwb.ecephys import ElectricalSeries

    rng = np.random.default_rng(seed)
    nwb = NWBFile(session_description="fixture", identifier=f"fixture-{seed}",
                  session_start_time=datetime(2020, 1, 1, tzinfo=UTC))
    dev = nwb.create_device(name="probe")
    grp = nwb.create_electrode_group(name="shank", description="d", location="M1", device=dev)
    nwb.add_electrode_column(name="label", description="channel label")
    for c in range(n_ch):
        nwb.add_electrode(group=grp, location="M1", label=f"e{c:02d}", rel_x=0.4 * c,
                          rel_y=0.0)
    region = nwb.create_electrode_table_region(list(range(n_ch)), "all")
    n = int(lfp_dur * fs)
    tt = np.arange(n) / fs
    x = rng.normal(0, 1, (n, n_ch)) + 4 * np.sin(2 * np.pi * 60 * tt)[:, None]
    for c in range(n_ch):
        x[:, c] += 3 * np.sin(2 * np.pi * (2 + c) * tt + c)
    data = (x * 100).astype(np.int16)
    nwb.add_acquisition(ElectricalSeries(name="raw", data=data, electrodes=region,
                                         starting_time=lfp_t0, rate=fs, conversion=1e-6))
    if extra_series:
        nwb.add_acquisition(ElectricalSeries(name="other", data=data[:, :2],
                                             electrodes=nwb.create_electrode_table_region(
                                                 [0, 1], "two"),
                                             starting_time=lfp_t0, rate=fs))
    k = int(pos_dur * pos_rate)
    pt = pos_t0 + np.arange(k) / pos_rate
    pos = np.stack([10 * np.sin(2 * np.pi * 0.4 * pt), 5 * np.cos(2 * np.pi * 0.25 * pt)], 1)
    beh = nwb.create_processing_module("behavior", "behaviour")
    position = Position(name="Position")
    position.create_spatial_series(name="hand", data=pos, timestamps=pt, reference_frame="0")
    beh.add(position)
    start = max(lfp_t0, pos_t0)
    stop = min(lfp_t0 + (n - 1) / fs, pt[-1])
    n_bins = int(np.floor((stop - start) / bin_size + 1e-9))
    trains = []
    for _u in range(n_units):
        nk = int(rng.integers(30, 300))
        bins = rng.integers(-30, n_bins + 30, nk)
        trains.append(np.sort(start + (bins + 0.5 + rng.uniform(-0.3, 0.3, nk)) * bin_size))
    for tr in trains:
        nwb.add_unit(spike_times=tr)
    nwb.add_trial(start_time=start + 1.0, stop_time=start + 3.0)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return {"data": data, "fs": fs, "lfp_t0": lfp_t0, "pos_t": pt, "pos": pos,
            "trains": trains, "grid_start": start, "n_bins": n_bins, "conversion": 1e-6}
