"""Is the multi-session spike teacher as good as the spike decoder? (issue #3's check)

Simulates a store (default: 8 sessions x 200 s, the demo's session length), trains with the
demo configuration's options (``configs/demo.yaml``):
  - the spike **teacher** on all sessions,
  - **MS-LFP** on all sessions,
  - one **SS-LFP** per session,
then reads every model's frozen latents on every session two ways:
  - ``probe``: linear regression on the same bin's latent (the paper's protocol),
  - ``probe_wiener``: the classic Wiener filter (ridge on 10 lags x 20 ms) on the latents —
    the same decoder as the spike/LFP Wiener baselines, so only the features differ,
next to the classic decoders (spike Wiener = the simulator calibration's spike baseline).
Writes ``teacher_check.json`` and ``teacher_check.md`` to ``--out`` and prints the table.

    python benchmarks/teacher_check.py --out results/teacher_check        # ~12 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from lfpdistill.commands import pretrain_run
from lfpdistill.config import load_config
from lfpdistill.data import atomic_path, open_store, write_json_atomic, write_store
from lfpdistill.evaluation import classic_decoders, linear_probe, session_latents, wiener_probe
from lfpdistill.models import load_model
from lfpdistill.simulate import simulate_sessions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/teacher_check"))
    ap.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = load_config(args.config)
    out: Path = args.out
    t0 = time.time()
    # stores and checkpoints in --out are reused on a rerun: only with the same options
    options = {"config": cfg.model_dump(mode="json"), "sessions": args.sessions,
               "seconds": args.seconds, "seed": args.seed}
    opt_file = out / "options.json"
    if opt_file.exists() and json.loads(opt_file.read_text()) != options:
        raise SystemExit(f"error: {out} holds a check made with other options; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(opt_file, options)

    store_dir = out / "store"
    if not (store_dir / "manifest.json").exists():
        sim = cfg.data.simulate.model_copy(update={"n_sessions": args.sessions, "seconds": args.seconds,
                                                   "seed": args.seed})
        write_store(simulate_sessions(sim, progress=True), store_dir,
                    options={"source": "simulate", "simulate": sim.model_dump()},
                    segment_s=cfg.data.segment_s, seed=cfg.data.split_seed)
    store = open_store(store_dir)
    names = list(store.names)

    def train(name: str, sessions: list[str], modality: str, model_cfg, train_cfg) -> Path:
        d = out / "runs" / name
        if not (d / "model.ckpt").exists():
            pretrain_run(store_dir, sessions, modality, d, model_cfg,
                         train_cfg.model_copy(update={"seed": args.seed}))
        return d

    runs = {("teacher", n): train("teacher", names, "spikes", cfg.teacher.model, cfg.teacher.train)
            for n in names}
    runs |= {("ms_lfp", n): train("ms_lfp", names, "lfp", cfg.lfp_model, cfg.ms_lfp) for n in names}
    runs |= {("ss_lfp", n): train(f"ss_lfp-{n}", [n], "lfp", cfg.lfp_model, cfg.ss_lfp) for n in names}

    rows = []
    lags = (cfg.classic.n_lags, cfg.classic.lag_step)
    for name in names:
        s = store.session(name)
        train_m, test_m = s.split_mask("train"), s.split_mask("test")
        for model_name in ("teacher", "ss_lfp", "ms_lfp"):
            model, meta = load_model(runs[(model_name, name)])
            z = session_latents(model, s, meta.get("window_s", 1.0))
            for ev, res in (("probe", linear_probe(z, s.velocity, train_m, test_m)),
                            ("probe_wiener", wiener_probe(z, s.velocity, train_m, test_m, *lags))):
                rows.append({"session": name, "model": model_name, "eval": ev,
                             **{k: v for k, v in res.items() if k != "pred"}})
        for r, _ in classic_decoders(s, *lags):
            rows.append({"session": name, "eval": "classic", **r})
        print(f"{name} done ({time.time() - t0:.0f} s)", flush=True)

    cols = [("teacher", "probe"), ("teacher", "probe_wiener"), ("wiener_spikes", "classic"),
            ("ss_lfp", "probe"), ("ms_lfp", "probe"), ("ss_lfp", "probe_wiener"),
            ("ms_lfp", "probe_wiener"), ("wiener_lfp", "classic"), ("wiener_bandpower", "classic"),
            ("kalman_bandpower", "classic")]
    cell = {(r["session"], r["model"], r["eval"]): r["r2"] for r in rows}
    per_col = defaultdict(list)
    lines = ["| session | " + " | ".join(f"{m} ({e})" for m, e in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name in names:
        vals = [cell[(name, m, e)] for m, e in cols]
        for c, v in zip(cols, vals, strict=True):
            per_col[c].append(v)
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    means = {f"{m}|{e}": float(np.mean(per_col[(m, e)])) for m, e in cols}
    lines.append("| **mean** | " + " | ".join(f"**{means[f'{m}|{e}']:.3f}**" for m, e in cols) + " |")
    t_lin, t_w, ws = means["teacher|probe"], means["teacher|probe_wiener"], means["wiener_spikes|classic"]
    lfp_best = max(v for k, v in means.items() if k.split("|")[0] in ("ss_lfp", "ms_lfp"))
    verdict = [
        f"- teacher, linear probe (paper protocol): {t_lin:.3f} vs spike Wiener {ws:.3f} -> "
        f"{'within 0.05' if t_lin >= ws - 0.05 else 'NOT within 0.05'}",
        f"- teacher, Wiener filter on latents (same decoder as the spike Wiener): {t_w:.3f} vs "
        f"{ws:.3f} -> {'within 0.05 or above' if t_w >= ws - 0.05 else 'NOT within 0.05'}",
        f"- teacher above every LFP model under both read-outs (best LFP model mean, either "
        f"read-out: {lfp_best:.3f}): "
        f"{min(t_lin, t_w) > lfp_best}",
        f"- wall time {time.time() - t0:.0f} s",
    ]
    md = ("# Spike teacher vs spike decoder\n\n"
          f"{len(names)} simulated sessions x {args.seconds:.0f} s, options of {args.config}; test R² "
          "(mean over x, y) per session; every model trained on all sessions (SS-LFP: one per "
          "session).\n\n" + "\n".join(lines) + "\n\n" + "\n".join(verdict) + "\n")
    write_json_atomic(out / "teacher_check.json", {"rows": rows, "means": means})
    with atomic_path(out / "teacher_check.md", suffix=".md") as tmp:
        tmp.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
