"""Fetch the public raw files (standard library only: ``urllib``).

**O'Doherty et al.** -- the spike/behaviour files ``indy_YYYYMMDD_NN.mat`` are Zenodo record
583331. The file list (names, sizes, checksums) comes from ``{base_url}/api/records/{record}``
and each file from the link given there, or else from
``{base_url}/records/{record}/files/{name}?download=1``. The broadband ``.nwb`` files are in
*other* Zenodo records (one per session); pass them as ``broadband_records={session: record}``.
``base_url`` and the record ids are parameters, so a mirror can be used.

Downloads go to ``NAME.part`` and resume with an HTTP ``Range`` request after an interruption
(restarting if the server ignores ranges); the finished file is checked against the listed size
and checksum (any algorithm of :mod:`hashlib`, ``shake_*`` included; an unknown algorithm is
refused, not skipped) before it is renamed into place.

**Limits** (a listing or server is not trusted):

- only ``http``/``https`` URLs are fetched, and only on the host of ``base_url`` or a host named
  in ``allow_hosts`` (``--allow-host``); redirects are held to the same rule;
- a file is never read past its listed size; a file listed without a size stops at
  ``max_bytes`` (:data:`MAX_UNLISTED_BYTES`, 64 GiB);
- a record listing is read up to :data:`MAX_LISTING_BYTES` (64 MiB);
- a transfer slower than :data:`MIN_BYTES_PER_S` (1 kB/s) over any ``timeout`` seconds counts
  as a failure (retried, then an error), so a server that trickles bytes cannot hold a
  download open; and the whole download ends at ``deadline`` seconds (``--deadline``, default
  :data:`DEFAULT_DEADLINE_S`, 24 h) -- what was fetched stays in ``.part`` to resume.

Files already present and verified are skipped. With ``bar`` (the CLI's default) each file
shows a byte progress bar (rich): bytes done of the listed size, speed and time left, and
"resumed at N MB" when it continues a ``.part``.

**Flint et al. 2012** -- the files need a (free) login at their host, so :func:`download`
prints the steps to get them instead (:data:`FLINT_STEPS`).
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import time
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
#: most bytes read of a file listed without a size
MAX_UNLISTED_BYTES = 64 << 30
#: most bytes read of a record listing (JSON)
MAX_LISTING_BYTES = 64 << 20
#: slowest transfer accepted, averaged over each ``timeout`` seconds
MIN_BYTES_PER_S = 1024
#: default limit of a whole download (seconds)
DEFAULT_DEADLINE_S = 24 * 3600.0

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


def check_url(url: str, hosts: frozenset[str] | set[str] | None, where: str) -> str:
    """``url`` if it is http(s) on one of ``hosts`` (None: any host), else a
    :class:`DownloadError` naming the fix."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"{where}: '{url[:200]}' is not an http(s) URL; refusing to fetch it "
                            "-- check --base-url and --record")
    host = parts.hostname.lower()
    if hosts is not None and host not in hosts:
        raise DownloadError(
            f"{where}: '{url[:200]}' is on host '{host}', not on the listing's host "
            f"({', '.join(sorted(hosts))}); refusing to fetch it -- if you trust that host, pass "
            f"--allow-host {host}")
    return url


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an http(s) URL on an allowed host."""

    def __init__(self, hosts: frozenset[str] | None):
        self.hosts = hosts

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        check_url(newurl, self.hosts, f"{req.full_url[:200]}: redirect")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, timeout: float, headers: dict[str, str] | None = None,
          hosts: frozenset[str] | None = None) -> Any:
    check_url(url, hosts, "download")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    opener = urllib.request.build_opener(_Redirects(hosts))
    try:
        return opener.open(req, timeout=timeout)
    except (urllib.error.HTTPError, DownloadError):
        raise
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot reach {_host(url)} ({reason}); you appear to be offline or the server is "
            f"down -- check the connection (or --base-url) and retry"
        ) from None


def _check_options(base_url: str, timeout: float) -> None:
    scheme = urllib.parse.urlsplit(base_url)
    if scheme.scheme not in ("http", "https") or not scheme.hostname:
        raise ConfigError(f"--base-url '{base_url}' is not an http(s) URL; pass e.g. {ZENODO}")
    if not 0 < timeout < float("inf"):
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")


def allowed_hosts(base_url: str, allow_hosts: list[str] | tuple[str, ...] | None = None
                  ) -> frozenset[str]:
    """The hosts files may be fetched from: ``base_url``'s and the ones the user names."""
    hosts = {urllib.parse.urlsplit(base_url).hostname or ""}
    for h in allow_hosts or ():
        h = h.strip().lower()
        if not h or "/" in h or ":" in h or " " in h:
            raise ConfigError(f"--allow-host '{h}' is not a host name; pass e.g. zenodo.org")
        hosts.add(h)
    return frozenset(x.lower() for x in hosts if x)


class _Clock:
    """The deadline of a download and the minimum speed of its transfers."""

    def __init__(self, deadline_s: float | None):
        if deadline_s is not None and not deadline_s > 0:
            raise ConfigError(f"--deadline must be a positive number of seconds, got {deadline_s}")
        self.deadline_s = deadline_s
        self.end = None if deadline_s is None else time.monotonic() + deadline_s

    def check(self, what: str) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise DownloadError(
                f"{what}: the download did not finish within its deadline of "
                f"{self.deadline_s:g} s; run the same command again to resume (or raise "
                "--deadline)")


class _Stalled(OSError):
    """A transfer slower than :data:`MIN_BYTES_PER_S` (retried like a broken connection)."""


def _read_bounded(resp: Any, limit: int, clock: _Clock, what: str, timeout: float,
                  sink: Callable[[bytes], None]) -> int:
    """Read ``resp`` into ``sink`` in pieces until it ends; more than ``limit`` bytes, the
    deadline or a stall (less than MIN_BYTES_PER_S over ``timeout`` seconds) stop it. Returns
    the bytes read; raises :class:`_TooLong` past ``limit``."""
    read = getattr(resp, "read1", None) or resp.read
    got = 0
    window_start, window_bytes = time.monotonic(), 0
    while True:
        clock.check(what)
        block = read(min(CHUNK, limit - got + 1))
        if not block:
            return got
        got += len(block)
        if got > limit:
            raise _TooLong(limit)
        sink(block)
        window_bytes += len(block)
        now = time.monotonic()
        if now - window_start >= timeout:
            if window_bytes < MIN_BYTES_PER_S * (now - window_start):
                raise _Stalled(f"slower than {MIN_BYTES_PER_S} bytes/s for {now - window_start:.0f} s")
            window_start, window_bytes = now, 0


class _TooLong(Exception):
    def __init__(self, limit: int):
        super().__init__(limit)
        self.limit = limit


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


def zenodo_files(record: str, base_url: str = ZENODO, timeout: float = 60.0,
                 allow_hosts: list[str] | tuple[str, ...] | None = None,
                 deadline: float | None = DEFAULT_DEADLINE_S) -> dict[str, RemoteFile]:
    """The files of Zenodo ``record``: ``{name: RemoteFile}``. Every file's link must be an
    http(s) URL on ``base_url``'s host or one of ``allow_hosts``; the listing is read up to
    :data:`MAX_LISTING_BYTES`."""
    _check_options(base_url, timeout)
    return _zenodo_files(record, base_url, timeout, allowed_hosts(base_url, allow_hosts),
                         deadline if isinstance(deadline, _Clock) else _Clock(deadline))


def _zenodo_files(record: str, base_url: str, timeout: float, hosts: frozenset[str],
                  clock: _Clock) -> dict[str, RemoteFile]:
    base = base_url.rstrip("/")
    url = f"{base}/api/records/{record}"
    chunks: list[bytes] = []
    try:
        with _open(url, timeout, {"Accept": "application/json"}, hosts) as resp:
            _read_bounded(resp, MAX_LISTING_BYTES, clock, url, timeout, chunks.append)
        data = json.loads(b"".join(chunks).decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; is record '{record}' right?") \
            from None
    except _TooLong:
        raise DownloadError(f"{url}: the record listing is larger than {MAX_LISTING_BYTES} bytes; "
                            "check --base-url and --record") from None
    except (HTTPException, OSError, TimeoutError) as e:
        raise DownloadError(f"{url}: reading the record listing failed ({e}); check the "
                            "connection and retry") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DownloadError(f"{url}: the record listing is not JSON") from None
    except RecursionError:
        raise DownloadError(f"{url}: the record listing is nested too deeply to read") from None
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
        check_url(link, hosts, f"{url}: file '{name}'")
        size = entry.get("size", entry.get("filesize"))
        try:
            size = int(size) if size is not None else None
        except (TypeError, ValueError):
            raise _listing_error(url, f"size {size!r} of '{name}' is not a number") from None
        if size is not None and size < 0:
            raise _listing_error(url, f"size {size} of '{name}' is negative")
        checksum = entry.get("checksum")
        if checksum is not None and not isinstance(checksum, str):
            raise _listing_error(url, f"checksum {checksum!r} of '{name}' is not a string")
        if checksum:
            parse_checksum(checksum, f"{url}: file '{name}'")
        out[name] = RemoteFile(name, link, size, checksum or None)
    if not out:
        raise DownloadError(f"{url}: record '{record}' lists no files")
    return out


def parse_checksum(checksum: str, where: str) -> tuple[str, str]:
    """``'ALGO:HEX'`` (no algorithm: md5) as ``(algo, hex)``; a :class:`DownloadError` for an
    algorithm :mod:`hashlib` does not have or a value that is not hexadecimal -- a file whose
    checksum cannot be checked is not downloaded."""
    algo, sep, want = checksum.partition(":")
    if not sep:
        algo, want = "md5", algo
    algo = algo.strip().lower()
    if algo not in hashlib.algorithms_available:
        raise DownloadError(
            f"{where}: checksum algorithm '{algo[:40]}' is not supported (use one of "
            f"{', '.join(sorted(hashlib.algorithms_guaranteed))}); refusing a file that cannot "
            "be verified")
    if not want or len(want) % 2 or any(c not in string.hexdigits for c in want):
        raise DownloadError(f"{where}: checksum '{checksum[:80]}' is not {algo}:HEX; refusing a "
                            "file that cannot be verified")
    return algo, want.lower()


def _digest(path: Path, algo: str, hex_len: int) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    if algo.startswith("shake_"):  # variable length: as many bytes as the listing gives
        return h.hexdigest(hex_len // 2)  # type: ignore[call-arg]
    return h.hexdigest()


def _verify(path: Path, f: RemoteFile) -> str | None:
    """None if ``path`` matches the listed size and checksum, else what is wrong."""
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        return f"size {size} bytes, expected {f.size}"
    if f.checksum:
        algo, want = parse_checksum(f.checksum, f.name)
        got = _digest(path, algo, len(want))
        if got.lower() != want:
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
          progress: Callable[[str], None] | None = None, bar: Any = None,
          hosts: frozenset[str] | None = None, max_bytes: int = MAX_UNLISTED_BYTES,
          deadline: float | None = DEFAULT_DEADLINE_S) -> Path:
    """Download ``f`` into ``to_dir`` (resuming a ``.part`` file) and verify it; ``bar``: a
    :func:`progress_bar` to show the bytes on. ``hosts``: the hosts ``f.url`` (and redirects)
    may be on (None: any); never more than ``f.size`` bytes (unlisted: ``max_bytes``) are
    read, and the transfer ends at ``deadline`` seconds (module docstring, "Limits")."""
    clock = deadline if isinstance(deadline, _Clock) else _Clock(deadline)
    to_dir = Path(to_dir)
    if to_dir.exists() and not to_dir.is_dir():
        raise ConfigError(f"--to '{to_dir}' is a file; pass a folder to download into")
    check_url(f.url, hosts, f.name)
    if f.checksum:
        parse_checksum(f.checksum, f.name)
    to_dir.mkdir(parents=True, exist_ok=True)
    dest = to_dir / safe_name(f.name, f.url)
    if dest.exists():
        if _verify(dest, f) is None:
            if progress:
                progress(f"{f.name}: already present and verified")
            return dest
        dest.unlink()
    part = to_dir / f"{f.name}.part"
    limit = f.size if f.size is not None else max_bytes
    failures = 0
    task = bar.add_task(f.name, total=f.size) if bar is not None else None
    while True:
        clock.check(f.name)
        have = part.stat().st_size if part.exists() else 0
        if have > limit:
            part.unlink()
            have = 0
        if f.size is not None and have == f.size:
            break
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = _open(f.url, timeout, headers, hosts)
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

                    def sink(block: bytes, out: Any = out) -> None:
                        nonlocal got
                        out.write(block)
                        got += len(block)
                        if bar is not None:
                            bar.update(task, completed=got)

                    try:
                        _read_bounded(resp, limit - got, clock, f.name, timeout, sink)
                    except _TooLong:
                        out.close()
                        part.unlink(missing_ok=True)
                        what = (f"more than the listed {f.size} bytes" if f.size is not None
                                else f"more than {max_bytes} bytes (no size listed)")
                        raise DownloadError(f"{f.url}: the server sent {what}; deleted the "
                                            "partial file -- check --base-url and --record") \
                            from None
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
             bar: Any = False, allow_hosts: list[str] | tuple[str, ...] | None = None,
             deadline: float | None = DEFAULT_DEADLINE_S,
             max_bytes: int = MAX_UNLISTED_BYTES) -> list[Path]:
    """Download the raw files of ``sessions`` of ``dataset`` ('odoherty' or 'flint') to ``to_dir``.

    For 'odoherty', ``sessions`` are names like ``indy_20160407_02`` (None: every ``.mat`` in
    the record); ``broadband_records`` maps a session to the Zenodo record holding its ``.nwb``.
    For 'flint', nothing is downloaded: the steps are passed to ``progress`` (default ``print``)
    and an empty list returned. ``bar``: True for a byte progress bar on stderr, or a
    :func:`progress_bar` to draw on. ``allow_hosts``: hosts besides ``base_url``'s that files
    may come from; ``deadline``: seconds for the whole download; ``max_bytes``: the most read of
    a file listed without a size (module docstring, "Limits"). Returns the local paths.
    """
    report = progress or print
    to_dir = Path(to_dir)
    if dataset == "flint":
        report(FLINT_STEPS.format(to_dir=to_dir))
        return []
    if dataset != "odoherty":
        raise ConfigError(f"unknown dataset '{dataset}'; expected 'odoherty' or 'flint'")
    _check_options(base_url, timeout)
    hosts = allowed_hosts(base_url, allow_hosts)
    clock = _Clock(deadline)
    if to_dir.exists() and not to_dir.is_dir():
        raise ConfigError(f"--to '{to_dir}' is a file; pass a folder to download into")
    listing = _zenodo_files(record, base_url, timeout, hosts, clock)
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
        bb = _zenodo_files(rec, base_url, timeout, hosts, clock)
        fname = f"{s}.nwb"
        if fname not in bb:
            raise DownloadError(f"record {rec} has no '{fname}' (it has: {', '.join(sorted(bb))})")
        wanted.append(bb[fname])
    if bar is True:
        bar = progress_bar()
    options = {"progress": progress, "hosts": hosts, "max_bytes": max_bytes, "deadline": clock}
    if not bar:
        return [fetch(f, to_dir, timeout, **options) for f in wanted]
    with bar:
        return [fetch(f, to_dir, timeout, bar=bar, **options) for f in wanted]
