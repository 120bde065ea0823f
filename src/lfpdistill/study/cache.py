"""The cache engine of a study: each unit of work runs once per distinct set of inputs.

A unit is a module-level function ``work(out_dir, **inputs)`` and the inputs it is called with.
Its key is derived from exactly those inputs (:func:`canonical`), so a unit cannot read an
option that its key misses: there is no closure and no hand-built key to keep in step. Upstream
units are passed as their output directories, whose names carry their own keys, so a changed
option recomputes exactly what depends on it.

``OUT/stages/<stage>/<name>-<key>/`` holds a unit's files; ``done.json`` is written last, so an
interrupted unit is recomputed on the next run. ``--from STAGE`` forces that stage and every
later one.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from ..data import Store, options_hash, write_json_atomic


def canonical(value: Any) -> Any:
    """A JSON-able description of a unit's input, used for its cache key.

    Configs become their fields, paths strings, a store its folder, options hash and the
    checksums of its session files (a re-written or replaced session changes every key that reads
    the store), and an object with a ``cache_key()`` method (a memo of a pure function, say)
    whatever it returns.
    """
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Store):
        return {"store": str(value.root), "options_hash": value.options_hash,
                "content": value.content_key}
    if hasattr(value, "cache_key"):
        return value.cache_key()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return canonical(dataclasses.asdict(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


class Cache:
    """Runs the units of one study under ``root/stages``, skipping the finished ones."""

    def __init__(self, root: Path, force: set[str], console: Console):
        self.root = Path(root)
        self.force = force
        self.console = console
        self.log: list[dict[str, Any]] = []

    def run(self, stage: str, name: str, work: Callable[..., Any], **inputs: Any) -> Path:
        """``work(out_dir, **inputs)`` unless a finished unit with the same inputs exists;
        returns ``out_dir``."""
        key = options_hash({"stage": stage, "name": name, "work": work.__qualname__,
                            "inputs": canonical(inputs)})
        d = self.root / "stages" / stage / f"{name}-{key}"
        done = d / "done.json"
        if done.exists() and stage not in self.force:
            self.log.append({"stage": stage, "unit": name, "status": "cached"})
            self.console.print(f"  [dim]✓ {stage}/{name} (cached)[/]")
            return d
        if d.exists():
            shutil.rmtree(d)
        self.console.print(f"  [bold cyan]▶ {stage}/{name}[/]")
        t0 = time.time()
        work(d, **inputs)
        d.mkdir(parents=True, exist_ok=True)
        seconds = round(time.time() - t0, 2)
        write_json_atomic(done, {"stage": stage, "unit": name, "key": key, "seconds": seconds})
        self.log.append({"stage": stage, "unit": name, "status": "ran", "seconds": seconds})
        return d
