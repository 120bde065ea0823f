"""What a new user gets from the command line with no options (issue: CLI defaults).

Runs, as a user following the README would, on a fresh store:

    lfpdistill simulate --out S --sessions 4 --seconds 240 --seed 1
    lfpdistill pretrain --modality spikes --store S --out T      (no --set)
    lfpdistill pretrain --modality lfp    --store S --out M      (no --set)
    lfpdistill embed T --store S ;  lfpdistill embed M --store S

and reads every feature set with the same lagged ridge (Wiener filter: 10 lags x 20 ms,
contiguous 80/20 split of each session, as benchmarks/calibrate_simulator.py): spike counts, raw
LFP, the teacher's latents and the MS-LFP latents. Prints the median over sessions and the wall
time of each command; writes OUT/cli_defaults.json.

    python benchmarks/cli_defaults.py --out results/cli_defaults
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lfpdistill.data import open_store, write_json_atomic
from lfpdistill.evaluation import WienerDecoder, r2_mean


def ridge_r2(x: np.ndarray, y: np.ndarray, integrate: bool = False) -> float:
    train = np.zeros(len(y), dtype=bool)
    train[: int(0.8 * len(y))] = True
    dec = WienerDecoder(n_lags=10, lag_step=2, integrate=integrate).fit(x, y, train)
    return r2_mean(y[~train], dec.predict(x, ~train))


def timed(args: list[str]) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "lfpdistill", *args], check=True,
                   stdout=subprocess.DEVNULL)
    return round(time.time() - t0, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/cli_defaults")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    store, teacher, ms = out / "store", out / "teacher", out / "ms_lfp"
    times = {
        "simulate": timed(["simulate", "--out", str(store), "--sessions", str(args.sessions),
                           "--seconds", str(args.seconds), "--seed", str(args.seed)]),
        "pretrain spikes": timed(["pretrain", "--modality", "spikes", "--store", str(store),
                                  "--out", str(teacher)]),
        "pretrain lfp": timed(["pretrain", "--modality", "lfp", "--store", str(store),
                               "--out", str(ms)]),
        "embed teacher": timed(["embed", str(teacher), "--store", str(store)]),
        "embed ms_lfp": timed(["embed", str(ms), "--store", str(store)]),
    }
    st = open_store(store)
    zt, zm = dict(np.load(teacher / "latents.npz")), dict(np.load(ms / "latents.npz"))
    rows = []
    for name in st.names:
        s = st.session(name)
        rows.append({"session": name, "spikes": ridge_r2(s.spikes, s.velocity, integrate=True),
                     "raw_lfp": ridge_r2(s.lfp, s.velocity),
                     "teacher_latents": ridge_r2(zt[name], s.velocity),
                     "ms_lfp_latents": ridge_r2(zm[name], s.velocity)})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "session"}
    result = {"store": {"sessions": args.sessions, "seconds": args.seconds, "seed": args.seed},
              "seconds": times, "per_session": rows, "median": med}
    write_json_atomic(out / "cli_defaults.json", result)
    print("features (same lagged ridge)     median R² over sessions")
    for k, v in med.items():
        print(f"  {k:30s} {v:.3f}")
    print("wall time (s): " + ", ".join(f"{k} {v}" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
