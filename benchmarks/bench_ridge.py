"""The Wiener filter's penalty search on few labelled seconds: primal (one Cholesky per penalty
and fold on the p x p Gram matrix) against the kernel path (one n x n eigendecomposition per
fold for every penalty), on a simulated session's LMP + band-power design (96 channels x 5
features x 10 lags = 4 800 features), the label-efficiency study's largest design.

Prints, per labelled budget, the time of each path, the penalty each picks and the test R²
(they must agree), and writes JSON with ``--json``. Run it on a quiet machine:

    python benchmarks/bench_ridge.py --seconds 10 20 40 --json results/bench/ridge.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from lfpdistill.config import SimConfig
from lfpdistill.data import write_json_atomic
from lfpdistill.evaluation import decoders
from lfpdistill.evaluation.features import band_power_features
from lfpdistill.evaluation.metrics import r2_mean
from lfpdistill.session import make_segments
from lfpdistill.simulate import simulate_sessions
from lfpdistill.study.labels import label_mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 20, 40])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    s = simulate_sessions(SimConfig(n_sessions=1, seconds=200, seed=0))[0]
    s.segments = make_segments(s.n_bins, s.bin_size, 5.0, seed=0, session=s.name)
    X = band_power_features(s.lfp, fs=1.0 / s.bin_size)
    test = s.split_mask("test")
    rows = []
    print(f"design: {X.shape[1]} features x 10 lags; threads {torch.get_num_threads()}; "
          f"load {os.getloadavg()[0]:.2f}")
    print("| labelled s | rows | primal s | kernel s | speed-up | alpha primal | alpha kernel "
          "| R² primal | R² kernel |")
    print("|---|---|---|---|---|---|---|---|---|")
    for sec in args.seconds:
        train = label_mask(s, sec, draw=0)
        out = {}
        for name, ratio in (("primal", 0.0), ("kernel", 1e9)):
            decoders._DUAL_MAX_ROWS_RATIO = ratio
            t0 = time.perf_counter()
            dec = decoders.WienerDecoder(n_lags=10, lag_step=2).fit(X, s.velocity, train)
            pred = dec.predict(X, test)
            out[name] = (time.perf_counter() - t0, dec.alpha_, r2_mean(s.velocity[test], pred))
        (tp, ap_, rp), (tk, ak, rk) = out["primal"], out["kernel"]
        rows.append({"seconds": sec, "rows": int(train.sum()), "primal_s": tp, "kernel_s": tk,
                     "alpha_primal": ap_, "alpha_kernel": ak, "r2_primal": rp, "r2_kernel": rk})
        print(f"| {sec:g} | {int(train.sum())} | {tp:.2f} | {tk:.2f} | {tp / tk:.1f}x | {ap_:g} "
              f"| {ak:g} | {rp:.4f} | {rk:.4f} |")
    if args.json:
        write_json_atomic(args.json, {"machine": platform.processor() or platform.machine(),
                                      "torch": torch.__version__,
                                      "loadavg_1min": os.getloadavg()[0], "rows": rows})


if __name__ == "__main__":
    main()
