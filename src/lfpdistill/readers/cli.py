"""CLI commands for real data: ``prepare``, ``export-nwb`` and ``download``.

The main CLI (:mod:`lfpdistill.cli`) calls :func:`register`. User errors are raised as
:class:`~lfpdistill.errors.LfpDistillError` and printed by the main CLI in one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError

SessionsOpt = Annotated[list[str] | None, typer.Option(
    "--sessions", help="session names (repeat the option or separate with commas; default: all)")]


def _sessions(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (VALUE parsed as JSON when possible); ``chain.X`` keys go to the LFP
    chain config."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set '{item}' is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.startswith("chain."):
            out.setdefault("chain", {})[key[len("chain."):]] = value
        else:
            out[key] = value
    return out


def register(app: typer.Typer) -> None:
    """Add ``prepare``, ``export-nwb`` and ``download`` to ``app``."""

    @app.command("prepare")
    def prepare(
        fmt: Annotated[str, typer.Option("--format", help="odoherty, flint or nwb")],
        raw: Annotated[Path, typer.Option("--raw", help="folder with the raw files")],
        out: Annotated[Path, typer.Option("--out", help="store folder to write")],
        sessions: SessionsOpt = None,
        bin_size: Annotated[float, typer.Option(help="bin size (s)")] = 0.01,
        bin_by: Annotated[str | None, typer.Option(
            help="odoherty: 'channel' (threshold crossings) or 'unit' (sorted units)")] = None,
        no_lfp: Annotated[bool, typer.Option("--no-lfp", help="spikes only")] = False,
        segment_s: Annotated[float, typer.Option(help="split segment length (s)")] = 5.0,
        seed: Annotated[int, typer.Option(help="split seed")] = 0,
        force: Annotated[bool, typer.Option("--force", help="rebuild even if up to date")] = False,
        sets: Annotated[list[str] | None, typer.Option(
            "--set", help="reader option KEY=VALUE, or chain.KEY=VALUE for the LFP chain "
                          "(e.g. chain.line_freq=50)")] = None,
    ) -> None:
        """Read raw recordings (O'Doherty, Flint 2012 or NWB 2.x) into a session store."""
        from . import prepare_store

        options = _parse_sets(sets)
        options.update(bin_size=bin_size, segment_s=segment_s, seed=seed)
        if bin_by is not None:
            options["bin_by"] = bin_by
        if no_lfp:
            options["lfp"] = False
        path = prepare_store(fmt, raw, out, _sessions(sessions), force=force,
                             progress=typer.echo, **options)
        typer.echo(f"store: {path}")

    @app.command("export-nwb")
    def export_nwb_cmd(
        store: Annotated[Path, typer.Argument(help="store folder")],
        out: Annotated[Path, typer.Argument(help="folder for the .nwb files")],
        sessions: SessionsOpt = None,
    ) -> None:
        """Write each stored session as an NWB 2.x file."""
        from . import export_nwb

        for p in export_nwb(store, out, _sessions(sessions)):
            typer.echo(f"wrote {p}")

    @app.command("download")
    def download_cmd(
        dataset: Annotated[str, typer.Argument(help="odoherty or flint")],
        to: Annotated[Path, typer.Option("--to", help="folder to download into")],
        sessions: SessionsOpt = None,
        base_url: Annotated[str, typer.Option(help="Zenodo (or mirror) base URL")] =
        "https://zenodo.org",
        record: Annotated[str, typer.Option(help="record of the .mat files")] = "583331",
        broadband_record: Annotated[list[str] | None, typer.Option(
            help="SESSION=RECORD of a session's broadband .nwb (repeatable)")] = None,
        timeout: Annotated[float, typer.Option(help="network timeout (s)")] = 60.0,
    ) -> None:
        """Download public raw files (Flint 2012 needs a login: prints the steps)."""
        from .download import download

        bb: dict[str, str] = {}
        for item in broadband_record or []:
            s, sep, r = item.partition("=")
            if not sep or not s or not r:
                raise ConfigError(f"--broadband-record '{item}' is not SESSION=RECORD")
            bb[s.strip()] = r.strip()
        paths = download(dataset, _sessions(sessions), to, base_url=base_url, record=record,
                         broadband_records=bb, timeout=timeout, progress=typer.echo)
        for p in paths:
            typer.echo(f"ok {p}")
