"""The experiment configuration (``lfpdistill run CONFIG.yaml``), validated with pydantic.

Unknown or mistyped keys are rejected with the key's full path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .distill import DistillConfig
from .errors import ConfigError
from .models import ModelConfig
from .simulate import SimConfig
from .training import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    """Where the sessions come from: an existing store, or the built-in simulator."""

    store: Path | None = Field(None, description="existing store directory (skips simulation)")
    simulate: SimConfig = Field(default_factory=SimConfig, description="used when store is unset")
    segment_s: float = Field(5.0, gt=0, description="split segment length (s)")
    split_seed: int = 0


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
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(modality="spikes"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    per_seed: bool = Field(False, description="train one teacher per seed (else one, seed 0)")


class DistillSection(_Strict):
    objective: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    student_init: Literal["scratch", "ms_lfp"] = "scratch"


class FinetuneSection(_Strict):
    enabled: bool = True
    models: list[Literal["distilled", "ms_lfp", "ss_lfp", "teacher"]] = Field(
        default_factory=lambda: ["distilled", "ms_lfp", "ss_lfp", "teacher"])
    sessions: Literal["distill", "all"] = Field(
        "distill", description="fine-tune on the distilled sessions only, or also on held-out ones")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_epochs=15, lr=3e-4))


class ClassicSection(_Strict):
    enabled: bool = True
    n_lags: int = Field(10, ge=1, description="Wiener filters: causal lags (also the Wiener probe's)")
    lag_step: int = Field(2, ge=1, description="Wiener filters: bins between lags")


class ProbeSection(_Strict):
    wiener: bool = Field(True, description="besides the paper's per-timestep linear probe, fit the "
                         "classic Wiener filter (classic.n_lags x classic.lag_step) on the frozen "
                         "latents: the decoder-matched comparison with the classic decoders")


class GeneralizeSection(_Strict):
    modes: list[Literal["a", "b"]] = Field(default_factory=lambda: ["a", "b"])
    adapt: TrainConfig = Field(default_factory=lambda: TrainConfig(max_epochs=10, lr=3e-3))


class ExperimentConfig(_Strict):
    """A whole study: data, models, evaluations, report."""

    name: str = "experiment"
    out: Path = Field(Path("results/experiment"), description="output folder")
    seeds: list[int] = Field(default_factory=lambda: [0])
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    data: DataSection = Field(default_factory=DataSection)
    sessions: SessionsSection
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    lfp_model: ModelConfig = Field(default_factory=lambda: ModelConfig(modality="lfp"))
    ss_lfp: TrainConfig = Field(default_factory=TrainConfig)
    ms_lfp: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillSection = Field(default_factory=DistillSection)
    generalize: GeneralizeSection = Field(default_factory=GeneralizeSection)
    probe: ProbeSection = Field(default_factory=ProbeSection)
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    classic: ClassicSection = Field(default_factory=ClassicSection)

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if self.teacher.model.modality != "spikes":
            raise ValueError("teacher.model.modality must be 'spikes'")
        if self.lfp_model.modality != "lfp":
            raise ValueError("lfp_model.modality must be 'lfp'")
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


def load_config(path: Path, overrides: dict | None = None) -> ExperimentConfig:
    """Read and validate a YAML experiment config."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist; see configs/demo.yaml for an example")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config '{path}' must be a YAML mapping of sections")
    if overrides:
        raw = {**raw, **overrides}
    try:
        return ExperimentConfig(**raw)
    except ValidationError as e:
        raise ConfigError(f"config '{path}': {describe_validation_error(e)}") from None
