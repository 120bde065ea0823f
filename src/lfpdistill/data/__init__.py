"""Session store and window datasets."""

from .store import (
    LazySession,
    Store,
    atomic_path,
    load_session,
    open_store,
    options_hash,
    save_session,
    write_json_atomic,
    write_store,
)
from .windows import SessionBatchSampler, WindowDataset, collate_windows, split_runs

__all__ = [
    "LazySession", "SessionBatchSampler", "Store", "WindowDataset", "atomic_path",
    "collate_windows", "load_session", "open_store", "options_hash", "save_session",
    "split_runs", "write_json_atomic", "write_store",
]
