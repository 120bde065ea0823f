"""Readers of real datasets into :class:`~lfpdistill.session.Session` objects and stores.

Formats (docs/real_data.md):

- ``odoherty`` -- O'Doherty/Makin/Sabes ``indy_*.mat`` (v7.3) + NWB 1.0.6 broadband ``indy_*.nwb``
  (:mod:`.odoherty`);
- ``flint`` -- Flint et al. 2012 ``Flint_2012_e*.mat`` (MAT 5) (:mod:`.flint`);
- ``nwb`` -- generic NWB 2.x files (:mod:`.nwb`, also :func:`export_nwb`);
- ``temporaldata`` -- temporaldata ``Data`` files, torch_brain's format (:mod:`.temporaldata`,
  also :func:`export_temporaldata`).

:func:`prepare_store` reads raw files and writes a session store through
:func:`lfpdistill.data.write_store`. The options that produced the store (format, reader options,
LFP-chain config, bin size, split settings and a fingerprint -- size and modification time -- of
every raw file read) are recorded in the manifest under ``options`` with their hash in
``options['prepare_hash']``; calling it again with the same options and unchanged files returns
at once, anything else re-reads everything. Sessions are read one at a time and written into a
hidden temporary store next to the output; that store replaces the output folder only once every
session is in, so a failure at any point leaves the output folder as it was (and no temporary
folder behind).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic

from ..errors import ConfigError, LfpDistillError, StoreError
from ..preprocess import LfpChainConfig
from ..session import Session
from ._common import RawDataError, log

__all__ = ["FORMATS", "RawDataError", "export_nwb", "export_temporaldata", "list_raw_sessions",
           "prepare_store", "read_raw"]

FORMATS = ("odoherty", "flint", "nwb", "temporaldata")
PREPARE_VERSION = 1
_COMMON = {"bin_size", "chain", "segment_s", "seed"}


def _reader(fmt: str) -> Any:
    if fmt == "odoherty":
        from . import odoherty as mod
    elif fmt == "flint":
        from . import flint as mod
    elif fmt == "nwb":  # format modules load on demand: pynwb alone takes ~1 s to import
        from . import nwb as mod
    elif fmt == "temporaldata":
        from . import temporaldata as mod
    else:
        raise ConfigError(f"unknown raw format '{fmt}'; expected one of {', '.join(FORMATS)}")
    return mod


def _options_model(mod: Any) -> type[pydantic.BaseModel]:
    for attr in ("ODohertyOptions", "FlintOptions", "NwbOptions", "TemporaldataOptions"):
        if hasattr(mod, attr):
            return getattr(mod, attr)
    raise AssertionError(mod)


def _parse(model: type[pydantic.BaseModel], values: dict[str, Any], what: str) -> Any:
    try:
        return model(**values)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "?"
        raise ConfigError(f"{what} option '{loc}': {err['msg']}") from None


def list_raw_sessions(fmt: str, raw_dir: Path) -> list[str]:
    """Names of the sessions found in ``raw_dir`` for format ``fmt``."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise RawDataError(f"raw data folder '{raw_dir}' does not exist or is not a folder")
    return _reader(fmt).list_sessions(raw_dir)


def _resolve(fmt: str, raw_dir: Path, sessions: list[str] | None) -> list[str]:
    available = list_raw_sessions(fmt, raw_dir)
    if sessions is None or len(sessions) == 0:
        if not available:
            raise RawDataError(f"no {fmt} sessions found in raw data folder '{raw_dir}'")
        return available
    missing = [s for s in sessions if s not in available]
    if missing:
        shown = ", ".join(available[:12]) + (" ..." if len(available) > 12 else "")
        raise RawDataError(
            f"session '{missing[0]}' is not in raw data folder '{raw_dir}' "
            f"(available: {shown or 'none'})"
        )
    return list(dict.fromkeys(sessions))


def read_raw(fmt: str, raw_dir: Path, sessions: list[str] | None = None,
             **options: Any) -> list[Session]:
    """Read sessions of format ``fmt`` from ``raw_dir`` (all when ``sessions`` is None).

    ``options``: ``bin_size`` (s, default 0.01), ``chain`` (dict or :class:`LfpChainConfig`)
    and the format's reader options (``ODohertyOptions``, ``FlintOptions``, ``NwbOptions``).
    """
    mod = _reader(fmt)
    names = _resolve(fmt, Path(raw_dir), sessions)
    bin_size, chain, reader_opts = _split_options(mod, fmt, options)
    return list(mod.read_sessions(Path(raw_dir), names, bin_size=bin_size,
                                  options=reader_opts, chain=chain))


def _split_options(mod: Any, fmt: str, options: dict[str, Any]) -> tuple[float, LfpChainConfig,
                                                                          Any]:
    opts = dict(options)
    opts.pop("segment_s", None)
    opts.pop("seed", None)
    bin_size = float(opts.pop("bin_size", 0.01))
    if not bin_size > 0:
        raise ConfigError(f"bin_size {bin_size} must be positive")
    chain = opts.pop("chain", None)
    if chain is None:
        chain = LfpChainConfig()
    elif not isinstance(chain, LfpChainConfig):
        chain = _parse(LfpChainConfig, dict(chain), "chain")
    reader_opts = _parse(_options_model(mod), opts, fmt)
    return bin_size, chain, reader_opts


def _fingerprint(mod: Any, raw_dir: Path, names: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name in names:
        for p in mod.session_files(raw_dir, name):
            st = p.stat()
            out[p.name] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def prepare_store(fmt: str, raw_dir: Path, out_dir: Path, sessions: list[str] | None = None,
                  *, force: bool = False, progress: Callable[[str], None] | None = None,
                  **options: Any) -> Path:
    """Read raw ``fmt`` files from ``raw_dir`` and write a session store to ``out_dir``.

    ``options``: ``bin_size`` (0.01 s), ``chain`` (LFP chain config dict), ``segment_s`` (5.0)
    and ``seed`` (0) of the train/val/test split, plus the reader's own options (e.g.
    ``bin_by='unit'`` for odoherty). Skips the work when ``out_dir`` already holds a store made
    with the same options from the same (unchanged) files, unless ``force``. Returns ``out_dir``.
    Every user error is an :class:`~lfpdistill.errors.LfpDistillError` with a one-line message,
    and leaves ``out_dir`` untouched.
    """
    from ..data import write_store  # lfpdistill.data loads torch (windows): only when writing

    mod = _reader(fmt)
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    names = _resolve(fmt, raw_dir, sessions)
    bin_size, chain, reader_opts = _split_options(mod, fmt, options)
    segment_s = float(options.get("segment_s", 5.0))
    seed = int(options.get("seed", 0))
    recorded: dict[str, Any] = {
        "prepare_version": PREPARE_VERSION, "format": fmt, "raw_dir": str(raw_dir.resolve()),
        "sessions": names, "bin_size": bin_size, "reader": reader_opts.model_dump(),
        "chain": chain.model_dump(), "files": _fingerprint(mod, raw_dir, names),
        "segment_s": segment_s, "seed": seed,
    }
    from ..data import options_hash

    digest = options_hash(recorded)
    manifest = out_dir / "manifest.json"
    if out_dir.exists():
        if not out_dir.is_dir():
            raise StoreError(f"output '{out_dir}' exists and is not a folder; choose another --out")
        if not manifest.exists() and any(out_dir.iterdir()):
            raise StoreError(
                f"output folder '{out_dir}' is not empty and not an lfpdistill store; "
                "choose an empty or new folder"
            )
        if manifest.exists() and not force:
            try:
                old = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
            if old.get("options", {}).get("prepare_hash") == digest:
                from ..data import open_store

                try:
                    open_store(out_dir)
                    log.info("store %s is up to date (options hash %s); skipping", out_dir, digest)
                    if progress:
                        progress(f"store {out_dir} is up to date; nothing to do")
                    return out_dir
                except LfpDistillError:
                    pass  # damaged: rebuild

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.preparing-{_owner()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        # one session in memory at a time: each is written into the temporary store as soon as
        # it is read; the store replaces out_dir only when every session is in
        for i, s in enumerate(mod.read_sessions(raw_dir, names, bin_size=bin_size,
                                                options=reader_opts, chain=chain)):
            write_store([s], tmp, options={**recorded, "prepare_hash": digest},
                        segment_s=segment_s, seed=seed, append=i > 0)
            if progress:
                progress(f"read {s.name}: {s.n_bins} bins, {s.n_units} units, "
                         f"{s.n_channels} LFP channels ({_modalities(s)})")
        if out_dir.exists():
            old_dir = out_dir.parent / f".{out_dir.name}.old-{_owner()}"
            os.replace(out_dir, old_dir)
            os.replace(tmp, out_dir)
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _owner() -> str:
    """``HOST-PID`` of this process, in the names of its temporary stores."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def _remove_abandoned(out_dir: Path) -> None:
    """Temporary stores next to ``out_dir`` left by a ``prepare`` on this machine that was
    killed (its process is gone): they never load, but they can be as large as the store."""
    host = _owner().rsplit("-", 1)[0]
    for kind in ("preparing", "old"):
        prefix = f".{out_dir.name}.{kind}-{host}-"
        for p in out_dir.parent.glob(f"{glob.escape(prefix)}*"):
            pid = p.name[len(prefix):]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _modalities(s: Session) -> str:
    if s.lfp is not None and s.spikes is not None:
        return "spikes+LFP"
    return "spikes only" if s.lfp is None else "LFP only"


def export_nwb(store_dir: Path, out_dir: Path, sessions: list[str] | None = None,
               metadata: Any = None) -> list[Path]:
    """Write each stored session as an NWB 2.x file ``OUT/<name>.nwb`` (see :mod:`.nwb_export`;
    ``metadata``: an :class:`~.nwb_export.ExportMetadata` of subject fields and start time)."""
    from .nwb_export import export_nwb as _export

    _check_export_folder(store_dir, out_dir, ".nwb", sessions)
    return _export(store_dir, out_dir, sessions, metadata)


def export_temporaldata(store_dir: Path, out_dir: Path,
                        sessions: list[str] | None = None) -> list[Path]:
    """Write each stored session as a temporaldata ``Data`` file ``OUT/<name>.h5`` (see
    :mod:`.temporaldata`)."""
    from .temporaldata import export_temporaldata as _export

    _check_export_folder(store_dir, out_dir, ".h5", sessions)
    return _export(store_dir, out_dir, sessions)


def _check_export_folder(store_dir: Path, out_dir: Path, suffix: str,
                         sessions: list[str] | None) -> None:
    """An export folder must not be the store, and no file it gets may replace a store's or a
    run's file (:mod:`lfpdistill.data.guard`)."""
    from ..data import open_store
    from ..data.guard import check_output_file, check_output_folder

    check_output_folder(out_dir, [store_dir], option="the output folder")
    store = open_store(Path(store_dir))
    for name in store.select(sessions) if sessions else store.names:
        check_output_file(Path(out_dir) / f"{name}{suffix}", [store_dir],
                          option="the output file")
