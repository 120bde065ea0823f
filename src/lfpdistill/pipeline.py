"""``lfpdistill run CONFIG``: the whole study as cached stages.

Stages (in order): data, teacher, ss_lfp, ms_lfp, distill, generalize, probe, finetune, classic,
report. Each unit of work writes into ``OUT/stages/<stage>/<name>-<key>/`` where ``key`` hashes
the configuration it depends on (its own options plus the keys of its inputs) and finishes by
writing ``done.json``; a re-run skips finished units, a changed option recomputes exactly what
depends on it, and ``--from STAGE`` recomputes that stage and everything after it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from .data import Store, open_store, options_hash, write_json_atomic, write_store
from .errors import ConfigError
from .experiment_config import ExperimentConfig
from .session import Session
from .training import TrainConfig

STAGES = ["data", "teacher", "ss_lfp", "ms_lfp", "distill", "generalize", "probe", "finetune",
          "classic", "report"]

class Runner:
    """Executes the stages of one experiment with caching."""

    def __init__(self, cfg: ExperimentConfig, from_stage: str | None = None,
                 console: Console | None = None, out: Path | None = None):
        if from_stage is not None and from_stage not in STAGES:
            raise ConfigError(f"unknown stage '{from_stage}' for --from; stages: {', '.join(STAGES)}")
        self.cfg = cfg
        self.out = Path(out or cfg.out)
        self.force = set(STAGES[STAGES.index(from_stage):]) if from_stage else set()
        self.console = console or Console()
        self.log: list[dict[str, Any]] = []
        self.store: Store | None = None
        self.keys: dict[str, str] = {}
        self._teacher_latents: dict[tuple[str, str], np.ndarray] = {}

    # ------------------------------------------------------------------ caching
    def unit(self, stage: str, name: str, key_obj: Any, fn: Callable[[Path], Any]) -> Path:
        key = options_hash({"stage": stage, "name": name, "cfg": key_obj})
        d = self.out / "stages" / stage / f"{name}-{key}"
        done = d / "done.json"
        if done.exists() and stage not in self.force:
            self.log.append({"stage": stage, "unit": name, "status": "cached"})
            self.console.print(f"  [dim]✓ {stage}/{name} (cached)[/]")
            return d
        if d.exists():
            shutil.rmtree(d)
        self.console.print(f"  [bold cyan]▶ {stage}/{name}[/]")
        t0 = time.time()
        fn(d)
        d.mkdir(parents=True, exist_ok=True)
        write_json_atomic(done, {"stage": stage, "unit": name, "key": key,
                                 "seconds": round(time.time() - t0, 2)})
        self.log.append({"stage": stage, "unit": name, "status": "ran",
                         "seconds": round(time.time() - t0, 2)})
        return d

    def train_cfg(self, base: TrainConfig, seed: int) -> TrainConfig:
        return base.model_copy(update={"seed": seed, "accelerator": self.cfg.accelerator})

    # ------------------------------------------------------------------ stages
    def run(self) -> dict[str, Any]:
        from .report import write_report

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out / "config.json", json.loads(cfg.model_dump_json()))
        t_start = time.time()
        self.stage_data()
        roles = self.resolve_roles()
        self.console.print(
            f"sessions — teacher: {', '.join(roles['teacher'])}; distill: {', '.join(roles['distill'])}"
            f"; held-out: {', '.join(roles['heldout']) or '-'}")
        runs = self.stage_models(roles)
        rows: list[dict[str, Any]] = []
        traces: dict[str, Any] = {}
        rows += self.stage_probe(roles, runs, traces)
        if cfg.finetune.enabled:
            rows += self.stage_finetune(roles, runs)
        if cfg.classic.enabled:
            rows += self.stage_classic(roles, traces)
        self.console.print("[bold]report[/]")
        summary = write_report(self.out, cfg, roles, rows, traces, self.log,
                               seconds=time.time() - t_start, store=self.store)
        return summary

    def stage_data(self) -> None:
        cfg = self.cfg
        self.console.print("[bold]data[/]")
        if cfg.data.store is not None:
            self.store = open_store(cfg.data.store)
            self.keys["data"] = self.store.options_hash
            self.console.print(f"  using store {self.store.root} ({len(self.store.names)} sessions)")
            return
        from .simulate import simulate_sessions

        key_obj = {"simulate": cfg.data.simulate.model_dump(), "segment_s": cfg.data.segment_s,
                   "split_seed": cfg.data.split_seed}

        def make(d: Path) -> None:
            sessions = simulate_sessions(cfg.data.simulate, progress=True)
            write_store(sessions, d / "store", options={"source": "simulate",
                                                        "simulate": cfg.data.simulate.model_dump()},
                        segment_s=cfg.data.segment_s, seed=cfg.data.split_seed)

        d = self.unit("data", "simulated", key_obj, make)
        self.store = open_store(d / "store")
        self.keys["data"] = self.store.options_hash

    def resolve_roles(self) -> dict[str, list[str]]:
        assert self.store is not None
        s = self.cfg.sessions
        roles = {
            "teacher": self.store.select(s.teacher),
            "distill": self.store.select(s.distill),
            "heldout": self.store.select(s.heldout) if s.heldout else [],
        }
        roles["ms_lfp"] = self.store.select(s.ms_lfp) if s.ms_lfp else list(roles["teacher"])
        for h in roles["heldout"]:
            for role in ("teacher", "distill", "ms_lfp"):
                if h in roles[role]:
                    raise ConfigError(f"session '{h}' is in sessions.heldout and in sessions.{role}; "
                                      "held-out sessions must be unseen by the teacher, MS-LFP and "
                                      "distillation")
        missing = [d for d in roles["distill"] if d not in roles["teacher"]]
        if missing:
            raise ConfigError(f"distillation session(s) {', '.join(missing)} are not in "
                              "sessions.teacher; the teacher must have seen their spikes")
        for name in roles["distill"]:
            sess = self.store.session(name)
            if not (sess.has("spikes") and sess.has("lfp")):
                raise ConfigError(f"distillation session '{name}' needs both spikes and LFP")
        roles["eval"] = list(dict.fromkeys(roles["distill"] + roles["heldout"]))
        return roles

    def stage_models(self, roles: dict[str, list[str]]) -> dict[str, Any]:
        from .stages import distill_run, pretrain_run

        cfg, store = self.cfg, self.store
        assert store is not None
        data_key = self.keys["data"]
        runs: dict[str, Any] = {"teacher": {}, "ss_lfp": {}, "ms_lfp": {}, "distilled": {},
                                "adapt_ms": {}, "adapt_distilled": {}}
        keys: dict[str, str] = {}

        self.console.print("[bold]teacher[/] (spike MAE across sessions)")
        teacher_seeds = cfg.seeds if cfg.teacher.per_seed else [cfg.seeds[0]]
        for seed in teacher_seeds:
            tc = self.train_cfg(cfg.teacher.train, seed)
            k = {"data": data_key, "sessions": roles["teacher"], "model": cfg.teacher.model.model_dump(),
                 "train": tc.model_dump()}
            keys[f"teacher{seed}"] = options_hash(k)
            runs["teacher"][seed] = self.unit("teacher", f"seed{seed}", k, lambda d, tc=tc: pretrain_run(
                store.root, roles["teacher"], "spikes", d, cfg.teacher.model, tc, resume=False))

        def teacher_for(seed: int) -> tuple[Path, str]:
            s = seed if cfg.teacher.per_seed else cfg.seeds[0]
            return runs["teacher"][s], keys[f"teacher{s}"]

        self.console.print("[bold]ss_lfp[/] (single-session LFP MAE)")
        for seed in cfg.seeds:
            tc = self.train_cfg(cfg.ss_lfp, seed)
            for name in roles["eval"]:
                k = {"data": data_key, "session": name, "model": cfg.lfp_model.model_dump(),
                     "train": tc.model_dump()}
                runs["ss_lfp"][(seed, name)] = self.unit(
                    "ss_lfp", f"{name}-seed{seed}", k, lambda d, tc=tc, name=name: pretrain_run(
                        store.root, [name], "lfp", d, cfg.lfp_model, tc, resume=False))

        self.console.print("[bold]ms_lfp[/] (multi-session LFP MAE)")
        for seed in cfg.seeds:
            tc = self.train_cfg(cfg.ms_lfp, seed)
            k = {"data": data_key, "sessions": roles["ms_lfp"], "model": cfg.lfp_model.model_dump(),
                 "train": tc.model_dump()}
            keys[f"ms{seed}"] = options_hash(k)
            runs["ms_lfp"][seed] = self.unit("ms_lfp", f"seed{seed}", k, lambda d, tc=tc: pretrain_run(
                store.root, roles["ms_lfp"], "lfp", d, cfg.lfp_model, tc, resume=False))

        self.console.print("[bold]distill[/] (LFP student aligned to the frozen teacher)")
        for seed in cfg.seeds:
            tc = self.train_cfg(cfg.distill.train, seed)
            t_run, t_key = teacher_for(seed)
            init = runs["ms_lfp"][seed] if cfg.distill.student_init == "ms_lfp" else None
            k = {"data": data_key, "teacher": t_key, "sessions": roles["distill"],
                 "model": cfg.lfp_model.model_dump(), "train": tc.model_dump(),
                 "objective": cfg.distill.objective.model_dump(),
                 "init": keys[f"ms{seed}"] if init else None}
            keys[f"distill{seed}"] = options_hash(k)
            runs["distilled"][seed] = self.unit(
                "distill", f"seed{seed}", k, lambda d, tc=tc, t_run=t_run, init=init: distill_run(
                    t_run, store.root, roles["distill"], d, cfg.lfp_model, tc, cfg.distill.objective,
                    student_init=init, resume=False,
                    teacher_latents={n: self.teacher_latents(t_run, n) for n in roles["distill"]}))

        if roles["heldout"]:
            self.console.print("[bold]generalize[/] (held-out sessions: session embeddings only)")
        for seed in cfg.seeds:
            tc = self.train_cfg(cfg.generalize.adapt, seed)
            for name in roles["heldout"]:
                for tag, src, key in (("adapt_ms", runs["ms_lfp"][seed], keys[f"ms{seed}"]),
                                      ("adapt_distilled", runs["distilled"][seed], keys[f"distill{seed}"])):
                    if tag == "adapt_distilled" and "b" not in cfg.generalize.modes:
                        continue
                    k = {"data": data_key, "base": key, "session": name, "train": tc.model_dump()}
                    runs[tag][(seed, name)] = self.unit(
                        "generalize", f"{tag}-{name}-seed{seed}", k,
                        lambda d, tc=tc, src=src, name=name: pretrain_run(
                            store.root, [name], "lfp", d, cfg.lfp_model, tc, init_from=src,
                            train_only_new=True, resume=False))
        self.keys.update(keys)
        return runs

    # ------------------------------------------------------------------ evaluations
    def _eval_plan(self, roles: dict[str, list[str]], runs: dict[str, Any], seed: int
                   ) -> list[dict[str, Any]]:
        """(model, session, group, run dir, as_session) for every probe of one seed."""
        assert self.store is not None
        cfg = self.cfg
        tseed = seed if cfg.teacher.per_seed else cfg.seeds[0]
        plan = []
        for name in roles["distill"]:
            plan += [
                {"model": "teacher", "session": name, "run": runs["teacher"][tseed]},
                {"model": "ss_lfp", "session": name, "run": runs["ss_lfp"][(seed, name)]},
                {"model": "ms_lfp", "session": name, "run": runs["ms_lfp"][seed]},
                {"model": "distilled", "session": name, "run": runs["distilled"][seed]},
            ]
        for p in plan:
            p["group"] = "distilled"
        for name in roles["heldout"]:
            group = "unseen"
            plan += [
                {"model": "ss_lfp", "session": name, "run": runs["ss_lfp"][(seed, name)], "group": group},
                {"model": "ms_lfp", "session": name, "run": runs["adapt_ms"][(seed, name)],
                 "group": group, "mode": "adapted (b)"},
            ]
            if "b" in cfg.generalize.modes:
                plan.append({"model": "distilled", "session": name, "group": group, "mode": "b",
                             "run": runs["adapt_distilled"][(seed, name)]})
            if "a" in cfg.generalize.modes:
                width = self.store.session(name).n_channels
                same = [d for d in roles["distill"] if self.store.session(d).n_channels == width]
                if same:
                    plan.append({"model": "distilled_a", "session": name, "group": group,
                                 "mode": "a", "as_session": same[0],
                                 "run": runs["distilled"][seed]})
                else:
                    self.console.print(f"  [yellow]generalization (a) skipped for {name}: no "
                                       f"distilled session with {width} channels[/]")
        for p in plan:
            p["seed"] = seed
        return plan

    def teacher_latents(self, run: Path, session: str) -> np.ndarray:
        """Stitched latents of a teacher run on one session, computed once per study."""
        from .evaluation import session_latents
        from .training import load_model

        assert self.store is not None
        key = (str(run), session)
        if key not in self._teacher_latents:
            model, meta = load_model(run, modality="spikes")
            self._teacher_latents[key] = session_latents(model, self.store.session(session),
                                                         meta.get("window_s", 1.0))
        return self._teacher_latents[key]

    def stage_probe(self, roles: dict[str, list[str]], runs: dict[str, Any],
                    traces: dict[str, Any]) -> list[dict[str, Any]]:
        from .evaluation import linear_probe, session_latents, wiener_fits
        from .training import load_model

        assert self.store is not None
        cfg = self.cfg
        wiener = (cfg.classic.n_lags, cfg.classic.lag_step) if cfg.probe.wiener else None
        self.console.print("[bold]probe[/] (frozen latents → linear regression → velocity R²"
                           + ("; and → Wiener filter)" if wiener else ")"))
        rows: list[dict[str, Any]] = []
        # a teacher shared by every seed: its Wiener fits are done once
        teacher_wiener: dict[tuple[str, str], dict[str, Any]] = {}
        for seed in cfg.seeds:
            plan = self._eval_plan(roles, runs, seed)
            key = {"runs": [(p["model"], p["session"], str(p["run"]), p.get("as_session"))
                            for p in plan], "keys": self.keys, "wiener": wiener}

            def do(d: Path, plan: list[dict[str, Any]] = plan) -> None:
                out_rows, preds = [], {}
                jobs: list[tuple[int, tuple[str, str], np.ndarray, Session]] = []
                for p in plan:
                    s = self.store.session(p["session"])
                    if p["model"] == "teacher":  # one teacher for every seed: computed once
                        z = self.teacher_latents(p["run"], p["session"])
                    else:
                        model, meta = load_model(p["run"])
                        z = session_latents(model, s, meta.get("window_s", 1.0),
                                            as_session=p.get("as_session"))
                    base = {"model": p["model"], "session": p["session"], "group": p["group"],
                            "split": "test", "seed": p["seed"], "mode": p.get("mode")}
                    res = linear_probe(z, s.velocity, s.split_mask("train"), s.split_mask("test"))
                    preds[f"{p['model']}|{p['session']}"] = res.pop("pred")
                    out_rows.append({**base, "eval": "probe", **res})
                    if wiener:
                        tkey = (str(p["run"]), p["session"])
                        done = teacher_wiener.get(tkey) if p["model"] == "teacher" else None
                        out_rows.append({**base, "eval": "probe_wiener", **(done or {})})
                        if done is None:
                            jobs.append((len(out_rows) - 1, tkey, z, s))
                if wiener and jobs:  # the Wiener fits, two or more at a time
                    fits = wiener_fits([(z, s) for _, _, z, s in jobs], *wiener)
                    for (i, tkey, _, _), res in zip(jobs, fits, strict=True):
                        out_rows[i].update(res)
                        if out_rows[i]["model"] == "teacher":
                            teacher_wiener[tkey] = res
                d.mkdir(parents=True, exist_ok=True)
                write_json_atomic(d / "rows.json", out_rows)
                np.savez(d / "preds.npz", **preds)

            d = self.unit("probe", f"seed{seed}", key, do)
            rows += json.loads((d / "rows.json").read_text())
            if seed == cfg.seeds[0]:
                traces["probe"] = dict(np.load(d / "preds.npz"))
        return rows

    def stage_finetune(self, roles: dict[str, list[str]], runs: dict[str, Any]) -> list[dict[str, Any]]:
        from .stages import finetune_run

        assert self.store is not None
        cfg = self.cfg
        self.console.print("[bold]finetune[/] (model + velocity head trained end-to-end)")
        rows: list[dict[str, Any]] = []
        sessions = roles["distill"] + (roles["heldout"] if cfg.finetune.sessions == "all" else [])
        for seed in cfg.seeds:
            tc = self.train_cfg(cfg.finetune.train, seed)
            for p in self._eval_plan(roles, runs, seed):
                if p["model"] not in cfg.finetune.models or p["session"] not in sessions:
                    continue
                k = {"run": str(p["run"]), "keys": self.keys, "session": p["session"],
                     "train": tc.model_dump()}
                d = self.unit("finetune", f"{p['model']}-{p['session']}-seed{seed}", k,
                              lambda d, p=p, tc=tc: finetune_run(
                                  p["run"], self.store.root, p["session"], d, tc, resume=False))
                res = json.loads((d / "result.json").read_text())
                rows.append({"model": p["model"], "session": p["session"], "group": p["group"],
                             "eval": "finetune", "split": "test", "seed": seed, "mode": p.get("mode"),
                             "r2": res["test_r2"], "r2_x": res["test_r2_x"], "r2_y": res["test_r2_y"]})
        return rows

    def stage_classic(self, roles: dict[str, list[str]], traces: dict[str, Any]) -> list[dict[str, Any]]:
        from .decoders import classic_decoders

        assert self.store is not None
        self.console.print("[bold]classic[/] (Wiener and Kalman decoders on the same splits)")
        ccfg = self.cfg.classic
        key = {"data": self.keys["data"], "sessions": roles["eval"], "cfg": ccfg.model_dump()}

        def do(d: Path) -> None:
            out_rows, preds = [], {}
            for name in roles["eval"]:
                s = self.store.session(name)
                group = "distilled" if name in roles["distill"] else "unseen"
                for r, pred in classic_decoders(s, ccfg.n_lags, ccfg.lag_step):
                    preds[f"{r['model']}|{name}"] = pred
                    out_rows.append({**r, "session": name, "group": group, "eval": "classic",
                                     "split": "test", "seed": None, "mode": None})
            d.mkdir(parents=True, exist_ok=True)
            write_json_atomic(d / "rows.json", out_rows)
            np.savez(d / "preds.npz", **preds)

        d = self.unit("classic", "decoders", key, do)
        traces["classic"] = dict(np.load(d / "preds.npz"))
        return json.loads((d / "rows.json").read_text())


def run_experiment(cfg: ExperimentConfig, from_stage: str | None = None,
                   out: Path | None = None) -> dict[str, Any]:
    return Runner(cfg, from_stage, out=out).run()
