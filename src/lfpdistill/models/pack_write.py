"""Writing packed models (``lfpdistill pack``): see :mod:`.pack` for the folder's layout and
how it is read back."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointMismatchError, ConfigError
from .pack import _VOCAB_KEY, CARD, CONFIG, PACK_FORMAT, PACK_VERSION, WEIGHTS, _sha256, is_packed


# ----------------------------------------------------------------------------------- writing
def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON (refusing what JSON cannot hold without loss)."""
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()  # numpy scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise CheckpointMismatchError(f"the checkpoint's {where} holds a {type(value).__name__}, "
                                  "which a packed model cannot store as JSON")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def run_results(run: Path) -> list[dict[str, Any]]:
    """The R² results stored in a run folder: a fine-tuning run's ``result.json`` and the rows
    of ``lfpdistill probe --out RUN/NAME.json`` (any JSON list of rows with a session and an
    r2)."""
    rows: list[dict[str, Any]] = []
    res = _read_json(run / "result.json")
    if isinstance(res, dict):
        for split in ("test", "val", "train"):
            if isinstance(res.get(f"{split}_r2"), int | float):
                rows.append({"evaluation": "fine-tuned decoder", "file": "result.json",
                             "session": res.get("session"), "split": split,
                             "r2": res[f"{split}_r2"], "r2_x": res.get(f"{split}_r2_x"),
                             "r2_y": res.get(f"{split}_r2_y")})
    for path in sorted(run.glob("*.json")):
        data = _read_json(path)
        if not (isinstance(data, list) and data and all(
                isinstance(r, dict) and "session" in r and isinstance(r.get("r2"), int | float)
                for r in data)):
            continue
        for r in data:
            kind = r.get("decoder", "linear")
            rows.append({"evaluation": f"{kind} probe of the frozen latents", "file": path.name,
                         "session": r["session"], "split": r.get("split", "test"),
                         "r2": r["r2"], "r2_x": r.get("r2_x"), "r2_y": r.get("r2_y")})
    return [_plain(r, "results") for r in rows]


def _card(cfg: dict[str, Any], name: str) -> str:
    """The model card (README.md): YAML front matter a hub reads, then what the model is."""
    meta, train = cfg["lfpdistill"], cfg.get("training") or {}
    mc = meta["model_config"]
    stage = meta.get("stage", "?")
    sessions = meta["vocab"]
    opts = train.get("train") if isinstance(train.get("train"), dict) else {}
    window = meta.get("window_s", opts.get("window_s", "?"))
    what = {"pretrain": "masked-autoencoding pretraining", "distill": "distillation of a spike "
            "teacher into an LFP student", "finetune": "supervised fine-tuning with a velocity "
            "head"}.get(stage, stage)
    lines = ["---", "library_name: lfpdistill",
             f"tags: [lfpdistill, neuroscience, {mc.get('modality', 'lfp')}, "
             "brain-computer-interface]", "---", "",
             f"# {name}", "",
             f"A {mc.get('modality')} model of lfpdistill (stage: {stage}, {what}), packed from "
             f"`{cfg.get('source_run')}` with lfpdistill {cfg.get('lfpdistill_version')}.", "",
             "## Load it", "", "```bash",
             f"lfpdistill embed {name} --store STORE   # latents of a store's sessions", "```",
             "", "```python", "from lfpdistill.models import load_model",
             f"model, meta = load_model(\"{name}\")  # needs torch and safetensors only", "```",
             "", "Every lfpdistill command that takes a run folder takes this folder too.", "",
             "## Trained on", "",
             f"- stage: {stage}; modality: {mc.get('modality')}; bin size: "
             f"{meta.get('bin_size')} s; window: {window} s",
             f"- sessions ({len(sessions)}; name: channels): "
             + ", ".join(f"{n}: {c}" for n, c in sessions.items())]
    for key, label in (("store", "store"), ("teacher_run", "teacher run"),
                       ("base_run", "base run"), ("init_from", "initialised from"),
                       ("student_init", "student initialised from"), ("anchor_run", "anchor run")):
        if train.get(key):
            lines.append(f"- {label}: `{train[key]}`")
    lines += ["", "## Options", "", "Model (`config.json` → `lfpdistill.model_config`):", "",
              "| option | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v)} |" for k, v in mc.items()]
    if opts:
        lines += ["", "Training (`config.json` → `training.train`):", "", "| option | value |",
                  "|---|---|"]
        lines += [f"| {k} | {json.dumps(v)} |" for k, v in opts.items()]
    if isinstance(meta.get("distill"), dict):
        lines += ["", "Distillation objective (`config.json` → `lfpdistill.distill`):", "",
                  "| option | value |", "|---|---|"]
        lines += [f"| {k} | {json.dumps(v)} |" for k, v in meta["distill"].items()]
    lines += ["", "## Results", ""]
    results = cfg.get("results") or []
    if results:
        lines += ["Velocity R² (mean of x and y) as found in the run folder:", "",
                  "| evaluation | session | split | R² | R² x | R² y | file |",
                  "|---|---|---|---|---|---|---|"]
        for r in results:
            def f(v: Any) -> str:
                return f"{v:.3f}" if isinstance(v, int | float) else "—"
            lines.append(f"| {r['evaluation']} | {r['session']} | {r['split']} | {f(r['r2'])} | "
                         f"{f(r.get('r2_x'))} | {f(r.get('r2_y'))} | {r['file']} |")
    else:
        lines += ["No evaluation was stored in the run folder when it was packed. To add one: "
                  "`lfpdistill embed RUN --store STORE`, then `lfpdistill probe "
                  "RUN/latents.npz --store STORE --out RUN/probe.json`, and pack again."]
    summary = cfg.get("summary") or {}
    if summary:
        keys = [k for k in ("epochs", "steps", "best_val_loss", "kept") if k in summary]
        if keys:
            lines += ["", "Training summary: " + ", ".join(f"{k} {summary[k]}" for k in keys) + "."]
    lines += ["", "## Files", "",
              f"- `{WEIGHTS}`: the weights (safetensors; no pickle anywhere in this folder)",
              f"- `{CONFIG}`: the model config, lfpdistill's metadata (with the session "
              "vocabulary), the training options, the results and the weights' SHA-256",
              f"- `{CARD}`: this card", ""]
    return "\n".join(lines)


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies inside it (resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def check_pack_out(run: Path, out: Path, force: bool) -> None:
    """Refuse, before reading anything, an ``--out`` that is or lies inside the run, holds the
    run, or is a non-empty folder (without ``force``; with it, only a packed model is
    replaced)."""
    run_dir = run.parent if run.is_file() else run
    if _inside(out, run_dir):
        raise ConfigError(f"--out '{out}' is the run '{run_dir}' or inside it; choose a folder "
                          "outside the run")
    if _inside(run_dir, out):
        raise ConfigError(f"--out '{out}' holds the run '{run_dir}'; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"--out '{out}' exists and is not empty; choose another folder or "
                              "pass --force to replace it")
        if not is_packed(out):
            raise ConfigError(f"--out '{out}' is not a packed lfpdistill model; --force replaces "
                              "only those -- choose another folder")


def pack_run(run: Path, out: Path, force: bool = False) -> Path:
    """Write the model of ``run`` (a run folder, its checkpoint file, or a packed folder) as a
    packed folder ``out``, atomically: built in a temporary folder next to ``out`` and renamed
    onto it. Returns ``out``."""
    from .. import __version__
    from .checkpoint import load_checkpoint
    from .keys import CKPT_KEY
    from .tokenizer import stored_vocab

    run, out = Path(run), Path(out)
    check_pack_out(run, out, force)
    ckpt = load_checkpoint(run)
    run_dir = run if run.is_dir() else run.parent
    state = ckpt["state_dict"]
    meta = dict(ckpt[CKPT_KEY])
    if _VOCAB_KEY in state:  # the weights' own vocabulary: the one their rows follow
        meta["vocab"] = stored_vocab(state[_VOCAB_KEY])
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()
               if k != _VOCAB_KEY and isinstance(v, torch.Tensor)}
    other = [k for k, v in state.items() if k != _VOCAB_KEY and not isinstance(v, torch.Tensor)]
    if other:
        raise CheckpointMismatchError(f"the checkpoint of '{run}' holds non-tensor weights "
                                      f"({', '.join(other[:3])}); it cannot be packed")
    if ckpt.get("packed"):
        src = _read_json(run_dir / CONFIG) or {}
        training, summary, results = src.get("training"), src.get("summary"), src.get("results")
        source = src.get("source_run")
    else:
        training = _read_json(run_dir / "run_config.json")
        summary = _read_json(run_dir / "summary.json")
        results = run_results(run_dir)
        source = str(run_dir)
    cfg: dict[str, Any] = {
        "format": PACK_FORMAT, "format_version": PACK_VERSION, "library_name": "lfpdistill",
        "lfpdistill_version": __version__, "weights": WEIGHTS, "weights_sha256": "",
        "source_run": source, "lfpdistill": _plain(meta, "metadata"),
        "training": _plain(training, "run_config.json") if isinstance(training, dict) else None,
        "summary": _plain(summary, "summary.json") if isinstance(summary, dict) else None,
        "results": results or []}
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.pack-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "library": "lfpdistill"})
        cfg["weights_sha256"] = _sha256(tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2, allow_nan=False) + "\n")
        (tmp / CARD).write_text(_card(cfg, out.name))
        old = None
        if out.exists():  # empty, or a packed model replaced with --force
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
