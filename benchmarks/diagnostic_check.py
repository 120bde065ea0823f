"""Can a label-free diagnostic tell a user when distillation did not take?

For every distilled session of the robustness runs (``benchmarks/robustness.py`` outputs), this
computes, on **validation** bins only and without behaviour labels:

    D = R²(student latents -> teacher targets) - R²(MS-LFP latents -> teacher targets)

each a ridge read-out (penalty by contiguous CV on training bins) of the teacher's aligned
targets (the distillation's own transform: session centring, top PCs, standardisation), fit on
training bins. D > 0 says the student carries more of the teacher than an LFP-only model of the
same sessions; the rule fixed before the evaluation is "distillation took" iff D > 0. It then
compares that call with the behaviour gain the user cannot see without labels: test R² of the
linear probe, distilled − MS-LFP. For comparison it also scores the call a user with a few
validation labels can make: ``val_gain``, the same probe gain on the validation bins
(a rule fixed before its results were seen, not chosen on the development variants), and
``D_corr``, the mean per-dimension correlation instead of R². Only runs whose distillation
options equal the reference run's (``--reference``, the final defaults) are used.

    python benchmarks/diagnostic_check.py --variants 100-103 --reference 200   # development
    python benchmarks/diagnostic_check.py --variants 200-207 --reference 200   # evaluation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lfpdistill.commands.distill import teacher_targets, transform_targets
from lfpdistill.config import DistillConfig
from lfpdistill.data import open_store, write_json_atomic
from lfpdistill.evaluation import linear_probe, session_latents
from lfpdistill.evaluation.decoders import WienerDecoder
from lfpdistill.models import load_model


def _r2_all(y: np.ndarray, p: np.ndarray) -> float:
    return float(1 - ((y - p) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def readout_scores(z: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray
                   ) -> tuple[float, float]:
    """Ridge read-out latents -> targets fit on ``train``; on ``val``: R² over all target
    dimensions, and the mean per-dimension Pearson correlation (blind to offsets and scale)."""
    dec = WienerDecoder(n_lags=1, lag_step=1).fit(z[train], y[train])
    p, t = dec.predict(z)[val], y[val]
    corr = [np.corrcoef(p[:, k], t[:, k])[0, 1] for k in range(t.shape[1])]
    return _r2_all(t, p), float(np.nanmean(corr))


def _parse(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def _strip(train: dict) -> dict:
    return {k: v for k, v in train.items() if k not in ("seed", "progress", "accelerator")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("results/robustness"))
    ap.add_argument("--variants", default="200-207")
    ap.add_argument("--reference", type=int, default=200,
                    help="variant whose distillation options define the runs used")
    ap.add_argument("--out", type=Path, default=None, help="JSON of the per-session rows")
    args = ap.parse_args()
    # the reference's plain student (a study with distill.anchor "validation" also has an
    # anchored one)
    students = [json.loads(p.read_text()) for p in sorted(
        (args.root / f"v{args.reference}" / "stages" / "distill").glob("*/run_config.json"))]
    ref = next((c for c in students if not c.get("anchor")), None)
    if ref is None:
        raise SystemExit(f"error: no plain distilled student under {args.root / f'v{args.reference}'}"
                         "; run the robustness benchmark on that variant first")
    ref_ms_dir = next((args.root / f"v{args.reference}" / "stages" / "ms_lfp").iterdir())
    ref_ms = json.loads((ref_ms_dir / "run_config.json").read_text())
    rows = []
    for v in _parse(args.variants):
        vdir = args.root / f"v{v}" / "stages"
        if not vdir.exists():
            print(f"v{v}: no outputs, skipped")
            continue
        for d in sorted((vdir / "distill").iterdir()):
            rc_path = d / "run_config.json"
            if not (d / "done.json").exists() or not rc_path.exists():
                continue
            rc = json.loads(rc_path.read_text())
            if rc["distill"] != ref["distill"] or _strip(rc["train"]) != _strip(ref["train"]) \
                    or rc["student"] != ref["student"]:
                continue
            seed = rc["train"]["seed"]
            ms = []
            for m in sorted((vdir / "ms_lfp").iterdir()):
                if not (m.name.startswith(f"seed{seed}-") and (m / "done.json").exists()):
                    continue
                mc = json.loads((m / "run_config.json").read_text())
                if _strip(mc["train"]) == _strip(ref_ms["train"]) and \
                        mc.get("model") == ref_ms.get("model"):
                    ms.append(m)
            if len(ms) != 1:
                print(f"v{v} {d.name}: {len(ms)} MS-LFP runs for seed {seed}, skipped")
                continue
            store = open_store(Path(rc["store"]))
            sessions = [store.session(n) for n in rc["sessions"]]
            teacher, tmeta = load_model(Path(rc["teacher"]), modality="spikes")
            dcfg = DistillConfig(**rc["distill"])
            tt = teacher_targets(teacher, sessions, tmeta.get("window_s", 1.0), dcfg)
            student, smeta = load_model(d, modality="lfp")
            msm, mmeta = load_model(ms[0], modality="lfp")
            for s in sessions:
                y = transform_targets(tt.cache[s.name], tt.basis, tt.stats, dcfg.target_norm)
                zs = session_latents(student, s, smeta.get("window_s", 1.0))
                zm = session_latents(msm, s, mmeta.get("window_s", 1.0))
                tr, va, te = (s.split_mask(k) for k in ("train", "val", "test"))
                (r_s, c_s), (r_m, c_m) = readout_scores(zs, y, tr, va), readout_scores(zm, y, tr, va)
                gain = (linear_probe(zs, s.velocity, tr, te)["r2"]
                        - linear_probe(zm, s.velocity, tr, te)["r2"])
                val_gain = (linear_probe(zs, s.velocity, tr, va)["r2"]
                            - linear_probe(zm, s.velocity, tr, va)["r2"])
                row = {"variant": v, "seed": seed, "session": s.name, "student_r2": r_s,
                       "ms_r2": r_m, "D": r_s - r_m, "student_corr": c_s, "ms_corr": c_m,
                       "D_corr": c_s - c_m, "val_gain": val_gain, "probe_gain": gain}
                rows.append(row)
                print(f"v{v} seed{seed} {s.name}: →teacher R² student {r_s:+.3f} MS-LFP "
                      f"{r_m:+.3f} (D {r_s - r_m:+.3f}); corr {c_s:.3f} / {c_m:.3f} "
                      f"(D_corr {c_s - c_m:+.3f}); validation probe gain {val_gain:+.3f}; "
                      f"test probe gain {gain:+.3f}", flush=True)
    if not rows:
        raise SystemExit("no matching runs")
    took = np.array([r["probe_gain"] > 0 for r in rows])
    g = np.array([r["probe_gain"] for r in rows])
    for key in ("D", "D_corr", "val_gain"):
        d = np.array([r[key] for r in rows])
        call = d > 0
        print(f"\n{key}: {len(rows)} sessions; the call 'took iff {key} > 0' agrees with the sign "
              f"of the probe gain on {np.mean(call == took):.0%}; of the {int((~took).sum())} "
              f"sessions that lost, {int((~call & ~took).sum())} were flagged; of the "
              f"{int(took.sum())} that gained, {int((call & took).sum())} were passed; "
              f"Spearman r({key}, gain) = {_spearman(d, g):+.2f}; keeping the student only where "
              f"{key} > 0 (else MS-LFP) gives a median test gain of "
              f"{np.median(np.where(call, g, 0.0)):+.3f} (always the student: {np.median(g):+.3f})")
    if args.out:
        write_json_atomic(args.out, rows)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


if __name__ == "__main__":
    main()
