"""Packed models: a trained model as a folder that others can load and a model hub displays.

``lfpdistill pack RUN --out DIR`` writes::

    DIR/model.safetensors   every weight of the checkpoint (safetensors: tensors only, no pickle)
    DIR/config.json         the model config and lfpdistill's metadata (stage, bin size, the
                            session vocabulary, ...), the training options of the run, its
                            evaluation results, and the weights' SHA-256
    DIR/README.md           the model card: what it was trained on, its options and its R²

:func:`read_packed` turns such a folder back into the same dictionary a checkpoint file gives
(``state_dict`` + metadata under :data:`~lfpdistill.models.checkpoint.CKPT_KEY`), so
:func:`~lfpdistill.models.load_model` and every command that takes a run take a packed folder
too. Reading one needs only torch, safetensors and this package's models: not Lightning, not
the training code. The session vocabulary (which embedding row belongs to which session), which
a checkpoint stores as the tokenizer's extra state, is kept in config.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointMismatchError

#: the value of config.json's ``format``: what marks a folder as a packed lfpdistill model
PACK_FORMAT = "lfpdistill-packed-model"
PACK_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
#: the only files a packed folder holds
PACK_FILES = (WEIGHTS, CONFIG, CARD)
_VOCAB_KEY = "model.tokenizer._extra_state"


def is_packed(path: Path) -> bool:
    """Whether ``path`` is a folder written by :func:`pack_run` (its config.json says so)."""
    cfg = Path(path) / CONFIG
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == PACK_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------- reading
def read_packed(folder: Path) -> dict[str, Any]:
    """The checkpoint dictionary of a packed folder (``state_dict`` with the training module's
    weight names, metadata under ``lfpdistill``); a missing, unreadable or altered file is a
    one-line :class:`~lfpdistill.errors.CheckpointMismatchError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .keys import CKPT_KEY

    folder = Path(folder)
    cfg_path, weights = folder / CONFIG, folder / WEIGHTS
    if not cfg_path.is_file():
        raise CheckpointMismatchError(f"packed model '{folder}' has no {CONFIG}; pack the run "
                                      "again (lfpdistill pack RUN --out DIR)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointMismatchError(f"'{cfg_path}' is not valid JSON ({type(e).__name__}); "
                                      "pack the run again") from None
    if not isinstance(cfg, dict) or cfg.get("format") != PACK_FORMAT:
        raise CheckpointMismatchError(f"'{cfg_path}' is not the config of a packed lfpdistill "
                                      "model; pass a run folder or a folder from lfpdistill pack")
    if cfg.get("format_version") != PACK_VERSION:
        raise CheckpointMismatchError(
            f"packed model '{folder}' has format version {cfg.get('format_version')!r}; this "
            f"lfpdistill reads version {PACK_VERSION}: pack the run with this version")
    meta = cfg.get("lfpdistill")
    if (not isinstance(meta, dict) or not isinstance(meta.get("model_config"), dict)
            or not isinstance(meta.get("vocab"), dict) or "bin_size" not in meta):
        raise CheckpointMismatchError(f"'{cfg_path}' lacks the model description (lfpdistill: "
                                      "model_config, vocab, bin_size); pack the run again")
    if not weights.is_file():
        raise CheckpointMismatchError(f"packed model '{folder}' has no {WEIGHTS}; pack the run "
                                      "again")
    if _sha256(weights) != cfg.get("weights_sha256"):
        raise CheckpointMismatchError(f"'{weights}' does not match the checksum in {CONFIG} (the "
                                      "file was changed or damaged); pack the run again")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointMismatchError(f"'{weights}' is unreadable ({type(e).__name__}); pack the "
                                      "run again") from None
    return {"state_dict": state, CKPT_KEY: meta, "packed": True}
