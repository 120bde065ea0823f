"""Command-line interface: ``lfpdistill COMMAND``.

User errors (:class:`~lfpdistill.errors.LfpDistillError`) are printed as one line and exit with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .errors import ConfigError, LfpDistillError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Cross-modal distillation from spike transformers to LFP transformers.")
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
        table.add_row(*[_fmt(r.get(c)) for c in cols])
    console.print(table)


def _kept(summary: dict[str, Any]) -> str:
    return "last weights" if summary.get("kept") == "last" else "best weights"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"
    return str(v)


# ---------------------------------------------------------------------------- data
@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="store directory to write")],
    sessions: Annotated[int, typer.Option(help="number of sessions")] = 8,
    seconds: Annotated[float, typer.Option(help="duration of each session (s)")] = 300.0,
    seed: Annotated[int, typer.Option(help="random seed (same seed -> same data)")] = 0,
    task: Annotated[str, typer.Option(help="random_target or center_out")] = "random_target",
    path: Annotated[str, typer.Option(help="fast (100 Hz LFP directly) or raw (1 kHz + chain)")] = "fast",
    degradation: Annotated[float, typer.Option(help="per-session decay of unit yield/tuning")] = 0.0,
    segment_s: Annotated[float, typer.Option(help="split segment length (s)")] = 5.0,
) -> None:
    """Simulate paired spikes + LFP + velocity sessions into a store."""
    from .data import write_store
    from .simulate import SimConfig, simulate_sessions

    try:
        cfg = SimConfig(n_sessions=sessions, seconds=seconds, seed=seed, task=task, path=path,
                        degradation=degradation)
    except Exception as e:
        from .stages import _one_line
        raise ConfigError(f"invalid simulation option: {_one_line(e)}") from None
    sess = simulate_sessions(cfg, progress=True)
    store = write_store(sess, out, options={"source": "simulate", "simulate": cfg.model_dump()},
                        segment_s=segment_s, seed=seed)
    console.print(f"wrote {len(sess)} sessions to {store.root}")
    print_table(store.summary())


@app.command()
def inspect(
    store: Annotated[Path, typer.Argument(help="store directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """One row per session: units, channels, duration, mean rate, split sizes."""
    from .data import open_store

    st = open_store(store)
    rows = st.summary()
    if as_json:
        print(json.dumps({"store": str(st.root), "options_hash": st.options_hash, "sessions": rows},
                         indent=2))
    else:
        print_table(rows, title=f"{st.root} ({len(rows)} sessions, options {st.options_hash})")


# ---------------------------------------------------------------------------- models
def _train_only(overrides: list[str] | None, command: str) -> list[str]:
    """Reject model options where the checkpoint fixes the architecture."""
    from .models import ModelConfig

    for o in overrides or []:
        key = o.split("=", 1)[0].strip().replace("-", "_")
        if key in ModelConfig.model_fields:
            raise ConfigError(f"'{key}' is a model option; {command} keeps the checkpoint's "
                              "architecture, so only training options can be set")
    return list(overrides or [])


def _done(message: str) -> None:
    from .training import is_rank_zero

    if is_rank_zero():
        console.print(message)


def _configs(modality: str, overrides: list[str] | None):
    from .models import ModelConfig
    from .stages import apply_overrides
    from .training import TrainConfig

    return apply_overrides(ModelConfig(modality=modality), TrainConfig(), overrides or [])


SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="config override key=value (model or training option), repeatable")]


@app.command()
def pretrain(
    modality: Annotated[str, typer.Option(help="spikes or lfp")],
    store: Annotated[Path, typer.Option(help="store directory")],
    out: Annotated[Path, typer.Option(help="run directory to write")],
    sessions: Annotated[str, typer.Option(help="session names/glob patterns, comma-separated")] = "*",
    init_from: Annotated[Path | None, typer.Option(help="continue from this run dir")] = None,
    overrides: SetOpt = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="start over")] = False,
) -> None:
    """Masked-autoencoding pretraining (spike teacher, SS-LFP or MS-LFP)."""
    from .stages import pretrain_run

    if modality not in ("spikes", "lfp"):
        raise ConfigError(f"--modality must be 'spikes' or 'lfp', got '{modality}'")
    mcfg, tcfg = _configs(modality, overrides)
    summary = pretrain_run(store, sessions, modality, out, mcfg, tcfg, init_from=init_from,
                           resume=not no_resume)
    _done(f"[bold]pretrain done[/]: {summary.get('epochs')} epochs, best val loss "
                  f"{_fmt(summary.get('best_val_loss'))}; model ({_kept(summary)}) in "
                  f"{out / 'model.ckpt'}")


@app.command()
def adapt(
    run: Annotated[Path, typer.Argument(help="pretrained run directory")],
    store: Annotated[Path, typer.Option(help="store directory")],
    sessions: Annotated[str, typer.Option(help="new session names/patterns")],
    out: Annotated[Path, typer.Option(help="run directory to write")],
    embeddings_only: Annotated[bool, typer.Option(
        help="train only the new sessions' embeddings (else all weights)")] = True,
    overrides: SetOpt = None,
) -> None:
    """Add new sessions to a pretrained model and train on them with masked autoencoding."""
    from .stages import pretrain_run
    from .training import load_model

    model, _ = load_model(run)
    mcfg, tcfg = _configs(model.modality, _train_only(overrides, "adapt"))
    summary = pretrain_run(store, sessions, model.modality, out, mcfg, tcfg, init_from=run,
                           train_only_new=embeddings_only)
    _done(f"[bold]adapt done[/]: {summary.get('epochs')} epochs; model in {out / 'model.ckpt'}")


@app.command()
def embed(
    run: Annotated[Path, typer.Argument(help="run directory with model.ckpt")],
    store: Annotated[Path, typer.Option(help="store directory")],
    sessions: Annotated[str, typer.Option(help="session names/patterns")] = "*",
    out: Annotated[Path | None, typer.Option(help="output .npz (default RUN/latents.npz)")] = None,
    as_session: Annotated[str | None, typer.Option(
        help="read the data with this known session's embeddings")] = None,
    readout: Annotated[str | None, typer.Option(
        help="visible (one pass) or held_out (each bin from a pass where it is hidden); "
             "default: the model's own")] = None,
) -> None:
    """Write per-timestep latents of every split (centre-crop stitched windows)."""
    from .stages import embed_run

    path = embed_run(run, store, sessions, out, as_session=as_session, readout=readout)
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
    decoder: Annotated[str, typer.Option(
        help="linear (per-timestep linear regression, the paper's protocol) or wiener (ridge on "
             "lagged latents, the same decoder as the classic Wiener filter)")] = "linear",
    n_lags: Annotated[int, typer.Option(min=1, help="wiener decoder: lags")] = 10,
    lag_step: Annotated[int, typer.Option(min=1, help="wiener decoder: bins between lags")] = 2,
) -> None:
    """Decode velocity from frozen latents: fit on train segments, R² on test segments."""
    from .stages import probe_run

    rows = probe_run(latents, store, sessions, out, lag_s=lag_ms / 1000.0, decoder=decoder,
                     n_lags=n_lags, lag_step=lag_step)
    print_table(rows, title=f"{decoder} probe (test R², mean over x, y)")
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
    from .stages import classic_run

    rows = classic_run(store, sessions, out, n_lags=n_lags, lag_step=lag_step)
    print_table(rows, title="classic decoders (test R², mean over x, y)")


@app.command()
def distill(
    teacher: Annotated[Path, typer.Option(help="spike teacher run directory")],
    store: Annotated[Path, typer.Option(help="store directory (paired spikes + LFP)")],
    out: Annotated[Path, typer.Option(help="run directory to write")],
    sessions: Annotated[str, typer.Option(help="session names/patterns to distil on")] = "*",
    student_init: Annotated[Path | None, typer.Option(
        help="start the student from this LFP run (e.g. MS-LFP) instead of scratch")] = None,
    overrides: SetOpt = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="start over")] = False,
) -> None:
    """Distil a frozen spike teacher into an LFP student (latent alignment + masked LFP)."""
    from .stages import distill_run

    mcfg, tcfg, dcfg = _distill_configs(overrides)
    summary = distill_run(teacher, store, sessions, out, mcfg, tcfg, dcfg, student_init=student_init,
                          resume=not no_resume)
    _done(f"[bold]distill done[/]: {summary.get('epochs')} epochs, best val loss "
                  f"{_fmt(summary.get('best_val_loss'))}; student ({_kept(summary)}) in "
                  f"{out / 'model.ckpt'}")


def _distill_configs(overrides: list[str] | None):
    from .distill import DistillConfig

    dkeys = set(DistillConfig.model_fields)
    d_over = [o for o in overrides or [] if o.split("=", 1)[0].replace("-", "_") in dkeys]
    rest = [o for o in overrides or [] if o not in d_over]
    mcfg, tcfg = _configs("lfp", rest)
    values = {}
    for o in d_over:
        k, v = o.split("=", 1)
        try:
            values[k.replace("-", "_")] = json.loads(v)
        except json.JSONDecodeError:
            values[k.replace("-", "_")] = v
    try:
        dcfg = DistillConfig(**values)
    except Exception as e:
        from .stages import _one_line
        raise ConfigError(f"invalid distillation option: {_one_line(e)}") from None
    return mcfg, tcfg, dcfg


@app.command()
def finetune(
    run: Annotated[Path, typer.Argument(help="run directory of any model (teacher, SS/MS-LFP, distilled)")],
    store: Annotated[Path, typer.Option(help="store directory")],
    session: Annotated[str, typer.Option(help="session to fine-tune and evaluate on")],
    out: Annotated[Path, typer.Option(help="run directory to write")],
    overrides: SetOpt = None,
) -> None:
    """Supervised evaluation: model + velocity head trained end-to-end, R² on test segments."""
    from .stages import finetune_run

    _, tcfg = _configs("lfp", _train_only(overrides, "finetune"))
    res = finetune_run(run, store, session, out, tcfg)
    if res.get("global_rank", 0) != 0:
        return  # a non-zero DDP rank: rank 0 evaluates and reports
    print_table([{k: v for k, v in res.items() if k != "as_session"}], title="fine-tuned decoder R²")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="experiment YAML (see configs/demo.yaml)")],
    out: Annotated[Path | None, typer.Option(help="output folder (default: the config's out)")] = None,
    from_stage: Annotated[str | None, typer.Option(
        "--from", help="recompute this stage and all later ones")] = None,
) -> None:
    """Run a whole study from one config: data, models, evaluations, report (cached stages)."""
    from .experiment_config import load_config
    from .pipeline import run_experiment

    cfg = load_config(config)
    run_experiment(cfg, from_stage, out=out)


def _register_optional() -> None:
    """Commands contributed by sub-packages (real-data readers, experiment pipeline)."""
    for mod_name in ("lfpdistill.readers.cli",):
        try:
            mod = __import__(mod_name, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name and mod_name.startswith(e.name):
                continue
            raise
        mod.register(app)


_register_optional()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lfpdistill`` console script."""
    try:
        app(args=argv, prog_name="lfpdistill")
    except LfpDistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
