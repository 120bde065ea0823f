"""The decoder a lab would deploy, per session: of the distilled model's read-outs and the
classic LFP decoders, the one with the best **validation** R² (test bins never choose), and how
its test R² compares with the best classic LFP decoder and the spike decoder.

Two settings: *offline* (the bidirectional student's probe, Wiener and combined read-outs) and
*causal* (the causal student's same-bin, past-lag Wiener and combined read-outs, what
``lfpdistill decode --stream`` runs). The classic LFP decoders (raw-LFP and LMP + band-power
Wiener, band-power Kalman) are causal, so they are candidates in both.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import numpy as np

from ..evaluation.classic import CLASSIC_LFP
from ..evaluation.readouts import deployable_choice

#: the distilled model's read-outs each setting may deploy
SETTINGS: dict[str, tuple[str, ...]] = {
    "offline": ("probe", "probe_wiener", "probe_combined"),
    "causal": ("causal", "causal_wiener", "causal_combined"),
}
READOUT_NAMES = {"probe": "linear", "probe_wiener": "Wiener", "probe_combined": "combined",
                 "causal": "causal linear", "causal_wiener": "causal Wiener",
                 "causal_combined": "causal combined"}


def _name(r: dict[str, Any]) -> str:
    if r["eval"] == "classic":
        return str(r["model"])
    return f"distilled {READOUT_NAMES.get(r['eval'], r['eval'])}"


def deployable_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (setting, seed, session) with distilled read-outs in ``rows``: the decoder
    validation chose and its test R², the classic LFP decoder validation chose among the
    classic ones, and the spike Wiener filter's test R²."""
    classic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    spikes: dict[str, float] = {}
    for r in rows:
        if r["eval"] == "classic" and r["model"] in CLASSIC_LFP:
            classic[r["session"]].append(r)
        elif r["eval"] == "classic" and r["model"] == "wiener_spikes":
            spikes[r["session"]] = r["r2"]
    out = []
    for setting, evals in SETTINGS.items():
        cand: dict[tuple[Any, str], list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            if r["model"] == "distilled" and r["eval"] in evals:
                cand[(r["seed"], r["session"])].append(r)
        for (seed, session), mine in sorted(cand.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            pick = deployable_choice(mine + classic[session])
            cpick = deployable_choice(classic[session])
            if pick is None:
                continue
            out.append({"setting": setting, "seed": seed, "session": session,
                        "group": mine[0]["group"], "chosen": _name(pick), "r2": pick["r2"],
                        "r2_val": pick["r2_val"],
                        "classic_chosen": None if cpick is None else _name(cpick),
                        "classic_r2": None if cpick is None else cpick["r2"],
                        "classic_best_r2": max((c["r2"] for c in classic[session]), default=None),
                        "spike_r2": spikes.get(session)})
    return out


def summarise_deployable(drows: list[dict[str, Any]], rows: list[dict[str, Any]]
                         ) -> list[dict[str, Any]]:
    """Per (setting, group): the deployable decoder's test R² (mean, sd over sessions and seeds),
    the best classic LFP decoder (the one with the best mean test R² over the group's sessions:
    the bar a lab's existing filter sets), their ratio, on how many sessions the deployable
    decoder is at least as good as that classic decoder, and the spike Wiener filter."""
    by_group: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for d in drows:
        by_group[(d["setting"], d["group"])].append(d)
    out = []
    for (setting, group), ds in sorted(by_group.items()):
        sessions = sorted({d["session"] for d in ds})
        per_model: dict[str, dict[str, float]] = defaultdict(dict)
        for r in rows:
            if r["eval"] == "classic" and r["model"] in CLASSIC_LFP and r["session"] in sessions:
                per_model[r["model"]][r["session"]] = r["r2"]
        best = max(per_model, key=lambda m: np.mean(list(per_model[m].values())), default=None)
        vals = np.array([d["r2"] for d in ds])
        ref = per_model.get(best, {}) if best else {}
        wins = sum(1 for d in ds if d["session"] in ref and d["r2"] >= ref[d["session"]])
        spk = [d["spike_r2"] for d in ds if d["spike_r2"] is not None]
        cmean = float(np.mean(list(ref.values()))) if ref else None
        out.append({"setting": setting, "group": group, "mean": float(vals.mean()),
                    "sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals),
                    "classic_best": best, "classic_mean": cmean,
                    "ratio": None if not cmean else float(vals.mean()) / cmean,
                    "sessions_at_least_classic": wins,
                    "spike_mean": float(np.mean(spk)) if spk else None,
                    "chosen": dict(sorted(_count(d["chosen"] for d in ds).items()))})
    return out


def _count(items: Any) -> dict[str, int]:
    c: dict[str, int] = defaultdict(int)
    for i in items:
        c[i] += 1
    return c


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def deployable_markdown(summary: list[dict[str, Any]], drows: list[dict[str, Any]]) -> str:
    """The report's section: the summary table, then the choice per seed and session."""
    if not summary:
        return ""
    buf = io.StringIO()
    w = buf.write
    w("\n## The deployable decoder (chosen per session on validation bins)\n\n"
      "Candidates: the distilled model's read-outs of each setting and the classic LFP decoders; "
      "the one with the best validation R² is deployed and scored on the test bins. *Best "
      "classic*: the classic LFP decoder with the best mean test R² on these sessions (the bar "
      "a lab's existing filter sets). Mean ± sd over sessions and seeds.\n\n"
      "| setting | group | deployable R² | best classic LFP | ratio | sessions ≥ classic | "
      "spike Wiener | chosen |\n|---|---|---|---|---|---|---|---|\n")
    for s in summary:
        chosen = ", ".join(f"{k} ×{v}" for k, v in s["chosen"].items())
        w(f"| {s['setting']} | {s['group']} | {s['mean']:.3f} ± {s['sd']:.3f} | "
          f"{_f(s['classic_mean'])} ({s['classic_best']}) | {_f(s['ratio'])} | "
          f"{s['sessions_at_least_classic']} of {s['n']} | {_f(s['spike_mean'])} | {chosen} |\n")
    w("\n| setting | seed | session | chosen on validation | val R² | test R² | classic chosen "
      "on validation | its test R² | spike Wiener |\n|---|---|---|---|---|---|---|---|---|\n")
    for d in drows:
        w(f"| {d['setting']} | {d['seed']} | {d['session']} | {d['chosen']} | "
          f"{d['r2_val']:.3f} | {d['r2']:.3f} | {d['classic_chosen'] or '—'} | "
          f"{_f(d['classic_r2'])} | {_f(d['spike_r2'])} |\n")
    return buf.getvalue()


def deployable_claims(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Checks: per setting and group, the deployable decoder reaches 1.1 x the best classic LFP
    decoder's mean test R²."""
    out = []
    for s in summary:
        if s["classic_mean"] is None:
            continue
        ok = s["mean"] >= 1.1 * s["classic_mean"]
        out.append({"claim": f"{s['group'].capitalize()} sessions, {s['setting']}: the deployable "
                             "decoder (chosen on validation) >= 1.1 x the best classic LFP decoder",
                    "pass": bool(ok),
                    "values": {"deployable": round(s["mean"], 4),
                               "classic": round(s["classic_mean"], 4)}})
    return out
