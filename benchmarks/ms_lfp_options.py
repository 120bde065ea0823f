"""MS-LFP latents against the raw LFP under the same lagged ridge, for training lengths and
held-out read-outs (how the recommended MS-LFP options were chosen; issue: CLI defaults).

For every store seed: ``lfpdistill simulate --sessions 4 --seconds 240 --seed K``, then
``lfpdistill pretrain --modality lfp`` with the recommended options except ``max_epochs``, then
the latents of every session under each read-out (``held_out`` with 2 or 5 phase shifts, i.e.
4 or 10 passes, or ``visible``: one pass), each read with the Wiener filter of
benchmarks/cli_defaults.py (10 lags x 20 ms, contiguous 80/20 split) next to the raw LFP.
Prints per option the mean R² per store and the median/mean difference from the raw LFP over
all sessions; writes OUT/ms_lfp_options.json. Trained runs are reused when present.

    python benchmarks/ms_lfp_options.py --seeds 1 2 3 --epochs 5 10 15 --out results/ms_lfp_options
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cli_defaults import ridge_r2

from lfpdistill.data import open_store, write_json_atomic
from lfpdistill.evaluation.latents import session_latents
from lfpdistill.models.checkpoint import load_model

READOUTS = {"held_out x2": ("held_out", 2), "held_out x5": ("held_out", 5),
            "visible": ("visible", 1)}


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lfpdistill", *args], check=True,
                   stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/ms_lfp_options"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 15])
    ap.add_argument("--readouts", nargs="+", default=list(READOUTS), choices=list(READOUTS))
    args = ap.parse_args(argv)
    rows = []
    for seed in args.seeds:
        store = args.out / f"store{seed}"
        if not store.exists():
            cli("simulate", "--out", str(store), "--sessions", "4", "--seconds", "240",
                "--seed", str(seed))
        st = open_store(store)
        sessions = [st.session(n) for n in st.names]
        raw = {s.name: ridge_r2(s.lfp, s.velocity) for s in sessions}
        for epochs in args.epochs:
            run = args.out / f"ms_lfp_seed{seed}_e{epochs}"
            t0 = time.time()
            if not (run / "model.ckpt").exists():
                cli("pretrain", "--modality", "lfp", "--store", str(store), "--out", str(run),
                    "--set", f"max_epochs={epochs}")
            train_s = round(time.time() - t0, 1)
            model, meta = load_model(run)
            for name in args.readouts:
                readout, shifts = READOUTS[name]
                model.with_readout(readout, shifts)
                for s in sessions:
                    z = session_latents(model, s, meta.get("window_s", 1.0))
                    rows.append({"seed": seed, "session": s.name, "epochs": epochs,
                                 "readout": name, "r2": ridge_r2(z, s.velocity),
                                 "raw_lfp": raw[s.name], "train_s": train_s})
            print(f"store seed {seed}, {epochs} epochs: trained in {train_s:.0f} s", flush=True)
    print("| epochs | read-out | mean R² per store | raw LFP per store | median diff | mean diff "
          "| sessions above raw |")
    print("|---|---|---|---|---|---|---|")
    for epochs in args.epochs:
        for name in args.readouts:
            sel = [r for r in rows if r["epochs"] == epochs and r["readout"] == name]
            per = " / ".join(f"{statistics.mean(r['r2'] for r in sel if r['seed'] == k):.3f}"
                             for k in args.seeds)
            raw = " / ".join(f"{statistics.mean(r['raw_lfp'] for r in sel if r['seed'] == k):.3f}"
                             for k in args.seeds)
            d = [r["r2"] - r["raw_lfp"] for r in sel]
            print(f"| {epochs} | {name} | {per} | {raw} | {statistics.median(d):+.3f} | "
                  f"{statistics.mean(d):+.3f} | {sum(x > 0 for x in d)} of {len(d)} |")
    write_json_atomic(args.out / "ms_lfp_options.json", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
