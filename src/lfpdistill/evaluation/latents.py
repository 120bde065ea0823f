"""Latents for whole sessions: centre-crop stitched windows of a model's per-timestep output.

Stitching: inside each contiguous run of one split, windows of ``L`` bins are placed with stride
``L/2`` (the last one shifted to end at the run's end) and every bin takes its latent from the
window whose centre is nearest — a *centre crop*: each bin gets exactly one latent, computed with
context on both sides wherever the run allows. Runs shorter than ``L`` are encoded as one shorter
window. No window crosses a split boundary.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.windows import split_runs
from ..errors import ConfigError, DataValidationError
from ..session import SPLITS, Session


def stitch_plan(a: int, b: int, L: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(start, stop, keep_from, keep_to)`` covering run ``[a, b)`` with centre crops.

    >>> stitch_plan(0, 10, 4)
    [(0, 4, 0, 3), (2, 6, 3, 5), (4, 8, 5, 7), (6, 10, 7, 10)]
    >>> stitch_plan(0, 3, 4)
    [(0, 3, 0, 3)]
    """
    if b - a <= L:
        return [(a, b, a, b)]
    stride = max(1, L // 2)
    starts = list(range(a, b - L + 1, stride))
    if starts[-1] + L < b:
        starts.append(b - L)
    centres = np.array(starts, dtype=float) + L / 2
    # boundaries between consecutive windows' regions: midpoints of their centres
    mids = [int(np.ceil((centres[i] + centres[i + 1]) / 2 - 0.5)) for i in range(len(starts) - 1)]
    bounds = [a, *mids, b]
    return [(s, s + L, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def compute_latents(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray,
                    segments: np.ndarray, window: int, batch_size: int = 64,
                    device: torch.device | None = None) -> np.ndarray:
    """Apply ``fn([B, L, C]) -> [B, L, D]`` over a whole session with centre-crop stitching.

    ``x`` is ``[T, C]``; returns ``[T, D]`` float32 (every bin of every split filled once).
    """
    T = x.shape[0]
    plans: list[tuple[int, int, int, int]] = []
    for split in SPLITS:
        for a, b in split_runs(segments, split):
            plans.extend(stitch_plan(a, b, window))
    out: np.ndarray | None = None
    filled = np.zeros(T, dtype=bool)
    # group windows of equal length into batches
    by_len: dict[int, list[tuple[int, int, int, int]]] = {}
    for p in plans:
        by_len.setdefault(p[1] - p[0], []).append(p)
    for _, group in sorted(by_len.items()):
        for k in range(0, len(group), batch_size):
            chunk = group[k:k + batch_size]
            xb = torch.from_numpy(np.stack([x[s:e] for s, e, _, _ in chunk]).astype(np.float32))
            if device is not None:
                xb = xb.to(device)
            z = fn(xb).float().cpu().numpy()
            if out is None:
                out = np.zeros((T, z.shape[-1]), dtype=np.float32)
            for (s, _, kf, kt), zb in zip(chunk, z, strict=True):
                out[kf:kt] = zb[kf - s:kt - s]
                filled[kf:kt] = True
    if out is None or not filled.all():
        raise DataValidationError("session segments do not cover every bin; re-create the store")
    return out


def session_latents(model: Any, session: Session, window_s: float, as_session: str | None = None,
                    batch_size: int = 64, readout: str | None = None) -> np.ndarray:
    """Per-timestep latents ``[T, d]`` of a NeuralTransformer for every bin of ``session``.

    ``as_session`` reads the data with another session's embeddings (generalisation mode a);
    ``readout`` overrides the model's read-out (``visible`` or ``held_out``).
    """
    modality = model.modality
    x = getattr(session, modality)
    if x is None:
        raise DataValidationError(f"session '{session.name}' has no {modality} for a {modality} model")
    name = as_session or session.name
    window = max(1, int(round(window_s / session.bin_size)))
    model.eval()
    dev = _model_device(model)

    def fn(xb: torch.Tensor) -> torch.Tensor:
        widths = torch.full((xb.shape[0],), xb.shape[2], dtype=torch.long)
        return model.encode(xb, [name] * xb.shape[0], widths, readout=readout)

    return compute_latents(fn, x, require_segments(session), window, batch_size, dev)


def require_segments(session: Session) -> np.ndarray:
    """The session's split segments, or one line saying the session has none."""
    if session.segments is None:
        raise DataValidationError(
            f"session '{session.name}' has no split segments (its file lacks 'segments'); "
            "re-create the store (lfpdistill prepare/simulate), which splits every session")
    return session.segments


def lag_latents(latents: np.ndarray, lag_bins: int) -> np.ndarray:
    """Latents delayed by ``lag_bins``: row ``t`` holds ``latents[t - lag_bins]`` (the first rows
    repeat row 0), so a probe reads velocity at ``t`` from the neural state ``lag`` earlier.

    >>> lag_latents(np.arange(5.0)[:, None], 2).ravel().tolist()
    [0.0, 0.0, 0.0, 1.0, 2.0]
    """
    if lag_bins < 0:
        raise ConfigError(f"probe lag must be >= 0 bins (got {lag_bins})")
    if lag_bins == 0:
        return latents
    if lag_bins >= latents.shape[0]:
        raise ConfigError(f"probe lag of {lag_bins} bins is longer than the session "
                          f"({latents.shape[0]} bins)")
    return np.concatenate([np.repeat(latents[:1], lag_bins, axis=0), latents[:-lag_bins]])


#: most bytes one array of a latents file may declare (checked before it is read): 16 GiB, the
#: latents of about 4 days of 10-ms bins at 128 dimensions
MAX_LATENT_BYTES = 16 << 30


def load_latents(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a latents ``.npz`` (``lfpdistill embed``), each checked before it is read:
    a plain numeric array whose declared size fits in its zip member and in
    :data:`MAX_LATENT_BYTES` (a damaged or hostile header cannot make it allocate more)."""
    path = Path(path)

    def bad(what: str) -> DataValidationError:
        return DataValidationError(f"latents file '{path}' is unreadable ({what}); run "
                                   "lfpdistill embed first")

    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise bad(f"member '{info.filename[:80]}' is not an array")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(f, max_header_size=10_000)
                    if dtype.hasobject or dtype.kind not in "fiu":
                        raise bad(f"'{info.filename[:-4]}' holds {dtype}, not numbers")
                    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if nbytes > MAX_LATENT_BYTES:
                        raise bad(f"'{info.filename[:-4]}' declares shape {list(shape)}, "
                                  f"{nbytes / 2**30:.3g} GiB, more than the limit of "
                                  f"{MAX_LATENT_BYTES / 2**30:g} GiB")
                    if nbytes > info.file_size:
                        raise bad(f"'{info.filename[:-4]}' declares shape {list(shape)} "
                                  f"({nbytes} bytes) but holds {info.file_size} bytes")
                with z.open(info) as f:  # read_array reads the header again
                    out[info.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
    except DataValidationError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise bad(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    return out
