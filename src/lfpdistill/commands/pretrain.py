"""``lfpdistill pretrain`` and ``adapt``: masked-autoencoding training of a spike or LFP model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

from ..config import ModelConfig, TrainConfig
from ..data import open_store
from ..errors import ConfigError, DataValidationError
from ..models import NeuralTransformer, load_model
from ..training import PretrainModule, fit
from .common import load_selected, window_dataset, writes_run_folder


@writes_run_folder("out", ("store_dir", "init_from"))
def pretrain_run(store_dir: Path, sessions: str | Sequence[str] | None, modality: str, out: Path,
                 model_cfg: ModelConfig, train_cfg: TrainConfig, init_from: Path | None = None,
                 train_only_new: bool = False, resume: bool = True,
                 model_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Masked-autoencoding training of a spike or LFP model on the selected sessions.

    With ``init_from`` (a run dir), the pretrained model is extended with any new sessions and
    trained further — only the new sessions' embeddings if ``train_only_new``; the model options
    named in ``model_keys`` (the ones the user set) must then equal the checkpoint's, which
    fixes the architecture.
    """
    L.seed_everything(train_cfg.seed, verbose=False)
    store = open_store(store_dir)
    sel = load_selected(store, sessions, modality)
    vocab = {s.name: getattr(s, modality).shape[1] for s in sel}
    bin_size = sel[0].bin_size
    if init_from is not None:
        model, meta = load_model(Path(init_from), modality=modality)
        if abs(meta["bin_size"] - bin_size) > 1e-9:
            raise DataValidationError(
                f"model '{init_from}' was trained on {meta['bin_size']}s bins but the sessions use "
                f"{bin_size}s bins; prepare the data on the model's bin grid")
        conflicts = [f"{k}={getattr(model_cfg, k)!r} (the checkpoint has "
                     f"{getattr(model.cfg, k)!r})" for k in model_keys
                     if k != "modality" and getattr(model_cfg, k) != getattr(model.cfg, k)]
        if conflicts:
            raise ConfigError(f"--init-from '{init_from}' fixes the model's architecture, but "
                              f"{'; '.join(conflicts)} was set; drop the model option(s) or train "
                              "a new model without --init-from")
        new = model.tokenizer.extend(vocab)
        if train_only_new and not new:
            raise ConfigError("every selected session is already in the model; nothing to adapt "
                              "(drop --embeddings-only to fine-tune all weights)")
        model_cfg = model.cfg
        model.train()
    else:
        if model_cfg.modality != modality:
            model_cfg = model_cfg.model_copy(update={"modality": modality})
            model_cfg = ModelConfig(**model_cfg.model_dump())
        new = list(vocab)
        model = NeuralTransformer(model_cfg, vocab)
    train_ds = window_dataset(sel, "train", train_cfg, modality, True)
    val_ds = window_dataset(sel, "val", train_cfg, modality, False)
    run_config = {"stage": "pretrain", "store": str(store.root), "store_hash": store.options_hash,
                  "store_content": store.content_key,
                  "sessions": [s.name for s in sel], "modality": modality,
                  "model": model_cfg.model_dump(), "train": train_cfg.model_dump(),
                  "init_from": str(init_from) if init_from else None,
                  "train_only": new if train_only_new else None}
    module = PretrainModule(model, train_cfg, bin_size,
                            train_only=new if train_only_new else None,
                            extra_meta={"sessions_trained": [s.name for s in sel],
                                        "window_s": train_cfg.window_s})
    return fit(module, train_ds, val_ds, Path(out), train_cfg, run_config, resume=resume)
