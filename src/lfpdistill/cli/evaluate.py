"""Evaluation commands: ``embed`` (latents), ``probe`` (velocity from latents) and ``classic``
(the classic decoders on a store)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from .common import ProbeDecoder, Readout, console, print_table, value


def check_output_file(path: Path | None, example: str, inputs: Sequence[Path | None] = (),
                      allow: Sequence[Path] = ()) -> None:
    """Refuse, before any work, an output file path that is a folder, lies under a file, or
    would replace one of the command's ``inputs`` or a file of a store or run
    (:func:`lfpdistill.data.guard.check_output_file`; ``allow``: the command's own default)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out '{path}' is a folder; pass a file path, e.g. {path / example}")
    bad = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if bad is not None:
        raise ConfigError(f"--out '{path}': '{bad}' is a file, not a folder; choose another path")
    from ..data.guard import check_output_file as guard  # lfpdistill.data loads torch
    from ..data.store import check_writable

    guard(path, inputs, allow)
    check_writable(path.parent)


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to ``app``."""

    @app.command()
    def embed(
        run: Annotated[Path, typer.Argument(help="run directory with model.ckpt")],
        store: Annotated[Path, typer.Option(help="store directory")],
        sessions: Annotated[str, typer.Option(help="session names/patterns")] = "*",
        out: Annotated[Path | None, typer.Option(help="output .npz (default RUN/latents.npz)")] = None,
        as_session: Annotated[str | None, typer.Option(
            help="read the data with this known session's embeddings")] = None,
        readout: Annotated[Readout | None, typer.Option(
            help="visible (one pass) or held_out (each bin from a pass where it is hidden); "
                 "default: the model's own")] = None,
    ) -> None:
        """Write per-timestep latents of every split (centre-crop stitched windows)."""
        from ..commands.evaluate import embed_run

        check_output_file(out, "latents.npz", (run, store), allow=(run / "latents.npz",))
        path = embed_run(run, store, sessions, out, as_session=as_session,
                         readout=value(readout))
        console.print(f"latents written to {path}")


    @app.command()
    def probe(
        latents: Annotated[Path, typer.Argument(help="latents .npz from lfpdistill embed")],
        store: Annotated[Path, typer.Option(help="store directory")],
        sessions: Annotated[str | None, typer.Option(help="session names/patterns")] = None,
        out: Annotated[Path | None, typer.Option(help="write the rows as JSON here")] = None,
        lag_ms: Annotated[float, typer.Option(
            help="linear decoder: read velocity at t from the latents at t - lag (0: the paper's "
                 "protocol; motor cortex leads movement by ~100 ms)")] = 0.0,
        decoder: Annotated[ProbeDecoder, typer.Option(
            help="linear (per-timestep linear regression, the paper's protocol) or wiener (ridge on "
                 "lagged latents, the same decoder as the classic Wiener filter)")] = ProbeDecoder.linear,
        n_lags: Annotated[int, typer.Option(min=1, help="wiener decoder: lags")] = 10,
        lag_step: Annotated[int, typer.Option(min=1, help="wiener decoder: bins between lags")] = 2,
    ) -> None:
        """Decode velocity from frozen latents: fit on train segments, R² on test segments."""
        from ..commands.evaluate import probe_run

        check_output_file(out, "probe.json", (latents, store))
        rows = probe_run(latents, store, sessions, out, lag_s=lag_ms / 1000.0,
                         decoder=str(decoder.value),
                         n_lags=n_lags, lag_step=lag_step)
        print_table(rows, title=f"{decoder.value} probe (test R², mean over x, y)")
        if rows:
            mean = sum(r["r2"] for r in rows) / len(rows)
            console.print(f"mean R² over {len(rows)} sessions: {mean:.3f}")


    @app.command()
    def classic(
        store: Annotated[Path, typer.Option(help="store directory")],
        sessions: Annotated[str | None, typer.Option(help="session names/patterns")] = None,
        out: Annotated[Path | None, typer.Option(help="write the rows as JSON here")] = None,
        n_lags: Annotated[int, typer.Option(min=1, help="Wiener filters: lags")] = 10,
        lag_step: Annotated[int, typer.Option(min=1, help="Wiener filters: bins between lags")] = 2,
    ) -> None:
        """Classic decoders (spike Wiener; LFP raw / LMP+band-power Wiener; Kalman), test R²."""
        from ..commands.evaluate import classic_run

        check_output_file(out, "classic.json", (store,))
        rows = classic_run(store, sessions, out, n_lags=n_lags, lag_step=lag_step)
        print_table(rows, title="classic decoders (test R², mean over x, y)")
