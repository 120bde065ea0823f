"""``lfpdistill run CONFIG``: the whole study, seed by seed.

Stages: data, teacher, ss_lfp, ms_lfp, distill, choose, generalize, probe, classic, finetune,
causal, labels, scaling, report. This module only orchestrates: which unit runs with which inputs
(:mod:`.units`), cached by :class:`~.cache.Cache`, evaluated where :mod:`.plan` says, summarised
by :mod:`.report`.

Run order (``order``): ``seeds`` (the default) runs every stage of the first seed, then of the
next, and so on. The first seed starts with the classic decoders (no training: the first
numbers, about a minute and a half in on a 2-core CPU) and probes each model group (teacher,
SS-LFP, MS-LFP with its held-out adaptations, the student with its) as soon as it is trained,
printing the table of the numbers so far after each; a provisional report of that seed follows
(``OUT/provisional/``, removed when the final report is written). ``stages`` runs each stage for
every seed before the next stage. Every unit seeds its own random numbers and its cache key is
its inputs, so both orders run the same units on the same inputs: the final rows (assembled in
stage order, then seed order, then model group) are identical. ``LFPDISTILL_STUDY_BACKGROUND=1``
trains the SS-LFP models in a low-priority background process beside the others (same numbers;
off by default: on 2 cores it got no CPU until the other models' training ended).

Adding a per-seed unit: give a stage method a ``seeds`` argument (the seeds of this round), loop
``for seed in seeds`` calling ``self.cache.run(stage, name, work, **inputs)``, and call it in
:meth:`Study.round` (one seed per round, or all seeds in one), keeping its rows (each with its
``seed``) with ``self.add(stage, rows)``; list the stage in :data:`ROW_STAGES` (which fixes where
its rows go in ``results.json``) and in :data:`STAGES`. ``self.cache.start`` instead of
``run`` runs a unit in the background (low priority; ``.wait()`` before its folder is read).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from ..config import ExperimentConfig, ModelConfig, TrainConfig
from ..data import Store, open_store, write_json_atomic
from ..errors import ConfigError
from . import labels as label_units
from . import scaling as scaling_units
from . import units
from .cache import Cache, clock
from .longevity import session_days
from .plan import PROBE_GROUPS, EvalItem, Roles, Runs, eval_plan, probe_group, resolve_roles
from .report import print_first_numbers, write_report

#: Mean seconds per unit of each stage in ``configs/demo.yaml`` on a quiet 2-core CPU (the
#: "seconds per unit" line of ``benchmarks/bench_study.py --study configs/demo.yaml``; a 17.1-min
#: uncached run; the probe's per model group: a seed's 133 s over its four groups, measured
#: later): the starting point of the time-left estimate, which rescales them by how fast this
#: machine runs the units already done.
REFERENCE_UNIT_SECONDS: dict[str, float] = {
    "data": 7.5, "teacher": 83.4, "ss_lfp": 6.8, "ms_lfp": 72.0, "distill": 52.8,
    "choose": 2.4, "generalize": 1.8, "probe": 33.0, "finetune": 9.0, "classic": 59.3,
}
#: the folder (inside the study's output) of the first seed's provisional report
PROVISIONAL = "provisional"

STAGES = ["data", "teacher", "ss_lfp", "ms_lfp", "distill", "choose", "generalize", "probe", "finetune",
          "classic", "causal", "labels", "scaling", "report"]
#: the stages whose rows form the report's ``rows``, in the order they are concatenated (each
#: stage's rows in seed order): the same whichever order the units ran in
ROW_STAGES = ["probe", "finetune", "classic", "causal"]
#: run orders: every stage of a seed before the next seed, or every seed of a stage first
ORDERS = ("seeds", "stages")


def prepare_data(cfg: ExperimentConfig, cache: Cache) -> Store:
    """The study's store: the configured one, or the simulator's sessions (a cached unit)."""
    cache.console.print("[bold]data[/]")
    if cfg.data.store is not None:
        store = open_store(cfg.data.store)
        cache.console.print(f"  using store {store.root} ({len(store.names)} sessions)")
        return store
    d = cache.run("data", "simulated", units.simulate_store, simulate=cfg.data.simulate,
                  segment_s=cfg.data.segment_s, split_seed=cfg.data.split_seed)
    return open_store(d / "store")


class Study:
    """One experiment: its config, store, roles, cache and the runs it trains."""

    def __init__(self, cfg: ExperimentConfig, from_stage: str | None = None,
                 console: Console | None = None, out: Path | None = None, order: str = "seeds",
                 background: bool | None = None):
        if from_stage is not None and from_stage not in STAGES:
            raise ConfigError(f"unknown stage '{from_stage}' for --from; stages: {', '.join(STAGES)}")
        if order not in ORDERS:
            raise ConfigError(f"unknown run order '{order}'; orders: {', '.join(ORDERS)}")
        self.order = order
        # seed order: SS-LFP in a low-priority background worker only when asked
        # (LFPDISTILL_STUDY_BACKGROUND=1; same numbers). Off by default: on a 2-core CPU the
        # foreground training uses both cores and the worker got no CPU until it ended, so it
        # brought nothing forward (docs/experiments.md, round 13)
        self.background = (order == "seeds" and (
            background if background is not None
            else os.environ.get("LFPDISTILL_STUDY_BACKGROUND", "0") == "1"))
        self.cfg = cfg
        self.out = Path(out or cfg.out)
        self.console = console or Console()
        force = set(STAGES[STAGES.index(from_stage):]) if from_stage else set()
        self.cache = Cache(self.out, force, self.console, REFERENCE_UNIT_SECONDS)
        self._scaling_teachers: dict[tuple[int, int], Path] = {}

    def expected_units(self, roles: Roles) -> dict[str, int]:
        """How many units each stage of this study has (the finetune count is an upper bound,
        corrected when that stage starts)."""
        cfg = self.cfg
        n_seeds = len(cfg.seeds)
        counts = {"teacher": n_seeds if cfg.teacher.per_seed else 1,
                  "ss_lfp": n_seeds * len(roles.eval), "ms_lfp": n_seeds,
                  "distill": n_seeds * (2 if cfg.distill.anchor == "validation" else 1),
                  "generalize": n_seeds * len(roles.heldout) * (1 + ("b" in cfg.generalize.modes)),
                  "probe": n_seeds * len(PROBE_GROUPS)}
        if cfg.distill.anchor == "validation":  # the plain or the anchored student, per seed
            counts["choose"] = n_seeds
        if cfg.finetune.enabled:
            sessions = roles.distill + (roles.heldout if cfg.finetune.sessions == "all" else [])
            counts["finetune"] = n_seeds * len(sessions) * len(cfg.finetune.models)
        if cfg.classic.enabled:
            counts["classic"] = 1
        if cfg.causal.enabled:  # MS-LFP, student, probe, and two adaptations per held-out session
            counts["causal"] = n_seeds * (3 + 2 * len(roles.heldout))
        if cfg.labels.enabled:  # the frozen models' read-outs per seed, the classic decoders once
            counts["labels"] = n_seeds + 1
        if cfg.scaling.enabled:  # per point a student and its probe; a teacher per count
            sc = cfg.scaling
            points = len(sc.paired_seconds) + len(sc.teacher_sessions)
            counts["scaling"] = (2 * n_seeds * points
                                 + len(sc.teacher_sessions) * (n_seeds if cfg.teacher.per_seed else 1))
        return counts

    def train_cfg(self, base: TrainConfig, seed: int) -> TrainConfig:
        return base.model_copy(update={"seed": seed, "accelerator": self.cfg.accelerator})

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out / "config.json", json.loads(cfg.model_dump_json()))
        t_start = time.time()
        store = prepare_data(cfg, self.cache)
        roles = resolve_roles(cfg, store)
        if cfg.labels.enabled:  # before any training: a budget no session can meet
            check_label_budgets(cfg, store, roles)
        if cfg.distill.anchor == "validation" and not any(
                store.session(n).split_mask("val").any() for n in roles.distill):
            raise ConfigError("distill.anchor 'validation' chooses the student on the distilled "
                              "sessions' validation bins, but they have none; set distill.anchor "
                              "to 'always' or 'off', or write the store with a validation split")
        if cfg.scaling.enabled:
            check_scaling(cfg, store, roles)
        self.cache.expect(self.expected_units(roles))
        self.console.print(
            f"sessions — teacher: {', '.join(roles.teacher)}; distill: {', '.join(roles.distill)}"
            f"; held-out: {', '.join(roles.heldout) or '-'}")
        memo = units.StudyMemo(store)
        runs = Runs()
        traces: dict[str, Any] = {}
        self._parts: dict[tuple[str, int | None, int], list[dict[str, Any]]] = {}
        label_parts: list[dict[str, Any]] = []
        scaling_rows: list[dict[str, Any]] = []
        # seed order: one round per seed; else one round of all seeds, stage by stage
        rounds = [[seed] for seed in cfg.seeds] if self.order == "seeds" else [list(cfg.seeds)]
        try:
            for i, seeds in enumerate(rounds):
                self.round(i, seeds, store, roles, memo, runs, traces, t_start)
                if cfg.labels.enabled:
                    label_parts += self.label_readouts(store, roles, runs, seeds)
                if cfg.scaling.enabled:
                    scaling_rows += self.scaling(store, roles, runs, memo, seeds)
        finally:
            self.cache.close()
        rows = self.rows()
        label_rows = self.labels(store, roles, rows, label_parts) if cfg.labels.enabled else []
        self.console.print("[bold]report[/]")
        diagnostics = _diagnostics(runs, cfg.seeds)
        days = session_days(store, roles.eval) if cfg.longevity.enabled else None
        result = write_report(self.out, cfg, roles.as_dict(), rows, traces, self.cache.log,
                            seconds=time.time() - t_start, store=store, diagnostics=diagnostics,
                            label_rows=label_rows, days=days, scaling_rows=scaling_rows,
                            scaling_full=(scaling_units.full_seconds(store, roles.distill),
                                          _mean_steps(runs.distilled.values()))
                            if cfg.scaling.enabled else None, anchor_choice=runs.anchor_choice)
        shutil.rmtree(self.out / PROVISIONAL, ignore_errors=True)  # the final report replaces it
        return result


    def add(self, stage: str, rows: list[dict[str, Any]], part: int = 0) -> None:
        """Keep a stage's rows for the report (by stage, seed and ``part``, the probe's model
        group: :meth:`rows`)."""
        for r in rows:
            self._parts.setdefault((stage, r.get("seed"), part), []).append(r)

    def rows(self) -> list[dict[str, Any]]:
        """The rows kept so far, in :data:`ROW_STAGES` order, then seed order (the classic
        decoders' seedless rows last in their stage), then part order: the same whatever order
        units ran in."""
        parts = sorted({k[2] for k in self._parts})
        return [r for stage in ROW_STAGES for seed in [*self.cfg.seeds, None] for part in parts
                for r in self._parts.get((stage, seed, part), [])]

    def round(self, i: int, seeds: list[int], store: Store, roles: Roles, memo: units.StudyMemo,
              runs: Runs, traces: dict[str, Any], t_start: float) -> None:
        """The models and evaluations of ``seeds`` (round ``i``). In seed order each model
        group is probed as soon as it is trained; in the first round the classic decoders run
        first and a table of the numbers so far is printed after each group (:meth:`show`),
        then a provisional report of that seed. In stage order every group is probed after
        every model is trained."""
        cfg = self.cfg
        early = self.order == "seeds"
        first = early and i == 0  # the first seed: its numbers shown as they come
        provisional = first and len(seeds) < len(cfg.seeds)
        started: dict[tuple[int, str], Any] = {}
        if self.background:  # needed only by the probes: trained beside the other models
            started = self.ss_lfp(store, roles, seeds, self.cache.start)
        if first and cfg.classic.enabled:  # no training: the first numbers
            self.add("classic", self.classic(store, roles, traces))
            self.show(t_start)

        def probe(group: str) -> None:
            self.add("probe", self.probe(store, roles, runs, memo, traces, seeds, group),
                     PROBE_GROUPS.index(group))

        def ready(group: str) -> None:  # seed order: the models of ``group`` are trained
            if not early:
                return
            if group == "ss_lfp" and started:
                runs.ss_lfp.update({k: p.wait() for k, p in started.items()})
            probe(group)
            if first:
                self.show(t_start)

        self.train_models(store, roles, memo, runs, seeds, background=self.background,
                          ready=ready)
        if not early:
            for group in PROBE_GROUPS:
                probe(group)
        if provisional:
            self.provisional(store, roles, runs, self.rows(), traces, seeds,
                             time.time() - t_start)
        if cfg.finetune.enabled:
            self.add("finetune", self.finetune(store, roles, runs, seeds))
        if cfg.classic.enabled and not early:
            self.add("classic", self.classic(store, roles, traces))
        if cfg.causal.enabled:
            self.add("causal", self.causal(store, roles, runs, memo, seeds))

    def show(self, t_start: float) -> None:
        """Print the first seed's numbers so far (probes and classic decoders, test R²): the
        first table, grown after each model group while the study goes on."""
        rows = self.rows()
        done = sorted({probe_group(r["model"]) for r in rows if r["eval"] == "probe"},
                      key=PROBE_GROUPS.index)
        left = [g for g in PROBE_GROUPS if g not in done]
        print_first_numbers(
            rows, self.console,
            f"first numbers — seed {self.cfg.seeds[0]}, after {clock(time.time() - t_start)}"
            + (f"; still training: {', '.join(left)}" if left else "; every model of this seed")
            + " (the final report replaces this table)")

    def provisional(self, store: Store, roles: Roles, runs: Runs, rows: list[dict[str, Any]],
                    traces: dict[str, Any], seeds: list[int], seconds: float) -> None:
        """The report of the first seed's probes and the classic decoders, written to
        ``OUT/provisional/`` with the final report's writers and printed, while the other seeds
        run; marked provisional in its title and ``results.json``."""
        cfg = self.cfg
        rest = [s for s in cfg.seeds if s not in seeds]
        self.console.print(f"[bold]provisional report[/] (seed {', '.join(map(str, seeds))} only, "
                           f"after {clock(seconds)}; seeds {', '.join(map(str, rest))} follow, "
                           "then the final report replaces this one)")
        label = (f"{cfg.name} — PROVISIONAL: seed {', '.join(map(str, seeds))} only (probes and "
                 f"classic decoders); the study goes on with seeds {', '.join(map(str, rest))}")
        pcfg = cfg.model_copy(update={"name": label, "seeds": list(seeds)})
        out = self.out / PROVISIONAL
        out.mkdir(parents=True, exist_ok=True)
        result = write_report(out, pcfg, roles.as_dict(), rows, traces, list(self.cache.log),
                              seconds=seconds, store=store, console=self.console,
                              diagnostics=_diagnostics(runs, seeds),
                              anchor_choice={s: runs.anchor_choice[s] for s in seeds})
        write_json_atomic(out / "results.json", {"provisional": True,
                                                 "final_seeds": list(cfg.seeds), **result})

    # ------------------------------------------------------------------------------ models
    def ss_lfp(self, store: Store, roles: Roles, seeds: list[int], run: Any
               ) -> dict[tuple[int, str], Any]:
        """The single-session LFP models of ``seeds``, by ``run`` (:meth:`Cache.run`, or
        :meth:`Cache.start`: in the background, to be waited for)."""
        cfg = self.cfg
        self.console.print("[bold]ss_lfp[/] (single-session LFP MAE)")
        return {(seed, name): run("ss_lfp", f"{name}-seed{seed}", units.train_mae, store=store,
                                  sessions=[name], modality="lfp", model=cfg.lfp_model,
                                  train=self.train_cfg(cfg.ss_lfp, seed))
                for seed in seeds for name in roles.eval}

    def train_models(self, store: Store, roles: Roles, memo: units.StudyMemo, runs: Runs,
                     seeds: list[int], background: bool = False,
                     ready: Callable[[str], None] | None = None) -> None:
        """Train the models of ``seeds`` into ``runs`` (the teacher once, with the first seed,
        unless ``teacher.per_seed``), calling ``ready(group)`` as each of
        :data:`~.plan.PROBE_GROUPS` can be probed (MS-LFP with its held-out adaptations, the
        student with its); ``background``: the SS-LFP models were started in the background
        (:meth:`ss_lfp`), left out here and ready last."""
        cfg, run = self.cfg, self.cache.run
        ready = ready or (lambda group: None)
        teacher_seeds = [s for s in (cfg.seeds if cfg.teacher.per_seed else [cfg.seeds[0]])
                         if s in seeds]
        if teacher_seeds:
            self.console.print("[bold]teacher[/] (spike MAE across sessions)")
        for seed in teacher_seeds:
            runs.teacher[seed] = run("teacher", f"seed{seed}", units.train_mae, store=store,
                                     sessions=roles.teacher, modality="spikes",
                                     model=cfg.teacher.model,
                                     train=self.train_cfg(cfg.teacher.train, seed))
        ready("teacher")
        if not background:
            runs.ss_lfp.update(self.ss_lfp(store, roles, seeds, self.cache.run))
            ready("ss_lfp")
        self.console.print("[bold]ms_lfp[/] (multi-session LFP MAE)")
        for seed in seeds:
            runs.ms_lfp[seed] = run("ms_lfp", f"seed{seed}", units.train_mae, store=store,
                                    sessions=roles.ms_lfp, modality="lfp", model=cfg.lfp_model,
                                    train=self.train_cfg(cfg.ms_lfp, seed))
        self.adapt(store, roles, runs, seeds, "adapt_ms")
        ready("ms_lfp")
        anchor = cfg.distill.anchor
        self.console.print("[bold]distill[/] (LFP student aligned to the frozen teacher"
                           + {"validation": "; with and without the MS-LFP anchor, the one with "
                                            "the higher validation probe kept)",
                              "always": ", anchored to the MS-LFP)", "off": ")"}[anchor])
        for seed in seeds:
            students = {a: self.student("distill", f"seed{seed}", a, store=store, roles=roles,
                                        teacher=runs.teacher_for(cfg, seed),
                                        model=cfg.lfp_model, ms=runs.ms_lfp[seed],
                                        train=self.train_cfg(cfg.distill.train, seed), memo=memo)
                        for a in {"validation": (False, True), "always": (True,),
                                  "off": (False,)}[anchor]}
            if len(students) > 1:
                d = run("choose", f"seed{seed}", units.choose_student, store=store,
                        sessions=roles.distill, plain=students[False], anchored=students[True],
                        memo=memo)
                choice = json.loads((d / "choice.json").read_text())
                self.console.print(
                    f"  seed {seed}: validation probe plain {choice['plain_val']:.3f}, anchored "
                    f"{choice['anchored_val']:.3f} → {'anchored' if choice['anchored'] else 'plain'}")
            else:
                choice = {"anchored": anchor == "always"}
            runs.anchor_choice[seed] = {"rule": anchor, **choice}
            runs.distilled[seed] = students[choice["anchored"]]
        if "b" in cfg.generalize.modes:
            self.adapt(store, roles, runs, seeds, "adapt_distilled")
        ready("distilled")
        if background:
            ready("ss_lfp")

    def adapt(self, store: Store, roles: Roles, runs: Runs, seeds: list[int], tag: str) -> None:
        """Generalization: the held-out sessions' embeddings learnt into the MS-LFP
        (``adapt_ms``) or the student (``adapt_distilled``), the rest frozen."""
        if not roles.heldout:
            return
        self.console.print(f"[bold]generalize[/] ({tag}: held-out sessions' embeddings only)")
        for seed in seeds:
            src, into = ((runs.ms_lfp[seed], runs.adapt_ms) if tag == "adapt_ms"
                         else (runs.distilled[seed], runs.adapt_distilled))
            for name in roles.heldout:
                into[(seed, name)] = self.cache.run(
                    "generalize", f"{tag}-{name}-seed{seed}", units.train_mae, store=store,
                    sessions=[name], modality="lfp", model=self.cfg.lfp_model,
                    train=self.train_cfg(self.cfg.generalize.adapt, seed), init_from=src,
                    train_only_new=True)

    def student(self, stage: str, name: str, anchored: bool, *, store: Store, roles: Roles,
                teacher: Path, model: ModelConfig, ms: Path, train: TrainConfig,
                memo: units.StudyMemo) -> Path:
        """One distilled student: plain, or anchored to the MS-LFP run ``ms`` (the anchor is not
        passed at all to a plain one, so its cache key is that of a study without anchors)."""
        d = self.cfg.distill
        return self.cache.run(
            stage, name, units.train_student, store=store, teacher=teacher,
            sessions=roles.distill, model=model, train=train,
            objective=d.student_objective(anchored),
            init=ms if d.student_init == "ms_lfp" else None, memo=memo,
            **({"anchor": ms} if anchored else {}))

    # -------------------------------------------------------------------------- evaluation
    def probe(self, store: Store, roles: Roles, runs: Runs, memo: units.StudyMemo,
              traces: dict[str, Any], seeds: list[int], group: str) -> list[dict[str, Any]]:
        """The probes of one model ``group`` (:data:`~.plan.PROBE_GROUPS`) for ``seeds``: one
        unit per group and seed."""
        cfg = self.cfg
        wiener = (cfg.classic.n_lags, cfg.classic.lag_step) if cfg.probe.wiener else None
        self.console.print(f"[bold]probe[/] ({group}: frozen latents → linear regression → "
                           "velocity R²" + ("; and → Wiener filter)" if wiener else ")"))
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            warnings: list[str] = []
            plan = eval_plan(cfg, store, roles, runs, seed, warnings, groups=(group,))
            for w in warnings:
                self.console.print(f"  [yellow]{w}[/]")
            if not plan:
                continue
            d = self.cache.run("probe", f"{group}-seed{seed}", units.probe, store=store,
                               plan=plan, wiener=wiener, memo=memo,
                               combined=bool(wiener) and cfg.probe.combined)
            rows += units.read_rows(d)
            if seed == cfg.seeds[0]:
                traces.setdefault("probe", {}).update(dict(np.load(d / "preds.npz")))
        return rows

    def finetune(self, store: Store, roles: Roles, runs: Runs, seeds: list[int]
                 ) -> list[dict[str, Any]]:
        cfg = self.cfg
        self.console.print("[bold]finetune[/] (model + velocity head trained end-to-end)")
        rows: list[dict[str, Any]] = []
        sessions = roles.distill + (roles.heldout if cfg.finetune.sessions == "all" else [])
        plans = {seed: [p for p in eval_plan(cfg, store, roles, runs, seed)
                        if p.model in cfg.finetune.models and p.session in sessions]
                 for seed in seeds}
        # every seed evaluates the same (model, session) pairs: the count of all seeds
        self.cache.expect({"finetune": len(plans[seeds[0]]) * len(cfg.seeds)})
        for seed in seeds:
            tc = self.train_cfg(cfg.finetune.train, seed)
            for p in plans[seed]:
                d = self.cache.run("finetune", f"{p.model}-{p.session}-seed{seed}", units.finetune,
                                   store=store, run=p.run, session=p.session, train=tc)
                res = json.loads((d / "result.json").read_text())
                rows.append({"model": p.model, "session": p.session, "group": p.group,
                             "eval": "finetune", "split": "test", "seed": seed, "mode": p.mode,
                             "r2": res["test_r2"], "r2_x": res["test_r2_x"], "r2_y": res["test_r2_y"]})
        return rows

    def classic(self, store: Store, roles: Roles, traces: dict[str, Any]) -> list[dict[str, Any]]:
        """The classic decoders' rows (one unit for every session; no training)."""
        self.console.print("[bold]classic[/] (Wiener and Kalman decoders on the same splits)")
        d = self.cache.run("classic", "decoders", units.classic, store=store,
                           sessions=roles.eval, distilled=roles.distill, options=self.cfg.classic)
        traces["classic"] = dict(np.load(d / "preds.npz"))
        return units.read_rows(d)

    def causal(self, store: Store, roles: Roles, runs: Runs, memo: units.StudyMemo,
               seeds: list[int]) -> list[dict[str, Any]]:
        """Causal MS-LFP and causal student per seed (held-out sessions adapted as in mode b),
        read out on their causal latents: rows with ``eval: causal``."""
        cfg, run = self.cfg, self.cache.run
        self.console.print("[bold]causal[/] (streaming models: causal MS-LFP and student, "
                           "linear read-out of one causal pass)")
        model = cfg.lfp_model.model_copy(update={"causal": True,
                                                 "context_bins": cfg.causal.context_bins,
                                                 "readout": "visible"})
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            ms = run("causal", f"ms_lfp-seed{seed}", units.train_mae, store=store,
                     sessions=roles.ms_lfp, modality="lfp", model=model,
                     train=self.train_cfg(cfg.ms_lfp, seed))
            # the causal student follows the choice the study's student made for this seed
            student = self.student("causal", f"distill-seed{seed}",
                                   runs.anchor_choice[seed]["anchored"], store=store,
                                   roles=roles, teacher=runs.teacher_for(cfg, seed), model=model,
                                   ms=ms, train=self.train_cfg(cfg.distill.train, seed),
                                   memo=memo)
            items = [{"model": m, "run": str(r), "session": name, "group": "distilled",
                      "seed": seed, "mode": None}
                     for name in roles.distill for m, r in (("distilled", student), ("ms_lfp", ms))]
            tc = self.train_cfg(cfg.generalize.adapt, seed)
            for name in roles.heldout:
                for m, src in (("distilled", student), ("ms_lfp", ms)):
                    d = run("causal", f"adapt_{m}-{name}-seed{seed}", units.train_mae,
                            store=store, sessions=[name], modality="lfp", model=model, train=tc,
                            init_from=src, train_only_new=True)
                    items.append({"model": m, "run": str(d), "session": name, "group": "unseen",
                                  "seed": seed, "mode": "b" if m == "distilled" else None})
            wiener = (cfg.classic.n_lags, cfg.classic.lag_step) if cfg.probe.wiener else None
            d = run("causal", f"probe-seed{seed}", units.causal_probe, store=store, items=items,
                    wiener=wiener, combined=bool(wiener) and cfg.probe.combined)
            rows += units.read_rows(d)
        return rows


    def label_readouts(self, store: Store, roles: Roles, runs: Runs, seeds: list[int]
                       ) -> list[dict[str, Any]]:
        """Label efficiency, the seeds' part: each frozen model's read-outs refit on subsets of
        the training bins."""
        cfg, opts = self.cfg, self.cfg.labels
        self.console.print("[bold]labels[/] (every decoder refit on "
                           f"{', '.join(f'{s:g}' for s in opts.seconds)} s of labels, "
                           f"{opts.draws} draw(s) each)")
        lags = (cfg.classic.n_lags, cfg.classic.lag_step)
        out: list[dict[str, Any]] = []
        for seed in seeds:
            items = [p for p in eval_plan(cfg, store, roles, runs, seed)
                     if p.model in opts.models]
            d = self.cache.run("labels", f"seed{seed}", label_units.readouts, store=store,
                               items=items, options=opts, n_lags=lags[0], lag_step=lags[1])
            out += units.read_rows(d)
        return out

    def labels(self, store: Store, roles: Roles, rows: list[dict[str, Any]],
               readouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Label efficiency: the seeds' ``readouts`` (:meth:`label_readouts`) and the classic
        decoders refit on the same subsets; the study's own rows are the curve's last point."""
        cfg, opts = self.cfg, self.cfg.labels
        lags = (cfg.classic.n_lags, cfg.classic.lag_step)
        d = self.cache.run("labels", "classic", label_units.classic, store=store,
                           sessions=roles.eval, distilled=roles.distill, options=opts,
                           n_lags=lags[0], lag_step=lags[1])
        return readouts + units.read_rows(d) + label_units.full_rows(rows, store, opts.models)

    def scaling(self, store: Store, roles: Roles, runs: Runs, memo: units.StudyMemo,
                seeds: list[int]) -> list[dict[str, Any]]:
        """Students distilled on fewer paired seconds, or from teachers trained on fewer
        sessions, each probed like the study's own student: rows tagged with ``axis`` and
        ``x``."""
        cfg, sc, run = self.cfg, self.cfg.scaling, self.cache.run
        full_s = scaling_units.full_seconds(store, roles.distill)
        self.console.print("[bold]scaling[/] (students on "
                           + ", ".join(f"{b:g}" for b in sc.paired_seconds)
                           + f" of {full_s:.0f} paired s; teachers on "
                           + ", ".join(map(str, sc.teacher_sessions))
                           + f" of {len(roles.teacher)} sessions)")
        others = [n for n in roles.teacher if n not in roles.distill]
        teachers = self._scaling_teachers  # kept from round to round
        for k in sc.teacher_sessions:
            for seed in [s for s in (cfg.seeds if cfg.teacher.per_seed else [cfg.seeds[0]])
                         if s in seeds]:
                teachers[(k, seed)] = run(
                    "scaling", f"teacher{k}-seed{seed}", units.train_mae, store=store,
                    sessions=roles.distill + others[:k - len(roles.distill)], modality="spikes",
                    model=cfg.teacher.model, train=self.train_cfg(cfg.teacher.train, seed))
        wiener = (cfg.classic.n_lags, cfg.classic.lag_step) if cfg.probe.wiener else None
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            base = self.train_cfg(cfg.distill.train, seed)
            points: list[tuple[str, float, Path, TrainConfig]] = []
            for b in sc.paired_seconds:
                tc = _scaled_epochs(base, b, full_s) if sc.same_steps else base.model_copy(
                    update={"train_seconds": b})
                points.append(("paired_seconds", b, runs.teacher_for(cfg, seed), tc))
            for k in sc.teacher_sessions:
                teacher = teachers[(k, seed if cfg.teacher.per_seed else cfg.seeds[0])]
                points.append(("teacher_sessions", float(k), teacher, base))
            for axis, x, teacher, tc in points:
                tag = f"{'paired' if axis == 'paired_seconds' else 'teacher'}{x:g}-seed{seed}"
                student = self.student("scaling", f"distill-{tag}",
                                       runs.anchor_choice[seed]["anchored"], store=store,
                                       roles=roles, teacher=teacher, model=cfg.lfp_model,
                                       ms=runs.ms_lfp[seed], train=tc, memo=memo)
                plan = [EvalItem("distilled", name, student, "distilled", seed)
                        for name in roles.distill]
                d = run("scaling", f"probe-{tag}", units.probe, store=store, plan=plan,
                        wiener=wiener, memo=memo)
                steps = _run_steps(student)
                rows += [{**r, "axis": axis, "x": x, "steps": steps} for r in units.read_rows(d)]
        return rows


def _diagnostics(runs: Runs, seeds: list[int]) -> dict[int, Any]:
    """The distillation diagnostics of the students of ``seeds`` that recorded them."""
    return {seed: json.loads((runs.distilled[seed] / "diagnostics.json").read_text())
            for seed in seeds
            if seed in runs.distilled and (runs.distilled[seed] / "diagnostics.json").exists()}


def _run_steps(run_dir: Any) -> float | None:
    """Optimiser steps of a training run (its ``summary.json``), None if unrecorded."""
    path = Path(run_dir) / "summary.json"
    steps = json.loads(path.read_text()).get("steps") if path.exists() else None
    return None if steps is None else float(steps)


def _mean_steps(run_dirs: Any) -> float | None:
    """Mean optimiser steps of training runs, None if none recorded them."""
    steps = [s for s in map(_run_steps, run_dirs) if s is not None]
    return float(np.mean(steps)) if steps else None


def _scaled_epochs(train: TrainConfig, budget_s: float, full_s: float) -> TrainConfig:
    """``train`` on ``budget_s`` of ``full_s`` training seconds, with its epochs multiplied so
    that it takes about as many optimiser steps as on all of them (early stopping off: on a
    small budget the validation loss turns early, and stopping there would compare fewer steps,
    not less data)."""
    epochs = max(1, math.ceil(train.max_epochs * full_s / budget_s))
    return train.model_copy(update={"train_seconds": budget_s, "max_epochs": epochs,
                                    "patience": epochs})


def check_scaling(cfg: ExperimentConfig, store: Store, roles: Roles) -> None:
    """Refuse, before anything trains, a paired budget longer than a distillation session's
    training bins, or a teacher-session count outside [distillation sessions, teacher
    sessions)."""
    sc = cfg.scaling
    have = scaling_units.full_seconds(store, roles.distill)
    if sc.paired_seconds and max(sc.paired_seconds) >= have:
        raise ConfigError(f"scaling.paired_seconds lists {max(sc.paired_seconds):g} s but the "
                          f"distillation sessions have only {have:.0f} s of training bins; list "
                          f"budgets below {have:.0f} s (all of them is always the last point)")
    lo, hi = len(roles.distill), len(roles.teacher)
    bad = [k for k in sc.teacher_sessions if not lo <= k < hi]
    if bad:
        raise ConfigError(f"scaling.teacher_sessions {bad} must lie in [{lo}, {hi}): a teacher "
                          f"must see the {lo} distillation session(s), and the study's own "
                          f"teacher ({hi} sessions) is always the last point")


def check_label_budgets(cfg: ExperimentConfig, store: Store, roles: Roles) -> None:
    """Refuse, before anything trains, a label budget longer than some evaluated session's
    training bins."""
    top = max(cfg.labels.seconds)
    for name in roles.eval:
        have = label_units.train_seconds(store.session(name))
        if top > have:
            raise ConfigError(f"labels.seconds lists {top:g} s but session '{name}' has only "
                              f"{have:.0f} s of training bins; list budgets up to {have:.0f} s "
                              "(the whole training set is always the curve's last point)")


def run_experiment(cfg: ExperimentConfig, from_stage: str | None = None,
                   out: Path | None = None, order: str = "seeds") -> dict[str, Any]:
    """Run (or resume from the cache) the study ``cfg``; returns the report's summary."""
    return Study(cfg, from_stage, out=out, order=order).run()
