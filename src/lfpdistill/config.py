"""Every validated configuration of lfpdistill, in one module that imports no torch.

- :class:`ModelConfig` -- architecture and masking of a masked neural transformer;
- :class:`TrainConfig` -- optimisation, data loading and devices of any training stage;
- :class:`DistillConfig` -- the distillation objective;
- :class:`SimConfig` / :class:`SimLfpConfig` -- the built-in simulator;
- :class:`ExperimentConfig` -- a whole study (``lfpdistill run CONFIG.yaml``), read by
  :func:`load_config`;
- :func:`apply_overrides` -- the one parser of ``key=value`` command-line overrides.

Unknown or mistyped keys are rejected with the key's full path. Why one module of ~480 lines:
every option a user can set is here, in one place, so that the CLI, the Python API and the
experiment YAML share one definition and one set of defaults. Importing this module must stay
cheap (the CLI and the experiment config read it before deciding to load torch); a test checks
that it imports neither torch nor Lightning.
"""

from __future__ import annotations

import json
import math
import os
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

#: Kinematic latent columns of the simulator (always first), then ``rot1, rot2`` and ``slow0..``.
LATENT_NAMES_KINEMATIC: tuple[str, ...] = ("vx", "vy", "speed", "ax", "ay")


#: the largest seed: every random generator the seed reaches (numpy, torch, Lightning) takes a
#: 32-bit unsigned seed
SEED_MAX = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


def _numeric(annotation: Any) -> bool:
    """Whether a field takes a number and not a boolean (``int``, ``float``, unions of them)."""
    union = get_origin(annotation) in (Union, types.UnionType)
    kinds = get_args(annotation) if union else (annotation,)
    return bool not in kinds and any(k in (int, float) for k in kinds)


def _numbers_not_booleans(cls: type[BaseModel], data: Any) -> Any:
    """Refuse ``true``/``false`` for a number: pydantic would read ``max_epochs=true`` as 1."""
    if isinstance(data, dict):
        for key, value in data.items():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if isinstance(value, bool) and field is not None and _numeric(field.annotation):
                raise ValueError(f"{key}={str(value).lower()} is a boolean; {key} takes a number")
    return data


# ---------------------------------------------------------------------------------- models
class ModelConfig(BaseModel):
    """Architecture and masking options of a masked neural transformer (spikes or LFP)."""

    model_config = ConfigDict(extra="forbid")

    _no_booleans = model_validator(mode="before")(classmethod(_numbers_not_booleans))

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
    recon_layers: int = Field(0, ge=0, description="transformer blocks of the reconstruction "
                              "branch on top of the encoder (0: linear head on encoder outputs)")
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
    causal: bool = Field(False, description="a streaming model: every token attends to its own "
                         "and earlier bins only (within context_bins) and the filter-bank's temporal "
                         "filters see the past only; read out in one pass (readout is set to "
                         "'visible')")
    context_bins: int = Field(100, ge=1, le=10000, description="causal models: bins of past "
                              "context, the present included, that attention reaches; also the "
                              "input window of a streamed decoder (lfpdistill export / decode)")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("d_model / n_heads must be even for rotary encoding")
        if self.embedder == "count" and self.modality != "spikes":
            raise ValueError("embedder 'count' is only for spikes; use 'linear' or 'mlp' for lfp")
        if self.causal and self.readout != "visible":
            # hiding blocks of bins is a bidirectional read-out; a streamed bin is read in one pass
            self.readout = "visible"
        return self


# ---------------------------------------------------------------------------------- training
class TrainConfig(BaseModel):
    """Optimisation and data-loading options shared by all training stages."""

    model_config = ConfigDict(extra="forbid")

    _no_booleans = model_validator(mode="before")(classmethod(_numbers_not_booleans))

    window_s: float = Field(1.0, gt=0, description="window length (s)")
    stride_s: float | None = Field(0.5, description="training window stride (s); None = window")
    batch_size: int = Field(32, ge=1)
    batch_mode: Literal["mixed", "per_session"] = "mixed"
    max_epochs: int = Field(30, ge=1)
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: no limit)")
    train_seconds: float | None = Field(
        None, gt=0, description="train on only this many seconds of each session's training "
        "segments (whole segments drawn at random with the run's seed); None: all of them")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_frac: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    patience: int = Field(6, ge=1, description="early-stopping patience (validation epochs)")
    keep: Literal["best", "last"] = Field(
        "best", description="which weights become model.ckpt: the best validation loss, or the "
        "last (e.g. distillation, whose validation alignment is dominated by teacher dimensions "
        "the LFP cannot predict and so picks epochs by noise)")
    seed: Seed = Field(0, description=f"random seed, 0 to {SEED_MAX}")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = Field(1, description="number of devices (or 'auto'; on a GPU also a "
                               "comma-separated list of device indices)")
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="Lightning strategy, e.g. 'ddp' for several devices")
    precision: str = Field("auto", description="'auto' = bf16-mixed on GPU, 32-true on CPU")
    num_workers: int = Field(0, ge=0)
    checkpoint_every_steps: int = Field(200, ge=1, description="also save last.ckpt every N steps")
    progress: bool = True
    limit_val_batches: float | int = 1.0

    @model_validator(mode="after")
    def _check_devices(self) -> TrainConfig:
        """Options Lightning would reject only after the data is loaded (or, for ``devices`` on
        a CPU, accept by starting one process per device until memory runs out)."""
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps={self.max_steps}: use -1 (no limit) or a positive count")
        if self.stride_s is not None and not self.stride_s > 0:
            raise ValueError(f"stride_s={self.stride_s} must be positive (or null: the window)")
        if not self.limit_val_batches > 0:
            raise ValueError(f"limit_val_batches={self.limit_val_batches} must be positive")
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"precision '{self.precision}' is not one of "
                             f"{', '.join(TRAIN_PRECISIONS)}")
        if self.strategy not in TRAIN_STRATEGIES:
            raise ValueError(f"strategy '{self.strategy}' is not one of "
                             f"{', '.join(TRAIN_STRATEGIES)}")
        check_devices(self.devices, self.accelerator)
        if self.accelerator == "cpu" and self.precision in ("16-mixed", "16-true"):
            raise ValueError(f"precision '{self.precision}' needs a GPU; on a CPU use 32-true "
                             "or bf16-mixed")
        return self


#: Lightning precisions a run may ask for ('auto': bf16-mixed on a GPU, 32-true on a CPU).
TRAIN_PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
#: Lightning strategies that work without extra packages.
TRAIN_STRATEGIES = ("auto", "single_device", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook",
                    "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false",
                    "fsdp", "fsdp_cpu_offload")


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity; all cores where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_devices(devices: int | str, accelerator: str) -> None:
    """``devices`` must be 'auto', a positive count or (on a GPU) a list of indices such as
    '0,1'; on a CPU a count of at most the usable cores (each device is a process)."""
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)  # "2": a count, as Lightning reads it
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isdigit() for p in parts) or not text:
            raise ValueError(f"devices '{devices}' must be 'auto', a positive count or GPU indices "
                             "such as '0,1'")
        if accelerator == "cpu":
            raise ValueError(f"devices '{devices}' lists GPU indices but accelerator is cpu; "
                             "give a count")
        return
    if devices < 1:
        raise ValueError(f"devices={devices} must be at least 1 (or 'auto')")
    cores = usable_cpus()
    if accelerator == "cpu" and devices > cores:
        raise ValueError(f"devices={devices} on the CPU starts {devices} training processes but "
                         f"only {cores} cores are usable; use devices={cores} or fewer")


class DistillConfig(BaseModel):
    """Options of the distillation objective."""

    model_config = ConfigDict(extra="forbid")

    _no_booleans = model_validator(mode="before")(classmethod(_numbers_not_booleans))

    align_loss: Literal["mse", "cosine", "mse+cosine"] = Field(
        "mse", description="alignment between (projected) student and normalised teacher latents")
    target_norm: Literal["standardize", "layernorm", "none"] = Field(
        "none", description="teacher latent normalisation: per-dimension z-score with "
        "training-set statistics, per-timestep layer norm, or none (keeps the teacher's own "
        "variance weighting: low-variance, mostly-noise dimensions do not dominate; see "
        "docs/experiments.md)")
    projection: Literal["none", "linear", "mlp"] = Field(
        "linear", description="head from student latent to teacher latent space")
    target_pcs: int = Field(0, ge=0, description="align only the top-k principal components of the "
                            "teacher latents (fit on the training bins of the distillation sessions): "
                            "the population state shared by many units, without the teacher's "
                            "low-variance dimensions that LFP cannot predict; 0 keeps every dimension")
    target_basis: Literal["pca", "lfp"] = Field(
        "pca", description="which target_pcs directions of the teacher latents the student is "
        "aligned to: pca, the directions of most variance; lfp, the directions of most variance "
        "that the LFP predicts on bins it was not fit on (reduced-rank ridge: a Wiener filter "
        "from LMP + band-power features fit on the first 80 % of each session's training bins, "
        "the principal axes of its predictions on the last 20 %), so the student is not asked "
        "for teacher dimensions it can only memorise; needs target_pcs and cache_teacher")
    target_lag_s: float = Field(0.0, ge=0, le=1.0, description="align the student at bin t to the "
                                "teacher latent at t - lag: the population state that drives the "
                                "movement at t (motor cortex leads the hand by ~100 ms); needs "
                                "cache_teacher")
    target_smooth_s: float = Field(0.0, ge=0, le=1.0, description="Gaussian smoothing (sd, s) "
                                   "of the teacher latents along time, within each split segment: "
                                   "keeps the population state and drops the fast, spike-sampling "
                                   "part that the LFP cannot predict; needs cache_teacher")
    target_center: Literal["pooled", "session"] = Field(
        "pooled", description="centre of the teacher latents before the PCs and statistics: the "
        "mean over the training bins of all distillation sessions together, or each session's "
        "own training-bin mean (the targets then hold each session's dynamics, not the offsets "
        "between sessions, which the LFP cannot predict within a session); session needs "
        "cache_teacher")
    target_weighting: Literal["uniform", "lfp_predictable"] = Field(
        "uniform", description="weight of each target dimension in the alignment: uniform, or "
        "its predictability from the LFP (held-out R2 of a ridge from LMP + band-power features, "
        "fit and scored on two contiguous parts of the training bins, floored at 0), so the student "
        "does not spend itself on teacher dimensions the LFP does not carry")
    input_dropout: float = Field(0.0, ge=0, lt=1, description="during training, each window of "
                                 "the alignment pass drops this fraction of its LFP electrodes "
                                 "at random (zeroed, the rest scaled by 1/(1-p)): the student "
                                 "cannot fit the teacher's targets from a few electrodes' "
                                 "idiosyncrasies; 0 turns it off")
    anchor_pcs: int = Field(0, ge=0, description="besides the teacher, align the student to the "
                            "top-k principal components of a frozen LFP model's latents (the study "
                            "uses its MS-LFP; `lfpdistill distill --anchor RUN`), centred, "
                            "standardised and weighted like the teacher's targets: the student "
                            "keeps what an LFP model already reads from the LFP and adds what the "
                            "teacher knows beyond it; 0 turns it off (the default of `lfpdistill "
                            "distill`; a study sets it from distill.anchor and distill.anchor_pcs); "
                            "needs cache_teacher")
    w_anchor: float = Field(1.0, ge=0, description="weight of the anchor alignment (anchor_pcs)")
    w_align: float = Field(1.0, ge=0)
    w_mae: float = Field(0.1, ge=0, description="weight of the student's masked LFP reconstruction")
    cache_teacher: bool = Field(True, description="compute teacher latents once per session")

    @model_validator(mode="after")
    def _basis_needs_pcs(self) -> DistillConfig:
        if self.target_basis == "lfp" and not (self.target_pcs and self.cache_teacher):
            raise ValueError("target_basis=lfp chooses target_pcs directions of the cached teacher "
                             "latents: set target_pcs > 0 (e.g. 16) and cache_teacher: true, or "
                             "use target_basis: pca")
        return self


# ---------------------------------------------------------------------------------- simulator
class SimLfpConfig(pydantic.BaseModel, extra="forbid"):
    """LFP mixture of the simulator. Amplitudes are standard deviations (arbitrary uV-like
    units) of each component over 0-50 Hz at one electrode, before CAR and z-scoring, so only
    their ratios matter."""

    lmp: float = Field(0.08, ge=0, description="Local motor potential (kinematic, < lmp_hz).")
    lmp_hz: float = Field(4.0, gt=0, le=10, description="Low-pass of the LMP (Hz).")
    lmp_length_mm: float = Field(1.5, gt=0, description="Spatial scale of the LMP loadings.")
    lmp_speed_weight: float = Field(
        1.0, ge=0, description="Weight of speed (movement-related, non-directional potential) "
                               "relative to velocity and acceleration in the LMP.")
    spiking: float = Field(0.15, ge=0, description="Aggregate local spiking (per relative rate).")
    kernel_sigma_mm: float = Field(0.3, gt=0, description="Distance kernel of local spiking.")
    synaptic_tau_s: float = Field(0.015, gt=0, le=0.1, description="Synaptic filter (s).")
    beta: float = Field(1.0, ge=0, description="Beta travelling wave (baseline amplitude).")
    beta_hz: float = Field(20.0, gt=5, lt=40, description="Beta centre frequency (Hz).")
    beta_suppression: tuple[float, float] = Field(
        (0.4, 0.7), description="Range of the fractional beta drop around movement (per session).")
    beta_width_hz: float = Field(1.5, gt=0, le=10, description="Beta line half-width (Hz).")
    beta_speed_sat_cm_s: float = Field(
        10.0, gt=0, description="Hand speed at which the beta suppression is complete (cm/s).")
    beta_lead_s: float = Field(0.2, ge=0, le=1, description="Beta drops this long before onset.")
    beta_speed_cm_s: tuple[float, float] = Field(
        (10.0, 35.0), description="Range of the travelling-wave speed (cm/s, per session).")
    broadband: float = Field(0.3, ge=0, description="Firing-modulated broadband noise (>hp).")
    broadband_hp_hz: float = Field(15.0, gt=0, lt=45, description="Broadband noise high-pass.")
    broadband_gain: float = Field(1.5, ge=0, description="Exponent of rate in its amplitude.")
    background: float = Field(1.0, ge=0, description="1/f background.")
    exponent: float = Field(2.0, gt=0, le=4, description="1/f exponent.")
    knee_hz: tuple[float, float] = Field((5.0, 20.0), description="Range of the 1/f knee (Hz).")
    corr_length_mm: tuple[float, float] = Field(
        (1.0, 2.0), description="Range of the background's spatial correlation length (mm).")
    corr_fraction: float = Field(0.7, ge=0, le=1,
                                 description="Spatially correlated share of the background.")
    common: float = Field(1.0, ge=0, description="Common mode (shared by all electrodes).")
    line: float = Field(2.0, ge=0, description="Line noise (raw path only).")
    white: float = Field(0.2, ge=0, description="White (amplifier) noise.")
    gain_jitter: float = Field(0.1, ge=0, lt=0.5, description="Electrode gain spread (fraction).")

    @pydantic.field_validator("beta_suppression", "beta_speed_cm_s", "knee_hz", "corr_length_mm")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 <= v[0] <= v[1]):
            raise ValueError(f"range {v} must satisfy 0 <= low <= high")
        return v

    @pydantic.model_validator(mode="after")
    def _check(self) -> SimLfpConfig:
        if self.beta_suppression[1] > 1:
            raise ValueError("beta_suppression must lie in [0, 1]")
        if self.knee_hz[0] <= 0 or self.corr_length_mm[0] <= 0 or self.beta_speed_cm_s[0] <= 0:
            raise ValueError("knee_hz, corr_length_mm and beta_speed_cm_s must be positive")
        return self


class SimChronicConfig(pydantic.BaseModel, extra="forbid"):
    """Chronic degradation of an implanted array across sessions (recording days): units are
    lost, spike amplitudes fall (fewer threshold crossings are detected), the LFP drifts
    slowly. Every effect grows with the session index and is zero on session 0, so the first
    day is the calibrated simulator; all zero (the default) changes nothing. See
    docs/simulator.md."""

    interval_days: float = Field(
        1.0, gt=0, le=3650, description="Days between consecutive sessions (meta['day'] only).")
    unit_loss: float = Field(
        0.0, ge=0, lt=0.5, description="Fraction of the recorded units lost per session "
                                       "(compounding: session s records (1-unit_loss)^s as many).")
    amplitude_loss: float = Field(
        0.0, ge=0, lt=0.5, description="Fraction of spike amplitude lost per session "
                                       "(compounding); detection falls with it.")
    snr_median: float = Field(
        6.0, gt=0, le=50, description="Median day-0 spike amplitude / noise RMS of a unit.")
    snr_spread: float = Field(
        0.3, ge=0, le=2, description="Log-normal spread (sd of log) of the day-0 SNR.")
    threshold: float = Field(
        4.5, gt=0, le=20, description="Detection threshold in noise RMS (spikes with a lower "
                                      "peak are missed; noise sd 1).")
    min_detection: float = Field(
        0.05, ge=0, lt=1, description="A unit detected below this fraction of its day-0 "
                                      "spikes is no longer recorded (dropped from the session).")
    lfp_gain_drift: float = Field(
        0.0, ge=0, le=1, description="Per-electrode log-gain random walk, sd per session.")
    lfp_map_drift_deg: float = Field(
        0.0, ge=0, le=90, description="The local motor potential's spatial map rotates towards "
                                      "an independent smooth map by this angle per session.")

    @property
    def active(self) -> bool:
        return (self.unit_loss > 0 or self.amplitude_loss > 0 or self.lfp_gain_drift > 0
                or self.lfp_map_drift_deg > 0)


class SimCalibration(pydantic.BaseModel, extra="forbid"):
    """What the calibrated variant sampler reached (docs/simulator.md, "Calibrated variants")."""

    factors: dict[str, float] = Field(description="amplitude -> factor applied to its drawn value")
    r2: dict[str, float] = Field(description="calibration decoder -> test R² with those factors")
    inside: bool = Field(description="whether every R² is inside its band")
    iterations: int = Field(ge=1, description="measurements made")
    bands: dict[str, tuple[float, float]] = Field(description="the bands aimed at")
    seconds: float = Field(gt=0, description="length of the session measured (s)")

    def describe(self) -> str:
        """One line: whether the bands were reached, the R² and the factors."""
        reached = "inside the calibration bands" if self.inside else \
            "NOT inside the calibration bands (the last factors tried are kept)"
        return (f"{reached} after {self.iterations} steps; R² "
                + ", ".join(f"{k} {v:.3f}" for k, v in self.r2.items()) + "; factors "
                + ", ".join(f"{k} x{v:.2f}" for k, v in self.factors.items()))


class SimConfig(pydantic.BaseModel, extra="forbid"):
    """Configuration of :func:`simulate_sessions` (validated; defaults are the calibrated
    simulator, see docs/simulator.md)."""

    n_sessions: int = Field(8, ge=1, le=1000, description="Number of sessions.")
    seconds: float = Field(300.0, ge=2.0, le=36000.0, description="Duration of each session.")
    seed: int = Field(0, ge=0, description="Master seed; same config -> identical arrays.")
    task: Literal["random_target", "center_out"] = Field(
        "random_target", description="Reaching task.")
    n_channels: int = Field(96, ge=2, le=1024,
                            description="Electrodes (96: 10x10 grid, 400 um pitch, no corners).")
    units_min: int = Field(100, ge=1, description="Fewest recorded units in a session.")
    units_max: int = Field(200, ge=1, description="Most recorded units in a session.")
    bin_size: float = Field(0.01, gt=0, le=0.01, description="Bin size (s); <= 10 ms.")
    path: Literal["fast", "raw"] = Field(
        "fast", description="'fast': synthesise processed LFP; 'raw': broadband + real chain.")
    raw_fs: float = Field(1000.0, ge=1000.0, le=50000.0, description="Raw path sample rate.")
    degradation: float = Field(
        0.0, ge=0.0, lt=0.5,
        description="Per session index, unit yield and tuning depth shrink by (1-degradation).")
    line_freq: float = Field(60.0, gt=0, description="Line frequency (raw path), Hz.")
    n_hidden: int = Field(2500, ge=50, le=50000, description="Hidden neurons on the footprint.")
    unit_turnover: float = Field(0.2, ge=0.0, lt=0.5,
                                 description="Fraction of units replaced between sessions.")
    tuning_drift_deg: float = Field(8.0, ge=0, le=90,
                                    description="Preferred-direction jitter per session (deg).")
    tuning_depth: tuple[float, float] = Field(
        (0.1, 0.5), description="Range of cosine tuning depth (log-rate per 10 cm/s).")
    speed_gain: float = Field(0.15, description="Mean log-rate gain on speed (per 10 cm/s).")
    slow_loading: float = Field(0.6, ge=0, description="Std of loadings on the slow latents.")
    pd_clustering: float = Field(
        1.5, ge=0, description="Von Mises concentration of preferred directions around the "
                               "smooth spatial map (0: no clustering).")
    private_noise: float = Field(
        0.9, ge=0, le=2, description="Std of each recorded unit's private log-rate noise "
                                     "(Ornstein-Uhlenbeck, private_tau_s): over-dispersion.")
    private_tau_s: float = Field(0.05, gt=0, le=2, description="Private noise time constant.")
    baseline_rate_hz: float = Field(8.0, gt=0, le=100, description="Median baseline rate (Hz).")
    max_rate_hz: float = Field(200.0, gt=0, description="Rates are clipped here (Hz).")
    lead_s: float = Field(0.1, ge=0, le=0.5, description="Latents lead behaviour by this (s).")
    n_slow_latents: int = Field(4, ge=0, le=32, description="Behaviour-irrelevant latents.")
    workspace_cm: float = Field(16.0, gt=0, description="Side of the random-target square (cm).")
    center_out_radius_cm: float = Field(8.0, gt=0, description="Center-out target radius (cm).")
    velocity_noise_cm_s: float = Field(1.0, ge=0, description="Slow velocity noise std (cm/s).")
    segment_s: float | None = Field(
        5.0, gt=0, description="Split segment length (s) for Session.segments; None: no split.")
    lfp: SimLfpConfig = Field(default_factory=SimLfpConfig, description="LFP mixture.")
    chronic: SimChronicConfig = Field(
        default_factory=SimChronicConfig,
        description="Chronic degradation across sessions (unit loss, spike amplitude, LFP "
                    "drift); zero by default.")
    variant: Literal["default", "random", "calibrated"] = Field(
        "default", description="'random': draw the generative parameters (population, tuning, "
        "drift, motor lead, behaviour, LFP mixture, noise) from the documented ranges of "
        "docs/simulator.md, seeded by `seed`; every other field keeps its value. 'calibrated': "
        "the same draw, then the tuning depth, LMP and broadband amplitudes scaled until one "
        "session decodes within the calibration bands (a few minutes)")
    family: Literal["kinematic", "recurrent"] = Field(
        "kinematic", description="simulator family: 'kinematic' (units tuned to the kinematics, "
        "LFP as a mixture of components; simulate/generator.py) or 'recurrent' (units driven "
        "by a chaotic recurrent network, LFP from current sources through a volume conductor; "
        "simulate/recurrent.py); docs/simulator.md")
    drawn_from: str | None = Field(
        None, description="set by the variant sampler: which draw produced these parameters")
    calibration: SimCalibration | None = Field(
        None, description="set by the calibrated variant sampler: the amplitude factors, the "
        "calibration R² they reached and whether every band was reached")

    @pydantic.model_validator(mode="after")
    def _check(self) -> SimConfig:
        if self.units_min > self.units_max:
            raise ValueError(f"units_min ({self.units_min}) must be <= units_max "
                             f"({self.units_max})")
        if self.units_max > self.n_hidden // 2:
            raise ValueError(f"units_max ({self.units_max}) must be <= n_hidden/2 "
                             f"({self.n_hidden // 2})")
        lo, hi = self.tuning_depth
        if not 0 <= lo <= hi:
            raise ValueError(f"tuning_depth {self.tuning_depth} must satisfy 0 <= low <= high")
        if self.segment_s is not None and self.segment_s * 3 > self.seconds:
            raise ValueError(f"segment_s ({self.segment_s}) leaves fewer than 3 segments in "
                             f"{self.seconds} s; shorten it or set it to None")
        if self.path == "raw" and self.line_freq <= 50.0:
            raise ValueError("line_freq must be above 50 Hz (the LFP band)")
        return self

    @property
    def n_bins(self) -> int:
        """Bins per session."""
        return int(math.floor(self.seconds / self.bin_size + 1e-9))

    @pydantic.model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # the default family is left out of dumps, so configs (and the hashes of stores and
        # study caches built from them) stay what they were before the field existed
        out = handler(self)
        if isinstance(out, dict) and out.get("family") == "kinematic":
            out.pop("family")
        return out

    @property
    def latent_names(self) -> list[str]:
        """Column names of ``Session.latents``."""
        return [*LATENT_NAMES_KINEMATIC, "rot1", "rot2",
                *(f"slow{i}" for i in range(self.n_slow_latents))]


# ---------------------------------------------------------------------------------- recommended
#: The recommended options of every role, in one place: the defaults of the CLI commands, of the
#: experiment config (a YAML section overrides only the keys it states) and of the Python API
#: (:func:`recommended_model` / :func:`recommended_train` / :func:`recommended_distill`).
#: Chosen by the measurements in docs/experiments.md (model options: the teacher and LFP rounds;
#: distillation: the robustness benchmark over simulator variants); training lengths are sized
#: for ~10 minutes of data per session on a CPU (see README for times; train longer with more
#: data or a GPU, e.g. configs/paper.yaml).
RECOMMENDED: dict[str, dict[str, dict[str, Any]]] = {
    # spike teacher: 64-unit patches, linear embedder of log counts, time-span masks, held-out
    # read-out over 10 passes
    "teacher": {"model": {"modality": "spikes", "patch_size": 64, "d_model": 128, "n_layers": 2,
                          "n_heads": 4, "embedder": "linear", "mask_mode": "time",
                          "readout_shifts": 5},
                "train": {"max_epochs": 8, "batch_size": 16, "lr": 0.003, "patience": 4}},
    # LFP models (SS-LFP, MS-LFP, the student): one token per bin over up to 96 electrodes,
    # filter-bank embedder, time-span masks, held-out read-out over 10 passes as the teacher's
    # (a distilled student is read in one pass: what it is aligned on)
    "lfp": {"model": {"modality": "lfp", "patch_size": 96, "d_model": 128, "n_layers": 2,
                      "n_heads": 4, "embedder": "filterbank", "mask_mode": "time",
                      "readout_shifts": 5}},
    "ss_lfp": {"train": {"max_epochs": 5, "batch_size": 16, "lr": 0.003, "patience": 4}},
    # MS-LFP: 15 epochs (5 left its latents level with the raw LFP; docs/experiments.md)
    "ms_lfp": {"train": {"max_epochs": 15, "batch_size": 32, "lr": 0.003, "patience": 4}},
    # distillation: align the teacher's top 16 standardised principal components of latents
    # centred per session (robustness benchmark, docs/experiments.md round 5); keep the last
    # weights (the validation alignment picks epochs by noise)
    "distill": {"objective": {"align_loss": "mse", "target_pcs": 16, "target_norm": "standardize",
                              "target_center": "session",
                              "projection": "linear", "w_align": 1.0, "w_mae": 0.1},
                "train": {"max_epochs": 10, "batch_size": 32, "lr": 0.003, "patience": 5,
                          "keep": "last"}},
    # a new session's embeddings only (generalization mode b, lfpdistill adapt)
    "adapt": {"train": {"max_epochs": 2, "batch_size": 16, "lr": 0.01}},
    # model + velocity head end-to-end
    "finetune": {"train": {"max_epochs": 7, "batch_size": 16, "lr": 0.001, "patience": 4}},
}


def recommended_model(role: str) -> ModelConfig:
    """The recommended model of ``role``: ``teacher`` (spikes) or ``lfp`` (any LFP model)."""
    return ModelConfig(**RECOMMENDED[role]["model"])


def recommended_train(role: str) -> TrainConfig:
    """Recommended training options of ``role`` (teacher, ss_lfp, ms_lfp, distill, adapt,
    finetune)."""
    return TrainConfig(**RECOMMENDED[role]["train"])


def recommended_distill() -> DistillConfig:
    return DistillConfig(**RECOMMENDED["distill"]["objective"])


def describe_recommended(role: str, part: str) -> str:
    """``key=value`` list of a role's recommended options (for ``--help``)."""
    return ", ".join(f"{k}={v}" for k, v in RECOMMENDED[role][part].items() if k != "modality")


def _over(role: str, part: str, given: Any) -> Any:
    """A YAML section's keys over the role's recommended ones (a built config is kept as is)."""
    if given is None:
        return dict(RECOMMENDED[role][part])
    if isinstance(given, dict):
        return {**RECOMMENDED[role][part], **given}
    return given


# ---------------------------------------------------------------------------------- experiment
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    _no_booleans = model_validator(mode="before")(classmethod(_numbers_not_booleans))

    #: field -> (role, part) of RECOMMENDED that a YAML mapping for that field is laid over
    _recommended_fields: ClassVar[dict[str, tuple[str, str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _recommended(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls._recommended_fields:
            data = {**data, **{f: _over(role, part, data.get(f))
                               for f, (role, part) in cls._recommended_fields.items()}}
        return data


class DataSection(_Strict):
    """Where the sessions come from: an existing store, or the built-in simulator."""

    store: Path | None = Field(None, description="existing store directory (skips simulation)")
    simulate: SimConfig = Field(default_factory=SimConfig, description="used when store is unset")
    segment_s: float = Field(5.0, gt=0, description="split segment length (s)")
    split_seed: Seed = 0


class SessionsSection(_Strict):
    """Which sessions play which role (names or glob patterns)."""

    teacher: list[str] = Field(..., description="spike teacher pretraining sessions")
    distill: list[str] = Field(..., description="paired sessions the student is distilled on")
    heldout: list[str] = Field(default_factory=list,
                               description="unseen by teacher and distillation: generalization")
    ms_lfp: list[str] | None = Field(None, description="MS-LFP pretraining (default: teacher's)")

    @model_validator(mode="after")
    def _check(self) -> SessionsSection:
        if not self.distill:
            raise ValueError("sessions.distill must list at least one session")
        return self


class TeacherSection(_Strict):
    model: ModelConfig = Field(default_factory=lambda: recommended_model("teacher"))
    train: TrainConfig = Field(default_factory=lambda: recommended_train("teacher"))
    per_seed: bool = Field(False, description="train one teacher per seed (else one, seed 0)")
    _recommended_fields = {"model": ("teacher", "model"), "train": ("teacher", "train")}


class DistillSection(_Strict):
    objective: DistillConfig = Field(default_factory=recommended_distill)
    train: TrainConfig = Field(default_factory=lambda: recommended_train("distill"))
    student_init: Literal["scratch", "ms_lfp"] = "scratch"
    anchor: Literal["validation", "always", "off"] = Field(
        "validation", description="anchor the student to the study's own MS-LFP (its top "
        "anchor_pcs latent PCs, beside the teacher's targets; objective.anchor_pcs): "
        "'validation' trains the student with and without the anchor and keeps the one whose "
        "linear probe scores higher on the distilled sessions' validation bins (labels of those "
        "bins choose; test bins never do), 'always' keeps the anchored one, 'off' trains the "
        "plain one only (docs/experiments.md rounds 9-10)")
    anchor_pcs: int = Field(16, ge=0, description="principal components of the MS-LFP latents "
                            "the anchored student aligns to (with anchor 'validation' or "
                            "'always'; at most lfp_model.d_model)")
    _recommended_fields = {"objective": ("distill", "objective"), "train": ("distill", "train")}

    @pydantic.model_validator(mode="after")
    def _anchor_is_the_studys(self) -> DistillSection:
        if self.objective.anchor_pcs:
            raise ValueError(
                "distill.objective.anchor_pcs is set by the study: use distill.anchor "
                "(validation | always | off) and distill.anchor_pcs instead")
        if self.anchor != "off" and not self.anchor_pcs:
            raise ValueError(f"distill.anchor '{self.anchor}' needs distill.anchor_pcs >= 1 (e.g. "
                             "16); set distill.anchor: off to distil without an anchor")
        if self.anchor != "off" and not self.objective.cache_teacher:
            raise ValueError(f"distill.anchor '{self.anchor}' needs distill.objective."
                             "cache_teacher: true; set distill.anchor: off to distil without "
                             "cached teacher latents")
        return self

    def student_objective(self, anchored: bool) -> DistillConfig:
        """The objective of the plain (``anchored`` False) or the anchored student."""
        return self.objective.model_copy(
            update={"anchor_pcs": self.anchor_pcs if anchored else 0})


class FinetuneSection(_Strict):
    enabled: bool = True
    models: list[Literal["distilled", "ms_lfp", "ss_lfp", "teacher"]] = Field(
        default_factory=lambda: ["distilled", "ms_lfp", "ss_lfp", "teacher"])
    sessions: Literal["distill", "all"] = Field(
        "distill", description="fine-tune on the distilled sessions only, or also on held-out ones")
    train: TrainConfig = Field(default_factory=lambda: recommended_train("finetune"))
    _recommended_fields = {"train": ("finetune", "train")}


class ClassicSection(_Strict):
    enabled: bool = True
    n_lags: int = Field(10, ge=1, description="Wiener filters: causal lags (also the Wiener probe's)")
    lag_step: int = Field(2, ge=1, description="Wiener filters: bins between lags")


class ProbeSection(_Strict):
    wiener: bool = Field(True, description="besides the paper's per-timestep linear probe, fit the "
                         "classic Wiener filter (classic.n_lags x classic.lag_step) on the frozen "
                         "latents: the decoder-matched comparison with the classic decoders")
    combined: bool = Field(True, description="also read the distilled model out with one Wiener "
                           "filter on its latents and the classic LMP + band-power features (a "
                           "penalty per block chosen on validation bins), bidirectional and causal: "
                           "the deployable decoder's candidate (needs probe.wiener)")


class CausalSection(_Strict):
    """The streaming comparison: causal MS-LFP and a causal distilled student (the same LFP model
    with ``causal: true``, trained like their bidirectional twins), each read out by a linear
    regression on its causal latents (one causal pass over the session, what ``lfpdistill decode
    --stream`` computes), against the band-power Kalman filter (the streaming classic decoder)."""

    enabled: bool = Field(False, description="train and evaluate the causal models")
    context_bins: int = Field(100, ge=1, le=10000, description="bins of past each layer attends to")


class LabelsSection(_Strict):
    """Label efficiency: every decoder refit on a few labelled training seconds (random whole
    training segments; validation and test bins are never labelled), the same bins for every
    decoder, scored on the test segments. The whole training set is the curve's last point."""

    enabled: bool = Field(False, description="run the label-efficiency stage")
    seconds: list[float] = Field(default_factory=lambda: [10.0, 20.0, 40.0, 80.0],
                                 description="labelled training seconds per session, increasing")
    draws: int = Field(3, ge=1, le=100, description="random draws of the labelled segments per "
                       "budget")
    seed: Seed = Field(0, description="seed of the draws (the same for every decoder and seed)")
    models: list[Literal["distilled", "ms_lfp", "ss_lfp"]] = Field(
        default_factory=lambda: ["distilled", "ms_lfp", "ss_lfp"],
        description="frozen models read out at each budget (the classic decoders always are)")
    readouts: list[Literal["probe", "wiener"]] = Field(
        default_factory=lambda: ["probe", "wiener"],
        description="read-outs of the frozen latents: linear probe, Wiener filter (classic lags)")

    @model_validator(mode="after")
    def _check(self) -> LabelsSection:
        s = self.seconds
        if not s or any(not math.isfinite(v) or v <= 0 for v in s):
            raise ValueError(f"labels.seconds {s} must list positive numbers of seconds")
        if any(b <= a for a, b in zip(s, s[1:], strict=False)):
            raise ValueError(f"labels.seconds {s} must increase, without repeats")
        if not self.models or not self.readouts:
            raise ValueError("labels.models and labels.readouts must not be empty")
        return self


class ScalingSection(_Strict):
    """Scaling: how the distilled model's R² grows with the paired spike + LFP data it is
    distilled on and with the number of sessions its teacher was trained on. Each point is a
    student distilled like the study's own (same sessions, objective, training) but on
    ``paired_seconds`` of each distillation session's training segments, or from a teacher
    trained on ``teacher_sessions`` sessions (the distillation sessions first, then the
    teacher's others in order). The study's own student closes both curves."""

    enabled: bool = Field(False, description="run the scaling stage")
    paired_seconds: list[float] = Field(
        default_factory=lambda: [20.0, 40.0, 80.0],
        description="paired training seconds per distillation session, increasing")
    teacher_sessions: list[int] = Field(
        default_factory=lambda: [2],
        description="teacher-session counts, increasing, each >= the distillation sessions and "
                    "below the study's teacher sessions")
    same_steps: bool = Field(True, description="scale the epochs so that every paired budget "
                             "takes as many optimiser steps as the full data, early stopping off "
                             "(else the same epochs and early stopping, so fewer steps)")

    @model_validator(mode="after")
    def _check(self) -> ScalingSection:
        for key in ("paired_seconds", "teacher_sessions"):
            v = getattr(self, key)
            if any(not math.isfinite(x) or x <= 0 for x in v):
                raise ValueError(f"scaling.{key} {v} must list positive numbers")
            if any(b <= a for a, b in zip(v, v[1:], strict=False)):
                raise ValueError(f"scaling.{key} {v} must increase, without repeats")
        if self.enabled and not (self.paired_seconds or self.teacher_sessions):
            raise ValueError("scaling.enabled needs paired_seconds or teacher_sessions")
        return self


class LongevitySection(_Strict):
    """Longevity: the study's sessions read as recording days of one array (ordered by
    ``meta['day']``, else by store order), the early ones used for the teacher and distillation,
    the later ones held out. On every day the spike Wiener filter and the classic LFP decoders
    are recalibrated on that day's labels, the distilled model is adapted with that day's
    unlabelled LFP (generalization mode b) and read out with its labels. The report plots R²
    against the day and states on which day the spike decoder falls below the distilled model."""

    enabled: bool = Field(False, description="add the longevity section (R² against day) to "
                          "the report; needs held-out sessions, generalize mode b and the "
                          "classic decoders")


class GeneralizeSection(_Strict):
    modes: list[Literal["a", "b"]] = Field(default_factory=lambda: ["a", "b"])
    adapt: TrainConfig = Field(default_factory=lambda: recommended_train("adapt"))
    _recommended_fields = {"adapt": ("adapt", "train")}


class ExperimentConfig(_Strict):
    """A whole study: data, models, evaluations, report."""

    name: str = "experiment"
    out: Path = Field(Path("results/experiment"), description="output folder")
    seeds: list[Seed] = Field(default_factory=lambda: [0], description=f"training seeds, each 0 "
                              f"to {SEED_MAX}")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    data: DataSection = Field(default_factory=DataSection)
    sessions: SessionsSection
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    lfp_model: ModelConfig = Field(default_factory=lambda: recommended_model("lfp"))
    ss_lfp: TrainConfig = Field(default_factory=lambda: recommended_train("ss_lfp"))
    ms_lfp: TrainConfig = Field(default_factory=lambda: recommended_train("ms_lfp"))
    distill: DistillSection = Field(default_factory=DistillSection)
    generalize: GeneralizeSection = Field(default_factory=GeneralizeSection)
    probe: ProbeSection = Field(default_factory=ProbeSection)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    classic: ClassicSection = Field(default_factory=ClassicSection)
    causal: CausalSection = Field(default_factory=CausalSection)
    labels: LabelsSection = Field(default_factory=LabelsSection)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    longevity: LongevitySection = Field(default_factory=LongevitySection)
    _recommended_fields = {"lfp_model": ("lfp", "model"), "ss_lfp": ("ss_lfp", "train"),
                           "ms_lfp": ("ms_lfp", "train")}

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if self.teacher.model.modality != "spikes":
            raise ValueError("teacher.model.modality must be 'spikes'")
        if self.lfp_model.modality != "lfp":
            raise ValueError("lfp_model.modality must be 'lfp'")
        if self.distill.anchor != "off" and self.distill.anchor_pcs > self.lfp_model.d_model:
            raise ValueError(f"distill.anchor_pcs={self.distill.anchor_pcs} but the MS-LFP "
                             f"anchor has {self.lfp_model.d_model} latent dimensions "
                             "(lfp_model.d_model); use distill.anchor_pcs <= "
                             f"{self.lfp_model.d_model}")
        if self.longevity.enabled:
            need = [what for what, ok in (
                ("sessions.heldout (the later days)", bool(self.sessions.heldout)),
                ("generalize.modes with b", "b" in self.generalize.modes),
                ("classic.enabled: true", self.classic.enabled)) if not ok]
            if need:
                raise ValueError("longevity.enabled needs " + ", ".join(need))
        return self


def describe_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        elif err.get("type") == "missing":
            parts.append(f"missing key '{loc}'")
        else:
            parts.append(f"'{loc}': {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last
    silently, so an edited config could run with the value the user did not mean)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<': merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base loader reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found the key '{key}' twice (line {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_config_yaml(path: Path) -> dict[str, Any]:
    """The sections of a YAML experiment config, not yet validated (one-line errors for a missing
    file, invalid YAML or a file that is not a mapping)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist; see configs/demo.yaml for an example")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except UnicodeDecodeError as e:
        raise ConfigError(f"config '{path}' is not UTF-8 text (byte {e.start}); save it as "
                          "UTF-8") from None
    except RecursionError:
        raise ConfigError(f"config '{path}' is nested too deeply to read; a config has a few "
                          "levels of sections") from None
    except yaml.YAMLError as e:
        what = str(e).splitlines()[0]
        if isinstance(e, yaml.MarkedYAMLError) and e.problem:
            what = e.problem if "line" in e.problem or e.problem_mark is None else \
                f"{e.problem} (line {e.problem_mark.line + 1})"
        raise ConfigError(f"config '{path}' is not valid YAML: {what}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config '{path}' must be a YAML mapping of sections")
    return raw


def load_config(path: Path, overrides: dict | None = None) -> ExperimentConfig:
    """Read and validate a YAML experiment config."""
    path = Path(path)
    raw = read_config_yaml(path)
    if overrides:
        raw = {**raw, **overrides}
    return validate_config(raw, f"config '{path}'")


def validate_config(raw: dict[str, Any], what: str = "config") -> ExperimentConfig:
    """The sections of an experiment config, validated; a problem is one :class:`ConfigError`
    line that starts with ``what``."""
    try:
        return ExperimentConfig(**raw)
    except ValidationError as e:
        raise ConfigError(f"{what}: {describe_validation_error(e)}") from None


# ---------------------------------------------------------------------------------- overrides
def one_line(e: Exception) -> str:
    """A pydantic validation error (or any exception) as one line: ``loc: message; ...``."""
    errs = getattr(e, "errors", None)
    if callable(errs):
        parts = []
        for err in errs():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            # pydantic prefixes a validator's own message with "Value error, ": not for a person
            msg = str(err.get("msg")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "; ".join(parts)
    return str(e).splitlines()[0]


def parse_overrides(items: Sequence[str] | None, nested: Sequence[str] = ()) -> dict[str, Any]:
    """``key=value`` strings -> dict (values parsed as JSON when they are JSON, else strings;
    ``-`` in keys read as ``_``). Keys ``P.sub`` with ``P`` in ``nested`` go to ``out[P][sub]``.

    >>> parse_overrides(["d-model=64", "embedder=linear", "chain.line_freq=50"], nested=["chain"])
    {'d_model': 64, 'embedder': 'linear', 'chain': {'line_freq': 50}}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not key=value (e.g. --set d_model=128)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, dot, sub = key.partition(".")
        if dot and head in nested:
            out.setdefault(head, {})[sub] = value
        else:
            out[key] = value
    return out


def apply_overrides(model_cfg: ModelConfig, train_cfg: TrainConfig, overrides: Sequence[str],
                    distill_cfg: DistillConfig | None = None
                    ) -> tuple[ModelConfig, TrainConfig, DistillConfig | None]:
    """Apply ``key=value`` overrides to whichever config has the key (model, training, or the
    distillation objective when ``distill_cfg`` is given); an unknown key is an error naming
    the known ones."""
    parts: dict[str, dict[str, Any]] = {"model": model_cfg.model_dump(),
                                        "train": train_cfg.model_dump()}
    if distill_cfg is not None:
        parts["distill"] = distill_cfg.model_dump()
    for key, val in parse_overrides(overrides).items():
        owner = next((p for p in parts.values() if key in p), None)
        if owner is None:
            known = "; ".join(f"{name} options: {', '.join(p)}" for name, p in parts.items())
            raise ConfigError(f"unknown option '{key}'; {known}")
        owner[key] = val
    try:
        model, train = ModelConfig(**parts["model"]), TrainConfig(**parts["train"])
    except ValidationError as e:
        raise ConfigError(f"invalid option: {one_line(e)}") from None
    if distill_cfg is None:
        return model, train, None
    try:
        return model, train, DistillConfig(**parts["distill"])
    except ValidationError as e:
        raise ConfigError(f"invalid distillation option: {one_line(e)}") from None
