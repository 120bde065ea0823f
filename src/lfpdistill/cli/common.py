"""What the command modules share: the console, tables, option types, and the configs a
training command starts from.

Command bodies import their implementation when they run (torch, Lightning, pynwb): that keeps
``lfpdistill --help``, ``inspect`` and the error messages fast. Everything else imports at the top.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..config import (
    DistillConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    describe_recommended,
    recommended_distill,
    recommended_model,
    recommended_train,
)
from ..errors import ConfigError

console = Console()


# The fixed choices of options: typer checks them and lists them in --help ([a|b|c]).
class Modality(StrEnum):
    spikes = "spikes"
    lfp = "lfp"


class Order(StrEnum):
    """The order a study runs its units in (:data:`lfpdistill.study.runner.ORDERS`)."""

    seeds = "seeds"
    stages = "stages"


class ProbeDecoder(StrEnum):
    linear = "linear"
    wiener = "wiener"


class RawFormat(StrEnum):
    odoherty = "odoherty"
    flint = "flint"
    nwb = "nwb"
    temporaldata = "temporaldata"


class Dataset(StrEnum):
    odoherty = "odoherty"
    flint = "flint"


class Task(StrEnum):
    random_target = "random_target"
    center_out = "center_out"


class SimPath(StrEnum):
    fast = "fast"
    raw = "raw"


class Variant(StrEnum):
    default = "default"
    random = "random"
    calibrated = "calibrated"


class BinBy(StrEnum):
    channel = "channel"
    unit = "unit"


class Readout(StrEnum):
    visible = "visible"
    held_out = "held_out"


class NanPolicy(StrEnum):
    hold = "hold"
    error = "error"


class Sex(StrEnum):
    M = "M"
    F = "F"
    U = "U"
    O = "O"  # noqa: E741 - DANDI's code for 'other'


def value(choice: StrEnum | None) -> str | None:
    """The plain string of a choice (None stays None)."""
    return None if choice is None else str(choice.value)

_SHORT = {"subject": "subj", "n_units": "units", "n_channels": "channels", "duration_s": "dur (s)",
          "mean_rate_hz": "rate (Hz)", "train_s": "train (s)", "val_s": "val (s)", "test_s": "test (s)"}


def print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    if not rows:
        console.print("(no rows)")
        return
    table = Table(title=title)
    cols = list(rows[0])
    for c in cols:
        table.add_column(_SHORT.get(c, c),
                         justify="left" if c in ("name", "session", "model", "subject") else "right")
    for r in rows:
        table.add_row(*[fmt(r.get(c)) for c in cols])
    console.print(table)


def kept(summary: dict[str, Any]) -> str:
    return "last weights" if summary.get("kept") == "last" else "best weights"


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"
    return str(v)


def train_only(overrides: list[str] | None, command: str) -> list[str]:
    """Reject model options where the checkpoint fixes the architecture."""
    for o in overrides or []:
        key = o.split("=", 1)[0].strip().replace("-", "_")
        if key in ModelConfig.model_fields:
            raise ConfigError(f"'{key}' is a model option; {command} keeps the checkpoint's "
                              "architecture, so only training options can be set")
    return list(overrides or [])


def model_keys(overrides: list[str] | None) -> list[str]:
    """The model options among ``--set`` overrides (to check them against a checkpoint)."""
    keys = (o.split("=", 1)[0].strip().replace("-", "_") for o in overrides or [])
    return [k for k in keys if k in ModelConfig.model_fields]


def done(message: str) -> None:
    """Print on the first process only (DDP starts one per device)."""
    from ..training import is_rank_zero  # Lightning is loaded by then: the command trained

    if is_rank_zero():
        console.print(message)


#: the role whose recommended options (lfpdistill.config.RECOMMENDED) each command starts from
COMMAND_ROLES = {"pretrain_spikes": ("teacher", "teacher"), "pretrain_lfp": ("lfp", "ms_lfp"),
                 "adapt": (None, "adapt"), "distill": ("lfp", "distill"),
                 "finetune": (None, "finetune")}


def configs(command: str, overrides: list[str] | None) -> tuple[ModelConfig, TrainConfig]:
    """Model and training configs of a training command (``pretrain_spikes``, ``pretrain_lfp``,
    ``adapt``, ``finetune``): the recommended ones, then its ``--set`` overrides."""
    model_role, train_role = COMMAND_ROLES[command]
    base = recommended_model(model_role) if model_role else ModelConfig()
    model, train, _ = apply_overrides(base, recommended_train(train_role), overrides or [])
    return model, train


def distill_configs(overrides: list[str] | None
                    ) -> tuple[ModelConfig, TrainConfig, DistillConfig]:
    model, train, objective = apply_overrides(recommended_model("lfp"), recommended_train("distill"),
                                              overrides or [], recommended_distill())
    assert objective is not None
    return model, train, objective


def defaults_help(*commands: str) -> str:
    """The effective defaults of a command, for its ``--help`` (other options: their field
    defaults)."""
    out = []
    for command in commands:
        model_role, train_role = COMMAND_ROLES[command]
        parts = []
        if model_role:
            parts.append(f"model ({model_role}): {describe_recommended(model_role, 'model')}")
        parts.append(f"training ({train_role}): {describe_recommended(train_role, 'train')}")
        if command == "distill":
            parts.append(f"objective: {describe_recommended('distill', 'objective')}")
        out.append("; ".join(parts))
    return ("Recommended defaults (lfpdistill.config.RECOMMENDED; --set overrides them): "
            + " | ".join(out))


SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="config override key=value (model or training option), repeatable")]
