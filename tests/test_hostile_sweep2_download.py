"""``lfpdistill download`` against hostile servers, second sweep (issue #37, causes A, B and the
checksum parts of J and P): links to other schemes or hosts, files that never end, servers that
send one byte a second, endless listings, checksums of unknown or variable-length algorithms.
The servers are local (127.0.0.1), as in test_download.py."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lfpdistill.cli import main
from lfpdistill.readers.download import DownloadError, RemoteFile, fetch

BLOB = b"not really a mat file" * 10
NAME = "indy_20160407_02.mat"


@pytest.fixture
def server() -> Iterator[tuple[str, dict]]:
    """Record ``1`` lists ``state['files']``; ``/files/x`` is BLOB, ``/endless`` never stops
    (no length), ``/liar`` sends more than its Content-Length claims would allow for the listed
    size, ``/slow`` sends one byte every 0.2 s forever, ``/api/records/2`` is an endless
    listing, ``/hop`` redirects to ``state['hop']``."""
    state: dict = {"files": [], "hop": ""}
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _endless(self, piece: bytes, pause: float = 0.0) -> None:
            self.send_response(200)
            self.end_headers()
            try:
                while not stop.is_set():
                    self.wfile.write(piece)
                    self.wfile.flush()
                    if pause:
                        time.sleep(pause)
            except OSError:
                pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            path = self.path.split("?")[0]
            if path == "/api/records/1":
                body = json.dumps({"files": state["files"]}).encode()
            elif path == "/api/records/2":
                self._endless(b'{"files": [' + b" " * 65536)
                return
            elif path == "/files/x":
                body = BLOB
            elif path == "/endless":
                self._endless(b"x" * 65536)
                return
            elif path == "/slow":
                self._endless(b"x", pause=0.2)
                return
            elif path == "/hop":
                self.send_response(302)
                self.send_header("Location", state["hop"])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()


def cli_error(capsys, argv, *fragments, code: int) -> str:
    """The command ends with one ``error:`` line (after the progress bar's lines) holding every
    fragment, no traceback, and exit status ``code``."""
    capsys.readouterr()
    got = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert got == code, (got, err)
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: "), err
    assert "Traceback" not in err and sum(x.startswith("error") for x in lines) == 1, err
    for f in fragments:
        assert f in lines[-1], lines[-1]
    return lines[-1]


def _download(base: str, to: Path, *extra: str, record: str = "1") -> list[str]:
    return ["download", "odoherty", "--to", str(to), "--base-url", base, "--record", record,
            "--timeout", "5", *extra]


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------ A: schemes and hosts
@pytest.mark.parametrize("link", ["file://{secret}", "data:text/plain;base64,c2VjcmV0",
                                  "ftp://127.0.0.1/x.mat"])
def test_a_link_with_another_scheme_is_refused(server, tmp_path, capsys, link):
    base, state = server
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret" * 10)
    state["files"] = [{"key": NAME, "size": 60, "links": {"self": link.format(secret=secret)}}]
    to = tmp_path / "to"
    cli_error(capsys, _download(base, to), "not an http(s) URL", code=4)
    assert not to.exists() or _files_under(to) == []


def test_a_link_to_another_host_needs_allow_host(server, tmp_path, capsys):
    base, state = server
    port = base.rsplit(":", 1)[1]
    other = f"http://localhost:{port}/files/x"  # same server, but a host the listing is not on
    state["files"] = [{"key": NAME, "size": len(BLOB), "links": {"self": other}}]
    cli_error(capsys, _download(base, tmp_path / "to"), "'localhost", "--allow-host", code=4)
    assert main(_download(base, tmp_path / "to", "--allow-host", "localhost")) == 0
    assert (tmp_path / "to" / NAME).read_bytes() == BLOB


def test_a_redirect_to_another_host_is_refused(server, tmp_path, capsys):
    base, state = server
    port = base.rsplit(":", 1)[1]
    state["hop"] = f"http://localhost:{port}/files/x"
    state["files"] = [{"key": NAME, "size": len(BLOB), "links": {"self": f"{base}/hop"}}]
    cli_error(capsys, _download(base, tmp_path / "to"), "redirect", "--allow-host", code=4)
    state["hop"] = f"{base}/files/x"  # a redirect on the same host is followed
    assert main(_download(base, tmp_path / "to")) == 0


# ------------------------------------------------------------------ B: unbounded transfers
def test_b_a_file_longer_than_listed_stops_at_the_listed_size(server, tmp_path, capsys):
    base, state = server
    state["files"] = [{"key": NAME, "size": 1000, "links": {"self": f"{base}/endless"}}]
    t0 = time.monotonic()
    cli_error(capsys, _download(base, tmp_path / "to"), "more than the listed 1000 bytes",
              code=4)
    assert time.monotonic() - t0 < 10
    assert sum(p.stat().st_size for p in (tmp_path / "to").iterdir()) <= 1000


def test_b_an_unlisted_size_is_capped(server, tmp_path):
    base, _ = server
    f = RemoteFile(NAME, f"{base}/endless", None, None)
    with pytest.raises(DownloadError, match="more than 200000 bytes"):
        fetch(f, tmp_path, timeout=5, max_bytes=200_000)
    assert all(p.stat().st_size <= 200_000 for p in tmp_path.iterdir())


def test_b_a_trickling_server_ends_at_the_deadline(server, tmp_path, capsys):
    base, state = server
    state["files"] = [{"key": NAME, "size": 10_000, "links": {"self": f"{base}/slow"}}]
    t0 = time.monotonic()
    cli_error(capsys, _download(base, tmp_path / "to", "--deadline", "2"), "deadline", code=4)
    assert time.monotonic() - t0 < 8


def test_b_a_stalled_transfer_fails_without_a_deadline(server, tmp_path):
    """One byte every 0.2 s never trips the socket timeout; the minimum speed does."""
    base, _ = server
    f = RemoteFile(NAME, f"{base}/slow", 10_000, None)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="slower than"):
        fetch(f, tmp_path, timeout=0.5, retries=1)
    assert time.monotonic() - t0 < 8


def test_b_an_endless_listing_is_one_line(server, tmp_path, capsys):
    base, _ = server
    cli_error(capsys, _download(base, tmp_path / "to", record="2"), "listing", "larger than",
              code=4)


# ------------------------------------------------------------------ J, P: checksums
def test_j_shake_checksums_are_verified(server, tmp_path, capsys):
    base, state = server
    good = hashlib.shake_128(BLOB).hexdigest(16)
    state["files"] = [{"key": NAME, "size": len(BLOB), "checksum": f"shake_128:{good}",
                       "links": {"self": f"{base}/files/x"}}]
    assert main(_download(base, tmp_path / "to")) == 0
    bad = "0" * 32
    state["files"][0]["checksum"] = f"shake_128:{bad}"
    cli_error(capsys, _download(base, tmp_path / "to2"), "shake_128", code=4)
    assert not (tmp_path / "to2" / NAME).exists()


@pytest.mark.parametrize("checksum", ["crc99:abcdef", "sha256:not-hex", "md5:"])
def test_p_an_unknown_checksum_algorithm_is_refused(server, tmp_path, capsys, checksum):
    base, state = server
    state["files"] = [{"key": NAME, "size": len(BLOB), "checksum": checksum,
                       "links": {"self": f"{base}/files/x"}}]
    cli_error(capsys, _download(base, tmp_path / "to"), "checksum", code=4)
    assert not (tmp_path / "to" / NAME).exists()
