"""Data commands: ``simulate``, ``inspect``, and for real recordings ``prepare``, ``export-nwb``,
``export-temporaldata`` and ``download``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from ..config import SimConfig, one_line, parse_overrides
from ..errors import ConfigError
from .common import (
    BinBy,
    Dataset,
    RawFormat,
    Sex,
    SimPath,
    Task,
    Variant,
    console,
    print_table,
    value,
)

SessionsOpt = Annotated[list[str] | None, typer.Option(
    "--sessions", help="session names (repeat the option or separate with commas; default: all)")]


def _sessions(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def _check_simulate_out(out: Path, force: bool) -> set[str]:
    """Refuse a non-empty --out unless ``force``; returns the session files of the store that
    ``force`` replaces (removed once the new store is written)."""
    out = Path(out)
    # temporary files of a writer that was killed (atomic_path's '.NAME.XXXXXXXX.tmp') do not count
    if not out.is_dir() or all(p.name.startswith(".") and ".tmp" in p.name for p in out.iterdir()):
        return set()
    if not force:
        what = "a store" if (out / "manifest.json").is_file() else "not empty"
        raise ConfigError(f"--out '{out}' is {what}; simulate writes a new store, so choose a new "
                          "or empty folder, or pass --force to replace what is there")
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        return {e["file"] for e in manifest["sessions"]
                if isinstance(e.get("file"), str) and Path(e["file"]).name == e["file"]
                and e["file"].endswith(".h5")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return set()


class Family(StrEnum):
    """Simulator families (``SimConfig.family``)."""

    kinematic = "kinematic"
    recurrent = "recurrent"


def register(app: typer.Typer) -> None:
    """Add the data commands to ``app``."""

    @app.command()
    def simulate(
        out: Annotated[Path, typer.Option(help="store directory to write")],
        sessions: Annotated[int, typer.Option(help="number of sessions")] = 8,
        seconds: Annotated[float, typer.Option(help="duration of each session (s)")] = 300.0,
        seed: Annotated[int, typer.Option(help="random seed (same seed -> same data)")] = 0,
        task: Annotated[Task, typer.Option(help="reaching task")] = Task.random_target,
        path: Annotated[SimPath, typer.Option(
            help="fast (100 Hz LFP directly) or raw (1 kHz + chain)")] = SimPath.fast,
        degradation: Annotated[float, typer.Option(help="per-session decay of unit yield/tuning")] = 0.0,
        variant: Annotated[Variant, typer.Option(
            help="default; random: generative parameters drawn from the documented ranges "
                 "(docs/simulator.md), one variant per --seed; calibrated: the same draw with "
                 "its decodability moved into the calibration bands (minutes)")] = Variant.default,
        segment_s: Annotated[float, typer.Option(help="split segment length (s)")] = 5.0,
        chronic: Annotated[list[str] | None, typer.Option(
            help="chronic degradation across sessions, KEY=VALUE, repeatable: interval_days, "
                 "unit_loss, amplitude_loss, lfp_gain_drift, lfp_map_drift_deg, ... "
                 "(docs/simulator.md); e.g. --chronic unit_loss=0.065")] = None,
        force: Annotated[bool, typer.Option(
            "--force", help="replace the store (or other files) already in --out")] = False,
        family: Annotated[Family, typer.Option(
            help="simulator family (docs/simulator.md): kinematic (units tuned to the "
                 "kinematics) or recurrent (a chaotic recurrent network drives the units, LFP "
                 "from current dipoles through a volume conductor)")] = Family.kinematic,
    ) -> None:
        """Simulate paired spikes + LFP + velocity sessions into a store (a new or empty
        folder; --force replaces what is there)."""
        from ..data import write_store
        from ..data.store import check_writable
        from ..simulate import resolve_variant, simulate_sessions

        try:
            request = SimConfig(n_sessions=sessions, seconds=seconds, seed=seed, task=value(task),
                                path=value(path), degradation=degradation, variant=value(variant),
                                segment_s=segment_s, chronic=parse_overrides(chronic),
                                family=value(family))
        except ValidationError as e:
            raise ConfigError(f"invalid simulation option: {one_line(e)}") from None
        old_files = _check_simulate_out(out, force)
        check_writable(out)  # before the calibration and the simulation, not after them
        try:
            cfg = resolve_variant(request)
        except ValidationError as e:  # a drawn value the other options do not allow
            raise ConfigError(f"invalid simulation option for this variant: {one_line(e)}") from None
        if cfg.drawn_from:
            console.print(f"{cfg.drawn_from}: {cfg.units_min}-{cfg.units_max} units, task {cfg.task}, "
                          f"lead {cfg.lead_s * 1000:.0f} ms (all drawn values in the store's manifest)")
        if cfg.calibration is not None:
            console.print(f"calibration: {cfg.calibration.describe()}")
        sess = simulate_sessions(cfg, progress=True)
        store = write_store(sess, out, options={"source": "simulate", "simulate": cfg.model_dump()},
                            segment_s=segment_s, seed=seed)
        for name in old_files - {f"{s.name}.h5" for s in sess}:  # --force: the old sessions go
            (Path(out) / name).unlink(missing_ok=True)
        console.print(f"wrote {len(sess)} sessions to {store.root}")
        print_table(store.summary())

    @app.command()
    def inspect(
        store: Annotated[Path, typer.Argument(help="store directory")],
        as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    ) -> None:
        """One row per session: units, channels, duration, mean rate, split sizes."""
        from ..data import open_store

        st = open_store(store)
        rows = st.summary()
        if as_json:
            print(json.dumps({"store": str(st.root), "options_hash": st.options_hash, "sessions": rows},
                             indent=2))
        else:
            print_table(rows, title=f"{st.root} ({len(rows)} sessions, options {st.options_hash})")

    @app.command("prepare")
    def prepare(
        fmt: Annotated[RawFormat, typer.Option(
            "--format", help="raw format (temporaldata: files of lfpdistill export-temporaldata "
                             "or torch_brain-style Data files)")],
        raw: Annotated[Path, typer.Option("--raw", help="folder with the raw files")],
        out: Annotated[Path, typer.Option("--out", help="store folder to write")],
        sessions: SessionsOpt = None,
        bin_size: Annotated[float, typer.Option(help="bin size (s)")] = 0.01,
        bin_by: Annotated[BinBy | None, typer.Option(
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
        from ..readers import prepare_store

        options = parse_overrides(sets, nested=("chain",))
        options.update(bin_size=bin_size, segment_s=segment_s, seed=seed)
        if bin_by is not None:
            options["bin_by"] = value(bin_by)
        if no_lfp:
            options["lfp"] = False
        path = prepare_store(str(fmt.value), raw, out, _sessions(sessions), force=force,
                             progress=typer.echo, **options)
        typer.echo(f"store: {path}")

    @app.command("export-nwb")
    def export_nwb_cmd(
        store: Annotated[Path, typer.Argument(help="store folder")],
        out: Annotated[Path, typer.Argument(help="folder for the .nwb files")],
        sessions: SessionsOpt = None,
        species: Annotated[str | None, typer.Option(
            help="subject species, Latin binomial (e.g. 'Macaca mulatta'); required unless the "
                 "source recorded it")] = None,
        sex: Annotated[Sex | None, typer.Option(
            help="subject sex (M, F, U unknown, O other); required unless recorded")] = None,
        age: Annotated[str | None, typer.Option(
            help="subject age as an ISO 8601 duration (e.g. P8Y); required unless recorded")] = None,
        subject_id: Annotated[str | None, typer.Option(
            help="subject id (default: the store's subject)")] = None,
        session_start: Annotated[str | None, typer.Option(
            help="session start, ISO 8601 with time zone (e.g. 2016-04-07T10:00:00+00:00); "
                 "required unless recorded")] = None,
    ) -> None:
        """Write each stored session as an NWB 2.x file that DANDI's checks accept (subject and
        start time required; LFP in its real unit; spikes as binned counts)."""
        from ..readers import export_nwb
        from ..readers.nwb_export import ExportMetadata

        meta = ExportMetadata(species=species, sex=None if sex is None else sex.value, age=age,
                              subject_id=subject_id, session_start=session_start)
        for p in export_nwb(store, out, _sessions(sessions), meta):
            typer.echo(f"wrote {p}")

    @app.command("export-temporaldata")
    def export_temporaldata_cmd(
        store: Annotated[Path, typer.Argument(help="store folder")],
        out: Annotated[Path, typer.Argument(help="folder for the .h5 files")],
        sessions: SessionsOpt = None,
    ) -> None:
        """Write each stored session as a temporaldata Data file (torch_brain's format; read
        back with prepare --format temporaldata)."""
        from ..readers import export_temporaldata

        for p in export_temporaldata(store, out, _sessions(sessions)):
            typer.echo(f"wrote {p}")

    @app.command("download")
    def download_cmd(
        dataset: Annotated[Dataset, typer.Argument(help="dataset to fetch")],
        to: Annotated[Path, typer.Option("--to", help="folder to download into")],
        sessions: SessionsOpt = None,
        base_url: Annotated[str, typer.Option(help="Zenodo (or mirror) base URL")] =
        "https://zenodo.org",
        record: Annotated[str, typer.Option(help="record of the .mat files")] = "583331",
        broadband_record: Annotated[list[str] | None, typer.Option(
            help="SESSION=RECORD of a session's broadband .nwb (repeatable)")] = None,
        timeout: Annotated[float, typer.Option(
            help="network timeout (s); a transfer slower than 1 kB/s over this long fails")] = 60.0,
        allow_host: Annotated[list[str] | None, typer.Option(
            "--allow-host", help="another host files may be fetched from (repeatable; default: "
                                 "only the --base-url host)")] = None,
        deadline: Annotated[float, typer.Option(
            help="seconds for the whole download (what was fetched resumes on the next "
                 "run)")] = 86400.0,
    ) -> None:
        """Download public raw files (Flint 2012 needs a login: prints the steps)."""
        from ..readers.download import download

        bb: dict[str, str] = {}
        for item in broadband_record or []:
            s, sep, r = item.partition("=")
            if not sep or not s or not r:
                raise ConfigError(f"--broadband-record '{item}' is not SESSION=RECORD")
            bb[s.strip()] = r.strip()
        paths = download(str(dataset.value), _sessions(sessions), to, base_url=base_url, record=record,
                         broadband_records=bb, timeout=timeout, progress=typer.echo,
                         bar=True, allow_hosts=allow_host, deadline=deadline)
        for p in paths:
            typer.echo(f"ok {p}")
