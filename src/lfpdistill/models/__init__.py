"""Session-tokenized masked transformers for spikes and LFP."""

from .config import ModelConfig
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
    "ModelConfig", "ModelOutput", "NeuralTransformer", "PatchTokenizer", "held_out_patterns",
    "make_mask",
    "masked_loss", "n_patches", "spike_null_nll",
]
