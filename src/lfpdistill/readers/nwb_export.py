"""Store -> NWB 2.x export that DANDI's checks accept (``lfpdistill export-nwb``).

Each stored session becomes ``OUT/<name>.nwb``:

- **subject** (species, sex, age, subject id) and **session start time**: what the source
  recorded (an NWB source's ``Subject`` and ``session_start_time``, kept in the session's
  ``meta`` by the NWB reader), else what the command line gives (:class:`ExportMetadata`);
  given values win over recorded ones. A field known from neither is refused before any file is
  written, in one line naming the options to pass. The store's ``subject`` names the subject
  unless it is ``unknown``.
- **LFP** on the bin grid, written with the unit it really has: LFP z-scored per channel (the
  LFP chain's default and the simulator's output) is unitless, so it is a plain ``TimeSeries``
  ``processing/ecephys/LFP`` with unit ``z-score`` (NWB's ``ElectricalSeries`` is always in
  volts); LFP in volts is an ``ElectricalSeries`` in ``processing/ecephys/LFP/LFP``. The
  description says how it was made (the store's LFP-chain options or the simulator). Channel
  names and positions are in the electrodes table, one row per LFP column, in order.
- **spikes**: the store holds counts per bin, not spike times, so they are written as what they
  are, a ``TimeSeries`` ``processing/ecephys/spike_counts`` ``[bins, units]`` (unit ``spikes``,
  one row per bin, timestamped at the bin centre) with the unit names in the table
  ``processing/ecephys/spike_count_units`` (row ``i`` = column ``i``); there is no ``Units``
  table, as there are no spike times to put in it (none are invented).
- **velocity** ``processing/behavior/velocity`` and **trials** as the trials table.

Every series at the bin rate starts at the first bin centre, so :mod:`.nwb` reads the file back
on exactly the same bins (``lfpdistill prepare --format nwb``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from ..session import Session

PROCESSED_MARK = "lfpdistill:"
LFP_MARK = f"{PROCESSED_MARK} processed LFP on the bin grid"
COUNTS_MARK = f"{PROCESSED_MARK} binned spike counts"
UNITS_TABLE = "spike_count_units"
SEXES = ("M", "F", "U", "O")
ZSCORE_UNIT = "z-score"
_AGE = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")


@dataclass(frozen=True)
class ExportMetadata:
    """What the command line gives for every exported session (None: take the source's)."""

    species: str | None = None
    sex: str | None = None
    age: str | None = None
    subject_id: str | None = None
    session_start: str | datetime | None = None


_HINTS = {"species": "--species 'Macaca mulatta'", "sex": "--sex M", "age": "--age P8Y",
          "subject_id": "--subject-id NAME",
          "session_start": "--session-start 2016-04-07T10:00:00+00:00"}
_NAMES = {"species": "subject species", "sex": "subject sex", "age": "subject age",
          "subject_id": "subject id", "session_start": "session start time"}


def parse_start(value: str | datetime, what: str) -> datetime:
    """A timezone-aware start time from an ISO 8601 string (or datetime)."""
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ConfigError(f"{what} '{value}' is not an ISO 8601 date and time; pass e.g. "
                              "2016-04-07T10:00:00+00:00") from None
    if when.tzinfo is None:
        raise ConfigError(f"{what} '{value}' has no time zone; add one, e.g. "
                          f"{when.isoformat()}+00:00")
    return when


def check_given(given: ExportMetadata) -> ExportMetadata:
    """Validate the command line's values (before any session is read)."""
    if given.sex is not None and given.sex not in SEXES:
        raise ConfigError(f"--sex '{given.sex}' must be one of {', '.join(SEXES)} "
                          "(male, female, unknown, other)")
    if given.age is not None and not all(_AGE.match(p) for p in given.age.split("/")):
        raise ConfigError(f"--age '{given.age}' is not an ISO 8601 duration; pass e.g. P8Y, "
                          "P90D or P7Y6M")
    if given.species is not None and not given.species.strip():
        raise ConfigError("--species is empty; pass a Latin binomial, e.g. 'Macaca mulatta'")
    if given.subject_id is not None and not given.subject_id.strip():
        raise ConfigError("--subject-id is empty")
    if given.session_start is not None:
        given = replace(given, session_start=parse_start(given.session_start, "--session-start"))
    return given


def resolve(session: Session, given: ExportMetadata) -> dict[str, Any]:
    """Subject fields and start time of ``session``: given, else recorded, else refused."""
    recorded = dict(session.meta.get("nwb_subject") or {})
    if session.subject and session.subject != "unknown":
        recorded.setdefault("subject_id", session.subject)
    if session.meta.get("session_start_time"):
        recorded["session_start"] = session.meta["session_start_time"]
    out: dict[str, Any] = {}
    for key in ("species", "sex", "age", "subject_id", "session_start"):
        value = getattr(given, key)
        out[key] = value if value is not None else (recorded.get(key) or None)
    missing = [k for k, v in out.items() if v is None]
    if missing:
        names = [_NAMES[k] for k in missing]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        raise ConfigError(
            f"session '{session.name}' records no {listed}, which DANDI requires; pass "
            + " ".join(_HINTS[k] for k in missing) + " (with your values)")
    out["session_start"] = parse_start(out["session_start"], f"session '{session.name}' start time")
    return out


def lfp_description(session: Session, store_options: dict[str, Any]) -> tuple[str, str]:
    """``(unit, description)`` of a session's stored LFP, from how the store made it."""
    meta = session.meta
    unit = meta.get("lfp_unit")
    chain = store_options.get("chain") if isinstance(store_options.get("chain"), dict) else None
    if store_options.get("source") == "simulate" or meta.get("source") == "simulate":
        how = ("simulated by the lfpdistill simulator (docs/simulator.md): common average "
               "referenced, then z-scored per channel")
        unit = unit or ZSCORE_UNIT
    elif chain is not None and not str(meta.get("lfp_processing", "")).startswith("taken as"):
        steps = ", ".join(f"{k}={v}" for k, v in chain.items())
        how = f"the lfpdistill LFP chain ({steps}) applied to the source's wide-band signal"
        if unit is None:
            unit = ZSCORE_UNIT if chain.get("zscore", True) else "volts"
    else:
        how = "as found in the source (already processed on the bin grid)"
    unit = unit or ZSCORE_UNIT
    if unit == ZSCORE_UNIT:
        text = (f"LFP, one value per {session.bin_size * 1000:g} ms bin centred on its timestamp, "
                f"{how}; z-scored per channel, so unitless (each channel has mean 0 and standard "
                "deviation 1 over the session; the scale in volts is not kept)")
    else:
        text = (f"LFP, one value per {session.bin_size * 1000:g} ms bin centred on its timestamp, "
                f"{how}; unit {unit}")
    return unit, text


def write_session_nwb(session: Session, path: Path, info: dict[str, Any],
                      store_options: dict[str, Any] | None = None) -> Path:
    """Write one :class:`Session` as an NWB 2.x file (atomically); ``info`` from :func:`resolve`."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.ecephys import LFP
    from pynwb.file import Subject

    from ..data import atomic_path

    s = session
    b = s.bin_size
    centres0 = s.t0 + b / 2
    source = str(s.meta.get("source") or (store_options or {}).get("source") or "a store")
    nwb = NWBFile(
        session_description=(f"lfpdistill session {s.name} ({source}): velocity, "
                             f"{'binned spike counts' if s.spikes is not None else 'no spikes'}"
                             f"{' and LFP' if s.lfp is not None else ''} on a {b * 1000:g} ms "
                             "bin grid"),
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"lfpdistill/{s.name}/{s.t0}")),
        session_start_time=info["session_start"], session_id=s.name,
        experiment_description=("paired spiking and local field potential recordings with "
                                "movement velocity, prepared by lfpdistill for decoding"),
        keywords=["lfpdistill", "local field potential", "spike counts", "velocity decoding"],
        subject=Subject(subject_id=str(info["subject_id"]), species=str(info["species"]),
                        sex=str(info["sex"]), age=str(info["age"]),
                        description=f"subject of session {s.name}"),
    )
    beh = nwb.create_processing_module("behavior", "behaviour on the bin grid")
    beh.add(TimeSeries(
        name="velocity", data=s.velocity, unit=str(s.meta.get("velocity_units", "unknown")),
        starting_time=centres0, rate=1.0 / b,
        description="velocity (x, y), one value per bin centred on its timestamp",
        comments=f"{PROCESSED_MARK} velocity per bin",
    ))
    ecephys = None
    if s.lfp is not None or s.spikes is not None:
        ecephys = nwb.create_processing_module("ecephys", "LFP and spike counts on the bin grid")
    if s.lfp is not None:
        assert ecephys is not None
        unit, text = lfp_description(s, store_options or {})
        device = nwb.create_device(name="array", description="recording array")
        group = nwb.create_electrode_group(name="array", description="all channels",
                                           location="unknown", device=device)
        nwb.add_electrode_column(name="channel_name", description="lfpdistill channel id")
        pos = s.electrode_positions
        for c, cid in enumerate(s.channel_ids or []):
            kw: dict[str, Any] = {}
            if pos is not None:
                kw.update(rel_x=float(pos[c, 0]), rel_y=float(pos[c, 1]))
                if pos.shape[1] > 2:
                    kw["rel_z"] = float(pos[c, 2])
            nwb.add_electrode(group=group, location="unknown", channel_name=cid, **kw)
        if unit == "volts":
            region = nwb.create_electrode_table_region(list(range(s.n_channels)), "all channels")
            container = LFP(name="LFP")
            ecephys.add(container)
            container.create_electrical_series(
                name="LFP", data=s.lfp, electrodes=region, starting_time=centres0, rate=1.0 / b,
                description=text, comments=LFP_MARK, filtering=text,
            )
        else:
            ecephys.add(TimeSeries(
                name="LFP", data=s.lfp, unit=unit, starting_time=centres0, rate=1.0 / b,
                description=f"{text}; column i is row i of the electrodes table",
                comments=LFP_MARK,
            ))
    if s.spikes is not None:
        assert ecephys is not None
        from hdmf.common import DynamicTable

        table = DynamicTable(name=UNITS_TABLE, description="the units (or channels) whose spikes "
                             "spike_counts counts: row i is column i")
        table.add_column(name="unit_name", description="lfpdistill unit id")
        for uid in s.unit_ids or []:
            table.add_row(unit_name=uid)
        ecephys.add(table)
        ecephys.add(TimeSeries(
            name="spike_counts", data=s.spikes, unit="spikes", starting_time=centres0,
            rate=1.0 / b, resolution=1.0,
            description=(f"number of spikes in each {b * 1000:g} ms bin (timestamped at its "
                         "centre); column i is row i of the table {UNITS_TABLE}. The source's spike "
                         "times are not kept by lfpdistill, so none are written"),
            comments=COUNTS_MARK,
        ))
    if s.trials is not None:
        for a, z in s.trials:
            nwb.add_trial(start_time=s.t0 + int(a) * b, stop_time=s.t0 + int(z) * b)
    path = Path(path)
    with atomic_path(path, suffix=".nwb") as tmp, NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwb)
    return path


def export_nwb(store_dir: Path, out_dir: Path, sessions: list[str] | None = None,
               metadata: ExportMetadata | None = None) -> list[Path]:
    """Write every (or each selected) session of the store as ``OUT/<name>.nwb``.

    Subject fields and start times are resolved for every session before the first file is
    written, so a missing one leaves ``out_dir`` as it was."""
    from ..data import open_store

    given = check_given(metadata or ExportMetadata())
    store = open_store(Path(store_dir))
    names = store.select(sessions) if sessions else store.names
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StoreError(f"output '{out_dir}' exists and is not a folder")
    infos = {}
    for name in names:
        s = store.session(name, cache=False)
        infos[name] = resolve(s, given)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        s = store.session(name, cache=False)
        paths.append(write_session_nwb(s, out_dir / f"{name}.nwb", infos[name], store.options))
    return paths


def nwb_subject_meta(nwb: Any) -> dict[str, Any]:
    """What an NWB file records of its subject and start (for :func:`resolve` after a store)."""
    out: dict[str, Any] = {}
    subj = nwb.subject
    if subj is not None:
        rec = {k: getattr(subj, k, None) for k in ("species", "sex", "age")}
        rec = {k: str(v) for k, v in rec.items() if v not in (None, "")}
        if rec:
            out["nwb_subject"] = rec
    start = getattr(nwb, "session_start_time", None)
    if isinstance(start, datetime):
        out["session_start_time"] = start.isoformat()
    return out

