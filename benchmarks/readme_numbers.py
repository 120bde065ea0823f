"""The README's result tables, generated from small committed JSON files (docs/results/NAME.json).

Every results table in README.md sits between two marker comments,

    <!-- results:NAME:start -->
    ...generated; do not edit by hand...
    <!-- results:NAME:end -->

and is rendered from ``docs/results/NAME.json``. So a number in the README can change only
together with that file, which records the command, commit and date it came from.

    # 1. after a finished study: its summary into docs/results/demo.json
    python benchmarks/readme_numbers.py --from-results results/demo --command "make demo"
    # 2. the README's tables from every docs/results/*.json that has markers in the README
    python benchmarks/readme_numbers.py --write
    # 3. exit 1 if the README's tables differ from what the JSON files give (tests/test_readme.py)
    python benchmarks/readme_numbers.py --check

JSON schema (``"schema": "lfpdistill-readme-results/1"``):

- ``name``: the marker name; ``command``: the command that produced the numbers; ``config``: the
  study config (if any); ``source``: which run, in words; ``commit``, ``date``: the code and day
  of that run; ``wall_min``: the run's wall time in minutes (or null);
- ``spread``: what the ± means (written under the table);
- ``summary``: one entry per (``group``, ``model``, ``eval``) with ``mean``, ``sd`` (over every
  row: sessions and seeds, as the study's report), ``n`` (rows), ``seeds`` (how many seeds, or
  null) and ``sd_seeds`` (sd over seeds of the per-seed mean over sessions, or null if unknown);
- ``checks``: the report's checks, ``{"claim", "pass", "values"}`` (may be empty);
- ``table``: the layout, ``{"columns": [{"title", "evals"}], "rows": [{"group", "model",
  "title", "bold"}], "group_title", "group_titles", "checks"}``; a cell shows the first of its
  column's ``evals`` that the summary has for that row's group and model (empty if none);
  ``group_titles`` (optional) names each group in the first column; ``checks``: true (list every
  check of the run), false (none) or a prefix (the checks whose claim starts with it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS_DIR = ROOT / "docs" / "results"
SCHEMA = "lfpdistill-readme-results/1"
MARKER = re.compile(r"<!-- results:([A-Za-z0-9_-]+):start -->\n(.*?)<!-- results:\1:end -->\n?",
                    re.DOTALL)

CLASSIC_ROWS = [("wiener_spikes", "classic: Spike Wiener"),
                ("wiener_bandpower", "classic: LFP Wiener (LMP + band power)"),
                ("wiener_lfp", "classic: LFP Wiener (raw)"),
                ("kalman_bandpower", "classic: LFP Kalman (LMP + band power)")]
#: the decoder validation picks per session among the student's read-outs and the classic LFP
#: decoders (the report's deployable section)
DEPLOYABLE_TITLE = "lfpdistill: deployable decoder (chosen on validation)"
#: the demo's table: the study's evaluations as columns (classic decoders in the lagged column)
DEMO_TABLE: dict[str, Any] = {
    "group_title": "sessions",
    "columns": [
        {"title": "probe (same-bin linear)", "evals": ["probe"]},
        {"title": "Wiener filter (10 lags × 20 ms)", "evals": ["probe_wiener", "classic"]},
        {"title": "Wiener filter on latents + LMP + band power", "evals": ["probe_combined"]},
        {"title": "fine-tuned", "evals": ["finetune"]},
    ],
    "rows": [
        {"group": "distilled", "model": "teacher", "title": "Teacher (spikes)"},
        {"group": "distilled", "model": "ss_lfp", "title": "SS-LFP"},
        {"group": "distilled", "model": "ms_lfp", "title": "MS-LFP"},
        {"group": "distilled", "model": "distilled", "title": "Distilled LFP", "bold": True},
        *({"group": "distilled", "model": m, "title": t} for m, t in CLASSIC_ROWS),
        {"group": "unseen", "model": "ss_lfp", "title": "SS-LFP"},
        {"group": "unseen", "model": "ms_lfp", "title": "MS-LFP (adapted, embeddings only)"},
        {"group": "unseen", "model": "distilled", "title": "Distilled LFP (generalized, b)", "bold": True},
        {"group": "unseen", "model": "distilled_a", "title": "Distilled LFP (generalized, a)"},
        *({"group": "unseen", "model": m, "title": t} for m, t in CLASSIC_ROWS),
    ],
    "checks": True,
}
#: the real-time study's table: what a lab would deploy, offline and streaming, against the
#: classic decoders (causal, so the same in both columns) and the spike Wiener filter
REALTIME_TABLE: dict[str, Any] = {
    "group_title": "sessions",
    "columns": [
        {"title": "offline (bidirectional model)", "evals": ["deployable_offline", "classic"]},
        {"title": "real time (causal model, streamed)", "evals": ["deployable_causal", "classic"]},
    ],
    "rows": [row for g in ("distilled", "unseen") for row in [
        {"group": g, "model": "deployable", "bold": True, "title": DEPLOYABLE_TITLE},
        *({"group": g, "model": m, "title": t} for m, t in
          (CLASSIC_ROWS[1], CLASSIC_ROWS[3], CLASSIC_ROWS[2], CLASSIC_ROWS[0]))]],
    "checks": False,
}
#: the longevity study's table: the deployable decoder (offline) against the classic decoders,
#: each recalibrated on every day, on the teacher / distillation days and on the later days
LONGEVITY_TABLE: dict[str, Any] = {
    "group_title": "days",
    "group_titles": {"distilled": "teacher / distillation days", "unseen": "later days"},
    "columns": [{"title": "offline (bidirectional model)",
                 "evals": ["deployable_offline", "classic"]}],
    "rows": REALTIME_TABLE["rows"],
    "checks": "Longevity",
}
TABLES = {"demo": DEMO_TABLE, "realtime": REALTIME_TABLE, "longevity": LONGEVITY_TABLE}
DEMO_SPREAD = ("mean ± sd over sessions and seeds (classic decoders are deterministic: over "
               "sessions)")


class ReadmeNumbersError(Exception):
    """Bad input to this script: printed as one ``error:`` line, exit status 2."""


# ------------------------------------------------------------------------- build the JSON
def _sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd per (group, model, eval) over all rows, and the sd over seeds of the per-seed
    mean over sessions."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        cells[(r["group"], r["model"], r["eval"])].append(r)
    out = []
    for (group, model, ev), rs in sorted(cells.items()):
        vals = [float(r["r2"]) for r in rs]
        by_seed: dict[Any, list[float]] = defaultdict(list)
        for r in rs:
            by_seed[r.get("seed")].append(float(r["r2"]))
        seed_means = [float(np.mean(v)) for v in by_seed.values()]
        out.append({"group": group, "model": model, "eval": ev,
                    "mean": round(float(np.mean(vals)), 4), "sd": round(_sd(vals), 4), "n": len(vals),
                    "seeds": len(by_seed),
                    # one model read several times (the teacher, trained once) has no seed spread
                    "sd_seeds": (round(_sd(seed_means), 4)
                                 if len(set(seed_means)) > 1 else None)})
    return out


def deployable_summary(drows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The study's deployable rows (one per setting, seed and session: the decoder validation
    chose) as summary entries ``model: deployable``, ``eval: deployable_SETTING``."""
    rows = [{"group": d["group"], "model": "deployable", "eval": f"deployable_{d['setting']}",
             "seed": d["seed"], "r2": d["r2"]} for d in drows]
    return summarise_rows(rows) if rows else []


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def from_results(folder: Path, name: str | None, command: str | None,
                 source: str | None) -> Path:
    """Write docs/results/NAME.json from a finished study folder (its results.json)."""
    path = folder / "results.json"
    if not path.is_file():
        raise ReadmeNumbersError(f"no results.json in '{folder}': pass the output folder of a "
                                 "finished `lfpdistill run` (e.g. results/demo)")
    try:
        res = json.loads(path.read_text())
        rows = res["rows"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ReadmeNumbersError(f"'{path}' is not a study's results.json ({e}); run the study "
                                 "again") from None
    if not rows:
        raise ReadmeNumbersError(f"'{path}' holds no result rows; run the study to its end")
    name = name or folder.name
    out = RESULTS_DIR / f"{name}.json"
    old = json.loads(out.read_text()) if out.is_file() else {}
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--", "src", "configs"):
        commit += " (with uncommitted changes in src/ or configs/)"
    date = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d")
    config = res.get("config") or {}
    doc = {
        "schema": SCHEMA,
        "name": name,
        "command": command or old.get("command") or f"lfpdistill run {folder}",
        "config": old.get("config"),
        "source": source or (f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
                             f"of study '{res.get('name', name)}' (seeds {config.get('seeds')})"),
        "commit": commit or None,
        "date": date,
        "wall_min": round(float(res["seconds"]) / 60, 1) if res.get("seconds") else None,
        "spread": old.get("spread") or DEMO_SPREAD,
        "summary": summarise_rows(rows)
        + deployable_summary((res.get("deployable") or {}).get("rows") or []),
        "checks": [{"claim": c["claim"], "pass": c["pass"], "values": c.get("values", {})}
                   for c in res.get("checks") or []],
        "table": TABLES.get(name) or old.get("table") or DEMO_TABLE,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out


# ------------------------------------------------------------------------- render the tables
def _cell(entry: dict[str, Any] | None, bold: bool) -> str:
    if entry is None:
        return ""
    text = f"{entry['mean']:.3f}"
    if entry.get("n", 1) > 1 and entry.get("sd") is not None:
        text += f" ± {entry['sd']:.3f}"
    if entry.get("sd_seeds") is not None:
        text += f" ({entry['sd_seeds']:.3f})"
    return f"**{text}**" if bold else text


def _value(v: Any) -> str:
    """A check's value as the report states it: yes/no, a count, or three decimals."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def render(doc: dict[str, Any]) -> str:
    """The markdown between the markers of ``doc['name']``."""
    try:
        table = doc["table"]
        index = {(e["group"], e["model"], e["eval"]): e for e in doc["summary"]}
        cols = table["columns"]
    except (KeyError, TypeError) as e:
        raise ReadmeNumbersError(f"docs/results/{doc.get('name', '?')}.json lacks {e}; see the "
                                 "schema in benchmarks/readme_numbers.py") from None
    lines = ["<!-- generated by benchmarks/readme_numbers.py from docs/results/"
             f"{doc['name']}.json; edit that file or rerun the script, not this table -->", ""]
    lines.append(f"| {table.get('group_title', 'sessions')} | model | "
                 + " | ".join(c["title"] for c in cols) + " |")
    lines.append("|---|---|" + "---|" * len(cols))
    for row in table["rows"]:
        cells = []
        for c in cols:
            hit = next((index[k] for ev in c["evals"]
                        if (k := (row["group"], row["model"], ev)) in index), None)
            cells.append(_cell(hit, bool(row.get("bold"))))
        if not any(cells):
            continue  # a model this run did not evaluate (e.g. no mode a)
        title = f"**{row['title']}**" if row.get("bold") else row["title"]
        group = table.get("group_titles", {}).get(row["group"], row["group"])
        lines.append(f"| {group} | {title} | " + " | ".join(cells) + " |")
    lines.append("")
    seeds = any(e.get("sd_seeds") is not None for e in doc["summary"])
    spread = doc.get("spread", "mean ± sd")
    if seeds:
        spread += ("; in brackets the sd over seeds of the mean over sessions (none for a "
                   "model trained once, such as the teacher)")
    where = ", ".join(x for x in (f"commit {doc['commit']}" if doc.get("commit") else "",
                                  doc.get("date") or "",
                                  f"{doc['wall_min']} min" if doc.get("wall_min") else "") if x)
    lines.append(f"Velocity R² on held-out test segments, {spread}. Produced by `{doc['command']}`"
                 + (f" ({where})" if where else "") + f". Source: {doc['source']}.")
    # ``checks``: every check of the report, none, or those whose claim starts with a prefix
    want = table.get("checks")
    listed = [c for c in doc.get("checks") or []
              if want is True or (isinstance(want, str) and c["claim"].startswith(want))]
    if listed:
        lines += ["", "The study's checks:", ""]
        for c in listed:
            vals = ", ".join(f"{k} {_value(v)}" for k, v in c.get("values", {}).items()
                             if v is not None)
            lines.append(f"- **{'PASS' if c['pass'] else 'FAIL'}** {c['claim']} ({vals})")
    return "\n".join(lines) + "\n"


def load_docs() -> dict[str, dict[str, Any]]:
    docs = {}
    for p in sorted(RESULTS_DIR.glob("*.json")):
        try:
            doc = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ReadmeNumbersError(f"'{p}' is not valid JSON ({e}); fix or regenerate it") from None
        if doc.get("schema") != SCHEMA:
            raise ReadmeNumbersError(f"'{p}' has schema {doc.get('schema')!r}, expected {SCHEMA!r}")
        if doc.get("name") != p.stem:
            raise ReadmeNumbersError(f"'{p}' names itself {doc.get('name')!r}; the name must be "
                                     f"the file's stem '{p.stem}'")
        docs[p.stem] = doc
    return docs


def regenerate(text: str, docs: dict[str, dict[str, Any]]) -> str:
    """``text`` with every marked block replaced by its rendering."""
    missing = [m.group(1) for m in MARKER.finditer(text) if m.group(1) not in docs]
    if missing:
        raise ReadmeNumbersError(f"README markers {missing} have no docs/results/NAME.json; "
                                 "create it (--from-results) or remove the markers")

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        return f"<!-- results:{name}:start -->\n{render(docs[name])}<!-- results:{name}:end -->\n"

    return MARKER.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-results", type=Path, metavar="FOLDER",
                    help="a finished study's output folder (with results.json): write "
                         "docs/results/NAME.json from it")
    ap.add_argument("--name", help="NAME of the JSON and its README markers (default: the folder's name)")
    ap.add_argument("--command", help="the command that produced the study (recorded in the JSON)")
    ap.add_argument("--source", help="which run, in words (default: the results.json path)")
    ap.add_argument("--write", action="store_true", help="regenerate the README's marked tables")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the README's marked tables differ from the JSON files")
    ap.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if not (a.from_results or a.write or a.check):
        ap.error("give --from-results FOLDER, --write or --check")
    try:
        if a.from_results:
            print(f"wrote {from_results(a.from_results, a.name, a.command, a.source)}")
        text = a.readme.read_text()
        new = regenerate(text, load_docs())
        if a.write:
            if new != text:
                tmp = a.readme.with_suffix(".md.tmp")
                tmp.write_text(new)
                tmp.replace(a.readme)
                print(f"updated the results tables in {a.readme}")
            else:
                print(f"{a.readme}: results tables already up to date")
        elif a.check and new != text:
            print(f"{a.readme}: its results tables differ from docs/results/*.json; run "
                  "python benchmarks/readme_numbers.py --write", file=sys.stderr)
            return 1
    except ReadmeNumbersError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
