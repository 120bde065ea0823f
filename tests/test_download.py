"""Downloader against a local HTTP server on 127.0.0.1 (no outside network)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lfpdistill.readers.download import DownloadError, download

FILES = {
    "indy_20160407_02.mat": bytes(range(256)) * 400,
    "indy_20160411_01.mat": b"second file" * 1000,
    "readme.txt": b"hello",
}
BROADBAND = {"indy_20160407_02.nwb": b"\x89HDF\r\n\x1a\n" + b"x" * 50000}


class _State:
    def __init__(self) -> None:
        self.cut_first = 0  # bytes after which the first file transfer is cut
        self.ignore_range = False
        self.corrupt = False
        self.requests: list[tuple[str, str | None]] = []


def _listing(base: str, record: str, files: dict[str, bytes], new_api: bool) -> dict:
    entries = [{"key": n, "size": len(b), "checksum": "md5:" + hashlib.md5(b).hexdigest(),
                "links": {"self": f"{base}/api/records/{record}/files/{n}/content"}}
               for n, b in files.items()]
    return {"files": {"entries": entries}} if new_api else {"files": entries}


@pytest.fixture
def server() -> Iterator[tuple[str, _State]]:
    state = _State()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            state.requests.append((self.path, self.headers.get("Range")))
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts[:2] == ["api", "records"] and len(parts) == 3:
                rec = parts[2]
                files = {"583331": FILES, "777": BROADBAND}.get(rec)
                if files is None:
                    self.send_error(404)
                    return
                body = json.dumps(_listing(base, rec, files, rec == "777")).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if parts[:2] == ["api", "records"] and parts[-1] == "content":
                name = parts[4]
                blob = {**FILES, **BROADBAND}.get(name)
                if blob is None:
                    self.send_error(404)
                    return
                if state.corrupt:
                    blob = blob[:-1] + b"!"
                start = 0
                rng = self.headers.get("Range")
                if rng and not state.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(blob):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(blob) - start))
                self.end_headers()
                payload = blob[start:]
                if state.cut_first:
                    payload = payload[: state.cut_first]
                    state.cut_first = 0
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)
                return
            self.send_error(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_verifies_and_skips(server, tmp_path: Path) -> None:
    base, state = server
    got = download("odoherty", ["indy_20160407_02"], tmp_path, base_url=base, timeout=5)
    assert got == [tmp_path / "indy_20160407_02.mat"]
    assert got[0].read_bytes() == FILES["indy_20160407_02.mat"]
    n = len(state.requests)
    download("odoherty", ["indy_20160407_02"], tmp_path, base_url=base, timeout=5)
    assert len(state.requests) == n + 1  # only the listing: the file was verified and skipped
    everything = download("odoherty", None, tmp_path, base_url=base, timeout=5)
    assert sorted(p.name for p in everything) == ["indy_20160407_02.mat", "indy_20160411_01.mat"]


def test_resume_with_range_after_cut(server, tmp_path: Path) -> None:
    base, state = server
    state.cut_first = 30000
    msgs: list[str] = []
    (p,) = download("odoherty", ["indy_20160407_02"], tmp_path, base_url=base, timeout=5,
                    progress=msgs.append)
    assert p.read_bytes() == FILES["indy_20160407_02.mat"]
    ranges = [r for _, r in state.requests if r]
    assert ranges == ["bytes=30000-"]
    assert not list(tmp_path.glob("*.part"))


def test_resume_existing_part_and_server_ignoring_range(server, tmp_path: Path) -> None:
    base, state = server
    blob = FILES["indy_20160411_01.mat"]
    (tmp_path / "indy_20160411_01.mat.part").write_bytes(blob[:4000])
    download("odoherty", ["indy_20160411_01"], tmp_path, base_url=base, timeout=5)
    assert (tmp_path / "indy_20160411_01.mat").read_bytes() == blob
    assert state.requests[-1][1] == "bytes=4000-"
    (tmp_path / "indy_20160411_01.mat").unlink()
    (tmp_path / "indy_20160411_01.mat.part").write_bytes(blob[:4000])
    state.ignore_range = True  # 200 with the whole file: must restart, not append
    download("odoherty", ["indy_20160411_01"], tmp_path, base_url=base, timeout=5)
    assert (tmp_path / "indy_20160411_01.mat").read_bytes() == blob


def test_checksum_mismatch_is_an_error(server, tmp_path: Path) -> None:
    base, state = server
    state.corrupt = True
    with pytest.raises(DownloadError, match=r"indy_20160407_02.mat: downloaded file has md5"):
        download("odoherty", ["indy_20160407_02"], tmp_path, base_url=base, timeout=5)
    assert not list(tmp_path.iterdir())


def test_broadband_record_and_unknown_session(server, tmp_path: Path) -> None:
    base, _ = server
    got = download("odoherty", ["indy_20160407_02"], tmp_path, base_url=base, timeout=5,
                   broadband_records={"indy_20160407_02": "777"})
    assert [p.name for p in got] == ["indy_20160407_02.mat", "indy_20160407_02.nwb"]
    with pytest.raises(DownloadError, match="session 'indy_20990101_01' is not in record 583331"):
        download("odoherty", ["indy_20990101_01"], tmp_path, base_url=base, timeout=5)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("odoherty", ["x"], tmp_path, base_url=base, record="999", timeout=5)


def test_offline_message(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"cannot reach 127.0.0.1:\d+ .*offline") as e:
        download("odoherty", ["indy_20160407_02"], tmp_path, base_url=f"http://127.0.0.1:{port}",
                 timeout=2)
    assert "\n" not in str(e.value)


def test_flint_prints_steps(tmp_path: Path) -> None:
    msgs: list[str] = []
    assert download("flint", None, tmp_path, progress=msgs.append) == []
    assert "Flint_2012_e1.mat" in msgs[0] and str(tmp_path) in msgs[0]


def test_byte_progress_bar_shows_bytes_and_resume(server, tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from lfpdistill.readers.download import progress_bar

    base, _ = server
    blob = FILES["indy_20160411_01.mat"]
    (tmp_path / "indy_20160411_01.mat.part").write_bytes(blob[:4000])
    screen = io.StringIO()
    bar = progress_bar(Console(file=screen, force_terminal=True, width=150))
    download("odoherty", ["indy_20160411_01"], tmp_path, base_url=base, timeout=5, bar=bar)
    shown = screen.getvalue()
    assert "indy_20160411_01.mat (resumed at 4.0 kB)" in shown, shown
    total = f"{len(blob) / 1000:.1f}/{len(blob) / 1000:.1f} kB"  # rich counts in kB (1000 bytes)
    assert total in shown, shown
    assert (tmp_path / "indy_20160411_01.mat").read_bytes() == blob
