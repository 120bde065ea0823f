"""What the command modules share: the console, tables, option types, and the configs a
training command starts from.

Command bodies import their implementation when they run (torch, Lightning, pynwb): that keeps
``lfpdistill --help``, ``inspect`` and the error messages fast. Everything else imports at the top.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..config import DistillConfig, ModelConfig, TrainConfig, apply_overrides
from ..errors import ConfigError

console = Console()

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


def done(message: str) -> None:
    """Print on the first process only (DDP starts one per device)."""
    from ..training import is_rank_zero  # Lightning is loaded by then: the command trained

    if is_rank_zero():
        console.print(message)


def configs(modality: str, overrides: list[str] | None) -> tuple[ModelConfig, TrainConfig]:
    """Model and training configs of a training command after its ``--set`` overrides."""
    model, train, _ = apply_overrides(ModelConfig(modality=modality), TrainConfig(), overrides or [])
    return model, train


def distill_configs(overrides: list[str] | None
                    ) -> tuple[ModelConfig, TrainConfig, DistillConfig]:
    model, train, objective = apply_overrides(ModelConfig(modality="lfp"), TrainConfig(),
                                              overrides or [], DistillConfig())
    assert objective is not None
    return model, train, objective


SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="config override key=value (model or training option), repeatable")]
