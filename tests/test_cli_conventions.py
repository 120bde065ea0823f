"""CLI conventions: options with fixed choices are enums listed in --help, ``--version``, one
``error:`` line per user error with an exit status by kind (README, "Exit codes")."""

from __future__ import annotations

import enum
import re
import sys
import typing
from importlib.metadata import version
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import cli_error, make_session  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: command -> option -> its choices
CHOICES = {
    "pretrain": {"modality": ["spikes", "lfp"]},
    "probe": {"decoder": ["linear", "wiener"]},
    "prepare": {"fmt": ["odoherty", "flint", "nwb", "temporaldata"], "bin_by": ["channel", "unit"]},
    "download": {"dataset": ["odoherty", "flint"]},
    "simulate": {"task": ["random_target", "center_out"], "path": ["fast", "raw"],
                 "variant": ["default", "random", "calibrated"]},
    "embed": {"readout": ["visible", "held_out"]},
    "run": {"order": ["seeds", "stages"]},
    "decode": {"nan": ["hold", "error"]},
    "export-nwb": {"sex": ["M", "F", "U", "O"]},
}


def _commands() -> dict:
    """``{command name: its function}`` of the CLI."""
    from lfpdistill.cli import app

    return {c.name or c.callback.__name__.replace("_", "-"): c.callback
            for c in app.registered_commands}


def _choices(annotation) -> list[str] | None:
    """The values of the enum an option is annotated with (through Annotated and Optional)."""
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return [m.value for m in arg]
        inner = typing.get_args(arg)
        if inner and arg is not annotation:
            found = _choices(arg)
            if found:
                return found
    return None


def test_choices_are_enums_checked_by_the_parser():
    commands = _commands()
    for name, options in CHOICES.items():
        hints = typing.get_type_hints(commands[name], include_extras=True)
        for opt, choices in options.items():
            assert _choices(hints[opt]) == choices, (name, opt)


@pytest.mark.parametrize("command, shown", [("pretrain", "spikes|lfp"), ("probe", "linear|wiener"),
                                            ("prepare", "odoherty|flint|nwb|temporaldata"),
                                            ("export-nwb", "M|F|U|O")])
def test_help_lists_the_choices(command, shown, capsys, monkeypatch):
    from lfpdistill.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main([command, "--help"]) == 0
    assert shown in capsys.readouterr().out


def test_version(capsys):
    from lfpdistill.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lfpdistill {version('lfpdistill')}"


def test_exit_codes_by_kind(tmp_path, capsys):
    # 2 usage: the command line or a config value is wrong
    cli_error(capsys, ["pretrain", "--modality", "eeg", "--store", tmp_path, "--out", tmp_path],
              "Invalid value for '--modality': 'eeg' is not one of 'spikes', 'lfp'",
              "(see 'lfpdistill pretrain --help')", code=2)
    cli_error(capsys, ["inspect", tmp_path, "--frobnicate"], "No such option: --frobnicate", code=2)
    cli_error(capsys, ["pretrain", "--store", tmp_path, "--out", tmp_path],
              "Missing option '--modality'", code=2)
    cli_error(capsys, ["simulate", "--out", tmp_path / "s", "--seconds", "-1"],
              "invalid simulation option", code=2)
    # 3 data: an input is missing, damaged or does not fit
    cli_error(capsys, ["inspect", tmp_path / "nostore"], "does not exist", code=3)
    (tmp_path / "raw").mkdir()
    cli_error(capsys, ["prepare", "--format", "nwb", "--raw", tmp_path / "raw", "--out",
                       tmp_path / "st"], "no nwb sessions found", code=3)
    # 4 environment: the file system refused, or the network
    (tmp_path / "file").write_text("x")
    cli_error(capsys, ["simulate", "--out", tmp_path / "file" / "s", "--sessions", "1",
                       "--seconds", "15"], "cannot use", code=4)
    cli_error(capsys, ["download", "odoherty", "--to", tmp_path / "dl", "--base-url",
                       "http://127.0.0.1:9", "--timeout", "2"], "cannot reach", code=4)


def test_no_command_prints_the_help_as_a_usage_error(capsys):
    from lfpdistill.cli import main

    assert main([]) == 2
    shown = capsys.readouterr()
    assert "Commands" in shown.out + shown.err


def test_readme_documents_the_exit_codes_and_the_commands():
    """The README and its getting-started page (which holds the exit-code table) together."""
    readme = "\n".join((ROOT / p).read_text() for p in ("README.md", "docs/getting_started.md"))
    readme = readme.replace("\\|", "|")  # '|' escaped in tables
    section = readme[readme.index("## Exit codes"):]
    for code, word in ((0, "success"), (1, "bug"), (2, "usage"), (3, "data"), (4, "environment")):
        assert re.search(rf"\|\s*`{code}`\s*\|[^\n]*{word}", section, re.I), code
    for command in _commands():
        assert f"lfpdistill {command}" in readme, command
    for options in CHOICES.values():
        for choices in options.values():
            assert "|".join(choices) in readme, choices


def test_data_error_from_a_session(tmp_path, capsys):
    from lfpdistill.data import write_store

    write_store([make_session("s0")], tmp_path / "st", options={})
    cli_error(capsys, ["export-nwb", tmp_path / "st", tmp_path / "out", "--sessions", "zz"],
              "zz", code=3)
