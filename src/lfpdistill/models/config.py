"""Validated model configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    """Architecture and masking options of a masked neural transformer (spikes or LFP)."""

    model_config = ConfigDict(extra="forbid")

    modality: Literal["spikes", "lfp"] = Field("spikes", description="input modality")
    patch_size: int = Field(32, ge=1, description="channels per spatial patch (token)")
    embedder: Literal["linear", "count", "mlp", "filterbank"] = Field(
        "filterbank", description="shared patch embedder: linear (spikes: on log1p counts), "
        "count (spikes only: embedding of counts clamped to max_count), mlp (two layers), "
        "filterbank (per channel: value, learned temporal filters and their log local energy)")
    n_filters: int = Field(8, ge=1, description="filterbank embedder: temporal filters per channel")
    filter_bins: int = Field(15, ge=3, description="filterbank embedder: filter length (bins)")
    energy_bins: int = Field(9, ge=1, description="filterbank embedder: energy smoothing (bins)")
    max_count: int = Field(8, ge=1, description="counts are clamped to this for the count embedder")
    d_model: int = Field(128, ge=8, description="token / latent width")
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    recon_from: Literal["latent", "tokens"] = Field(
        "tokens", description="reconstruct each patch from the pooled per-timestep latent plus the "
        "patch's session embedding (a population-state bottleneck), or from its own output token")
    decoder_layers: int = Field(0, ge=0, description="transformer blocks of the reconstruction "
                                "decoder on top of the encoder (0: linear head on encoder outputs)")
    mlp_ratio: float = Field(2.0, gt=0, description="SwiGLU hidden width = mlp_ratio * d_model")
    dropout: float = Field(0.1, ge=0, lt=1, description="residual/MLP dropout")
    attn_dropout: float = Field(0.0, ge=0, lt=1, description="attention-probability dropout "
                                "(non-zero disables the fused CPU attention kernel: slow)")
    rope_base: float = Field(10000.0, gt=1, description="rotary encoding base (time index)")
    mask_ratio: float = Field(0.5, gt=0, lt=1, description="fraction of tokens hidden for MAE")
    mask_mode: Literal["random", "time", "patch", "mixed"] = Field(
        "mixed", description="random tokens, contiguous time spans, whole patches, or a random "
        "choice of the three per batch")
    span_bins: int = Field(10, ge=1, description="length of masked time spans (bins)")
    keep_ratio: float = Field(0.2, ge=0, lt=1, description="fraction of the scored (masked) tokens "
                              "left visible, BERT-style, so visible outputs are trained too")
    readout: Literal["visible", "held_out"] = Field(
        "held_out", description="how per-timestep latents are read out of the frozen model: "
        "'visible' (one pass, nothing hidden) or 'held_out' (each bin's latent is the mean over "
        "passes in which that bin, all patches, is hidden: the model's estimate of the population "
        "state from its context). Masked-autoencoder outputs at visible tokens largely copy their "
        "own noisy input; see docs/experiments.md")
    readout_block: int = Field(10, ge=1, le=1000, description="held_out read-out: bins per hidden "
                               "block (alternate blocks are hidden, like the training spans)")
    readout_shifts: int = Field(2, ge=1, le=16, description="held_out read-out: block phase "
                                "shifts; 2 x shifts passes, every bin hidden in `shifts` of them")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("d_model / n_heads must be even for rotary encoding")
        if self.embedder == "count" and self.modality != "spikes":
            raise ValueError("embedder 'count' is only for spikes; use 'linear' or 'mlp' for lfp")
        return self
