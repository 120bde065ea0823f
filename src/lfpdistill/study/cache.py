"""The cache engine of a study: each unit of work runs once per distinct set of inputs.

A unit is a module-level function ``work(out_dir, **inputs)`` and the inputs it is called with.
Its key is derived from exactly those inputs (:func:`canonical`), so a unit cannot read an
option that its key misses: there is no closure and no hand-built key to keep in step. Upstream
units are passed as their output directories, whose names carry their own keys, so a changed
option recomputes exactly what depends on it.

``OUT/stages/<stage>/<name>-<key>/`` holds a unit's files; ``done.json`` is written last, so an
interrupted unit is recomputed on the next run. ``--from STAGE`` forces that stage and every
later one. One process at a time works in an output folder: the cache takes a lock on
``OUT/.lock`` (which names its holder) for as long as the process lives
(:func:`lfpdistill.data.guard.lock_folder`, the lock the training commands take on their run
folders too).

:meth:`Cache.start` runs a unit in one background worker process at the lowest CPU priority
(same key, folder and files; the study's own process holds the lock), so units that nothing
needs until later use the CPU time the foreground units leave idle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from ..data import Store, options_hash, write_json_atomic
from ..data.guard import lock_folder  # shared with the training commands

__all__ = ["Cache", "canonical", "clock", "lock_folder"]


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


def clock(seconds: float) -> str:
    """``83`` -> ``"1:23"``; ``3725`` -> ``"1:02:05"``."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Cache:
    """Runs the units of one study under ``root/stages``, skipping the finished ones.

    With :meth:`expect` told how many units each stage has, every finished unit also prints the
    study's elapsed time and an estimate of the time left: the stage's units still to run times
    the mean cost of the ones already run in this stage, or, for a stage that has not started,
    the reference cost of its units (``reference`` seconds per unit) scaled by how much slower or
    faster than their reference the units so far have run. Cached units cost nothing.
    """

    def __init__(self, root: Path, force: set[str], console: Console,
                 reference: dict[str, float] | None = None):
        self.root = Path(root)
        lock_folder(self.root)
        self.force = force
        self.console = console
        self.log: list[dict[str, Any]] = []
        self.reference = dict(reference or {})
        self.expected: dict[str, int] = {}
        self.t_start = time.time()
        self._pool: Any = None  # the background worker (start), made on first use

    def expect(self, counts: dict[str, int]) -> None:
        """Set (or correct) the number of units each named stage will have."""
        self.expected.update(counts)

    def seconds_left(self) -> float | None:
        """Estimated seconds until every expected unit is done (None: nothing expected)."""
        if not self.expected:
            return None
        seen: dict[str, int] = {}
        ran: dict[str, list[float]] = {}
        for e in self.log:
            seen[e["stage"]] = seen.get(e["stage"], 0) + 1
            if "seconds" in e:
                ran.setdefault(e["stage"], []).append(e["seconds"])
        with_ref = [(sum(v), self.reference[st] * len(v)) for st, v in ran.items()
                    if self.reference.get(st)]
        speed = (sum(a for a, _ in with_ref) / sum(r for _, r in with_ref)) if with_ref else 1.0
        left = 0.0
        for stage, n in self.expected.items():
            todo = max(n - seen.get(stage, 0), 0)
            if not todo:
                continue
            per = (sum(ran[stage]) / len(ran[stage]) if stage in ran
                   else self.reference.get(stage, 0.0) * speed)
            left += todo * per
        return left

    def _unit(self, stage: str, name: str, work: Callable[..., Any], inputs: dict[str, Any]
              ) -> tuple[str, Path, bool]:
        """A unit's key, folder, and whether it is finished (and not forced); logs it if so."""
        key = options_hash({"stage": stage, "name": name, "work": work.__qualname__,
                            "inputs": canonical(inputs)})
        d = self.root / "stages" / stage / f"{name}-{key}"
        if (d / "done.json").exists() and stage not in self.force:
            self.log.append({"stage": stage, "unit": name, "status": "cached"})
            self.console.print(f"  [dim]✓ {stage}/{name} (cached)[/]")
            return key, d, True
        if d.exists():
            shutil.rmtree(d)
        return key, d, False

    def _finish(self, stage: str, name: str, key: str, d: Path, seconds: float) -> None:
        d.mkdir(parents=True, exist_ok=True)
        write_json_atomic(d / "done.json", {"stage": stage, "unit": name, "key": key,
                                            "seconds": seconds})
        self.log.append({"stage": stage, "unit": name, "status": "ran", "seconds": seconds})
        left = self.seconds_left()
        self.console.print(f"    [dim]{stage}/{name} took {clock(seconds)}; study "
                           f"{clock(time.time() - self.t_start)} so far"
                           + (f", ~{clock(left)} left[/]" if left is not None else "[/]"))

    def run(self, stage: str, name: str, work: Callable[..., Any], **inputs: Any) -> Path:
        """``work(out_dir, **inputs)`` unless a finished unit with the same inputs exists;
        returns ``out_dir``."""
        key, d, cached = self._unit(stage, name, work, inputs)
        if cached:
            return d
        self.console.print(f"  [bold cyan]▶ {stage}/{name}[/]")
        t0 = time.time()
        work(d, **inputs)
        self._finish(stage, name, key, d, round(time.time() - t0, 2))
        return d

    def start(self, stage: str, name: str, work: Callable[..., Any], **inputs: Any) -> Pending:
        """:meth:`run` in the background: a unit not finished yet runs in one worker process at
        the lowest CPU priority (units started there run one after the other, in the order
        started), so it takes only the CPU time the units in the foreground leave idle. The
        same key, folder and files as :meth:`run`; the worker inherits the environment (thread
        counts included), so the unit computes the same numbers. ``wait()`` on the result
        returns its folder (re-raising its error); the log records the unit's own seconds."""
        key, d, cached = self._unit(stage, name, work, inputs)
        if cached:
            return Pending(self, stage, name, key, d, None, work, inputs)
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"),
                                             initializer=_low_priority)
        # a store travels without the sessions this process has loaded: the worker reads its own
        sent = {k: dataclasses.replace(v, _cache={}) if isinstance(v, Store) else v
                for k, v in inputs.items()}
        self.console.print(f"  [bold cyan]▶ {stage}/{name}[/] [dim](in the background, "
                           "low priority)[/]")
        from concurrent.futures.process import BrokenProcessPool

        try:
            job = self._pool.submit(_background_unit, work, d, sent)
        except BrokenProcessPool:  # the worker died earlier (Pending.wait): run it here
            self.console.print(f"  [yellow]no background worker; running {stage}/{name} here[/]")
            t0 = time.time()
            work(d, **inputs)
            self._finish(stage, name, key, d, round(time.time() - t0, 2))
            job = None
        return Pending(self, stage, name, key, d, job, work, inputs)

    def close(self) -> None:
        """Stop the background worker: at the end of a study every started unit has been
        waited for; after an error the unit still running is stopped."""
        pool, self._pool = self._pool, None
        if pool is not None:
            procs = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:  # SIGKILL: a training unit catches SIGTERM and would finish first
                proc.kill()     # (its folder has no done.json: the next run recomputes it)


class Pending:
    """A unit started with :meth:`Cache.start`."""

    def __init__(self, cache: Cache, stage: str, name: str, key: str, d: Path, job: Any,
                 work: Callable[..., Any], inputs: dict[str, Any]):
        self._cache, self.stage, self.name, self.key, self.path, self._job = (
            cache, stage, name, key, d, job)
        self._work, self._inputs = work, inputs

    def wait(self) -> Path:
        """The unit's folder once it is finished (its error, if it failed). A worker that died
        (killed, out of memory, or unable to start: a script without an ``if __name__ ==
        "__main__":`` guard) is not an error of the unit: it is then run here."""
        from concurrent.futures.process import BrokenProcessPool

        if self._job is not None:
            job, self._job = self._job, None
            try:
                seconds = job.result()
            except BrokenProcessPool:
                self._cache.console.print(f"  [yellow]the background worker stopped; running "
                                          f"{self.stage}/{self.name} here[/]")
                if self.path.exists():
                    shutil.rmtree(self.path)
                t0 = time.time()
                self._work(self.path, **self._inputs)
                seconds = round(time.time() - t0, 2)
            self._cache._finish(self.stage, self.name, self.key, self.path, seconds)
        return self.path


def _low_priority() -> None:
    """The background worker yields the CPU to the study's foreground process."""
    with contextlib.suppress(OSError):  # not allowed here: the same priority
        os.nice(19)


def _background_unit(work: Callable[..., Any], d: Path, inputs: dict[str, Any]) -> float:
    t0 = time.time()
    work(d, **inputs)
    return round(time.time() - t0, 2)
