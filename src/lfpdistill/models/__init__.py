"""Session-tokenized masked transformers for spikes and LFP."""

from ..config import ModelConfig
from .checkpoint import CKPT_KEY, build_model, load_checkpoint, load_model, model_meta
from .tokenizer import PatchTokenizer, n_patches
from .transformer import (
    ModelOutput,
    NeuralTransformer,
    held_out_patterns,
    make_mask,
    masked_loss,
    spike_null_nll,
)

__all__ = [
    "CKPT_KEY", "build_model", "load_checkpoint", "load_model", "model_meta",
    "ModelConfig", "ModelOutput", "NeuralTransformer", "PatchTokenizer", "held_out_patterns",
    "make_mask",
    "masked_loss", "n_patches", "spike_null_nll",
]
