"""``lfpdistill finetune``: a model plus a velocity head trained end-to-end on one session, and
its R² on that session's validation and test segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ..config import TrainConfig
from ..data import WindowDataset, open_store, write_json_atomic
from ..data.store import atomic_path
from ..errors import ConfigError
from ..evaluation import compute_latents, r2_xy
from ..evaluation.latents import require_segments
from ..models import load_checkpoint, load_model
from ..training import FinetuneModule, fit
from .common import load_selected, writes_run_folder


@writes_run_folder("out", ("store_dir", "run_dir"))
def finetune_run(run_dir: Path, store_dir: Path, session: str, out: Path, train_cfg: TrainConfig,
                 as_session: str | None = None, resume: bool = True) -> dict[str, Any]:
    """Fine-tune a model + velocity head end-to-end on one session; R² on its test segments.

    Writes ``out/result.json`` (R² per split) and ``out/predictions.npz``.
    """
    L.seed_everything(train_cfg.seed, verbose=False)
    model, meta = load_model(Path(run_dir))
    store = open_store(store_dir)
    matched = store.select([session])
    if len(matched) != 1:
        raise ConfigError(f"--session '{session}' matches {len(matched)} sessions "
                          f"({', '.join(matched)}); fine-tuning takes one, name it exactly")
    sel = load_selected(store, matched, model.modality)
    s = sel[0]
    name = as_session or s.name
    width = getattr(s, model.modality).shape[1]
    if name not in model.vocab():
        model.tokenizer.extend({name: width})
    model.tokenizer.check_sessions([name], [width])
    train_mask = s.split_mask("train")
    vel = s.velocity[train_mask]
    module = FinetuneModule(model, train_cfg, s.bin_size, vel.mean(0), vel.std(0), as_session,
                            extra_meta={"base_run": str(run_dir), "session": s.name,
                                        "window_s": train_cfg.window_s})
    mods = (model.modality,)
    train_ds = WindowDataset([s], "train", train_cfg.window_s, train_cfg.stride_s, mods, require=mods,
                             budget_s=train_cfg.train_seconds, budget_seed=train_cfg.seed)
    val_ds = WindowDataset([s], "val", train_cfg.window_s, None, mods, require=mods)
    run_config = {"stage": "finetune", "store": str(store.root), "store_hash": store.options_hash,
                  "store_content": store.content_key,
                  "base_run": str(run_dir), "session": s.name, "as_session": as_session,
                  "train": train_cfg.model_dump()}
    summary = fit(module, train_ds, val_ds, Path(out), train_cfg, run_config, resume=resume)
    if summary.get("global_rank", 0) != 0:
        # under DDP only rank 0 writes model.ckpt and evaluates it; the other ranks stop here
        return {"session": s.name, "as_session": as_session, "global_rank": summary["global_rank"]}
    # evaluate the kept checkpoint
    module.load_state_dict(load_checkpoint(Path(out) / "model.ckpt")["state_dict"])
    module.eval()
    module.to("cpu")
    x = getattr(s, model.modality)
    window = int(round(train_cfg.window_s / s.bin_size))

    def fn(xb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            widths = torch.full((xb.shape[0],), xb.shape[2], dtype=torch.long)
            return module.predict_windows(xb, [s.name] * xb.shape[0], widths)

    pred = compute_latents(fn, x, require_segments(s), window)
    result = {"session": s.name, "as_session": as_session,
              **{f"{split}_{k}": v for split in ("val", "test")
                 for k, v in r2_xy(s.velocity[s.split_mask(split)], pred[s.split_mask(split)]).items()}}
    write_json_atomic(Path(out) / "result.json", result)
    with atomic_path(Path(out) / "predictions.npz", suffix=".npz") as tmp:
        np.savez(tmp, pred=pred, velocity=s.velocity)
    return result
