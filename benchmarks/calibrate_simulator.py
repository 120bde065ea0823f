"""Calibrate the built-in simulator against the calibration targets of docs/simulator.md.

Simulates sessions, then per session decodes hand velocity with a Wiener filter (ridge on 10
causal lags x 20 ms, features standardised on train, penalty by 5-fold contiguous CV on train
only) on a *contiguous* split -- first 80 % of the bins train, last 20 % test -- from

- spikes (binned counts, summed in 20 ms steps between lags),
- raw LFP (the 100 Hz processed LFP itself),
- LMP + log band power (4-8, 8-13, 13-30, 30-50 Hz; causal features, see lfpdistill/evaluation/features.py),
- the ground-truth latents (the ceiling),

and prints the test R^2 (mean over x, y) per session and the mean over sessions.

Targets: spikes 0.60-0.80, raw LFP 0.25-0.40, LMP + band power 0.45-0.60.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/calibrate_simulator.py --sessions 8 --seconds 300 \\
        --seed 0 --path fast

    # the second family (recurrent network, volume-conductor LFP), one calibrated variant
    OMP_NUM_THREADS=1 python benchmarks/calibrate_simulator.py --family recurrent \
        --variant calibrated --sessions 2 --seconds 200 --seed 700
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lfpdistill.simulate import (
    CALIBRATION_BANDS,
    SimConfig,
    calibration_r2,
    resolve_variant,
    simulate_sessions,
)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--path", choices=["fast", "raw"], default="fast")
    ap.add_argument("--task", choices=["random_target", "center_out"], default="random_target")
    ap.add_argument("--degradation", type=float, default=0.0)
    ap.add_argument("--variant", choices=["default", "random", "calibrated"], default="default",
                    help="random: parameters drawn from docs/simulator.md's ranges (per --seed); "
                         "calibrated: that draw scaled into the calibration bands")
    ap.add_argument("--family", choices=["kinematic", "recurrent"], default="kinematic",
                    help="simulator family (docs/simulator.md): kinematic (simulate/generator.py) "
                         "or recurrent (simulate/recurrent.py)")
    ap.add_argument("--extra", action="store_true", help="also LMP-only and power-only columns")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)

    cfg = SimConfig(n_sessions=args.sessions, seconds=args.seconds, seed=args.seed,
                    path=args.path, task=args.task, degradation=args.degradation,
                    variant=args.variant, family=args.family)
    t0 = time.perf_counter()
    cfg = resolve_variant(cfg)  # the drawn (and calibrated) parameters, recorded below
    if cfg.calibration is not None:
        print(f"calibration: {cfg.calibration.describe()}")
    sessions = simulate_sessions(cfg)
    t_sim = time.perf_counter() - t0
    print(f"simulated {len(sessions)} x {args.seconds:g} s ({args.family} family, {args.path} "
          f"path) in {t_sim:.1f} s")

    rows = []
    t0 = time.perf_counter()
    wanted = ["spikes", "raw_lfp", "lmp_bp", "latents"]
    if args.extra:
        wanted += ["lmp_only", "power_only"]
    for s in sessions:
        r: dict = calibration_r2(s, wanted)
        r["session"] = s.name
        r["units"] = s.n_units
        rows.append(r)
        cols = [k for k in r if k not in ("session", "units")]
        print(f"{s.name}  units={s.n_units:3d}  " + "  ".join(f"{k}={r[k]:.3f}" for k in cols),
              flush=True)
    t_dec = time.perf_counter() - t0
    keys = [k for k in rows[0] if k not in ("session", "units")]
    print()
    header = f"| session | units | {' | '.join(keys)} |"
    print(header)
    print("|" + "---|" * (2 + len(keys)))
    for r in rows:
        print(f"| {r['session']} | {r['units']} | " + " | ".join(f"{r[k]:.3f}" for k in keys)
              + " |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    sd = {k: float(np.std([r[k] for r in rows])) for k in keys}
    print("| **mean** | " + f"{np.mean([r['units'] for r in rows]):.0f} | "
          + " | ".join(f"**{mean[k]:.3f}** ± {sd[k]:.3f}" for k in keys) + " |")
    print()
    for k, (lo, hi) in CALIBRATION_BANDS.items():
        inside = sum(lo <= r[k] <= hi for r in rows)
        ok = "OK " if lo <= mean[k] <= hi else "OFF"
        print(f"{ok} {k:8s} mean {mean[k]:.3f}  target {lo:.2f}-{hi:.2f}  "
              f"({inside}/{len(rows)} sessions inside)")
    print(f"decoding took {t_dec:.1f} s")
    result = {"config": cfg.model_dump(mode="json"), "simulate_s": t_sim, "rows": rows,
              "mean": mean, "std": sd}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
