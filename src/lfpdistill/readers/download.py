"""Fetch the public raw files (standard library only: ``urllib``).

**O'Doherty et al.** -- the spike/behaviour files ``indy_YYYYMMDD_NN.mat`` are Zenodo record
583331. The file list (names, sizes, checksums) comes from ``{base_url}/api/records/{record}``
and each file from the link given there, or else from
``{base_url}/records/{record}/files/{name}?download=1``. The broadband ``.nwb`` files are in
*other* Zenodo records (one per session); pass them as ``broadband_records={session: record}``.
``base_url`` and the record ids are parameters, so a mirror can be used.

Downloads go to ``NAME.part`` and resume with an HTTP ``Range`` request after an interruption
(restarting if the server ignores ranges); the finished file is checked against the listed size
and checksum (md5/sha256) before it is renamed into place. Files already present and verified
are skipped. With ``bar`` (the CLI's default) each file shows a byte progress bar (rich): bytes
done of the listed size, speed and time left, and "resumed at N MB" when it continues a ``.part``.

**Flint et al. 2012** -- the files need a (free) login at their host, so :func:`download`
prints the steps to get them instead (:data:`FLINT_STEPS`).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LfpDistillError

ZENODO = "https://zenodo.org"
ODOHERTY_RECORD = "583331"
CHUNK = 1 << 20
USER_AGENT = "lfpdistill-download/1"

FLINT_STEPS = """\
The Flint et al. (2012) center-out data (Flint_2012_e1.mat ... Flint_2012_e5.mat) are shared by
their authors through a site that requires a free account, so lfpdistill cannot fetch them:
  1. Find "Flint 2012" in the DREAM collection (Database for Reaching Experiments and Models,
     hosted by CRCNS.org at the time of writing) and create/log in to an account there.
  2. Download Flint_2012_e1.mat ... Flint_2012_e5.mat (MAT 5 files).
  3. Put them, unrenamed, into {to_dir}
  4. Run: lfpdistill prepare --format flint --raw {to_dir} --out STORE
"""


class DownloadError(LfpDistillError):
    """A download failed (network, HTTP status, size or checksum)."""


@dataclass
class RemoteFile:
    """One file of a record: name, URL, expected size (bytes) and checksum ('md5:...')."""

    name: str
    url: str
    size: int | None = None
    checksum: str | None = None


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _open(url: str, timeout: float, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot reach {_host(url)} ({reason}); you appear to be offline or the server is "
            f"down -- check the connection (or --base-url) and retry"
        ) from None


def _check_options(base_url: str, timeout: float) -> None:
    scheme = urllib.parse.urlsplit(base_url)
    if scheme.scheme not in ("http", "https") or not scheme.netloc:
        raise ConfigError(f"--base-url '{base_url}' is not an http(s) URL; pass e.g. {ZENODO}")
    if not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")


def safe_name(name: str, where: str) -> str:
    """``name`` if it is one plain file name (no folder part, not '.'/'..', not absolute), else a
    :class:`DownloadError`: a name from a remote listing must never place a file outside the
    download folder."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or Path(name).is_absolute() or (len(name) > 1 and name[1] == ":")):
        raise DownloadError(
            f"{where}: the listing names a file '{name}' outside the download folder; refusing to "
            "download from it -- check --base-url and --record")
    return name


def _listing_error(url: str, what: str) -> DownloadError:
    return DownloadError(f"{url}: the record listing is malformed ({what}); check --base-url and "
                         "--record")


def zenodo_files(record: str, base_url: str = ZENODO, timeout: float = 60.0) -> dict[str,
                                                                                    RemoteFile]:
    """The files of Zenodo ``record``: ``{name: RemoteFile}``."""
    _check_options(base_url, timeout)
    base = base_url.rstrip("/")
    url = f"{base}/api/records/{record}"
    try:
        with _open(url, timeout, {"Accept": "application/json"}) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; is record '{record}' right?") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DownloadError(f"{url}: the record listing is not JSON") from None
    if not isinstance(data, dict):
        raise _listing_error(url, "not a JSON object")
    files = data.get("files", [])
    if isinstance(files, dict):  # newer API: {"entries": [...]} or {"entries": {name: {...}}}
        files = files.get("entries", [])
        if isinstance(files, dict):
            files = list(files.values())
    if not isinstance(files, list):
        raise _listing_error(url, f"'files' is a {type(files).__name__}, not a list")
    out: dict[str, RemoteFile] = {}
    for entry in files:
        if not isinstance(entry, dict):
            raise _listing_error(url, f"a file entry is a {type(entry).__name__}")
        name = entry.get("key") or entry.get("filename")
        if not name:
            continue
        if not isinstance(name, str):
            raise _listing_error(url, f"file name {name!r} is not a string")
        safe_name(name, url)
        links = entry.get("links", {}) or {}
        link = (links.get("content") or links.get("self") or links.get("download")
                if isinstance(links, dict) else None)
        if not isinstance(link, str) or not link:
            link = f"{base}/records/{record}/files/{urllib.parse.quote(name)}?download=1"
        size = entry.get("size", entry.get("filesize"))
        try:
            size = int(size) if size is not None else None
        except (TypeError, ValueError):
            raise _listing_error(url, f"size {size!r} of '{name}' is not a number") from None
        if size is not None and size < 0:
            raise _listing_error(url, f"size {size} of '{name}' is negative")
        checksum = entry.get("checksum")
        out[name] = RemoteFile(name, link, size, checksum if isinstance(checksum, str) else None)
    if not out:
        raise DownloadError(f"{url}: record '{record}' lists no files")
    return out


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, f: RemoteFile) -> str | None:
    """None if ``path`` matches the listed size and checksum, else what is wrong."""
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        return f"size {size} bytes, expected {f.size}"
    if f.checksum:
        algo, _, want = f.checksum.partition(":")
        if not want:
            algo, want = "md5", algo
        algo = algo.lower()
        if algo not in hashlib.algorithms_available:
            return None
        got = _digest(path, algo)
        if got.lower() != want.lower():
            return f"{algo} {got}, expected {want}"
    return None


def progress_bar(console: Any = None) -> Any:
    """A rich byte progress bar (on stderr unless ``console`` is given) for :func:`fetch`."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(),
                    console=console or Console(stderr=True))


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def fetch(f: RemoteFile, to_dir: Path, timeout: float = 60.0, retries: int = 3,
          progress: Callable[[str], None] | None = None, bar: Any = None) -> Path:
    """Download ``f`` into ``to_dir`` (resuming a ``.part`` file) and verify it; ``bar``: a
    :func:`progress_bar` to show the bytes on."""
    to_dir = Path(to_dir)
    if to_dir.exists() and not to_dir.is_dir():
        raise ConfigError(f"--to '{to_dir}' is a file; pass a folder to download into")
    to_dir.mkdir(parents=True, exist_ok=True)
    dest = to_dir / safe_name(f.name, f.url)
    if dest.exists():
        if _verify(dest, f) is None:
            if progress:
                progress(f"{f.name}: already present and verified")
            return dest
        dest.unlink()
    part = to_dir / f"{f.name}.part"
    failures = 0
    task = bar.add_task(f.name, total=f.size) if bar is not None else None
    while True:
        have = part.stat().st_size if part.exists() else 0
        if f.size is not None and have > f.size:
            part.unlink()
            have = 0
        if f.size is not None and have == f.size:
            break
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = _open(f.url, timeout, headers)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the part is complete
                break
            raise DownloadError(f"{f.url}: HTTP {e.code} {e.reason}") from None
        try:
            with resp:
                status = getattr(resp, "status", 200)
                append = bool(have) and status == 206
                if append:
                    start = resp.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]
                    append = start == str(have)
                with open(part, "ab" if append else "wb") as out:
                    got = have if append else 0
                    if bar is not None:
                        what = f"{f.name} (resumed at {_mb(have)})" if append else f.name
                        bar.update(task, description=what, completed=got)
                    while block := resp.read(CHUNK):
                        out.write(block)
                        got += len(block)
                        if bar is not None:
                            bar.update(task, completed=got)
                if progress:
                    what = f"resumed at {have} bytes" if append else "downloaded"
                    progress(f"{f.name}: {what}, {got} bytes")
            if f.size is None or part.stat().st_size >= f.size:
                break
            raise HTTPException("connection closed early")
        except (HTTPException, OSError, TimeoutError) as e:
            failures += 1
            if failures > retries:
                raise DownloadError(
                    f"{f.url}: transfer kept failing ({e}); run the same command again to resume "
                    f"from {part.name}"
                ) from None
            if progress:
                progress(f"{f.name}: interrupted ({e}); resuming")
    problem = _verify(part, f)
    if problem:
        part.unlink()
        raise DownloadError(f"{f.name}: downloaded file has {problem}; deleted it, run again")
    os.replace(part, dest)
    return dest


def download(dataset: str, sessions: list[str] | None, to_dir: Path, base_url: str = ZENODO,
             record: str = ODOHERTY_RECORD, broadband_records: dict[str, str] | None = None,
             timeout: float = 60.0, progress: Callable[[str], None] | None = None,
             bar: Any = False) -> list[Path]:
    """Download the raw files of ``sessions`` of ``dataset`` ('odoherty' or 'flint') to ``to_dir``.

    For 'odoherty', ``sessions`` are names like ``indy_20160407_02`` (None: every ``.mat`` in
    the record); ``broadband_records`` maps a session to the Zenodo record holding its ``.nwb``.
    For 'flint', nothing is downloaded: the steps are passed to ``progress`` (default ``print``)
    and an empty list returned. ``bar``: True for a byte progress bar on stderr, or a
    :func:`progress_bar` to draw on. Returns the local paths.
    """
    report = progress or print
    to_dir = Path(to_dir)
    if dataset == "flint":
        report(FLINT_STEPS.format(to_dir=to_dir))
        return []
    if dataset != "odoherty":
        raise ConfigError(f"unknown dataset '{dataset}'; expected 'odoherty' or 'flint'")
    _check_options(base_url, timeout)
    if to_dir.exists() and not to_dir.is_dir():
        raise ConfigError(f"--to '{to_dir}' is a file; pass a folder to download into")
    listing = zenodo_files(record, base_url, timeout)
    mats = sorted(n for n in listing if n.endswith(".mat"))
    names = list(sessions) if sessions else [n[:-4] for n in mats]
    wanted: list[RemoteFile] = []
    for s in names:
        fname = s if s.endswith(".mat") else f"{s}.mat"
        if fname not in listing:
            shown = ", ".join(m[:-4] for m in mats[:8]) + (" ..." if len(mats) > 8 else "")
            raise DownloadError(f"session '{s}' is not in record {record} (it has: {shown})")
        wanted.append(listing[fname])
    for s, rec in (broadband_records or {}).items():
        bb = zenodo_files(rec, base_url, timeout)
        fname = f"{s}.nwb"
        if fname not in bb:
            raise DownloadError(f"record {rec} has no '{fname}' (it has: {', '.join(sorted(bb))})")
        wanted.append(bb[fname])
    if bar is True:
        bar = progress_bar()
    if not bar:
        return [fetch(f, to_dir, timeout, progress=progress) for f in wanted]
    with bar:
        return [fetch(f, to_dir, timeout, progress=progress, bar=bar) for f in wanted]
