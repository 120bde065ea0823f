"""The classic decoders' cost: every classic decoder of a study (spike Wiener, raw-LFP and
LMP + band-power Wiener, band-power Kalman) fit on the training bins of simulated sessions and
scored on their test bins, as the study's classic stage does. Prints, per session and decoder,
the number of features, the seconds of fit + predict, the penalty the search picked and the
test R², then the seconds per decoder; writes JSON with ``--json``.

To compare two versions of the code, run it twice on a quiet machine (``PYTHONPATH`` pointing
at the other checkout's ``src`` runs that version) and compare the files:

    python benchmarks/bench_classic.py --json results/bench/classic_new.json
    PYTHONPATH=/path/to/old/src python benchmarks/bench_classic.py --json results/bench/classic_old.json
    python benchmarks/bench_classic.py --compare results/bench/classic_old.json results/bench/classic_new.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def measure(n_sessions: int, seconds: float, seed: int, variant: str) -> dict[str, Any]:
    """Fit and score every classic decoder on every simulated session; the rows and totals."""
    import lfpdistill
    from lfpdistill.config import ClassicSection, SimConfig
    from lfpdistill.evaluation.classic import classic_features
    from lfpdistill.evaluation.decoders import KalmanDecoder, WienerDecoder
    from lfpdistill.evaluation.features import mask_groups
    from lfpdistill.evaluation.metrics import r2_mean
    from lfpdistill.session import make_segments
    from lfpdistill.simulate import simulate_sessions

    try:
        from lfpdistill.allocator import tune_cpu_allocator
    except ImportError:  # a tree from before the command line's allocator settings
        tuned = False
    else:
        tuned = tune_cpu_allocator()  # as the command line does
    cfg = SimConfig(n_sessions=n_sessions, seconds=seconds, seed=seed, variant=variant)
    lags = ClassicSection()  # a study's default lags
    rows: list[dict[str, Any]] = []
    print(f"code: {Path(lfpdistill.__file__).parent}; load {os.getloadavg()[0]:.2f}")
    print("| session | decoder | features | s | alpha | test R² |")
    print("|---|---|---|---|---|---|")
    for s in simulate_sessions(cfg):
        s.segments = make_segments(s.n_bins, s.bin_size, 5.0, seed=0, session=s.name)
        train, test = s.split_mask("train"), s.split_mask("test")
        t0 = time.perf_counter()
        feats = classic_features(s)
        rows.append({"session": s.name, "decoder": "features", "features": 0,
                     "seconds": time.perf_counter() - t0, "alpha": None, "r2": None})
        for name, kind, X in feats:
            t0 = time.perf_counter()
            dec = (WienerDecoder(n_lags=lags.n_lags, lag_step=lags.lag_step)
                   if kind == "wiener" else KalmanDecoder())
            dec.fit(X[train], s.velocity[train], groups=mask_groups(train))
            pred = dec.predict(X[test], groups=mask_groups(test))
            dt = time.perf_counter() - t0
            alpha = getattr(dec, "alpha_", None)
            n_feat = X.shape[1] * (lags.n_lags if kind == "wiener" else 1)
            rows.append({"session": s.name, "decoder": name, "features": n_feat, "seconds": dt,
                         "alpha": None if alpha is None else float(alpha),
                         "r2": r2_mean(s.velocity[test], pred)})
            a = "" if alpha is None else f"{alpha:.4g}"
            print(f"| {s.name} | {name} | {n_feat} | {dt:.2f} | {a} | {rows[-1]['r2']:.5f} |",
                  flush=True)
    totals: dict[str, float] = defaultdict(float)
    for r in rows:
        totals[r["decoder"]] += r["seconds"]
    print("\n| decoder | s (all sessions) |\n|---|---|")
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.1f} |")
    print(f"| **total** | **{sum(totals.values()):.1f}** |")
    import torch

    return {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
            "torch": torch.__version__, "code": str(Path(lfpdistill.__file__).parent),
            "loadavg_1min": os.getloadavg()[0], "allocator_tuned": tuned, "sim": cfg.model_dump(mode="json"),
            "rows": rows, "totals": dict(totals)}


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Per decoder: seconds before and after, the speed-up, whether every session picked the
    same penalty and the largest test-R² change. Raises ValueError when the runs do not cover
    the same sessions and decoders."""
    key = ("session", "decoder")
    a = {tuple(r[k] for k in key): r for r in old["rows"]}
    b = {tuple(r[k] for k in key): r for r in new["rows"]}
    if set(a) != set(b):
        raise ValueError("the two runs do not cover the same sessions and decoders; run both "
                         "with the same --n-sessions, --seconds, --seed and --variant")
    out = []
    for dec in sorted({d for _, d in a}, key=lambda d: -old["totals"][d]):
        ks = [k for k in a if k[1] == dec]
        t0 = sum(a[k]["seconds"] for k in ks)
        t1 = sum(b[k]["seconds"] for k in ks)
        same = (None if all(a[k]["alpha"] is None for k in ks)
                else all(a[k]["alpha"] == b[k]["alpha"] for k in ks))
        dr = max((abs(a[k]["r2"] - b[k]["r2"]) for k in ks if a[k]["r2"] is not None),
                 default=None)
        out.append({"decoder": dec, "old_s": t0, "new_s": t1, "speedup": t0 / max(t1, 1e-9),
                    "same_alpha": same, "max_abs_r2_change": dr})
    t0, t1 = sum(old["totals"].values()), sum(new["totals"].values())
    out.append({"decoder": "total", "old_s": t0, "new_s": t1, "speedup": t0 / max(t1, 1e-9),
                "same_alpha": all(r["same_alpha"] is not False for r in out),
                "max_abs_r2_change": max((r["max_abs_r2_change"] for r in out
                                          if r["max_abs_r2_change"] is not None), default=None)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-sessions", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", choices=["default", "random"], default="default")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("OLD", "NEW"))
    args = ap.parse_args()
    if args.compare:
        try:
            old, new = (json.loads(p.read_text()) for p in args.compare)
            table = compare(old, new)
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"bench_classic: cannot compare {args.compare[0]} and "
                             f"{args.compare[1]}: {e}") from None
        print("| decoder | before s | after s | speed-up | same penalties | max |ΔR²| |")
        print("|---|---|---|---|---|---|")
        for r in table:
            dr = "" if r["max_abs_r2_change"] is None else f"{r['max_abs_r2_change']:.1e}"
            same = {None: "", True: "yes", False: "NO"}[r["same_alpha"]]
            print(f"| {r['decoder']} | {r['old_s']:.1f} | {r['new_s']:.1f} | "
                  f"{r['speedup']:.2f}x | {same} | {dr} |")
        return
    result = measure(args.n_sessions, args.seconds, args.seed, args.variant)
    if args.json:
        from lfpdistill.data import write_json_atomic

        write_json_atomic(args.json, result)


if __name__ == "__main__":
    main()
