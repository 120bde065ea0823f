"""The session store: one HDF5 file per session plus a ``manifest.json``.

Layout of a store directory::

    STORE/
      manifest.json        # format, options that produced the data + their hash, session list
      <session>.h5         # one file per session (see :func:`save_session`)

Every file is written to a temporary name in the same directory and renamed into place, so an
interrupted write never leaves a file that loads; it gets the mode an ordinary file would (the
umask's, not ``mkstemp``'s 0600). The manifest records each session file's size and SHA-256: a
store whose files no longer match it (a re-write killed half-way, a replaced or damaged file)
is refused by :func:`open_store`, and :attr:`Store.content_key` gives a key that changes with the
files' content (what a study's cache keys on). Spikes are stored as the smallest unsigned
integer type that holds them (gzip-compressed), LFP as float32; both are chunked along time so a
window reads without loading the session (:class:`LazySession`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import StoreError
from ..session import SPLIT_NAMES, Session, check_unique_names, make_segments

FORMAT = "lfpdistill-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNK_BINS = 1000  # 10 s at 10 ms bins

_ARRAYS = ("velocity", "spikes", "lfp", "electrode_positions", "trials", "segments", "latents")


def options_hash(options: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able options dict (key order does not matter).

    >>> options_hash({"a": 1, "b": [1, 2]}) == options_hash({"b": [1, 2], "a": 1})
    True
    """
    blob = json.dumps(options, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (remembered per path, size, modification time and inode)."""
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def _file_record(path: Path) -> dict[str, Any]:
    """What the manifest records of a session file to recognise it later."""
    st = path.stat()
    return {"size": int(st.st_size), "sha256": file_digest(path),
            "mtime_ns": int(st.st_mtime_ns), "inode": int(st.st_ino)}


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600: shared folders could not read it
    finally:
        os.close(fd)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:  # a full disk, a folder at ``path``: name the file the user asked for
        if e.filename is None or str(e.filename) == str(tmp_path):
            e.filename = str(path)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and a file in it, then remove the file: a command that will
    write there at the end of its work finds out at the start whether it can (permission,
    read-only disk, a file in the way). Raises the ``OSError`` naming the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lfpdistill-write-check.", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` atomically (temp file + rename)."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _count_dtype(spikes: np.ndarray) -> np.dtype:
    peak = int(spikes.max()) if spikes.size else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if peak <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def save_session(session: Session, path: Path) -> Path:
    """Write one session to ``path`` (HDF5) atomically. Returns the path.

    The HDF5 file is built in memory and then written as bytes: a full disk is then an ordinary
    ``OSError`` of that write (HDF5 left with a half-written file can crash the process later).
    """
    path = Path(path)
    buf = io.BytesIO()
    _write_h5(session, buf)
    data = buf.getbuffer()
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(data)
    st = path.stat()
    _DIGESTS[(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)] = \
        hashlib.sha256(data).hexdigest()
    return path


def _write_h5(session: Session, target: Any) -> None:
    with h5py.File(target, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["name"] = session.name
        f.attrs["subject"] = session.subject
        f.attrs["bin_size"] = session.bin_size
        f.attrs["t0"] = session.t0
        f.attrs["meta"] = json.dumps(session.meta, default=_json_default)
        T = session.n_bins
        chunk = min(CHUNK_BINS, T)
        f.create_dataset("velocity", data=session.velocity, chunks=(chunk, 2))
        if session.spikes is not None:
            f.create_dataset(
                "spikes", data=session.spikes.astype(_count_dtype(session.spikes)),
                chunks=(chunk, session.n_units), compression="gzip", compression_opts=4,
                shuffle=True,
            )
            f.create_dataset("unit_ids", data=np.array(session.unit_ids, dtype=object),
                             dtype=h5py.string_dtype())
        if session.lfp is not None:
            f.create_dataset("lfp", data=session.lfp, chunks=(chunk, session.n_channels))
            f.create_dataset("channel_ids", data=np.array(session.channel_ids, dtype=object),
                             dtype=h5py.string_dtype())
        for key in ("electrode_positions", "trials", "segments", "latents"):
            val = getattr(session, key)
            if val is not None:
                f.create_dataset(key, data=val)
        f.attrs["complete"] = True


def _open_h5(path: Path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise StoreError(f"session file '{path}' does not exist; check the path or re-create the store")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StoreError(
            f"session file '{path}' is unreadable (truncated or corrupt: {str(e).splitlines()[0]}); "
            "delete it and write the session again"
        ) from None
    if f.attrs.get("format") != FORMAT or not f.attrs.get("complete", False):
        f.close()
        raise StoreError(f"'{path}' is not a complete lfpdistill session file; write it again")
    return f


def load_session(path: Path) -> Session:
    """Load a whole session from its HDF5 file."""
    with _open_h5(Path(path)) as f:
        try:
            arrays = {k: f[k][()] for k in _ARRAYS if k in f}
            if "velocity" not in arrays:
                raise KeyError("no 'velocity'")
            ids = {k: [s.decode() if isinstance(s, bytes) else str(s) for s in f[k][()]]
                   for k in ("unit_ids", "channel_ids") if k in f}
            meta = _session_meta(f.attrs.get("meta", "{}"), path)
            return Session(
                name=str(f.attrs["name"]), subject=str(f.attrs["subject"]),
                bin_size=float(f.attrs["bin_size"]), t0=float(f.attrs["t0"]), meta=meta,
                **arrays, **ids,
            )
        except (OSError, KeyError) as e:
            raise StoreError(
                f"session file '{path}' is damaged or incomplete ({type(e).__name__}: "
                f"{str(e).splitlines()[0]}); delete it and write the session again"
            ) from None


def _session_meta(raw: Any, path: Path) -> dict[str, Any]:
    """A session file's ``meta`` attribute: UTF-8 JSON text of an object."""
    problem = None
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if not isinstance(text, str):
            problem = f"a {type(raw).__name__}, not JSON text"
        else:
            meta = json.loads(text)
            if not isinstance(meta, dict):
                problem = f"a JSON {type(meta).__name__}, not an object"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except json.JSONDecodeError as e:
        problem = f"not JSON ({e})"
    except RecursionError:
        problem = "nested too deeply"
    if problem is not None:
        raise StoreError(f"session file '{path}' is damaged: its 'meta' attribute is {problem}; "
                         "delete it and write the session again")
    return meta


class LazySession:
    """A stored session read lazily: metadata up front, arrays sliced on demand.

    The HDF5 handle is opened on first use in each process (safe with DataLoader workers).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        with _open_h5(self.path) as f:
            try:
                self.name = str(f.attrs["name"])
                self.subject = str(f.attrs["subject"])
                self.bin_size = float(f.attrs["bin_size"])
                self.n_bins = int(f["velocity"].shape[0])
                self.n_units = int(f["spikes"].shape[1]) if "spikes" in f else 0
                self.n_channels = int(f["lfp"].shape[1]) if "lfp" in f else 0
                self.segments = f["segments"][()] if "segments" in f else None
            except (KeyError, IndexError, OSError) as e:
                raise StoreError(
                    f"session file '{path}' is damaged or incomplete ({type(e).__name__}: "
                    f"{str(e).splitlines()[0]}); delete it and write the session again") from None
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def has(self, modality: str) -> bool:
        return (self.n_units if modality == "spikes" else self.n_channels) > 0

    def _f(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = _open_h5(self.path)
            self._pid = os.getpid()
        return self._file

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        """Read rows ``start:stop`` of array ``key`` ('spikes', 'lfp', 'velocity', 'latents')."""
        f = self._f()
        if key not in f:
            raise StoreError(f"session '{self.name}' has no '{key}' in '{self.path}'")
        return f[key][start:stop]

    def load(self) -> Session:
        return load_session(self.path)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        state["_pid"] = None
        return state


@dataclass
class Store:
    """An opened store directory (see :func:`open_store`)."""

    root: Path
    manifest: dict[str, Any]
    _cache: dict[str, Session] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return [s["name"] for s in self.manifest["sessions"]]

    @property
    def options(self) -> dict[str, Any]:
        return self.manifest.get("options", {})

    @property
    def options_hash(self) -> str:
        return self.manifest.get("options_hash", "")

    @property
    def content_key(self) -> list[list[Any]]:
        """One ``[name, sha256]`` per session, from the manifest (checked against the files by
        :func:`open_store`). Stores written before checksums were recorded give ``[name, size,
        modification time]`` of each file instead: it changes whenever a file is re-written or
        replaced."""
        out: list[list[Any]] = []
        for e in self.manifest["sessions"]:
            if e.get("sha256"):
                out.append([e["name"], e["sha256"]])
            else:
                st = (self.root / e["file"]).stat()
                out.append([e["name"], int(st.st_size), int(st.st_mtime_ns)])
        return out

    def path(self, name: str) -> Path:
        for s in self.manifest["sessions"]:
            if s["name"] == name:
                return self.root / s["file"]
        raise StoreError(
            f"session '{name}' is not in store '{self.root}'; available: {', '.join(self.names)}"
        )

    def session(self, name: str, cache: bool = True) -> Session:
        """Load session ``name`` (cached in memory after the first load)."""
        if name in self._cache:
            return self._cache[name]
        path = self.path(name)
        self._check_content(name, path)
        s = load_session(path)
        self._check_name(name, s.name)
        if cache:
            self._cache[name] = s
        return s

    def lazy(self, name: str) -> LazySession:
        lazy = LazySession(self.path(name))
        self._check_name(name, lazy.name)
        return lazy

    def _check_content(self, name: str, path: Path) -> None:
        """The whole file against the manifest's checksum (once per process and file version):
        bytes damaged on disk leave size and modification time as they were, so
        :func:`open_store` alone would not see them, and they may still decode to finite
        numbers."""
        entry = next(e for e in self.manifest["sessions"] if e["name"] == name)
        if entry.get("sha256") and file_digest(path) != entry["sha256"]:
            raise StoreError(
                f"store '{self.root}': '{path.name}' (session '{name}') is not the file the "
                "manifest describes (content differs from the manifest's checksum) -- damaged on "
                "disk or replaced; re-create the store (simulate/prepare --out again)")

    def _check_name(self, listed: str, stored: str) -> None:
        if listed != stored:
            raise StoreError(
                f"store '{self.root}' lists session '{listed}' but its file '{self.path(listed).name}'"
                f" holds session '{stored}'; re-create the store")

    def select(self, patterns: str | Sequence[str] | None = None) -> list[str]:
        """Session names matching glob ``patterns`` (comma-separated string or list), store order.

        ``None``, ``""`` or ``"*"`` selects all. A pattern that matches nothing is an error.
        """
        if not self.names:
            raise StoreError(f"store '{self.root}' holds no sessions; write some with "
                             "'lfpdistill simulate' or 'lfpdistill prepare'")
        if patterns is None or patterns == "" or patterns == "*":
            return list(self.names)
        given = patterns
        if isinstance(patterns, str):
            patterns = [p.strip() for p in patterns.split(",") if p.strip()]
        if not patterns:
            raise StoreError(f"sessions '{given}' names no session; pass names or patterns "
                             "separated by commas, e.g. 'sim00,sim0[1-3]'")
        chosen: list[str] = []
        for pat in patterns:
            hits = [n for n in self.names if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                raise StoreError(
                    f"session pattern '{pat}' matches no session in '{self.root}'; "
                    f"available: {', '.join(self.names)}"
                )
            chosen.extend(h for h in hits if h not in chosen)
        return [n for n in self.names if n in chosen]

    def summary(self) -> list[dict[str, Any]]:
        """One row per session: units, channels, duration, mean rate, split sizes."""
        rows = []
        for entry in self.manifest["sessions"]:
            rows.append({k: entry[k] for k in (
                "name", "subject", "n_units", "n_channels", "duration_s", "mean_rate_hz",
                "train_s", "val_s", "test_s") if k in entry})
        return rows


def _session_entry(session: Session, file: str) -> dict[str, Any]:
    seg = session.segments
    assert seg is not None
    split_s = {
        f"{SPLIT_NAMES[c]}_s": round(float(((seg[:, 1] - seg[:, 0]) * (seg[:, 2] == c)).sum()
                                            * session.bin_size), 3)
        for c in SPLIT_NAMES
    }
    rate = (float(session.spikes.mean() / session.bin_size) if session.spikes is not None
            else None)
    return {
        "name": session.name, "file": file, "subject": session.subject,
        "n_bins": session.n_bins, "bin_size": session.bin_size,
        "n_units": session.n_units, "n_channels": session.n_channels,
        "duration_s": round(session.duration, 3),
        "mean_rate_hz": None if rate is None else round(rate, 3),
        "has_latents": session.latents is not None,
        **split_s,
    }


def write_store(sessions: Sequence[Session], out_dir: Path, options: dict[str, Any] | None = None,
                segment_s: float = 5.0, seed: int = 0,
                fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                append: bool = False) -> Store:
    """Write ``sessions`` as a store in ``out_dir`` (one HDF5 each + manifest), atomically.

    Sessions without ``segments`` get a deterministic split into whole ``segment_s`` segments
    (``fractions`` train/val/test, from ``seed``); existing segments are kept. ``options`` (what
    produced the data) are stored in the manifest together with their hash. With ``append``, the
    sessions are added to (or replace same-named sessions of) an existing store.
    """
    out = Path(out_dir)
    check_unique_names(sessions)
    if out.exists() and not out.is_dir():
        raise StoreError(f"store path '{out}' exists and is not a directory; choose another --out")
    _check_name_lengths(out, [s.name for s in sessions])
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out, [f"{s.name}.h5" for s in sessions] + [MANIFEST])
    options = dict(options or {})
    split_opts = {"segment_s": segment_s, "split_seed": seed, "split_fractions": list(fractions)}
    entries: list[dict[str, Any]] = []
    if append and (out / MANIFEST).exists():
        old = open_store(out).manifest
        entries = [e for e in old["sessions"] if e["name"] not in {s.name for s in sessions}]
        options = {**old.get("options", {}), **options}
    for s in sessions:
        if s.segments is None:
            s.segments = make_segments(s.n_bins, s.bin_size, segment_s, fractions, seed, s.name)
        fname = f"{s.name}.h5"
        save_session(s, out / fname)
        entries.append({**_session_entry(s, fname), **_file_record(out / fname)})
    all_opts = {**options, **split_opts}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "options": all_opts, "options_hash": options_hash(all_opts),
        "sessions": entries,
    }
    write_json_atomic(out / MANIFEST, manifest)
    return Store(out, manifest)


# atomic_path's temporary name adds ".", "." + 8 random characters and ".tmp" to the file name
_TMP_EXTRA = 14


def _check_name_lengths(out: Path, names: Sequence[str]) -> None:
    """Refuse session names whose files (``NAME.h5`` and its temporary name) the file system
    cannot hold, before anything is written."""
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    for name in names:
        size = len(f"{name}.h5".encode()) + _TMP_EXTRA
        if size > limit:
            raise StoreError(f"session name '{name[:40]}...' is too long for a file name here "
                             f"({size} of at most {limit} bytes with the temporary suffix); "
                             "rename the session")


def _remove_stale_temporaries(out: Path, names: Sequence[str]) -> None:
    """Temporary files of these names left by an earlier writer that was killed (or crashed
    when the disk was full): they never load, but they take space."""
    for entry in out.iterdir():
        for name in names:
            prefix = f".{name}."
            if entry.name.startswith(prefix) and ".tmp" in entry.name[len(prefix):] \
                    and entry.is_file():
                entry.unlink(missing_ok=True)


def open_store(store_dir: Path) -> Store:
    """Open a store directory, checking that its manifest and session files are present."""
    root = Path(store_dir)
    if not root.exists():
        raise StoreError(
            f"store directory '{root}' does not exist; create one with "
            f"'lfpdistill simulate --out {root}' or 'lfpdistill prepare'"
        )
    if not root.is_dir():
        raise StoreError(f"store path '{root}' is not a directory; pass the store folder")
    mpath = root / MANIFEST
    if not mpath.exists():
        raise StoreError(
            f"'{root}' is not an lfpdistill store (no {MANIFEST}); create one with "
            "'lfpdistill simulate' or 'lfpdistill prepare'"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise StoreError(f"manifest '{mpath}' is not UTF-8 text (byte {e.start}); re-create the "
                         "store") from None
    except RecursionError:
        raise StoreError(f"manifest '{mpath}' is nested too deeply to be a store manifest; "
                         "re-create the store") from None
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"manifest '{mpath}' is unreadable ({e}); re-create the store") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or \
            not isinstance(manifest.get("sessions"), list):
        raise StoreError(f"manifest '{mpath}' is not an lfpdistill store manifest")
    version = manifest.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION \
            or version < 1:
        raise StoreError(f"manifest '{mpath}' has format_version {version!r}; this lfpdistill "
                         f"reads stores up to version {FORMAT_VERSION} -- upgrade lfpdistill or "
                         "re-create the store")
    if not isinstance(manifest.get("options", {}), dict):
        raise StoreError(f"manifest '{mpath}': 'options' is a "
                         f"{type(manifest['options']).__name__}, not a mapping; re-create the store")
    names: set[str] = set()
    for i, entry in enumerate(manifest["sessions"]):
        _check_entry(root, mpath, i, entry)
        if entry["name"] in names:
            raise StoreError(f"manifest '{mpath}' lists session '{entry['name']}' twice; "
                             "re-create the store")
        names.add(entry["name"])
    return Store(root, manifest)


def _check_entry(root: Path, mpath: Path, i: int, entry: Any) -> None:
    """One manifest entry: well-formed, its file present and the one the manifest describes."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
            or not isinstance(entry.get("file"), str):
        raise StoreError(f"manifest '{mpath}': session entry {i} needs a 'name' and a 'file' "
                         "(strings); re-create the store")
    name, file = entry["name"], entry["file"]
    if not file or Path(file).name != file or file in (".", ".."):
        raise StoreError(f"manifest '{mpath}': session '{name}' names file '{file}' outside the "
                         "store folder; re-create the store")
    path = root / file
    if not path.is_file():
        raise StoreError(
            f"store '{root}' lists session '{name}' but '{file}' is missing; re-create the store")
    if "size" not in entry and "sha256" not in entry:
        return  # written before the manifest recorded its files: nothing to compare
    st = path.stat()
    same_file = (st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns")
                 and st.st_ino == entry.get("inode"))
    if same_file:
        return
    changed = (f"size {st.st_size} bytes, the manifest says {entry['size']}"
               if "size" in entry and st.st_size != entry["size"]
               else "content differs from the manifest's checksum"
               if entry.get("sha256") and file_digest(path) != entry["sha256"] else None)
    if changed:
        raise StoreError(
            f"store '{root}': '{file}' (session '{name}') is not the file the manifest describes "
            f"({changed}) -- a re-write that was interrupted, or a replaced or damaged file; "
            "re-create the store (simulate/prepare --out again)")
