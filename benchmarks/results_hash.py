"""Fingerprints of finished studies' numbers, to show that two runs gave the same ones.

    python benchmarks/results_hash.py results/demo results/demo_stages

Prints, for each study folder, the SHA-256 of its ``results.json`` rows (the per-session test
R² of every model and decoder) and of everything else it holds except timings and the cache log
(``seconds``, ``stages``), then whether the folders agree. The study runs seed by seed by default
and stage by stage with ``lfpdistill run CONFIG --order stages``; both must give equal hashes.
Exit status 1 when they differ, 2 on a missing or unreadable results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

#: what differs between two runs of the same study without any number differing
TIMINGS = ("seconds", "stages")


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def fingerprints(folder: Path) -> dict[str, str]:
    """``rows`` and ``rest`` hashes of one study's results.json."""
    path = folder / "results.json"
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: cannot read '{path}' ({e}); pass a finished study's folder", file=sys.stderr)
        raise SystemExit(2) from None
    rest = {k: v for k, v in res.items() if k not in TIMINGS and k != "rows"}
    rest.get("config", {}).pop("out", None)  # the output folder is where, not what
    return {"rows": _sha(res.get("rows")), "rest": _sha(rest), "n_rows": str(len(res.get("rows") or []))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="finished study output folders")
    a = ap.parse_args(argv)
    prints = {f: fingerprints(f) for f in a.folders}
    for f, p in prints.items():
        print(f"{f}: rows sha256 {p['rows'][:16]} ({p['n_rows']} rows), "
              f"everything else {p['rest'][:16]}")
    same = len({(p["rows"], p["rest"]) for p in prints.values()}) == 1
    if len(prints) > 1:
        print("identical numbers" if same else "the numbers DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
