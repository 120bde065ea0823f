"""Who plays which role in a study, and what is evaluated where.

:func:`resolve_roles` turns the config's session patterns into :class:`Roles` and checks them
(held-out sessions unseen, distillation sessions seen by the teacher and paired);
:func:`eval_plan` lists, for one seed, every (model, session) pair the probes and fine-tuning
evaluate, with the run that provides the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig
from ..data import Store
from ..errors import ConfigError


@dataclass(frozen=True)
class Roles:
    teacher: list[str]
    distill: list[str]
    heldout: list[str]
    ms_lfp: list[str]

    @property
    def eval(self) -> list[str]:
        """Sessions evaluated: the distilled ones, then the held-out ones."""
        return list(dict.fromkeys(self.distill + self.heldout))

    def as_dict(self) -> dict[str, list[str]]:
        return {"teacher": self.teacher, "distill": self.distill, "heldout": self.heldout,
                "ms_lfp": self.ms_lfp, "eval": self.eval}


def resolve_roles(cfg: ExperimentConfig, store: Store) -> Roles:
    s = cfg.sessions
    teacher = store.select(s.teacher)
    roles = Roles(teacher=teacher, distill=store.select(s.distill),
                  heldout=store.select(s.heldout) if s.heldout else [],
                  ms_lfp=store.select(s.ms_lfp) if s.ms_lfp else list(teacher))
    for h in roles.heldout:
        for role in ("teacher", "distill", "ms_lfp"):
            if h in getattr(roles, role):
                raise ConfigError(f"session '{h}' is in sessions.heldout and in sessions.{role}; "
                                  "held-out sessions must be unseen by the teacher, MS-LFP and "
                                  "distillation")
    missing = [d for d in roles.distill if d not in roles.teacher]
    if missing:
        raise ConfigError(f"distillation session(s) {', '.join(missing)} are not in "
                          "sessions.teacher; the teacher must have seen their spikes")
    for name in roles.distill:
        sess = store.session(name)
        if not (sess.has("spikes") and sess.has("lfp")):
            raise ConfigError(f"distillation session '{name}' needs both spikes and LFP")
    return roles


@dataclass
class Runs:
    """Output directories of the trained models, by seed (and session where per session)."""

    teacher: dict[int, Path] = field(default_factory=dict)
    ss_lfp: dict[tuple[int, str], Path] = field(default_factory=dict)
    ms_lfp: dict[int, Path] = field(default_factory=dict)
    distilled: dict[int, Path] = field(default_factory=dict)
    adapt_ms: dict[tuple[int, str], Path] = field(default_factory=dict)
    adapt_distilled: dict[tuple[int, str], Path] = field(default_factory=dict)
    #: per seed: whether the study's student is the anchored one, and the validation probes
    #: that chose it (distill.anchor "validation"; fixed for "always" and "off")
    anchor_choice: dict[int, dict[str, Any]] = field(default_factory=dict)

    def teacher_for(self, cfg: ExperimentConfig, seed: int) -> Path:
        return self.teacher[seed if cfg.teacher.per_seed else cfg.seeds[0]]


@dataclass(frozen=True)
class EvalItem:
    """One model evaluated on one session (``as_session``: generalization mode (a))."""

    model: str
    session: str
    run: Path
    group: str
    seed: int
    mode: str | None = None
    as_session: str | None = None


#: the probe's model groups, each probed as soon as its models are trained (``distilled``: the
#: student on its own sessions and, on the held-out ones, adapted (b) and as-is (a)); the order
#: their rows take in a seed's probe rows
PROBE_GROUPS = ("teacher", "ss_lfp", "ms_lfp", "distilled")
_GROUP_OF = {"teacher": "teacher", "ss_lfp": "ss_lfp", "ms_lfp": "ms_lfp",
             "distilled": "distilled", "distilled_a": "distilled"}


def probe_group(model: str) -> str:
    """The :data:`PROBE_GROUPS` entry of an evaluated model."""
    return _GROUP_OF[model]


def eval_plan(cfg: ExperimentConfig, store: Store, roles: Roles, runs: Runs, seed: int,
              warn: list[str] | None = None, groups: tuple[str, ...] = PROBE_GROUPS
              ) -> list[EvalItem]:
    """Every probe of one seed (of the models in ``groups``, :data:`PROBE_GROUPS`: only their
    runs are read, so a group can be planned before the others are trained); ``warn`` collects
    the mode (a) evaluations that cannot run."""
    plan: list[EvalItem] = []
    for name in roles.distill:
        if "teacher" in groups:
            plan.append(EvalItem("teacher", name, runs.teacher_for(cfg, seed), "distilled", seed))
        if "ss_lfp" in groups:
            plan.append(EvalItem("ss_lfp", name, runs.ss_lfp[(seed, name)], "distilled", seed))
        if "ms_lfp" in groups:
            plan.append(EvalItem("ms_lfp", name, runs.ms_lfp[seed], "distilled", seed))
        if "distilled" in groups:
            plan.append(EvalItem("distilled", name, runs.distilled[seed], "distilled", seed))
    for name in roles.heldout:
        if "ss_lfp" in groups:
            plan.append(EvalItem("ss_lfp", name, runs.ss_lfp[(seed, name)], "unseen", seed))
        if "ms_lfp" in groups:
            plan.append(EvalItem("ms_lfp", name, runs.adapt_ms[(seed, name)], "unseen", seed,
                                 "adapted (b)"))
        if "distilled" not in groups:
            continue
        if "b" in cfg.generalize.modes:
            plan.append(EvalItem("distilled", name, runs.adapt_distilled[(seed, name)], "unseen",
                                 seed, "b"))
        if "a" in cfg.generalize.modes:
            width = store.session(name).n_channels
            same = [d for d in roles.distill if store.session(d).n_channels == width]
            if same:
                plan.append(EvalItem("distilled_a", name, runs.distilled[seed], "unseen", seed,
                                     "a", same[0]))
            elif warn is not None:
                warn.append(f"generalization (a) skipped for {name}: no distilled session with "
                            f"{width} channels")
    return plan
