"""The real-data CLI commands, through the main ``lfpdistill`` entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from lfpdistill.cli.data import register
from lfpdistill.config import parse_overrides
from lfpdistill.data import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures_real import make_odoherty  # noqa: E402


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    return app


def test_prepare_export_download_commands(tmp_path: Path) -> None:
    make_odoherty(tmp_path / "raw", bb_t0=None)
    runner = CliRunner()
    app = _app()
    r = runner.invoke(app, ["prepare", "--format", "odoherty", "--raw", str(tmp_path / "raw"),
                            "--out", str(tmp_path / "st"), "--bin-by", "unit",
                            "--segment-s", "2", "--set", "chain.line_freq=50"])
    assert r.exit_code == 0, r.output
    st = open_store(tmp_path / "st")
    assert st.options["reader"]["bin_by"] == "unit" and st.options["chain"]["line_freq"] == 50
    assert "spikes only" in r.output
    r = runner.invoke(app, ["prepare", "--format", "odoherty", "--raw", str(tmp_path / "raw"),
                            "--out", str(tmp_path / "st"), "--bin-by", "unit",
                            "--segment-s", "2", "--set", "chain.line_freq=50"])
    assert "up to date" in r.output
    r = runner.invoke(app, ["export-nwb", str(tmp_path / "st"), str(tmp_path / "nwb"),
                            "--species", "Macaca mulatta", "--sex", "M", "--age", "P8Y",
                            "--session-start", "2016-04-07T10:00:00-07:00"])
    assert r.exit_code == 0 and (tmp_path / "nwb" / "indy_20160407_02.nwb").exists()
    r = runner.invoke(app, ["download", "flint", "--to", str(tmp_path / "fl")])
    assert r.exit_code == 0 and "Flint_2012_e5.mat" in r.output


def test_main_cli_reports_user_errors_in_one_line(tmp_path: Path, capsys) -> None:
    from lfpdistill.cli import main

    make_odoherty(tmp_path / "raw", bb_t0=None)
    rc = main(["prepare", "--format", "odoherty", "--raw", str(tmp_path / "raw"), "--out",
               str(tmp_path / "st"), "--sessions", "indy_1,indy_2"])
    err = capsys.readouterr().err.strip()
    assert rc == 3 and err.startswith("error: session 'indy_1' is not in raw data folder")
    assert "\n" not in err and not (tmp_path / "st").exists()
    rc = main(["prepare", "--format", "blackrock", "--raw", str(tmp_path / "raw"), "--out",
               str(tmp_path / "st")])
    assert rc == 2 and "Invalid value for '--format': 'blackrock' is not one of 'odoherty'" \
        in capsys.readouterr().err


def test_parse_sets() -> None:
    assert parse_overrides(nested=["chain"], items=["bin_by=unit", "chain.notch_q=25", "lfp=false"]) == {
        "bin_by": "unit", "chain": {"notch_q": 25}, "lfp": False}
