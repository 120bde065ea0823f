"""Label efficiency: test R² of every decoder against the labelled training seconds it is fit on.

A BCI is recalibrated with a few minutes of cued movement, so what matters is how a decoder does
with few labels. For each budget (``labels.seconds``) and draw, :func:`label_mask` picks whole
training segments of a session at random (a partial one last, so the budget is met exactly);
validation and test bins are never picked. Every decoder of that (session, budget, draw) is fit
on exactly that mask — the frozen models' linear probe and Wiener read-out as well as the
classic decoders — and scored on the session's test segments. Each row records a digest of its
mask (``mask_sha``) so that the report can show they agree.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LabelsSection
from ..data import Store, write_json_atomic
from ..errors import ConfigError
from ..evaluation import linear_probe, session_latents
from ..evaluation.classic import CLASSIC, CLASSIC_LFP, classic_features, classic_fit
from ..evaluation.decoders import side_by_side, wiener_memory
from ..evaluation.metrics import r2_xy
from ..evaluation.probes import wiener_probe
from ..models import load_model
from ..session import Session, pick_segments
from .checks import check_lines
from .plan import EvalItem


def train_seconds(s: Session) -> float:
    """Seconds of training bins of ``s`` (the most a budget can ask)."""
    return float(s.split_mask("train").sum() * s.bin_size)


def label_mask(s: Session, seconds: float, draw: int, seed: int = 0) -> np.ndarray:
    """The labelled bins of one (session, budget, draw): training segments in a random order
    (from ``seed``, ``draw`` and the session's name), whole ones until the budget is nearly
    met, then the start of one more so that exactly ``round(seconds / bin_size)`` bins are
    labelled. Only training segments are ever chosen."""
    segs = s.split_segments("train")
    need = int(round(seconds / s.bin_size))
    have = int(sum(b - a for a, b in segs))
    if need < 1:
        raise ConfigError(f"labels.seconds {seconds:g} is shorter than one bin "
                          f"({s.bin_size * 1e3:g} ms); use a larger budget")
    if need > have:
        raise ConfigError(f"labels.seconds {seconds:g} exceeds the {have * s.bin_size:.0f} s of "
                          f"training bins of session '{s.name}'; list budgets up to that (the "
                          "whole training set is always the curve's last point)")
    rng = np.random.default_rng([int(seed), int(draw), zlib.crc32(s.name.encode())])
    mask = np.zeros(s.n_bins, dtype=bool)
    for a, b in pick_segments(segs, need, rng):
        mask[a:b] = True
    return mask


def mask_sha(mask: np.ndarray) -> str:
    """A short digest of a bin mask (identical masks, identical digests)."""
    return hashlib.sha1(np.packbits(np.asarray(mask, dtype=bool)).tobytes()).hexdigest()[:12]


def _budget_masks(s: Session, options: LabelsSection) -> list[tuple[float, int, np.ndarray]]:
    return [(sec, d, label_mask(s, sec, d, options.seed))
            for sec in options.seconds for d in range(options.draws)]


def readouts(out: Path, store: Store, items: list[EvalItem], options: LabelsSection,
             n_lags: int, lag_step: int) -> None:
    """Unit: the frozen models of one seed read out (linear probe and/or Wiener filter) on each
    labelled subset: ``rows.json``."""
    jobs: list[tuple[dict[str, Any], str, np.ndarray, Session, np.ndarray]] = []
    for p in items:
        s = store.session(p.session)
        model, meta = load_model(p.run)
        z = session_latents(model, s, meta.get("window_s", 1.0), as_session=p.as_session)
        base = {"eval": "labels", "model": p.model, "session": p.session, "group": p.group,
                "seed": p.seed, "mode": p.mode}
        for sec, d, m in _budget_masks(s, options):
            row = {**base, "seconds": sec, "draw": d, "mask_sha": mask_sha(m)}
            for r in options.readouts:
                jobs.append(({**row, "readout": r}, r, z, s, m))

    def one(job: tuple[dict[str, Any], str, np.ndarray, Session, np.ndarray]) -> dict[str, Any]:
        row, r, z, s, m = job
        test = s.split_mask("test")
        if r == "probe":
            res = linear_probe(z, s.velocity, m, test)
        else:
            res = wiener_probe(z, s.velocity, m, test, n_lags, lag_step)
        res.pop("pred")
        return {**row, **res}

    need = max((wiener_memory(int(m.sum()), z.shape[1], n_lags) for *_, z, _, m in jobs),
               default=0)
    rows = side_by_side(one, jobs, need)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "rows.json", rows)


def classic(out: Path, store: Store, sessions: list[str], distilled: list[str],
            options: LabelsSection, n_lags: int, lag_step: int) -> None:
    """Unit: the classic decoders (spike Wiener, raw-LFP and LMP+band-power Wiener, band-power
    Kalman) fit on each labelled subset: ``rows.json``."""
    jobs: list[tuple[dict[str, Any], str, np.ndarray, Session, np.ndarray]] = []
    for name in sessions:
        s = store.session(name)
        feats = classic_features(s)
        group = "distilled" if name in distilled else "unseen"
        for sec, d, m in _budget_masks(s, options):
            for model, kind, X in feats:
                jobs.append(({"eval": "labels", "model": model, "readout": None, "session": name,
                              "group": group, "seed": None, "mode": None, "seconds": sec,
                              "draw": d, "mask_sha": mask_sha(m)}, kind, X, s, m))

    def one(job: tuple[dict[str, Any], str, np.ndarray, Session, np.ndarray]) -> dict[str, Any]:
        row, kind, X, s, m = job
        test = s.split_mask("test")
        pred = classic_fit(kind, X, s, m, test, n_lags, lag_step)
        return {**row, **r2_xy(s.velocity[test], pred)}

    need = max((wiener_memory(int(m.sum()), X.shape[1], n_lags) for *_, X, _, m in jobs),
               default=0)
    rows = side_by_side(one, jobs, need)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "rows.json", rows)


# ------------------------------------------------------------------------------------ report
def full_rows(rows: list[dict[str, Any]], store: Store, models: Sequence[str]
              ) -> list[dict[str, Any]]:
    """The study's own evaluations (every training bin labelled) as the label curve's last
    point: probe -> readout probe, probe_wiener -> readout wiener, classic as it is."""
    readout = {"probe": "probe", "probe_wiener": "wiener", "classic": None}
    secs: dict[str, float] = {}
    out = []
    for r in rows:
        if r["eval"] not in readout or r.get("split", "test") != "test":
            continue
        if r["eval"] == "classic" and r["model"] not in CLASSIC:
            continue
        if r["eval"] != "classic" and r["model"] not in models:
            continue
        name = r["session"]
        if name not in secs:
            secs[name] = train_seconds(store.session(name))
        out.append({**r, "eval": "labels", "readout": readout[r["eval"]], "seconds": secs[name],
                    "draw": None, "mask_sha": "all", "full": True})
    return out


def curve_name(model: str, readout: str | None, labels: dict[str, str]) -> str:
    name = labels.get(model, model)
    return f"{name} — {'Wiener' if readout == 'wiener' else 'probe'}" if readout else name


def summarise_labels(rows: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """Mean ± sd over sessions, seeds and draws of each (group, decoder, budget); the full
    training set is one point per curve ("all", at the mean training seconds)."""
    cell: dict[tuple[str, str, str | None, str], list[float]] = defaultdict(list)
    secs: dict[tuple[str, str, str | None, str], list[float]] = defaultdict(list)
    for r in rows:
        budget = "all" if r.get("full") else f"{r['seconds']:g}"
        key = (r["group"], r["model"], r.get("readout"), budget)
        cell[key].append(float(r["r2"]))
        secs[key].append(float(r["seconds"]))
    out = []
    for (g, m, ro, b), v in cell.items():
        out.append({"group": g, "model": m, "readout": ro, "budget": b,
                    "seconds": float(np.mean(secs[(g, m, ro, b)])),
                    "label": curve_name(m, ro, labels), "mean": float(np.mean(v)),
                    "sd": float(np.std(v)), "n": len(v)})
    out.sort(key=lambda s: (s["group"], s["label"], s["seconds"]))
    return out


def _best_classic(sel: list[dict[str, Any]], budget: str) -> tuple[float | None, str | None]:
    """Mean R² and name of the best classic LFP decoder at ``budget``."""
    c = [s for s in sel if s["budget"] == budget and s["model"] in CLASSIC_LFP]
    top = max(c, key=lambda s: s["mean"], default=None)
    return (top["mean"], top["label"]) if top else (None, None)


def label_claims(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group: the smallest budget at which each read-out of the distilled model beats the
    best classic LFP decoder at that budget, and the margin at 20 s of labels."""
    checks: list[dict[str, Any]] = []
    for group in ("distilled", "unseen"):
        sel = [s for s in summary if s["group"] == group]
        budgets = sorted({s["budget"] for s in sel if s["budget"] != "all"}, key=float)
        if not budgets:
            continue
        where = "Distilled sessions" if group == "distilled" else "Unseen sessions (b)"

        for ro in ("probe", "wiener"):
            mine = {s["budget"]: s["mean"] for s in sel if s["model"] == "distilled"
                    and s["readout"] == ro}
            if not mine:
                continue
            name = f"Distilled LFP ({'Wiener read-out' if ro == 'wiener' else 'linear probe'})"
            first = None
            for b in budgets:
                bc, _ = _best_classic(sel, b)
                if b in mine and bc is not None and mine[b] > bc:
                    first = float(b)
                    break
            checks.append({"claim": f"{where}, label efficiency: {name} beats the best classic LFP "
                                    "decoder at some labelled budget (the smallest is stated)",
                           "pass": first is not None,
                           "values": {"smallest_seconds": first}})
            if "20" in mine:
                bc, label = _best_classic(sel, "20")
                if bc is not None:
                    checks.append({"claim": f"{where}, 20 s of labels: {name} > best classic LFP "
                                            f"decoder ({label})",
                                   "pass": mine["20"] > bc,
                                   "values": {"distilled": mine["20"], "best_classic": bc,
                                              "margin": mine["20"] - bc}})
    return checks


def labels_markdown(summary: list[dict[str, Any]], checks: list[dict[str, Any]],
                    options: LabelsSection) -> str:
    """The report's label-efficiency section: checks, then a table per group (rows: decoders,
    columns: labelled seconds)."""
    lines = ["\n## Label efficiency\n",
             f"Test R² against the labelled training seconds each decoder is fit on: "
             f"{options.draws} random draw(s) of whole training segments per budget (label seed "
             f"{options.seed}); every decoder of a (session, budget, draw) is fit on the same "
             "bins, never on validation or test bins. *all*: every training bin (the study's own "
             "evaluations). Mean ± sd over sessions, seeds and draws.\n"]
    lines += check_lines(checks)
    for group in ("distilled", "unseen"):
        sel = [s for s in summary if s["group"] == group]
        if not sel:
            continue
        budgets = sorted({s["budget"] for s in sel}, key=lambda b: 1e9 if b == "all" else float(b))
        lines.append(f"\n**{group} sessions**\n")
        lines.append("| decoder | " + " | ".join(f"{b} s" if b != "all" else "all" for b in budgets)
                     + " |")
        lines.append("|---|" + "---|" * len(budgets))
        for label in dict.fromkeys(s["label"] for s in sel):
            cells = {s["budget"]: s for s in sel if s["label"] == label}
            lines.append(f"| {label} | " + " | ".join(
                f"{cells[b]['mean']:.3f} ± {cells[b]['sd']:.3f}" if b in cells else "—"
                for b in budgets) + " |")
    return "\n".join(lines) + "\n"


def fig_labels(summary: list[dict[str, Any]], path: Path, colors: dict[str, str],
               save: Callable[[Any, Path], None]) -> None:
    import matplotlib.pyplot as plt

    groups = [g for g in ("distilled", "unseen") if any(s["group"] == g for s in summary)]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.4), squeeze=False,
                             sharey=True)
    for ax, g in zip(axes[0], groups, strict=True):
        sel = [s for s in summary if s["group"] == g]
        for label in dict.fromkeys(s["label"] for s in sel):
            pts = sorted((s for s in sel if s["label"] == label), key=lambda s: s["seconds"])
            first = pts[0]
            ls = "--" if first["model"] in CLASSIC else ("-" if first["readout"] == "wiener" else ":")
            ax.errorbar([p["seconds"] for p in pts], [p["mean"] for p in pts],
                        yerr=[p["sd"] for p in pts], label=label, ls=ls, marker="o", ms=3,
                        capsize=2, color=colors.get(first["model"]))
        ax.set_xscale("log")
        ax.set_xlabel("labelled training seconds")
        ax.set_title(f"{g} sessions", fontsize=10)
        ax.axhline(0, color="k", lw=0.5)
    axes[0][0].set_ylabel("velocity R² (test segments)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Label efficiency: solid Wiener read-out, dotted linear probe, dashed classic",
                 fontsize=10)
    fig.tight_layout()
    save(fig, path)
