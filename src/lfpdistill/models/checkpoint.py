"""Checkpoint files: what a trained model is saved with, and how it is read back.

A checkpoint is a Lightning checkpoint (``state_dict`` of the training module, whose transformer
is always named ``model``) plus lfpdistill's metadata under :data:`CKPT_KEY`: the resolved model
config, the bin size, the stage and its extras. The session vocabulary travels inside the
weights (the tokenizer's extra state), so :func:`load_model` needs neither Lightning nor the
training code: only torch and this package's models.

A model can also be given as a packed folder (:mod:`.pack`: safetensors weights, config.json,
model card); :func:`load_checkpoint` reads it into the same dictionary, so everything that reads
a run reads a packed model too.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import CheckpointMismatchError
from .keys import CKPT_KEY  # re-exported: lfpdistill.models.checkpoint.CKPT_KEY
from .tokenizer import stored_vocab
from .transformer import NeuralTransformer

_VOCAB_KEY = "tokenizer._extra_state"
# weights renamed since the first checkpoints were written (old prefix -> new prefix)
_RENAMED = {"head.": "recon_head.", "decoder.": "recon_blocks."}


def model_meta(model: NeuralTransformer, bin_size: float, stage: str, **extra: Any) -> dict[str, Any]:
    """The metadata a checkpoint carries besides the weights."""
    return {"model_config": model.cfg.model_dump(), "vocab": model.vocab(), "bin_size": bin_size,
            "stage": stage, **extra}


def _model_config(meta: dict[str, Any]) -> ModelConfig:
    cfg = dict(meta["model_config"])
    # checkpoints written before the held-out read-out existed were trained, aligned and
    # evaluated on one-pass latents: keep that read-out rather than the new default
    cfg.setdefault("readout", "visible")
    if "decoder_layers" in cfg:  # the reconstruction branch's old name
        cfg["recon_layers"] = cfg.pop("decoder_layers")
    return ModelConfig(**cfg)


def build_model(meta: dict[str, Any], vocab: dict[str, int] | None = None) -> NeuralTransformer:
    """An untrained transformer shaped as the checkpoint described by ``meta`` (``vocab``: the
    session vocabulary stored with the weights; ``meta['vocab']`` for older checkpoints)."""
    return NeuralTransformer(_model_config(meta), dict(vocab if vocab is not None else meta["vocab"]))


def read_checkpoint_file(path: Path) -> Any:
    """The one place a checkpoint file is unpickled: tensors and plain values only
    (``weights_only=True``), so a shared checkpoint cannot run code when it is read. Everything
    lfpdistill and Lightning save is such values, so no allow-list is needed."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of odd files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:
            raise CheckpointMismatchError(f"checkpoint '{path}' is unreadable (not a torch "
                                          "checkpoint); re-run the training stage") from None
        raise CheckpointMismatchError(
            f"checkpoint '{path}' holds Python objects other than tensors and plain values "
            f"({found.group(1)}); it was not loaded because that could run code — use a "
            "checkpoint written by lfpdistill or re-run the training stage") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CheckpointMismatchError(f"checkpoint '{path}' is unreadable ({type(e).__name__}); "
                                      "re-run the training stage") from None


def _packed_folder(path: Path) -> bool:
    """A folder without model.ckpt but with a packed model's files (:mod:`.pack`)."""
    from .pack import CONFIG, WEIGHTS

    return (path.is_dir() and not (path / "model.ckpt").exists()
            and ((path / CONFIG).exists() or (path / WEIGHTS).exists()))


def weights_file(path: Path) -> Path:
    """The file holding the weights of a run folder (``model.ckpt``), a packed folder
    (``model.safetensors``) or a checkpoint file given directly: what identifies the model."""
    from .pack import WEIGHTS

    path = Path(path)
    if _packed_folder(path):
        return path / WEIGHTS
    return path / "model.ckpt" if path.is_dir() else path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint file written by lfpdistill (a Lightning checkpoint + our metadata), or
    a packed model folder (:func:`.pack.read_packed`: the same dictionary)."""
    path = Path(path)
    if _packed_folder(path):
        from .pack import read_packed

        return read_packed(path)
    if path.is_dir():
        path = path / "model.ckpt"
    if not path.exists():
        raise CheckpointMismatchError(
            f"no model checkpoint at '{path}'; pass a run directory made by lfpdistill pretrain/"
            "distill (it contains model.ckpt) or a folder from lfpdistill pack"
        )
    ckpt = read_checkpoint_file(path)
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt:
        raise CheckpointMismatchError(f"'{path}' is not an lfpdistill checkpoint")
    return ckpt


def _model_state(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The transformer's weights (prefix ``model.``), old names mapped to the current ones."""
    out = {}
    for k, v in state_dict.items():
        if not k.startswith("model."):
            continue
        k = k[len("model."):]
        for old, new in _RENAMED.items():
            if k.startswith(old):
                k = new + k[len(old):]
        out[k] = v
    return out


def load_model(path: Path, modality: str | None = None
               ) -> tuple[NeuralTransformer, dict[str, Any]]:
    """Load the transformer of any stage's checkpoint (every stage names it ``model``)."""
    ckpt = load_checkpoint(path)
    meta = ckpt[CKPT_KEY]
    state = _model_state(ckpt["state_dict"])
    stored = state.get(_VOCAB_KEY)
    model = build_model(meta, stored_vocab(stored) if stored is not None else None)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a weight of another shape than the description says
        shapes = str(e).count("size mismatch")
        raise CheckpointMismatchError(
            f"the weights of '{path}' do not fit its own model description ({shapes} weight(s) "
            "of another shape); re-run the stage, or pack the run again") from None
    missing = [k for k in missing if k != _VOCAB_KEY]  # checkpoints older than the stored vocab
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"checkpoint '{path}' does not match its own model description "
            f"(missing {len(missing)}, unexpected {len(unexpected)} weights); re-run the stage")
    model.eval()
    if modality is not None and model.modality != modality:
        raise CheckpointMismatchError(
            f"checkpoint '{path}' is a {model.modality} model but a {modality} model is needed here")
    return model, meta
