"""What keeps one command from destroying another's files: output paths that would replace an
input, a store file or a run file are refused, and a folder being written is locked.

**Outputs.** :func:`check_output_file` refuses an ``--out`` that is one of the command's inputs
(the same file, also through a link) or a file that belongs to a store (``manifest.json`` and
``*.h5`` next to a store's manifest) or to a run (``model.ckpt``, ``run_config.json``,
``summary.json``, ... next to a run's ``model.ckpt`` or ``run_config.json``, and anything in its
``checkpoints/`` and ``realtime/`` folders) or to a packed model (``model.safetensors``,
``config.json``, ``README.md`` next to a ``model.safetensors``: ``lfpdistill pack``'s folder).
:func:`check_output_folder` refuses an output folder
that is one of the command's input folders.

**Locks.** A folder that a command writes is locked with ``FOLDER/.lock`` (``flock``; the file
names the process that holds it): :func:`lock_folder` for the rest of the process (``lfpdistill
run``), :func:`folder_lock` for the duration of a ``with`` block (the training commands). A
second process that asks for a held lock is refused in one line naming the holder; the same
process asking again is let through. The lock is released when the block or the process ends,
however it ends (a folder that :func:`folder_lock` created and left empty is removed).
Processes of a multi-process (DDP) run other than rank 0 do not lock: rank 0 holds the folder
for them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None  # type: ignore[assignment]

from ..errors import ConfigError, LfpDistillError

MANIFEST = "manifest.json"
#: files that make a folder a run folder
RUN_MARKERS = ("model.ckpt", "run_config.json")
#: the files of a run that another command's --out must not replace
RUN_FILES = frozenset({"model.ckpt", "run_config.json", "summary.json", "result.json",
                       "predictions.npz", "metrics.csv", "diagnostics.json", "latents.npz",
                       "done.json", ".lock"})
#: the files of a packed model (``lfpdistill pack``; :data:`lfpdistill.models.pack.PACK_FILES`)
PACKED_FILES = ("model.safetensors", "config.json", "README.md")
#: sub-folders of a run holding its files (resume checkpoints, saved read-outs)
RUN_SUBFOLDERS = ("checkpoints", "realtime")


class FolderInUseError(LfpDistillError):
    """Another process is writing the folder."""


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _is_store(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def _is_run(folder: Path) -> bool:
    return any((folder / m).is_file() for m in RUN_MARKERS)


def _same(a: Path, b: Path) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(out: Path | str, inputs: Sequence[Path | str | None] = (),
                      allow: Sequence[Path | str] = (), option: str = "--out") -> None:
    """Refuse (:class:`~lfpdistill.errors.ConfigError`) an output file ``out`` that would
    replace one of ``inputs`` (files or folders), a file of one of the input folders, or a file
    of any store or run (module docstring); ``allow``: paths the command may replace (its own
    default output)."""
    out = Path(out)
    real = _real(out)
    if any(_real(a) == real for a in allow):
        return
    for given in inputs:
        if given is None:
            continue
        given = Path(given)
        if _same(out, given):
            raise ConfigError(f"{option} '{out}' is one of this command's inputs; writing it would "
                              "replace it -- choose another path")
    parent = real.parent
    if _is_store(parent) and (real.name == MANIFEST or real.suffix == ".h5"):
        raise ConfigError(f"{option} '{out}' is a file of the store '{parent}'; writing it would "
                          "damage the store -- choose a path outside the store's files")
    if (parent / PACKED_FILES[0]).is_file() and real.name in PACKED_FILES:
        raise ConfigError(f"{option} '{out}' is a file of the packed model '{parent}'; writing it "
                          "would replace the model's own file -- choose another path")
    run = parent.parent if parent.name in RUN_SUBFOLDERS else parent
    if _is_run(run) and (real.name in RUN_FILES or real.suffix == ".ckpt" or run != parent):
        raise ConfigError(f"{option} '{out}' is a file of the run '{run}'; writing it would "
                          "replace the run's own file -- choose another path")


def check_output_folder(out: Path | str, inputs: Sequence[Path | str | None] = (),
                        option: str = "--out") -> None:
    """Refuse an output folder that is one of the command's input folders or files."""
    out = Path(out)
    for given in inputs:
        if given is not None and _same(out, Path(given)):
            raise ConfigError(f"{option} '{out}' is one of this command's inputs; writing into it "
                              "would replace its files -- choose another folder")


# ------------------------------------------------------------------ locks
_LOCKS: dict[str, IO[str]] = {}   # held until the process ends (lock_folder)
_HELD: dict[str, int] = {}        # held by an open folder_lock block: how many deep


def _rank_zero() -> bool:
    """False in the extra processes of a multi-process (DDP) run."""
    return all(os.environ.get(k, "0") in ("", "0") for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _acquire(root: Path) -> IO[str] | None:
    root.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return None
    f = open(root / ".lock", "a+")  # noqa: SIM115 - held open while the lock is held
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise FolderInUseError(
            f"output folder '{root}' is in use by another lfpdistill run ({holder}); wait for it "
            "to finish or choose another output folder") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    return f


def lock_folder(root: Path) -> None:
    """Take ``root/.lock`` for this process (kept until it exits; taking it again is a no-op),
    or refuse in one line naming the process that holds it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = str(root.resolve())
    if key in _LOCKS or key in _HELD or fcntl is None or not _rank_zero():
        return
    f = _acquire(root)
    if f is not None:
        _LOCKS[key] = f


@contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """Hold ``root/.lock`` while the block runs (a no-op where this process holds it already),
    or refuse in one line naming the process that holds it."""
    root = Path(root)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    key = str(root.resolve())
    if key in _LOCKS or fcntl is None or not _rank_zero():
        yield
        return
    f = None
    if key not in _HELD:
        f = _acquire(root)
    _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield
    finally:
        _HELD[key] -= 1
        if not _HELD[key]:
            del _HELD[key]
            if f is not None:
                if created and os.listdir(root) == [".lock"]:
                    # a command that failed before writing anything leaves no folder behind
                    (root / ".lock").unlink(missing_ok=True)
                    root.rmdir()
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
