"""The report's PASS/FAIL lines, shared by the study sections that state claims."""

from __future__ import annotations

from typing import Any


def check_lines(checks: list[dict[str, Any]]) -> list[str]:
    """One Markdown bullet per check: PASS/FAIL, the claim and its values (floats to 3 places)."""
    out = []
    for c in checks:
        vals = ", ".join(f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}"
                         for k, v in c["values"].items())
        out.append(f"- **{'PASS' if c['pass'] else 'FAIL'}** — {c['claim']} ({vals})")
    return out
