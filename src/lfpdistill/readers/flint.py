"""Flint et al. 2012 center-out data (monkey C): ``Flint_2012_e1.mat`` ... ``Flint_2012_e5.mat``.

MAT 5 files (``scipy.io.loadmat``) holding a struct array ``Subject``; each ``Subject(i)`` is one
session, named here ``e<k>_<i>`` (``k`` from the file name, ``i`` 1-based). ``Subject(i).Trial(j)``
has ``Time`` (T, 1) s at 100 Hz on a clock shared by the session's trials, ``HandPos`` and
``HandVel`` (T, 3; x and y used), ``TargetPos`` (NaN outside reaches), ``Condition`` and
``Neuron(k)`` with ``Spike`` (spike times, s) and ``LFP`` (2 kHz; present on the first 95 neurons,
empty on the rest).

Trials are concatenated in time order: bin ``b`` of trial ``j`` is *centred* on ``Time(b)``, so a
session's bins are the trials' 100 Hz samples back to back (gaps between trials are dropped and
their total is reported in ``meta['gaps_s']``; ``Session.trials`` holds each trial's bins).
Spikes are counted per neuron in bins ``[Time(b) - 5 ms, Time(b) + 5 ms)``. Velocity is
``HandVel(:, 1:2)``. The LFP of the neurons that have one (one channel each) is taken to start
at ``Time(1)`` of its trial with 20 samples per bin (a mismatch of up to one bin's worth of
samples is padded/trimmed at the trial's end), the trials' LFP is concatenated and run through
the LFP chain (:func:`lfpdistill.preprocess.broadband_to_lfp_chunked`) as one signal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import scipy.io

from ..errors import ConfigError
from ..preprocess import LfpChainConfig, bin_spike_times, broadband_to_lfp_chunked
from ..session import Session
from ._common import RawDataError, file_kind, first_line, log

_NAME = re.compile(r"^e(\d+)_(\d+)$")
_FILE = re.compile(r"^Flint_2012_e(\d+)\.mat$")


class FlintOptions(pydantic.BaseModel, extra="forbid"):
    """Reader options: ``lfp=False`` skips the LFP; ``lfp_fs`` is its sampling rate (Hz)."""

    lfp: bool = True
    lfp_fs: float = pydantic.Field(2000.0, gt=0)
    chunk_s: float = pydantic.Field(60.0, gt=0)


def _file(raw_dir: Path, exp: int) -> Path:
    return Path(raw_dir) / f"Flint_2012_e{exp}.mat"


def _check_mat5(path: Path) -> None:
    kind = file_kind(path)
    if kind == "missing":
        raise RawDataError(f"'{path}' does not exist")
    if kind in ("mat7.3", "hdf5"):
        raise RawDataError(
            f"'{path}' is a MATLAB v7.3/HDF5 file; expected a MAT 5 file (as released by Flint "
            "et al.; re-save with save(..., '-v7'))"
        )
    if kind != "mat5":
        raise RawDataError(f"'{path}' is not a MAT 5 file (no MATLAB header; truncated?)")


def list_sessions(raw_dir: Path) -> list[str]:
    """Session names ``e<k>_<i>`` of every ``Flint_2012_e<k>.mat`` in ``raw_dir``."""
    out = []
    for p in sorted(Path(raw_dir).glob("Flint_2012_e*.mat")):
        m = _FILE.match(p.name)
        if not m:
            continue
        _check_mat5(p)
        try:
            info = {name: shape for name, shape, _ in scipy.io.whosmat(p)}
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise RawDataError(f"'{p}' is unreadable (truncated or corrupt: {first_line(e)})") \
                from None
        if "Subject" not in info:
            raise RawDataError(f"'{p}': field 'Subject' is missing")
        n = int(np.prod(info["Subject"]))
        out.extend(f"e{m.group(1)}_{i + 1}" for i in range(n))
    return out


def session_files(raw_dir: Path, name: str) -> list[Path]:
    m = _NAME.match(name)
    if not m:
        return []
    p = _file(raw_dir, int(m.group(1)))
    return [p] if p.exists() else []


def _items(x: Any) -> list[Any]:
    """Elements of a struct array (or of a cell array of 1 x 1 structs), in MATLAB order."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        out = []
        for el in x.ravel(order="F"):
            while isinstance(el, np.ndarray) and el.dtype == object and el.size == 1:
                el = el.ravel()[0]
            out.append(el)
        return out
    return [x]


def _get(obj: Any, field: str, where: str, path: Path) -> Any:
    names = getattr(obj, "_fieldnames", None)
    if names is None or field not in names:
        raise RawDataError(f"'{path}': field '{where}.{field}' is missing")
    return getattr(obj, field)


def _num(x: Any, where: str, path: Path) -> np.ndarray:
    arr = np.asarray(x)
    if arr.size == 0:
        return np.zeros((0,), dtype=np.float64)
    if not np.issubdtype(arr.dtype, np.number):
        raise RawDataError(f"'{path}': field '{where}' has dtype {arr.dtype}; expected numbers")
    return arr.astype(np.float64, copy=False)


def _load(path: Path) -> list[Any]:
    _check_mat5(path)
    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=False)
    except Exception as e:  # noqa: BLE001 - scipy raises many types for bad files
        raise RawDataError(f"'{path}' is unreadable (truncated or corrupt: {first_line(e)})") \
            from None
    if "Subject" not in mat:
        raise RawDataError(f"'{path}': field 'Subject' is missing")
    return _items(mat["Subject"])


def _read_subject(subject: Any, name: str, path: Path, bin_size: float, opts: FlintOptions,
                  chain: LfpChainConfig) -> Session:
    where = f"Subject({name.split('_')[1]})"
    trials = _items(_get(subject, "Trial", where, path))
    if not trials:
        raise RawDataError(f"'{path}': field '{where}.Trial' is empty")
    r = opts.lfp_fs * bin_size
    if abs(r - round(r)) > 1e-6 or round(r) < 1:
        raise ConfigError(
            f"bin_size {bin_size} s must be a whole number of LFP samples at {opts.lfp_fs} Hz"
        )
    r = int(round(r))
    vel_parts, spike_parts, lfp_parts, bounds, conditions = [], [], [], [], []
    n_neurons: int | None = None
    lfp_chans: list[int] | None = None
    prev_end = -np.inf
    gaps = 0.0
    start_bin = 0
    t_first = None
    for j, tr in enumerate(trials, start=1):
        w = f"{where}.Trial({j})"
        time = _num(_get(tr, "Time", w, path), f"{w}.Time", path).ravel()
        n_t = len(time)
        if n_t < 1:
            raise RawDataError(f"'{path}': field '{w}.Time' is empty")
        if not np.isfinite(time).all():
            raise RawDataError(f"'{path}': field '{w}.Time' contains NaN/inf")
        if n_t > 1:
            step = np.diff(time)
            if np.abs(step - bin_size).max() > 0.01 * bin_size:
                raise RawDataError(
                    f"'{path}': field '{w}.Time' is not sampled every {bin_size:g} s "
                    f"(steps {step.min():.4g}..{step.max():.4g} s); use the matching bin_size"
                )
        if time[0] < prev_end + 0.5 * bin_size:
            raise RawDataError(
                f"'{path}': field '{w}.Time' starts at {time[0]:.3f} s, before the previous "
                f"trial ends ({prev_end:.3f} s); trials must follow each other on one clock"
            )
        if np.isfinite(prev_end):
            gaps += float(time[0] - prev_end - bin_size)
        prev_end = float(time[-1])
        if t_first is None:
            t_first = float(time[0])

        vel = _num(_get(tr, "HandVel", w, path), f"{w}.HandVel", path)
        if vel.ndim != 2 or vel.shape[0] != n_t or vel.shape[1] < 2:
            raise RawDataError(
                f"'{path}': field '{w}.HandVel' has shape {list(vel.shape)}; expected [{n_t}, 3]"
            )
        if not np.isfinite(vel[:, :2]).all():
            raise RawDataError(f"'{path}': field '{w}.HandVel' contains NaN/inf")
        vel_parts.append(vel[:, :2])
        if "Condition" in (getattr(tr, "_fieldnames", None) or []):
            c = np.asarray(tr.Condition).ravel()
            conditions.append(c[0].item() if c.size else None)

        neurons = _items(_get(tr, "Neuron", w, path))
        if n_neurons is None:
            n_neurons = len(neurons)
        elif len(neurons) != n_neurons:
            raise RawDataError(
                f"'{path}': field '{w}.Neuron' has {len(neurons)} neurons; Trial(1) has "
                f"{n_neurons}"
            )
        trains, lfps = [], {}
        for k, nr in enumerate(neurons, start=1):
            wn = f"{w}.Neuron({k})"
            st = _num(_get(nr, "Spike", wn, path), f"{wn}.Spike", path).ravel()
            if not np.isfinite(st).all():
                raise RawDataError(f"'{path}': field '{wn}.Spike' contains NaN/inf")
            trains.append(st)
            if opts.lfp and "LFP" in (getattr(nr, "_fieldnames", None) or []):
                x = _num(nr.LFP, f"{wn}.LFP", path).ravel()
                if x.size:
                    lfps[k - 1] = x
        spike_parts.append(bin_spike_times(trains, float(time[0]) - bin_size / 2, n_t,
                                           bin_size))
        if opts.lfp:
            chans = sorted(lfps)
            if lfp_chans is None:
                lfp_chans = chans
            elif chans != lfp_chans:
                raise RawDataError(
                    f"'{path}': field '{w}.Neuron(k).LFP' is present on {len(chans)} neurons; "
                    f"Trial(1) has it on {len(lfp_chans)}"
                )
            need = r * n_t
            for k, x in lfps.items():
                if abs(len(x) - need) > r:
                    raise RawDataError(
                        f"'{path}': field '{w}.Neuron({k + 1}).LFP' has {len(x)} samples; "
                        f"expected {need} ({r} per {bin_size:g} s bin at {opts.lfp_fs:g} Hz)"
                    )
                if not np.isfinite(x).all():
                    bad = int(np.flatnonzero(~np.isfinite(x))[0])
                    raise RawDataError(
                        f"'{path}': field '{w}.Neuron({k + 1}).LFP' has NaN/inf (sample {bad})"
                    )
                lfps[k] = x[:need] if len(x) >= need else np.concatenate(
                    [x, np.full(need - len(x), x[-1])])
            lfp_parts.append(lfps)
        bounds.append((start_bin, start_bin + n_t))
        start_bin += n_t

    n_bins = start_bin
    velocity = np.concatenate(vel_parts, axis=0)
    spikes = np.concatenate(spike_parts, axis=0)
    meta: dict[str, Any] = {"source": "flint2012", "mat_file": path.name, "n_trials": len(trials),
                            "gaps_s": round(gaps, 6), "conditions": conditions}
    lfp = None
    channel_ids = None
    if opts.lfp and lfp_chans:
        offsets = np.concatenate([[0], np.cumsum([r * (b - a) for a, b in bounds])])
        n_samples = int(offsets[-1])
        chans = lfp_chans

        def read(a: int, b: int) -> np.ndarray:
            out = np.empty((b - a, len(chans)), dtype=np.float64)
            j = int(np.searchsorted(offsets, a, side="right")) - 1
            pos = a
            while pos < b:
                lo, hi = int(offsets[j]), int(offsets[j + 1])
                stop = min(b, hi)
                for ci, k in enumerate(chans):
                    out[pos - a: stop - a, ci] = lfp_parts[j][k][pos - lo: stop - lo]
                pos = stop
                j += 1
            return out

        lfp = broadband_to_lfp_chunked(
            read, n_samples, len(chans), opts.lfp_fs, bin_size, chain, 0.0,
            chunk_s=opts.chunk_s, grid_start=-bin_size / 2, n_bins=n_bins,
            what=f"'{path}' {where} LFP",
        )
        channel_ids = [f"n{k + 1:03d}" for k in chans]
        meta.update(lfp_source=path.name, lfp_fs=opts.lfp_fs)
    else:
        why = "disabled (lfp=False)" if not opts.lfp else "no neuron has an LFP"
        meta.update(lfp_source=None, lfp_note=f"spikes only: {why}")
        log.info("session %s: %s; spikes only", name, why)
    return Session(
        name=name, subject="C", velocity=velocity, spikes=spikes, lfp=lfp, bin_size=bin_size,
        unit_ids=[f"n{k + 1:03d}" for k in range(spikes.shape[1])], channel_ids=channel_ids,
        trials=np.array(bounds, dtype=np.int64), t0=float(t_first) - bin_size / 2, meta=meta,
    )


def read_sessions(raw_dir: Path, sessions: list[str], bin_size: float = 0.01,
                  options: FlintOptions | None = None,
                  chain: LfpChainConfig | None = None) -> Iterator[Session]:
    """Yield the named sessions (``e<k>_<i>``), loading each file once."""
    opts = options or FlintOptions()
    chain = chain or LfpChainConfig()
    loaded: dict[int, list[Any]] = {}
    for name in sessions:
        m = _NAME.match(name)
        if not m:
            raise RawDataError(f"session '{name}' is not a Flint 2012 name (expected e<k>_<i>)")
        exp, idx = int(m.group(1)), int(m.group(2))
        path = _file(raw_dir, exp)
        if exp not in loaded:
            loaded.clear()  # keep one file in memory at a time
            loaded[exp] = _load(path)
        subjects = loaded[exp]
        if not 1 <= idx <= len(subjects):
            raise RawDataError(
                f"session '{name}' is not in '{path}' (it has {len(subjects)} subjects)"
            )
        yield _read_subject(subjects[idx - 1], name, path, bin_size, opts, chain)
