"""Training commands: ``pretrain``, ``adapt``, ``distill`` and ``finetune``; ``pack`` (a trained
model as a folder others can load)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    Modality,
    SetOpt,
    configs,
    console,
    defaults_help,
    distill_configs,
    done,
    fmt,
    kept,
    model_keys,
    print_table,
    train_only,
)


def register(app: typer.Typer) -> None:
    """Add the training commands to ``app``."""

    @app.command(epilog=defaults_help("pretrain_spikes", "pretrain_lfp"))
    def pretrain(
        modality: Annotated[Modality, typer.Option(help="which signal to pretrain on")],
        store: Annotated[Path, typer.Option(help="store directory")],
        out: Annotated[Path, typer.Option(help="run directory to write")],
        sessions: Annotated[str, typer.Option(help="session names/glob patterns, comma-separated")] = "*",
        init_from: Annotated[Path | None, typer.Option(help="continue from this run dir")] = None,
        overrides: SetOpt = None,
        no_resume: Annotated[bool, typer.Option("--no-resume", help="start over")] = False,
    ) -> None:
        """Masked-autoencoding pretraining (spike teacher, SS-LFP or MS-LFP)."""
        from ..commands.pretrain import pretrain_run

        mcfg, tcfg = configs(f"pretrain_{modality.value}", overrides)
        summary = pretrain_run(store, sessions, str(modality.value), out, mcfg, tcfg,
                               init_from=init_from, resume=not no_resume,
                               model_keys=model_keys(overrides))
        done(f"[bold]pretrain done[/]: {summary.get('epochs')} epochs, best val loss "
             f"{fmt(summary.get('best_val_loss'))}; model ({kept(summary)}) in "
             f"{out / 'model.ckpt'}")


    @app.command(epilog=defaults_help("adapt"))
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
        from ..commands.pretrain import pretrain_run
        from ..models import load_model

        model, _ = load_model(run)
        mcfg, tcfg = configs("adapt", train_only(overrides, "adapt"))
        summary = pretrain_run(store, sessions, model.modality, out, mcfg, tcfg, init_from=run,
                               train_only_new=embeddings_only)
        done(f"[bold]adapt done[/]: {summary.get('epochs')} epochs; model in {out / 'model.ckpt'}")


    @app.command(epilog=defaults_help("distill"))
    def distill(
        teacher: Annotated[Path, typer.Option(help="spike teacher run directory")],
        store: Annotated[Path, typer.Option(help="store directory (paired spikes + LFP)")],
        out: Annotated[Path, typer.Option(help="run directory to write")],
        sessions: Annotated[str, typer.Option(help="session names/patterns to distil on")] = "*",
        student_init: Annotated[Path | None, typer.Option(
            help="start the student from this LFP run (e.g. MS-LFP) instead of scratch")] = None,
        anchor: Annotated[Path | None, typer.Option(
            help="LFP run (e.g. MS-LFP) whose latents the student also keeps aligned to; needs "
                 "--set anchor_pcs=K")] = None,
        overrides: SetOpt = None,
        no_resume: Annotated[bool, typer.Option("--no-resume", help="start over")] = False,
    ) -> None:
        """Distil a frozen spike teacher into an LFP student (latent alignment + masked LFP)."""
        from ..commands.distill import distill_run

        mcfg, tcfg, dcfg = distill_configs(overrides)
        summary = distill_run(teacher, store, sessions, out, mcfg, tcfg, dcfg, student_init=student_init,
                              resume=not no_resume, anchor_run=anchor)
        done(f"[bold]distill done[/]: {summary.get('epochs')} epochs, best val loss "
             f"{fmt(summary.get('best_val_loss'))}; student ({kept(summary)}) in "
             f"{out / 'model.ckpt'}")
        diag = summary.get("diagnostics")
        if diag:
            rows = [{"session": name, "teacher variance explained (val)": d["r2"],
                     "(train)": d.get("r2_train"),
                     "first 3 dims": " ".join(f"{v:.2f}" for v in d["r2_per_dim"][:3]),
                     "last 3 dims": " ".join(f"{v:.2f}" for v in d["r2_per_dim"][-3:]),
                     **({"anchor PCs (val)": diag["anchor"]["sessions"][name]["r2"]}
                        if name in diag.get("anchor", {}).get("sessions", {}) else {})}
                    for name, d in diag["sessions"].items()]
            print_table(rows, title=f"distillation diagnostics ({diag['space']}, validation bins; "
                                    "how far the alignment generalises; it does not predict the "
                                    "behaviour gain: compare probes on validation bins for that)")
            from ..commands.distill import generalisation_summary

            for line in generalisation_summary(diag.get("generalisation", {})):
                print(line)


    @app.command(epilog=defaults_help("finetune"))
    def finetune(
        run: Annotated[Path, typer.Argument(
            help="run directory of any model (teacher, SS/MS-LFP, distilled)")],
        store: Annotated[Path, typer.Option(help="store directory")],
        session: Annotated[str, typer.Option(help="session to fine-tune and evaluate on")],
        out: Annotated[Path, typer.Option(help="run directory to write")],
        overrides: SetOpt = None,
    ) -> None:
        """Supervised evaluation: model + velocity head trained end-to-end, R² on test segments."""
        from ..commands.finetune import finetune_run

        _, tcfg = configs("finetune", train_only(overrides, "finetune"))
        res = finetune_run(run, store, session, out, tcfg)
        if res.get("global_rank", 0) != 0:
            return  # a non-zero DDP rank: rank 0 evaluates and reports
        print_table([{k: v for k, v in res.items() if k != "as_session"}], title="fine-tuned decoder R²")


    @app.command()
    def pack(
        run: Annotated[Path, typer.Argument(
            help="run directory of any model (teacher, SS/MS-LFP, distilled, fine-tuned)")],
        out: Annotated[Path, typer.Option(help="folder to write (safetensors weights, "
                                               "config.json, model card README.md)")],
        force: Annotated[bool, typer.Option(
            "--force", help="replace --out if it already holds a packed model")] = False,
    ) -> None:
        """Pack a trained model as a folder others can load (no pickle; a model hub reads it)."""
        from ..models.pack_write import pack_run

        path = pack_run(run, out, force=force)
        console.print(f"[bold]packed[/] {run} → {path} (model.safetensors, config.json, "
                      "README.md); every command that takes a run takes this folder")
