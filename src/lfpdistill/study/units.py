"""The units of work of a study: module-level functions ``work(out_dir, **inputs)`` run by
:class:`~lfpdistill.study.cache.Cache`, which derives each unit's key from its inputs.

Every unit reads only its arguments. :class:`StudyMemo` is the one shared object: a memo of
pure functions of its arguments (teacher latents, teacher Wiener fits), so it adds nothing to a
key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..commands.distill import distill_run
from ..commands.finetune import finetune_run
from ..commands.pretrain import pretrain_run
from ..config import ClassicSection, DistillConfig, ModelConfig, SimConfig, TrainConfig
from ..data import Store, write_json_atomic, write_store
from ..errors import ConfigError
from ..evaluation import classic_decoders, linear_probe, session_latents, wiener_fits
from ..evaluation.metrics import r2_xy
from ..evaluation.readouts import combined_probe
from ..models import load_model
from ..models.streaming import causal_latents
from ..session import Session
from ..simulate import resolve_variant, simulate_sessions
from .plan import EvalItem


class StudyMemo:
    """Results computed once per study and shared by units: a frozen model's stitched latents of
    a session (a teacher shared by several seeds and stages, a distillation anchor, the two
    students the choice compares) and the teacher's Wiener read-outs."""

    def __init__(self, store: Store):
        self.store = store
        self._latents: dict[tuple[str, str], np.ndarray] = {}
        self.teacher_wiener: dict[tuple[str, str], dict[str, Any]] = {}

    def cache_key(self) -> str:
        return "memo"  # pure functions of the other inputs

    def latents(self, run: Path, session: str, modality: str = "spikes") -> np.ndarray:
        """Stitched latents of ``session`` under the model of ``run`` (a spike teacher, or with
        ``modality="lfp"`` an LFP model such as the distillation anchor)."""
        key = (str(run), session)
        if key not in self._latents:
            model, meta = load_model(run, modality=modality)
            self._latents[key] = session_latents(model, self.store.session(session),
                                                 meta.get("window_s", 1.0))
        return self._latents[key]

    def computed(self, run: Path, session: str) -> np.ndarray | None:
        """The stitched latents of ``session`` under ``run`` if a unit of this study has already
        computed them (the choice computes both students'), else None; computes nothing."""
        return self._latents.get((str(run), session))


# ------------------------------------------------------------------------------------ data
def simulate_store(out: Path, simulate: SimConfig, segment_s: float, split_seed: int) -> None:
    resolved = resolve_variant(simulate)  # the manifest records the drawn parameters
    if resolved.calibration is not None and not resolved.calibration.inside:
        print(f"warning: {resolved.drawn_from}: {resolved.calibration.describe()}; its sessions "
              "decode outside the bands", file=sys.stderr, flush=True)
    sessions = simulate_sessions(resolved, progress=True)
    write_store(sessions, out / "store", options={"source": "simulate",
                                                  "simulate": resolved.model_dump()},
                segment_s=segment_s, seed=split_seed)


# ---------------------------------------------------------------------------------- models
def train_mae(out: Path, store: Store, sessions: list[str], modality: str, model: ModelConfig,
              train: TrainConfig, init_from: Path | None = None, train_only_new: bool = False
              ) -> None:
    pretrain_run(store.root, sessions, modality, out, model, train, init_from=init_from,
                 train_only_new=train_only_new, resume=False)


def train_student(out: Path, store: Store, teacher: Path, sessions: list[str], model: ModelConfig,
                  train: TrainConfig, objective: DistillConfig, init: Path | None,
                  memo: StudyMemo, anchor: Path | None = None) -> None:
    anchor_latents = ({n: memo.latents(anchor, n, "lfp") for n in sessions}
                      if anchor is not None else None)
    distill_run(teacher, store.root, sessions, out, model, train, objective, student_init=init,
                resume=False, teacher_latents={n: memo.latents(teacher, n) for n in sessions},
                anchor_run=anchor, anchor_latents=anchor_latents)


def choose_student(out: Path, store: Store, sessions: list[str], plain: Path, anchored: Path,
                   memo: StudyMemo) -> None:
    """Keep the anchored student only if its frozen latents' linear probe (fit on train bins)
    scores higher on the ``sessions``' validation bins, averaged over the sessions that have
    some, than the plain student's: ``choice.json`` with both scores per session. Test bins are
    never read."""
    val: dict[str, dict[str, float]] = {}
    scored = [n for n in sessions if store.session(n).split_mask("val").any()]
    if not scored:
        raise ConfigError(f"no validation bins in {', '.join(sessions)} to choose the student on")
    for tag, run in (("plain", plain), ("anchored", anchored)):
        for name in scored:
            s = store.session(name)
            # finite by construction: linear_probe refuses non-finite latents, and a constant
            # validation column scores 0 (r2_columns)
            val.setdefault(name, {})[tag] = linear_probe(
                memo.latents(run, name, "lfp"), s.velocity, s.split_mask("train"),
                s.split_mask("val"))["r2"]
    mean = {tag: float(np.mean([val[n][tag] for n in scored])) for tag in ("plain", "anchored")}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "choice.json", {
        "anchored": bool(mean["anchored"] > mean["plain"]), "plain_val": mean["plain"],
        "anchored_val": mean["anchored"], "sessions": val})


def finetune(out: Path, store: Store, run: Path, session: str, train: TrainConfig) -> None:
    finetune_run(run, store.root, session, out, train, resume=False)


# ------------------------------------------------------------------------------ evaluation
def probe(out: Path, store: Store, plan: list[EvalItem], wiener: tuple[int, int] | None,
          memo: StudyMemo, combined: bool = False) -> None:
    """Linear probe (and Wiener read-out) of every item's frozen latents: ``rows.json`` and the
    probe predictions ``preds.npz``. With ``combined`` (and ``wiener``'s lags), the distilled
    model's latents are also read out together with the classic LMP + band-power features
    (:func:`~lfpdistill.evaluation.readouts.combined_probe`, penalties chosen on validation
    bins): ``eval: probe_combined``."""
    rows: list[dict[str, Any]] = []
    preds: dict[str, np.ndarray] = {}
    jobs: list[tuple[int, tuple[str, str], np.ndarray, Session]] = []
    for p in plan:
        s = store.session(p.session)
        if p.model == "teacher":  # one teacher for every seed: computed once
            z = memo.latents(p.run, p.session)
        elif p.as_session is None and (done := memo.computed(p.run, p.session)) is not None:
            z = done  # already read by this study: a student the choice compared, the anchor
        else:
            model, meta = load_model(p.run)
            z = session_latents(model, s, meta.get("window_s", 1.0), as_session=p.as_session)
        base = {"model": p.model, "session": p.session, "group": p.group, "split": "test",
                "seed": p.seed, "mode": p.mode}
        res = linear_probe(z, s.velocity, s.split_mask("train"), s.split_mask("test"))
        pred = preds[f"{p.model}|{p.session}"] = res.pop("pred")
        # the same fit scored on validation bins (it predicts every bin): what a user can check
        # without test bins
        val = s.split_mask("val")
        res["r2_val"] = r2_xy(s.velocity[val], pred[val])["r2"]
        rows.append({**base, "eval": "probe", **res})
        if wiener:
            tkey = (str(p.run), p.session)
            done = memo.teacher_wiener.get(tkey) if p.model == "teacher" else None
            rows.append({**base, "eval": "probe_wiener", **(done or {})})
            if done is None:
                jobs.append((len(rows) - 1, tkey, z, s))
            if combined and p.model == "distilled" and p.as_session is None:
                rows.append({**base, "eval": "probe_combined",
                             **_combined(z, s, *wiener)})
    if wiener and jobs:  # the Wiener fits, two or more at a time
        fits = wiener_fits([(z, s) for _, _, z, s in jobs], *wiener)
        for (i, tkey, _, _), res in zip(jobs, fits, strict=True):
            rows[i].update(res)
            if rows[i]["model"] == "teacher":
                memo.teacher_wiener[tkey] = res
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "rows.json", rows)
    np.savez(out / "preds.npz", **preds)


def _combined(z: np.ndarray, s: Session, n_lags: int, lag_step: int) -> dict[str, Any]:
    """The combined read-out's row values (no predictions) on one session's own splits."""
    res = combined_probe(z, s.lfp, s.velocity, s.split_mask("train"), s.split_mask("val"),
                         s.split_mask("test"), 1.0 / s.bin_size, n_lags, lag_step)
    res.pop("pred")
    return res


def causal_probe(out: Path, store: Store, items: list[dict[str, Any]],
                 wiener: tuple[int, int] | None = None, combined: bool = False) -> None:
    """Linear probe of causal models on their causal latents (one causal pass over each session,
    what a stream computes): ``rows.json`` with ``eval: causal``. With ``wiener`` (n_lags,
    lag_step) also the Wiener filter on the same latents, ``eval: causal_wiener``: its lags
    reach only into the past, so a stream can compute it too. ``items``: model, run, session,
    group, seed, mode. With ``combined`` (and ``wiener``'s lags) the distilled model's causal
    latents are also read out with the LMP + band-power features: ``eval: causal_combined``
    (what ``lfpdistill decode --readout combined`` streams)."""
    rows: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    jobs: list[tuple[np.ndarray, Session]] = []
    for it in items:
        s = store.session(it["session"])
        model, _ = load_model(Path(it["run"]), modality="lfp")
        z = causal_latents(model, s.name, torch.from_numpy(np.asarray(s.lfp, np.float32))).numpy()
        res = linear_probe(z, s.velocity, s.split_mask("train"), s.split_mask("test"))
        pred = res.pop("pred")
        val = s.split_mask("val")
        if val.any():
            res["r2_val"] = r2_xy(s.velocity[val], pred[val])["r2"]
        base = {"model": it["model"], "session": s.name, "group": it["group"],
                "split": "test", "seed": it["seed"], "mode": it["mode"]}
        rows.append({**base, "eval": "causal", **res})
        jobs.append((z, s))
        if wiener and combined and it["model"] == "distilled":
            extra.append({**base, "eval": "causal_combined", **_combined(z, s, *wiener)})
    if wiener:
        fits = wiener_fits(jobs, *wiener)
        rows += [{**r, "eval": "causal_wiener", **res} for r, res in zip(rows, fits, strict=True)]
    rows += extra
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "rows.json", rows)


def classic(out: Path, store: Store, sessions: list[str], distilled: list[str],
            options: ClassicSection) -> None:
    """The classic decoders on every evaluated session: ``rows.json`` and ``preds.npz``."""
    rows, preds = [], {}
    for name in sessions:
        s = store.session(name)
        group = "distilled" if name in distilled else "unseen"
        for r, pred in classic_decoders(s, options.n_lags, options.lag_step):
            preds[f"{r['model']}|{name}"] = pred
            rows.append({**r, "session": name, "group": group, "eval": "classic",
                         "split": "test", "seed": None, "mode": None})
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "rows.json", rows)
    np.savez(out / "preds.npz", **preds)


def read_rows(d: Path) -> list[dict[str, Any]]:
    return json.loads((d / "rows.json").read_text())
