"""How much velocity does the simulated LFP carry for a linear decoder? The classic decoders given
many more labelled seconds from the same generator.

The demo's sessions have 160 s of training bins each. This script simulates sessions of the
same generator that are ``--seconds`` long (the demo's simulator options otherwise), keeps a
fixed test set (the last ``--test-s`` seconds' test segments of the store's split), and fits the
band-power Wiener filter, the raw-LFP Wiener filter, the Kalman filter and the spike Wiener
filter on growing labelled budgets (whole training segments, drawn as the label study draws
them). Where the band-power filter's R² stops rising is what a causal linear read-out of these
LFP features can reach: the bar against which the causal student's shortfall is read.

    python benchmarks/lfp_ceiling.py --sessions 2 --seconds 1600 --budgets 160,400,800,1280

Prints one row per (session, budget) and the mean over sessions; ``--out FILE.json`` keeps them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lfpdistill.cli import report_error
from lfpdistill.config import SimConfig
from lfpdistill.data import write_json_atomic, write_store
from lfpdistill.errors import ConfigError, LfpDistillError
from lfpdistill.evaluation.classic import classic_features
from lfpdistill.evaluation.decoders import KalmanDecoder, WienerDecoder
from lfpdistill.evaluation.features import mask_groups
from lfpdistill.evaluation.metrics import r2_xy
from lfpdistill.simulate import resolve_variant, simulate_sessions
from lfpdistill.study.labels import label_mask, train_seconds


def run(sessions: int, seconds: float, budgets: list[float], seed: int, store_dir: Path
        ) -> list[dict[str, Any]]:
    sim = resolve_variant(SimConfig(n_sessions=sessions, seconds=seconds, seed=seed))
    store = write_store(simulate_sessions(sim, progress=True), store_dir, segment_s=5.0, seed=0)
    rows = []
    for name in store.names:
        s = store.session(name)
        test = s.split_mask("test")
        have = train_seconds(s)
        if max(budgets) > have:
            raise ConfigError(f"--budgets {max(budgets):g} s exceeds the {have:.0f} s of training "
                              f"bins of session '{name}'; give smaller budgets or longer --seconds")
        feats = classic_features(s)
        for budget in budgets:
            train = label_mask(s, budget, draw=0)
            for model, kind, X in feats:
                t0 = time.time()
                dec = WienerDecoder() if kind == "wiener" else KalmanDecoder()
                dec.fit(X[train], s.velocity[train], groups=mask_groups(train))
                pred = dec.predict(X[test], groups=mask_groups(test))
                rows.append({"session": name, "budget_s": budget, "model": model,
                             "r2": r2_xy(s.velocity[test], pred)["r2"],
                             "test_s": float(test.sum() * s.bin_size),
                             "seconds": round(time.time() - t0, 1)})
                print(f"{name} {budget:6.0f} s {model:18s} R² {rows[-1]['r2']:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1600.0, help="length of each session")
    ap.add_argument("--budgets", default="160,400,800,1280",
                    help="labelled training seconds, comma-separated")
    ap.add_argument("--seed", type=int, default=0, help="simulator seed (the demo's is 0)")
    ap.add_argument("--store", type=Path, default=Path("stores/lfp_ceiling"))
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    a = ap.parse_args(argv)
    try:
        budgets = [float(b) for b in a.budgets.split(",")]
    except ValueError:
        ap.error(f"--budgets '{a.budgets}' must be comma-separated seconds, e.g. 160,400,800")
    try:
        rows = run(a.sessions, a.seconds, budgets, a.seed, a.store)
    except (LfpDistillError, OSError) as e:
        return report_error(e)
    print("\nmean over sessions (test R²):")
    models = list(dict.fromkeys(r["model"] for r in rows))
    print("budget_s  " + "  ".join(f"{m:>17s}" for m in models))
    for b in budgets:
        vals = [np.mean([r["r2"] for r in rows if r["budget_s"] == b and r["model"] == m])
                for m in models]
        print(f"{b:8.0f}  " + "  ".join(f"{v:17.3f}" for v in vals))
    if a.out:
        write_json_atomic(a.out, {"sessions": a.sessions, "seconds": a.seconds, "seed": a.seed,
                                  "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
