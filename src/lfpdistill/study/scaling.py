"""Scaling: the distilled model's R² against the paired data it is distilled on and against the
number of sessions its teacher was trained on.

The runner (:meth:`~lfpdistill.study.runner.Study.scaling`) trains the extra students and
probes them like the study's own; this module turns their rows (tagged ``axis`` and ``x``) and
the study's own rows (the last point of both curves) into the report's table, figure and
claims. References drawn flat: MS-LFP and the best classic LFP decoder on the same sessions,
which use no paired data and no teacher.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.classic import CLASSIC_LFP
from .checks import check_lines
from .labels import train_seconds

AXES = {"paired_seconds": "paired seconds per distillation session",
        "teacher_sessions": "teacher sessions"}
READOUTS = {"probe": "linear probe", "probe_wiener": "Wiener read-out"}
#: the last step of a curve must add more than this R² for "still rising"
RISING = 0.01


def full_seconds(store: Any, names: list[str]) -> float:
    """Training seconds of the shortest of ``names`` (the largest paired budget they all have)."""
    return min(train_seconds(store.session(n)) for n in names)


def summarise_scaling(scaling_rows: list[dict[str, Any]], rows: list[dict[str, Any]],
                      full_s: float, n_teacher: int, full_steps: float | None = None
                      ) -> dict[str, Any]:
    """Mean ± sd over distillation sessions and seeds of each point of each curve (the study's
    own student, ``full_steps`` optimiser steps, closes both), the optimiser steps of each
    point's students, and the flat references."""
    vals: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    steps: dict[tuple[str, float], list[float]] = defaultdict(list)
    for r in scaling_rows:
        vals[(r["axis"], r["eval"], float(r["x"]))].append(r["r2"])
        if r.get("steps") is not None:
            steps[(r["axis"], float(r["x"]))].append(r["steps"])
    for r in rows:
        if r["model"] == "distilled" and r["group"] == "distilled" and r["eval"] in READOUTS:
            vals[("paired_seconds", r["eval"], float(full_s))].append(r["r2"])
            vals[("teacher_sessions", r["eval"], float(n_teacher))].append(r["r2"])
    if full_steps is not None:
        steps[("paired_seconds", float(full_s))].append(full_steps)
        steps[("teacher_sessions", float(n_teacher))].append(full_steps)
    points = [{"axis": a, "eval": e, "x": x, "mean": float(np.mean(v)), "sd": float(np.std(v)),
               "n": len(v), "steps": float(np.mean(steps[(a, x)])) if steps[(a, x)] else None}
              for (a, e, x), v in vals.items()]
    points.sort(key=lambda p: (p["axis"], p["eval"], p["x"]))
    refs: dict[str, float] = {}
    for key, model, ev in (("ms_lfp_probe", "ms_lfp", "probe"),
                           ("ms_lfp_wiener", "ms_lfp", "probe_wiener"),
                           ("teacher_probe", "teacher", "probe")):
        v = [r["r2"] for r in rows if r["model"] == model and r["eval"] == ev
             and r["group"] == "distilled"]
        if v:
            refs[key] = float(np.mean(v))
    by_decoder: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["eval"] == "classic" and r["model"] in CLASSIC_LFP and r["group"] == "distilled":
            by_decoder[r["model"]].append(r["r2"])
    if by_decoder:
        best = max(by_decoder, key=lambda m: np.mean(by_decoder[m]))
        refs["best_classic_lfp"] = float(np.mean(by_decoder[best]))
        refs["best_classic_name"] = best  # type: ignore[assignment]
    return {"points": points, "refs": refs, "full_seconds": full_s, "teacher_sessions": n_teacher}


def _curve(summary: dict[str, Any], axis: str, ev: str) -> list[dict[str, Any]]:
    return [p for p in summary["points"] if p["axis"] == axis and p["eval"] == ev]


def scaling_claims(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per read-out: is the distilled R² still rising at the largest paired budget (the last
    step adds more than ``RISING``), and does the full teacher beat the one on fewest sessions;
    the smallest paired budget at which the student beats MS-LFP."""
    checks: list[dict[str, Any]] = []
    refs = summary["refs"]
    for ev, name in READOUTS.items():
        pts = _curve(summary, "paired_seconds", ev)
        if len(pts) >= 2:
            step = pts[-1]["mean"] - pts[-2]["mean"]
            checks.append({
                "claim": f"Scaling, paired data: the distilled R² ({name}) is still rising at the "
                         f"largest budget (the last step, {pts[-2]['x']:g} s → all "
                         f"{pts[-1]['x']:g} s, adds > {RISING})",
                "pass": step > RISING,
                "values": {"r2_before": pts[-2]["mean"], "r2_all": pts[-1]["mean"],
                           "step": step}})
            ref = refs.get("ms_lfp_wiener" if ev == "probe_wiener" else "ms_lfp_probe")
            if ref is not None:
                first = next((p["x"] for p in pts if p["mean"] > ref), None)
                checks.append({
                    "claim": f"Scaling, paired data: the distilled model ({name}) beats MS-LFP "
                             "(same read-out) from some paired budget (the smallest is stated)",
                    "pass": first is not None,
                    "values": {"smallest_seconds": first, "ms_lfp": ref}})
        pts = _curve(summary, "teacher_sessions", ev)
        if len(pts) >= 2:
            checks.append({
                "claim": f"Scaling, teacher sessions: the distilled R² ({name}) with the teacher "
                         f"on {pts[-1]['x']:g} sessions > with the teacher on {pts[0]['x']:g}",
                "pass": pts[-1]["mean"] > pts[0]["mean"],
                "values": {"r2_fewest": pts[0]["mean"], "r2_all": pts[-1]["mean"],
                           "gain": pts[-1]["mean"] - pts[0]["mean"]}})
    return checks


def scaling_markdown(summary: dict[str, Any], checks: list[dict[str, Any]]) -> str:
    refs = summary["refs"]
    lines = ["\n## Scaling\n",
             "Test R² of students distilled like the study's own but on fewer paired spike + LFP "
             "seconds per distillation session (whole training segments drawn at random; the "
             "target transform is fit on the same bins; epochs scaled so every budget takes about "
             "as many optimiser steps, when `scaling.same_steps`), or from a teacher trained on "
             "fewer sessions (the distillation sessions first). The study's own student is the "
             "last point of both. Mean ± sd over distillation sessions and seeds.\n"]
    lines += check_lines(checks)
    for axis, label in AXES.items():
        xs = sorted({p["x"] for p in summary["points"] if p["axis"] == axis})
        if not xs:
            continue
        lines.append(f"\n**{label}**\n")
        lines.append("| read-out | " + " | ".join(f"{x:g}" for x in xs) + " |")
        lines.append("|---|" + "---|" * len(xs))
        for ev, name in READOUTS.items():
            cells = {p["x"]: p for p in _curve(summary, axis, ev)}
            if cells:
                lines.append(f"| Distilled LFP ({name}) | " + " | ".join(
                    f"{cells[x]['mean']:.3f} ± {cells[x]['sd']:.3f}" if x in cells else "—"
                    for x in xs) + " |")
        st = {p["x"]: p["steps"] for p in summary["points"] if p["axis"] == axis}
        lines.append("| optimiser steps | " + " | ".join(
            f"{st[x]:.0f}" if st.get(x) is not None else "—" for x in xs) + " |")
    names = {"ms_lfp_probe": "MS-LFP (linear probe)", "ms_lfp_wiener": "MS-LFP (Wiener read-out)",
             "teacher_probe": "Teacher (linear probe)",
             "best_classic_lfp": f"best classic LFP decoder ({refs.get('best_classic_name')})"}
    flat = [f"{names[k]} {v:.3f}" for k, v in refs.items() if k in names]
    if flat:
        lines.append("\nFlat references on the same sessions: " + "; ".join(flat) + ".")
    return "\n".join(lines) + "\n"


def fig_scaling(summary: dict[str, Any], path: Path, save: Callable[[Any, Path], None]) -> None:
    import matplotlib.pyplot as plt

    axes_present = [a for a in AXES if any(p["axis"] == a for p in summary["points"])]
    fig, axes = plt.subplots(1, len(axes_present), figsize=(5.5 * len(axes_present), 4.2),
                             squeeze=False, sharey=True)
    refs = summary["refs"]
    for ax, axis in zip(axes[0], axes_present, strict=True):
        for ev, name in READOUTS.items():
            pts = _curve(summary, axis, ev)
            if pts:
                ax.errorbar([p["x"] for p in pts], [p["mean"] for p in pts],
                            yerr=[p["sd"] for p in pts], marker="o", ms=3, capsize=2,
                            color="#e6550d", ls="-" if ev == "probe_wiener" else ":",
                            label=f"Distilled LFP ({name})")
        for key, color, ls, label in (
                ("ms_lfp_wiener", "#3182bd", "-", "MS-LFP (Wiener read-out)"),
                ("ms_lfp_probe", "#3182bd", ":", "MS-LFP (linear probe)"),
                ("best_classic_lfp", "#31a354", "--", "best classic LFP decoder")):
            if key in refs:
                ax.axhline(refs[key], color=color, ls=ls, lw=1, label=label)
        ax.set_xscale("log", base=2)
        xs = sorted({p["x"] for p in summary["points"] if p["axis"] == axis})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(AXES[axis])
        ax.axhline(0, color="k", lw=0.5)
    axes[0][0].set_ylabel("velocity R² (test segments)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Scaling: distilled R² against paired data and teacher sessions", fontsize=10)
    fig.tight_layout()
    save(fig, path)
