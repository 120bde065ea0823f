"""``lfpdistill download`` against a hostile server (issue #16): names that escape ``--to``,
malformed listings and bad options. The server is local (127.0.0.1), as in test_download.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.conftest import cli_error

from lfpdistill.cli import main

BLOB = b"not really a mat file" * 10


@pytest.fixture
def hostile() -> Iterator[tuple[str, dict]]:
    """A server whose record ``1`` lists ``listing['files']``; every file's content is BLOB."""
    listing: dict = {"files": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            path = self.path.split("?")[0]
            if path == "/api/records/1":
                body = json.dumps(listing).encode()
            elif path.startswith("/files/"):
                body = BLOB
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", listing
    finally:
        httpd.shutdown()
        httpd.server_close()


def _entry(base: str, key, size=len(BLOB)) -> dict:
    return {"key": key, "size": size, "links": {"self": f"{base}/files/x"}}


def _download(base: str, to: Path, *extra: str) -> list[str]:
    return ["download", "odoherty", "--to", str(to), "--base-url", base, "--record", "1",
            "--timeout", "5", *extra]




def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("key", ["../../x.mat", "../x.mat", "sub/../../x.mat", "..",
                                 "{abs}/abs_target.mat", "a\\..\\..\\x.mat"])
def test_a_listed_name_that_escapes_to_is_refused(hostile, tmp_path, capsys, key):
    base, listing = hostile
    to = tmp_path / "a" / "b" / "to"
    key = key.format(abs=tmp_path)
    listing["files"] = [_entry(base, "indy_20160407_02.mat"), _entry(base, key)]
    cli_error(capsys, _download(base, to), "outside the download folder", f"'{key}'")
    assert _files_under(tmp_path) == []  # nothing written anywhere, not even the good file


def test_a_safe_listing_still_downloads(hostile, tmp_path, capsys):
    base, listing = hostile
    listing["files"] = [_entry(base, "indy_20160407_02.mat")]
    assert main(_download(base, tmp_path / "to")) == 0
    assert (tmp_path / "to" / "indy_20160407_02.mat").read_bytes() == BLOB


@pytest.mark.parametrize(("files", "fragment"), [
    ("a string", "'files' is a str"),
    ([42], "a file entry is a int"),
    ([{"key": 7, "size": 3}], "file name 7 is not a string"),
    ([{"key": "indy_20160407_02.mat", "size": "big"}], "size 'big'"),
])
def test_a_malformed_listing_is_one_line(hostile, tmp_path, capsys, files, fragment):
    base, listing = hostile
    listing["files"] = files
    cli_error(capsys, _download(base, tmp_path / "to"), "listing is malformed", fragment)


def test_bad_download_options_are_one_line(hostile, tmp_path, capsys):
    base, listing = hostile
    listing["files"] = [_entry(base, "indy_20160407_02.mat")]
    cli_error(capsys, [*_download(base, tmp_path / "to")[:-2], "--timeout", "-1"], "--timeout")
    cli_error(capsys, _download("notaurl", tmp_path / "to"), "--base-url 'notaurl'")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cli_error(capsys, _download(base, a_file), "is a file")
    assert a_file.read_text() == "x"
