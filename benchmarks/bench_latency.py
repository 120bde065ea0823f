"""Per-bin latency of a causal LFP decoder on one CPU core, eager (PyTorch) and ONNX (onnxruntime).

Builds the decoder of ``lfpdistill decode --stream`` (input normalisation -> causal transformer
-> linear read-out; random weights: the cost does not depend on their values) for a demo-sized
student (d_model 128, 2 layers, 4 heads) and a paper-sized one (d_model 256, 6 layers, 8 heads),
both with one token per 10 ms bin over 96 channels and the filter-bank embedder, exports each to
ONNX, and feeds ``--bins`` bins one at a time through :class:`StreamingDecoder` (the model's
key/value cache of the last ``--context`` bins), timing every step after ``--warmup`` steps. One thread:
``torch.set_num_threads(1)`` and onnxruntime ``intra_op_num_threads=1``.

    python benchmarks/bench_latency.py --json latency.json
    python benchmarks/bench_latency.py --sizes demo --context 150 --bins 2000
    python benchmarks/bench_latency.py --sizes demo --readouts linear_probe,wiener,combined

``--readouts``: the read-outs after the model (``lfpdistill export --readout``): the same-bin
linear map, the past-lag Wiener filter (10 lags x 2 bins: a ring of past latents in the state)
and the combined one (plus the LMP + band-power filters of every channel, in double precision).

Targets (issue #14): p99 <= 1 ms (demo) and <= 5 ms (paper) per bin. Timings are only
meaningful on a quiet machine: the 1-minute load average is printed and saved with them.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lfpdistill.commands.realtime import (
    CausalDecoder,
    Readout,
    StreamingDecoder,
    eager_step,
    export_decoder,
    onnx_session,
    onnx_step,
    state_dtypes,
    zero_state,
)
from lfpdistill.config import ModelConfig
from lfpdistill.data import write_json_atomic
from lfpdistill.models import NeuralTransformer

SIZES = {"demo": {"d_model": 128, "n_layers": 2, "n_heads": 4},
         "paper": {"d_model": 256, "n_layers": 6, "n_heads": 8}}
CHANNELS = 96


#: read-out -> (lags, lag step, features); the lagged ones use the classic 10 lags x 20 ms
READOUTS = {"linear_probe": (1, 1, "latents"), "wiener": (10, 2, "latents"),
            "combined": (10, 2, "latents+bandpower")}


def decoder(size: str, context: int, readout: str = "linear_probe") -> CausalDecoder:
    torch.manual_seed(0)
    cfg = ModelConfig(modality="lfp", patch_size=CHANNELS, embedder="filterbank", causal=True,
                      context_bins=context, dropout=0.0, **SIZES[size])
    model = NeuralTransformer(cfg, {"bench": CHANNELS}).eval()
    rng = np.random.default_rng(0)
    n_lags, lag_step, features = READOUTS[readout]
    n_feat = cfg.d_model + (CHANNELS * 5 if features == "latents+bandpower" else 0)
    r = Readout("bench", readout,
                (rng.normal(size=(2, n_lags * n_feat)) / np.sqrt(n_lags * n_feat)).astype(np.float32),
                np.zeros(2, np.float32), np.zeros(CHANNELS, np.float32),
                np.ones(CHANNELS, np.float32), n_lags, lag_step, features)
    return CausalDecoder(model, r).eval()


def time_stream(step, state, lfp: np.ndarray, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds per bin of ``StreamingDecoder.step`` (cache + model + read-out): wall
    time, and the CPU time of this thread (one thread computes everything; CPU time does not
    count the time the thread waits for a core, so on a busy machine it bounds the quiet
    latency from below)."""
    dec = StreamingDecoder(step, state, CHANNELS, np.zeros(CHANNELS, np.float32))
    for row in lfp[:warmup]:
        dec.step(row)
    wall, cpu = np.empty(len(lfp) - warmup), np.empty(len(lfp) - warmup)
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for i, row in enumerate(lfp[warmup:]):
        c0, t0 = cpu_clock(), clock()
        dec.step(row)
        wall[i], cpu[i] = (clock() - t0) / 1e6, (cpu_clock() - c0) / 1e6
    return wall, cpu


def summary(times: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    wall, cpu = times
    return {"median_ms": float(np.median(wall)), "p99_ms": float(np.percentile(wall, 99)),
            "max_ms": float(wall.max()), "cpu_median_ms": float(np.median(cpu)),
            "cpu_p99_ms": float(np.percentile(cpu, 99)), "bins": int(len(wall))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="demo,paper", help="comma-separated: demo, paper")
    ap.add_argument("--context", type=int, default=100, help="bins of context (100 = 1 s)")
    ap.add_argument("--bins", type=int, default=3000, help="timed bins per run")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--readouts", default="linear_probe",
                    help="comma-separated: linear_probe, wiener, combined")
    args = ap.parse_args()

    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
          f"{os.cpu_count()} cores" + ("  -- NOT QUIET: re-measure on an idle machine"
                                       if load[0] > 1.5 else ""))
    rng = np.random.default_rng(1)
    lfp = rng.normal(size=(args.bins + args.warmup, CHANNELS)).astype(np.float32)
    results = {"context_bins": args.context, "channels": CHANNELS, "threads": 1,
               "load_average_before": list(load), "torch": torch.__version__,
               "cpu": platform.processor() or platform.machine(), "sizes": {}}
    for size, readout in [(s, r) for s in args.sizes.split(",")
                          for r in args.readouts.split(",")]:
        dec = decoder(size, args.context, readout)
        n_params = sum(p.numel() for p in dec.parameters())
        names, dtypes = dec.state_names, state_dtypes(dec)

        row = {**SIZES[size], "parameters": n_params,
               "eager": summary(time_stream(eager_step(dec), dec.initial_state(), lfp,
                                            args.warmup))}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{size}.onnx"
            shapes = export_decoder(dec, CHANNELS, path)
            step = onnx_step(onnx_session(path, threads=1), names)
            row["state_bytes"] = int(sum(np.prod(shapes[n]) * np.dtype(dtypes[n]).itemsize
                                         for n in names))
            # same graph, same output: 300 bins stepped through both
            a = StreamingDecoder(eager_step(dec), dec.initial_state(), CHANNELS, np.zeros(CHANNELS))
            b = StreamingDecoder(step, zero_state(shapes, names, dtypes), CHANNELS,
                                 np.zeros(CHANNELS))
            diff = max(float(np.abs(a.step(x) - b.step(x)).max()) for x in lfp[:300])
            row["onnx"] = summary(time_stream(step, zero_state(shapes, names, dtypes), lfp,
                                              args.warmup))
            row["onnx_max_abs_diff_vs_eager"] = diff
        row["readout"] = readout
        results["sizes"][size if readout == "linear_probe" else f"{size}/{readout}"] = row
        for backend in ("eager", "onnx"):
            r = row[backend]
            print(f"{size:5s} {readout:12s} {backend:5s}  wall: median {r['median_ms']:.3f} ms  p99 "
                  f"{r['p99_ms']:.3f} ms  max {r['max_ms']:.3f} ms | thread CPU: median "
                  f"{r['cpu_median_ms']:.3f} ms  p99 {r['cpu_p99_ms']:.3f} ms  ({r['bins']} bins, "
                  f"context {args.context}, {n_params / 1e6:.2f} M parameters)")
    results["load_average_after"] = list(os.getloadavg())
    print(f"load average after: {results['load_average_after'][0]:.2f}")
    if args.json:
        write_json_atomic(args.json, results)
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
