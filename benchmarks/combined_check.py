"""The combined read-out against its two parts, on models a study has already trained.

For every (run, session) pair: the Wiener filter on the model's frozen latents, the classic LMP +
band-power Wiener filter, and the combined read-out (one Wiener filter on both, a penalty per
block chosen on validation bins), each scored on the session's validation and test bins. The
combined read-out can use either block alone (a large penalty on the other), so on validation it
should not fall below the better part by more than the search's grid allows; on test, this shows
what the extra features add to each kind of latent.

    python benchmarks/combined_check.py --study results/realtime \\
        --run 'ms_lfp/seed0-*:sim00,sim01,sim02,sim03' --run 'ss_lfp/sim00-seed0-*:sim00' \\
        --json combined_check.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lfpdistill.data import open_store, write_json_atomic
from lfpdistill.evaluation import session_latents, wiener_probe
from lfpdistill.evaluation.classic import classic_features
from lfpdistill.evaluation.readouts import combined_probe
from lfpdistill.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", type=Path, required=True, help="a study folder (lfpdistill run)")
    ap.add_argument("--run", action="append", required=True,
                    help="STAGE/GLOB:SESSION,SESSION — a trained unit of the study and the "
                         "sessions to read it out on")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    stores = sorted((args.study / "stages" / "data").glob("*/store"))
    if not stores:
        raise SystemExit(f"error: no store under {args.study}/stages/data; run the study first")
    store = open_store(stores[0])
    rows = []
    for spec in args.run:
        pattern, _, names = spec.partition(":")
        runs = sorted((args.study / "stages").glob(pattern))
        if not runs:
            raise SystemExit(f"error: no unit matches {pattern} in {args.study}/stages")
        model, meta = load_model(runs[0], modality="lfp")
        for name in names.split(","):
            s = store.session(name)
            t0 = time.time()
            z = session_latents(model, s, meta.get("window_s", 1.0))
            tr, va, te = s.split_mask("train"), s.split_mask("val"), s.split_mask("test")
            lat = wiener_probe(z, s.velocity, tr, te, val_mask=va)
            bp = next(X for m, _, X in classic_features(s) if m == "wiener_bandpower")
            cla = wiener_probe(bp, s.velocity, tr, te, val_mask=va)
            com = combined_probe(z, s.lfp, s.velocity, tr, va, te, 1.0 / s.bin_size)
            row = {"run": str(runs[0].relative_to(args.study)), "session": name,
                   "latents_wiener": {"val": lat["r2_val"], "test": lat["r2"]},
                   "bandpower_wiener": {"val": cla["r2_val"], "test": cla["r2"]},
                   "combined": {"val": com["r2_val"], "test": com["r2"],
                                "alpha_latents": com["alpha_latents"],
                                "alpha_bandpower": com["alpha_bandpower"]},
                   "seconds": round(time.time() - t0, 1)}
            rows.append(row)
            print(f"{row['run']:40s} {name}  val/test R²: latents Wiener "
                  f"{lat['r2_val']:.3f}/{lat['r2']:.3f}  band-power Wiener "
                  f"{cla['r2_val']:.3f}/{cla['r2']:.3f}  combined "
                  f"{com['r2_val']:.3f}/{com['r2']:.3f}  ({row['seconds']} s)", flush=True)
    for part in ("latents_wiener", "bandpower_wiener", "combined"):
        t = np.array([r[part]["test"] for r in rows])
        print(f"{part:17s} test R² mean {t.mean():.3f} ± {t.std(ddof=1) if len(t) > 1 else 0:.3f}"
              f" over {len(t)} (run, session) pairs")
    if args.json:
        write_json_atomic(args.json, {"study": str(args.study), "rows": rows})
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
