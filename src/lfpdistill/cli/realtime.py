"""Real-time commands: ``export`` (a causal run as one ONNX graph + metadata) and ``decode``
(velocity from a session's LFP, bin by bin, with R² and per-bin latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from .common import NanPolicy, console, fmt, print_table
from .evaluate import check_output_file


def register(app: typer.Typer) -> None:
    """Add the real-time commands to ``app``."""

    @app.command()
    def export(
        run: Annotated[Path, typer.Argument(help="causal LFP run directory (--set causal=true)")],
        store: Annotated[Path, typer.Option(help="store directory holding the session")],
        session: Annotated[str, typer.Option(help="the session to decode (its embeddings and "
                                                  "read-out go into the graph)")],
        out: Annotated[Path, typer.Option(help="ONNX file to write (metadata: same name, .json)")],
        refit: Annotated[bool, typer.Option(
            "--refit", help="fit the linear read-out again even if the run has one")] = False,
    ) -> None:
        """Export a causal model + velocity read-out + input normalisation as one ONNX graph:
        input lfp [1, context_bins, channels] (oldest bin first), output velocity [1, 2] of the
        last bin."""
        from ..commands.realtime import export_run

        if Path(out).suffix != ".onnx":
            raise ConfigError(f"--out '{out}' must end in .onnx (the metadata goes next to it)")
        check_output_file(out, "model.onnx")
        info = export_run(run, store, session, out, refit=refit)
        console.print(f"exported {info['session']} ({info['n_channels']} channels, "
                      f"{info['context_bins']} bins of context, {info['readout']}) to {out}; "
                      f"metadata {Path(out).with_suffix('.json')}; largest difference from the "
                      f"eager model {info['check']['max_abs_diff_vs_eager']:.1e}")

    @app.command()
    def decode(
        source: Annotated[Path, typer.Argument(help="causal run directory, or an exported .onnx")],
        store: Annotated[Path, typer.Option(help="store directory")],
        session: Annotated[str, typer.Option(help="session to decode")],
        stream: Annotated[bool, typer.Option(
            "--stream", help="feed the bins one at a time (key/value cache of the last "
                             "context_bins) and time each; otherwise the same causal pass at "
                             "once")] = False,
        out: Annotated[Path | None, typer.Option(help="write pred/velocity(/latency_ms) .npz")] = None,
        nan: Annotated[NanPolicy, typer.Option(
            help="bins with NaN/inf channels: hold (each such channel keeps its last finite "
                 "value) or error")] = NanPolicy.hold,
        threads: Annotated[int, typer.Option(help="CPU threads (1: a real-time core)")] = 1,
        refit: Annotated[bool, typer.Option(
            "--refit", help="run directory: fit the linear read-out again")] = False,
    ) -> None:
        """Decode velocity causally from a session's LFP: R² on the validation and test bins,
        and with --stream the latency per bin (median, p99)."""
        from ..commands.realtime import decode_run

        check_output_file(out, "pred.npz")
        res = decode_run(source, store, session, out, stream=stream, nan_policy=str(nan.value),
                         threads=threads, refit=refit)
        keep = ("session", "backend", "mode", "bins", "val_r2", "test_r2", "test_r2_x", "test_r2_y")
        print_table([{k: res[k] for k in keep if k in res}], title="causal decoder")
        if out is not None:
            console.print(f"predictions written to {out}")
        if "latency_ms_p99" in res:
            console.print(f"latency per bin on {res['threads']} thread(s): median "
                          f"{fmt(res['latency_ms_median'])} ms, p99 {fmt(res['latency_ms_p99'])} ms")
