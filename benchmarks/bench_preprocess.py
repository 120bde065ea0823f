"""Benchmark the streamed broadband -> LFP chain on a synthetic O'Doherty-sized recording.

Writes a synthetic int16 broadband HDF5 (default: 96 channels, 24 414.0625 Hz, 30 minutes,
chunked like the real NWB files) to a temporary directory, then processes it with
:func:`lfpdistill.preprocess.broadband_to_lfp_chunked` in a *fresh single-threaded child
process* and reports that process's peak RSS (``resource.getrusage``) and the throughput as a
multiple of real time.

    python benchmarks/bench_preprocess.py --minutes 30
    python benchmarks/bench_preprocess.py --minutes 2 --compression gzip --json out.json

Targets: peak RSS <= 2 GB and >= 20x real time on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

FS = 24414.0625


def write_file(path: Path, minutes: float, n_ch: int, compression: str | None,
               seed: int = 0) -> int:
    """Write ``acquisition/timeseries/broadband/data`` int16 [N, n_ch]; returns N."""
    n = int(minutes * 60 * FS)
    rng = np.random.default_rng(seed)
    block = 1 << 18
    with h5py.File(path, "w") as f:
        g = f.require_group("acquisition/timeseries/broadband")
        d = g.create_dataset("data", shape=(n, n_ch), dtype="i2", chunks=(8192, n_ch),
                             compression=compression)
        d.attrs["conversion"] = 0.195e-6
        phase = rng.uniform(0, 2 * np.pi, n_ch)
        for a in range(0, n, block):
            b = min(n, a + block)
            t = np.arange(a, b) / FS
            x = rng.integers(-300, 300, size=(b - a, n_ch), dtype=np.int16).astype(np.float32)
            x += (200 * np.sin(2 * np.pi * 60 * t))[:, None]
            x += 400 * np.sin(2 * np.pi * 7 * t[:, None] + phase[None, :])
            d[a:b] = x.astype(np.int16)
    return n


def process(path: Path, chunk_s: float) -> dict:
    """Run the chain on ``path``; returns timings and this process's peak RSS."""
    from lfpdistill.preprocess import broadband_to_lfp_chunked

    with h5py.File(path, "r") as f:
        d = f["acquisition/timeseries/broadband/data"]
        conv = float(d.attrs["conversion"])
        n, c = d.shape
        t = time.perf_counter()
        y = broadband_to_lfp_chunked(lambda a, b: d[a:b], n, c, FS, 0.01, chunk_s=chunk_s,
                                     what=str(path), scale=conv)
        wall = time.perf_counter() - t
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dur = n / FS
    return {"signal_s": dur, "channels": c, "wall_s": wall, "x_realtime": dur / wall,
            "peak_rss_mb": rss_kb / 1024, "out_shape": list(y.shape), "chunk_s": chunk_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--channels", type=int, default=96)
    ap.add_argument("--chunk-s", type=float, default=60.0)
    ap.add_argument("--compression", choices=["none", "gzip"], default="none")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    ap.add_argument("--_process", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._process is not None:  # child: process only, print JSON
        print(json.dumps(process(args._process, args.chunk_s)))
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "broadband.h5"
        t = time.perf_counter()
        write_file(path, args.minutes, args.channels,
                   None if args.compression == "none" else args.compression)
        print(f"wrote {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        out = subprocess.run(
            [sys.executable, __file__, "--_process", str(path), "--chunk-s", str(args.chunk_s)],
            env=env, check=True, capture_output=True, text=True,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(minutes=args.minutes, compression=args.compression,
               file_gb=round(path.stat().st_size / 1e9, 3) if path.exists() else None)
    print(json.dumps(res, indent=2))
    if args.json:
        from lfpdistill.data import write_json_atomic

        write_json_atomic(args.json, res)


if __name__ == "__main__":
    main()
