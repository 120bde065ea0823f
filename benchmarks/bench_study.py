"""Where the study's time goes, and how the cost grows with the data.

Two parts, both printed as tables and saved as JSON:

1. ``--study CONFIG``: runs ``lfpdistill run CONFIG`` into a fresh output folder (nothing
   cached) and prints the wall time of every stage and unit, sorted, with its share of the total
   (from the ``stages`` log of the study's ``results.json``). ``--from-results FILE`` prints the
   same table for a study that already ran.
2. ``--scaling``: time and peak memory of one training step (masked autoencoding, forward +
   backward + AdamW) and of one held-out read-out (the frozen teacher's latents of a batch, over
   its 10 hide-patterns) of the recommended models, as the window length (1, 2, 5, 10 s), the
   channel count (32-256) and the number of sessions in a batch (1-32) grow, with the fitted
   exponent of each curve (time ~ size^k). Every point runs in its own process, so its peak
   resident memory (``ru_maxrss``) is its own; the memory column is the peak minus the
   process's resident size before the model was built.

    python benchmarks/bench_study.py --study configs/demo.yaml --json results/bench_study.json
    python benchmarks/bench_study.py --scaling --json results/bench_scaling.json

Timings are only meaningful on a quiet machine: never run this next to another heavy job.
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
from typing import Any

import numpy as np

SCALING = {
    "window_s": [1.0, 2.0, 5.0, 10.0],
    "channels": [32, 64, 128, 256],
    "sessions": [1, 2, 4, 8, 16, 32],
}
BASE = {"window_s": 1.0, "channels": 96, "sessions": 1}


# ------------------------------------------------------------------------------ study stages
def stage_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    ran = [s for s in results.get("stages", []) if "seconds" in s]
    total = sum(s["seconds"] for s in ran) or 1.0
    rows = [{"stage": s["stage"], "unit": s["unit"], "seconds": s["seconds"],
             "share": s["seconds"] / total} for s in ran]
    rows.sort(key=lambda r: -r["seconds"])
    return rows


def print_stages(rows: list[dict[str, Any]], wall: float | None) -> None:
    by_stage: dict[str, float] = {}
    for r in rows:
        by_stage[r["stage"]] = by_stage.get(r["stage"], 0.0) + r["seconds"]
    total = sum(by_stage.values()) or 1.0
    print(f"{'stage':12s} {'seconds':>9s} {'share':>6s}")
    for st, sec in sorted(by_stage.items(), key=lambda kv: -kv[1]):
        print(f"{st:12s} {sec:9.1f} {sec / total:6.1%}")
    print(f"{'all units':12s} {total:9.1f}" + (f"   (wall {wall:.1f} s)" if wall else ""))
    print(f"\n{'stage/unit':40s} {'seconds':>9s} {'share':>6s}")
    for r in rows:
        print(f"{r['stage'] + '/' + r['unit']:40s} {r['seconds']:9.1f} {r['share']:6.1%}")


def unit_seconds(results: dict[str, Any]) -> dict[str, float]:
    """Mean seconds per unit of every stage that ran: the form of the study's time-left
    reference (``lfpdistill.study.runner.REFERENCE_UNIT_SECONDS``), measured on this machine."""
    by_stage: dict[str, list[float]] = {}
    for s in results.get("stages", []):
        if "seconds" in s:
            by_stage.setdefault(s["stage"], []).append(float(s["seconds"]))
    return {st: round(sum(v) / len(v), 1) for st, v in by_stage.items()}


def run_study(config: Path, out: Path | None = None) -> tuple[dict[str, Any], float]:
    """Run ``config`` with nothing cached: in a temporary folder, or in ``out`` (which must not
    exist yet, so that nothing in it is reused) to keep the study's report."""
    import yaml

    from lfpdistill.config import ExperimentConfig
    from lfpdistill.study import run_experiment

    raw = yaml.safe_load(config.read_text())
    if out is not None and out.exists():
        raise SystemExit(f"--out {out} exists: a timed study must start empty (remove it or "
                         "choose another folder)")
    with tempfile.TemporaryDirectory(prefix="bench_study_") as tmp:
        folder = out or Path(tmp) / "study"
        cfg = ExperimentConfig(**{**raw, "out": str(folder)})
        t0 = time.perf_counter()
        run_experiment(cfg)
        wall = time.perf_counter() - t0
        results = json.loads((folder / "results.json").read_text())
    return results, wall


# ---------------------------------------------------------------------------------- scaling
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_point(kind: str, window_s: float, channels: int, sessions: int, reps: int) -> dict:
    """One point, in this process: seconds per call and peak memory above the start."""
    import torch

    from lfpdistill.allocator import tune_cpu_allocator
    from lfpdistill.config import ModelConfig, recommended_model, recommended_train
    from lfpdistill.models import NeuralTransformer, masked_loss

    tune_cpu_allocator()  # as the command line does
    rss0 = rss_bytes()
    role = "lfp" if kind == "student_step" else "teacher"
    cfg = ModelConfig(**recommended_model(role).model_dump())
    names = [f"s{i}" for i in range(sessions)]
    torch.manual_seed(0)
    model = NeuralTransformer(cfg, dict.fromkeys(names, channels))
    B = recommended_train("distill" if role == "lfp" else "teacher").batch_size
    T = int(round(window_s / 0.01))
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(B, T, channels, generator=g) if role == "lfp"
         else torch.poisson(torch.full((B, T, channels), 0.1), generator=g))
    batch_names = [names[i % sessions] for i in range(B)]
    if kind == "teacher_readout":
        model.eval()

        def call() -> None:
            model.encode(x, batch_names, readout="held_out")
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()

        def call() -> None:
            out = model.forward_masked(x, batch_names)
            loss, _ = masked_loss(out, model.modality)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    call()
    t0 = time.perf_counter()
    for _ in range(reps):
        call()
    sec = (time.perf_counter() - t0) / reps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": sec, "peak_mb": max(peak - rss0, 0) / 2**20, "batch": B}


def point_in_subprocess(kind: str, window_s: float, channels: int, sessions: int, reps: int
                        ) -> dict[str, Any]:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_study as b; print(json.dumps(b.measure_point({kind!r}, {window_s}, "
            f"{channels}, {sessions}, {reps})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"scaling point {kind} {window_s}s {channels}ch {sessions} sessions "
                         f"failed: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponent(xs: list[float], ys: list[float]) -> float:
    """Slope of log(y) against log(x): the k of y ~ x^k."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def scaling(kinds: list[str], reps: int) -> list[dict[str, Any]]:
    rows = []
    for kind in kinds:
        for axis, values in SCALING.items():
            pts = []
            for v in values:
                args = {**BASE, axis: v}
                r = point_in_subprocess(kind, args["window_s"], args["channels"], args["sessions"],
                                        reps)
                pts.append({"value": v, **r})
                print(f"{kind:16s} {axis:9s} {v:>6}: {r['seconds'] * 1e3:8.1f} ms  "
                      f"{r['peak_mb']:7.0f} MB", flush=True)
            k_t = exponent([p["value"] for p in pts], [p["seconds"] for p in pts])
            k_m = exponent([p["value"] for p in pts], [max(p["peak_mb"], 1.0) for p in pts])
            print(f"{kind:16s} {axis:9s} time ~ {axis}^{k_t:.2f}, memory ~ {axis}^{k_m:.2f}\n",
                  flush=True)
            rows.append({"kind": kind, "axis": axis, "points": pts, "time_exponent": k_t,
                         "memory_exponent": k_m})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, help="run this study config uncached and time it")
    ap.add_argument("--out", type=Path, default=None,
                    help="keep the timed study in this (new) folder instead of a temporary one")
    ap.add_argument("--from-results", type=Path,
                    help="the stage table of a finished study (its folder or results.json)")
    ap.add_argument("--scaling", action="store_true", help="cost growth with the data's size")
    ap.add_argument("--kinds", default="student_step,teacher_step,teacher_readout")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per scaling point")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not (args.study or args.from_results or args.scaling):
        ap.error("nothing to do: give --study, --from-results and/or --scaling")
    import torch

    from lfpdistill.allocator import tune_cpu_allocator

    report: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                              "loadavg_1min": os.getloadavg()[0],
                              # the study runs in this process, as the command line runs it
                              "allocator_tuned": tune_cpu_allocator()}
    if args.study or args.from_results:
        if args.study:
            results, wall = run_study(args.study, args.out)
        else:
            results = read_results(args.from_results)
            wall = results.get("seconds")
        rows = stage_table(results)
        print_stages(rows, wall)
        per_unit = unit_seconds(results)
        print(f"\nseconds per unit (the time-left reference): {per_unit}")
        report["study"] = {"config": str(args.study or args.from_results), "wall_s": wall,
                           "units": rows, "seconds_per_unit": per_unit}
    if args.scaling:
        report["scaling"] = scaling(args.kinds.split(","), args.reps)
    if args.json:
        from lfpdistill.data import write_json_atomic

        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")


def read_results(path: Path) -> dict[str, Any]:
    """A finished study's ``results.json``, given it or the study's output folder."""
    file = path / "results.json" if path.is_dir() else path
    try:
        results = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"--from-results {path}: not a finished study's results.json ({e}); "
                         "give the study's output folder or its results.json") from None
    if not isinstance(results, dict) or "stages" not in results:
        raise SystemExit(f"--from-results {path}: {file.name} holds no stage times; give the "
                         "results.json that `lfpdistill run` wrote")
    return results


if __name__ == "__main__":
    main()
