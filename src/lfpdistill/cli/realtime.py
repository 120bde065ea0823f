"""Real-time commands: ``export`` (a causal run as one ONNX graph + metadata) and ``decode``
(velocity from a session's LFP, bin by bin, with R² and per-bin latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from .common import NanPolicy, console, fmt, print_table
from .evaluate import check_output_file

READOUT_HELP = ("velocity read-out of the latents: linear_probe (same bin), wiener (ridge on 10 "
                "past lags x 20 ms), combined (one ridge on the past lags of the latents and the "
                "LMP + band-power features, a penalty per block chosen on validation bins), or "
                "auto (all three fit, the best on the validation bins kept; a finetune run: its "
                "head)")


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
            "--refit", help="fit the read-out again even if the run has one")] = False,
        readout: Annotated[str, typer.Option(help=READOUT_HELP)] = "auto",
    ) -> None:
        """Export a causal model + velocity read-out + input normalisation as one ONNX step
        graph: input one bin of LFP [channels] and the state (fixed shapes, listed in the
        metadata .json), output velocity [2] of that bin and the next state."""
        from ..commands.realtime import export_run

        if Path(out).suffix != ".onnx":
            raise ConfigError(f"--out '{out}' must end in .onnx (the metadata goes next to it)")
        check_output_file(out, "model.onnx", (run, store))
        check_output_file(Path(out).with_suffix(".json"), "model.json", (run, store))
        info = export_run(run, store, session, out, refit=refit, readout=readout)
        console.print(f"exported {info['session']} ({info['n_channels']} channels, "
                      f"{info['context_bins']} bins of context, {info['readout']}) to {out}; "
                      f"metadata {Path(out).with_suffix('.json')}; largest difference from the "
                      f"eager model {info['check']['max_abs_diff_vs_eager']:.1e}")
        scores = info["readout_detail"]["validation_r2"]
        if scores:
            console.print("validation R² of the read-outs: " + ", ".join(
                f"{k} {fmt(v)}" for k, v in scores.items()) + f"; kept: {info['readout']}")

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
            "--refit", help="run directory: fit the read-out again")] = False,
        readout: Annotated[str, typer.Option(help=READOUT_HELP)] = "auto",
    ) -> None:
        """Decode velocity causally from a session's LFP: R² on the validation and test bins,
        and with --stream the latency per bin (median, p99)."""
        from ..commands.realtime import decode_run

        check_output_file(out, "pred.npz", (source, Path(source).with_suffix(".json"), store))
        res = decode_run(source, store, session, out, stream=stream, nan_policy=str(nan.value),
                         threads=threads, refit=refit, readout=readout)
        keep = ("session", "backend", "readout", "mode", "bins", "val_r2", "test_r2", "test_r2_x",
                "test_r2_y")
        print_table([{k: res[k] for k in keep if k in res}], title="causal decoder")
        if out is not None:
            console.print(f"predictions written to {out}")
        if "latency_ms_p99" in res:
            console.print(f"latency per bin on {res['threads']} thread(s): median "
                          f"{fmt(res['latency_ms_median'])} ms, p99 {fmt(res['latency_ms_p99'])} ms")
