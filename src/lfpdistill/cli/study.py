"""``lfpdistill run CONFIG``: a whole study from one YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..config import load_config
from .common import Order


def register(app: typer.Typer) -> None:
    """Add ``run`` to ``app``."""

    @app.command()
    def run(
        config: Annotated[Path, typer.Argument(help="experiment YAML (see configs/demo.yaml)")],
        out: Annotated[Path | None, typer.Option(help="output folder (default: the config's out)")] = None,
        from_stage: Annotated[str | None, typer.Option(
            "--from", help="recompute this stage and all later ones")] = None,
        order: Annotated[Order, typer.Option(
            help="seeds: every stage of the first seed first, with a table of its numbers as "
                 "they come; stages: each stage for every seed before the next (same numbers)")
        ] = Order.seeds,
    ) -> None:
        """Run a whole study from one config: data, models, evaluations, report (cached stages)."""
        from ..study import run_experiment

        cfg = load_config(config)
        run_experiment(cfg, from_stage, out=out, order=order.value)
