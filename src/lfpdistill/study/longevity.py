"""Longevity: decoding R² against the recording day of a chronically degrading array.

The reason to decode from LFP at all is that spikes fade as electrodes age while the LFP stays.
A longevity study is an ordinary study whose sessions are the days of one array: the teacher and
the distillation see the early days, the later days are held out. On each day the spike Wiener
filter and the classic LFP decoders are recalibrated with that day's labels, and the distilled
model is adapted with that day's unlabelled LFP (generalization mode b) and read out with its
labels. This module only reads the study's rows: it orders the sessions by day
(``meta['day']``, written by the simulator's chronic model; else the store's order), builds the
R²-against-day curves, the claims and the report's section and figure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.classic import CLASSIC_LFP
from .checks import check_lines

#: (key, label, model, evaluation) of each curve; the distilled model and MS-LFP are the plain
#: models on the distillation days and their mode (b) adaptations on the later days
CURVES: list[tuple[str, str, str, str]] = [
    ("spikes", "Spike Wiener (recalibrated)", "wiener_spikes", "classic"),
    ("best_classic_lfp", "Best classic LFP decoder", "", "classic"),
    ("ms_lfp_wiener", "MS-LFP (Wiener read-out)", "ms_lfp", "probe_wiener"),
    ("distilled_probe", "Distilled LFP (linear probe)", "distilled", "probe"),
    ("distilled_wiener", "Distilled LFP (Wiener read-out)", "distilled", "probe_wiener"),
    ("deployable", "lfpdistill: deployable decoder (offline)", "deployable",
     "deployable_offline"),
]
#: the share of all days on which the deployable decoder must reach the day's best classic LFP
#: decoder (8 of the study's 10 days)
DEPLOYABLE_DAY_SHARE = 0.8
_STYLE = {"spikes": ("#636363", "-"), "best_classic_lfp": ("#31a354", "--"),
          "ms_lfp_wiener": ("#3182bd", "-"), "distilled_probe": ("#e6550d", ":"),
          "distilled_wiener": ("#e6550d", "-"), "deployable": ("#756bb1", "-")}


def deployable_curve_rows(drows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's deployable rows (:func:`~.deployable.deployable_rows`: per seed and session
    the decoder validation chose) of the offline setting, as rows of the ``deployable`` curve."""
    return [{"model": "deployable", "eval": "deployable_offline", "session": d["session"],
             "seed": d["seed"], "mode": None, "r2": d["r2"]}
            for d in drows if d["setting"] == "offline"]


def session_days(store: Any, names: list[str]) -> dict[str, dict[str, float]]:
    """Day and recorded-unit count of each session: ``meta['day']`` where the session has it,
    else its position in ``names``."""
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        s = store.session(name)
        day = s.meta.get("day")
        out[name] = {"day": float(day) if day is not None else float(i),
                     "units": float(s.n_units) if s.has("spikes") else 0.0}
    return out


def summarise_longevity(rows: list[dict[str, Any]], days: dict[str, dict[str, float]],
                        distilled: list[str]) -> list[dict[str, Any]]:
    """One row per session, ordered by day: the mean (and sd over model seeds) of each curve."""
    vals: dict[tuple[str, str], list[float]] = defaultdict(list)
    classic: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        name = r["session"]
        if name not in days:
            continue
        if r["eval"] == "classic" and r["model"] in CLASSIC_LFP:
            classic[name][r["model"]] = r["r2"]
        for key, _, model, ev in CURVES:
            if model and r["model"] == model and r["eval"] == ev:
                # on the later days only the mode (b) adaptation counts for the distilled model
                if model == "distilled" and name not in distilled and r.get("mode") != "b":
                    continue
                vals[(name, key)].append(float(r["r2"]))
    out = []
    for name in sorted(days, key=lambda n: (days[n]["day"], n)):
        row: dict[str, Any] = {"session": name, "day": days[name]["day"],
                               "units": int(days[name]["units"]),
                               "phase": "distilled" if name in distilled else "later"}
        for key, _, _, _ in CURVES:
            v = vals.get((name, key))
            if key == "best_classic_lfp" and classic.get(name):
                best = max(classic[name], key=classic[name].get)
                row[key], row[f"{key}_sd"], row["best_classic_name"] = classic[name][best], 0.0, best
            elif v:
                row[key], row[f"{key}_sd"] = float(np.mean(v)), float(np.std(v))
        out.append(row)
    return out


def longevity_claims(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each read-out of the distilled model: the first day on which the recalibrated spike
    decoder falls below it, and whether it stays below on every later day."""
    checks: list[dict[str, Any]] = []
    for key, label in (("distilled_wiener", "Wiener read-out"), ("distilled_probe",
                                                                  "linear probe")):
        pts = [r for r in summary if key in r and "spikes" in r]
        if not pts:
            continue
        below = [r for r in pts if r["spikes"] < r[key]]
        first = below[0] if below else None
        stays = first is not None and all(r["spikes"] < r[key] for r in pts
                                          if r["day"] >= first["day"])
        checks.append({
            "claim": f"Longevity: the recalibrated spike Wiener filter falls below the distilled "
                     f"LFP model ({label}) on some day (the first is stated)",
            "pass": first is not None,
            "values": {"first_day": first["day"] if first else None,
                       "stays_below_after": stays,
                       "spikes_last_day": pts[-1]["spikes"], "distilled_last_day": pts[-1][key]}})
    days_both = [r for r in summary if "deployable" in r and "best_classic_lfp" in r]
    later_pts = [r for r in days_both if r["phase"] == "later"]
    if later_pts:
        d = float(np.mean([r["deployable"] for r in later_pts]))
        c = float(np.mean([r["best_classic_lfp"] for r in later_pts]))
        days_ok = sum(r["deployable"] >= r["best_classic_lfp"] for r in days_both)
        need = int(np.ceil(DEPLOYABLE_DAY_SHARE * len(days_both)))
        checks.append({
            "claim": "Longevity: the deployable decoder (chosen on validation) >= the best "
                     "classic LFP decoder of each day on the later days' mean and on "
                     f">= {DEPLOYABLE_DAY_SHARE:.0%} of all days",
            "pass": d >= c and days_ok >= need,
            "values": {"deployable_later": d, "best_classic_later": c, "margin": d - c,
                       "days_at_or_above": days_ok, "days": len(days_both), "days_needed": need}})
    later = [r for r in summary if r["phase"] == "later" and "distilled_wiener" in r
             and "best_classic_lfp" in r]
    if later:
        d = float(np.mean([r["distilled_wiener"] for r in later]))
        c = float(np.mean([r["best_classic_lfp"] for r in later]))
        checks.append({"claim": "Longevity, later days: Distilled LFP (Wiener read-out) > the "
                                "best classic LFP decoder of each day, on average",
                       "pass": d > c, "values": {"distilled": d, "best_classic": c,
                                                 "margin": d - c}})
    return checks


def longevity_markdown(summary: list[dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    lines = ["\n## Longevity\n",
             "Test R² on each recording day. Every decoder is recalibrated with that day's "
             "training labels; the distilled model and MS-LFP are the trained models on the "
             "distillation days and their adaptations to that day's unlabelled LFP (mode b) "
             "later. *Best classic LFP decoder*: the best of the classic LFP decoders on that "
             "day (by test R²: the strictest bar). *Deployable decoder*: per seed and day, the "
             "one of the student's offline read-outs and the classic LFP decoders that scores "
             "best on that day's validation bins. Mean ± sd over model seeds.\n"]
    lines += check_lines(checks)
    lines.append("\n| day | session | units | " + " | ".join(lbl for _, lbl, _, _ in CURVES) + " |")
    lines.append("|---|---|---|" + "---|" * len(CURVES))
    for r in summary:
        cells = [f"{r[k]:.3f} ± {r[f'{k}_sd']:.3f}" if k in r else "—" for k, _, _, _ in CURVES]
        tag = " (distilled)" if r["phase"] == "distilled" else ""
        lines.append(f"| {r['day']:g} | {r['session']}{tag} | {r['units']} | "
                     + " | ".join(cells) + " |")
    slopes = trends(summary)
    lines.append("| trend per 100 days | | | " + " | ".join(
        f"{slopes[k]:+.3f}" if k in slopes else "—" for k, _, _, _ in CURVES) + " |")
    lines.append("\n*Trend*: least-squares slope of R² against day over all days, per 100 days.")
    return "\n".join(lines) + "\n"


def trends(summary: list[dict[str, Any]]) -> dict[str, float]:
    """Least-squares slope of each curve's R² against day, per 100 days (curves with at least
    three days)."""
    out: dict[str, float] = {}
    for key, _, _, _ in CURVES:
        pts = [(r["day"], r[key]) for r in summary if key in r]
        if len(pts) >= 3 and len({d for d, _ in pts}) > 1:
            d, v = np.array(pts, dtype=float).T
            out[key] = float(np.polyfit(d, v, 1)[0] * 100.0)
    return out


def fig_longevity(summary: list[dict[str, Any]], path: Path,
                  save: Callable[[Any, Path], None]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.4))
    for key, label, _, _ in CURVES:
        pts = [r for r in summary if key in r]
        if not pts:
            continue
        color, ls = _STYLE[key]
        ax.errorbar([r["day"] for r in pts], [r[key] for r in pts],
                    yerr=[r[f"{key}_sd"] for r in pts], label=label, color=color, ls=ls,
                    marker="o", ms=3, capsize=2)
    last = max((r["day"] for r in summary if r["phase"] == "distilled"), default=None)
    if last is not None:
        ax.axvspan(min(r["day"] for r in summary), last, color="#fee6ce", alpha=0.5, lw=0,
                   label="teacher / distillation days")
    ax.set_xlabel("recording day")
    ax.set_ylabel("velocity R² (test segments)")
    ax.axhline(0, color="k", lw=0.5)
    ax2 = ax.twinx()
    ax2.plot([r["day"] for r in summary], [r["units"] for r in summary], color="#bdbdbd",
             lw=1, ls="-.", label="recorded units")
    ax2.set_ylabel("recorded units", color="#969696")
    ax2.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center left", bbox_to_anchor=(1.16, 0.5))
    ax.set_title("Longevity: every decoder recalibrated each day", fontsize=10)
    fig.tight_layout()
    save(fig, path)
