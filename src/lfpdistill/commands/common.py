"""What the commands share: choosing sessions from a store, their window datasets, the check
of generalization mode (a), and the guard of a command that writes a run folder."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..config import TrainConfig
from ..data import Store, WindowDataset
from ..data.guard import MANIFEST, check_output_folder, folder_lock
from ..errors import ConfigError, DataValidationError
from ..models import NeuralTransformer
from ..session import Session


def load_selected(store: Store, pattern: str | Sequence[str] | None, modality: str | None = None
                  ) -> list[Session]:
    """The sessions of ``store`` matching ``pattern`` (names / globs), each with ``modality``
    when given, all on one bin size."""
    names = store.select(pattern)
    sessions = [store.session(n) for n in names]
    if modality is not None:
        missing = [s.name for s in sessions if not s.has(modality)]
        if missing:
            raise DataValidationError(
                f"session(s) {', '.join(missing)} in '{store.root}' have no {modality}; a {modality} "
                "model needs sessions with it (choose other --sessions)")
    bins = {s.bin_size for s in sessions}
    if len(bins) > 1:
        raise DataValidationError(f"selected sessions have different bin sizes {sorted(bins)}")
    return sessions


def window_dataset(sessions: Sequence[Session], split: str, cfg: TrainConfig, modality: str,
                   train: bool) -> WindowDataset:
    """Windows of one modality in ``split``: strided for training, back to back otherwise."""
    return WindowDataset(sessions, split, cfg.window_s, cfg.stride_s if train else None,
                         modalities=(modality,), require=(modality,),
                         budget_s=cfg.train_seconds if train else None, budget_seed=cfg.seed)


def check_as_session(model: NeuralTransformer, target: Session, as_session: str) -> None:
    """Mode (a) reads ``target`` with the embeddings of a known session: channel counts must match."""
    vocab = model.vocab()
    if as_session not in vocab:
        raise DataValidationError(f"session '{as_session}' is not in the model's vocabulary; "
                                  f"known: {', '.join(vocab)}")
    width = getattr(target, model.modality).shape[1]
    if vocab[as_session] != width:
        raise DataValidationError(
            f"generalization mode (a) reads '{target.name}' as if it were '{as_session}', which needs "
            f"the same channel count ('{target.name}' has {width}, '{as_session}' has "
            f"{vocab[as_session]}); use mode (b) (adapt the session embeddings) instead")


F = TypeVar("F", bound=Callable[..., Any])


def writes_run_folder(out: str, inputs: Sequence[str]) -> Callable[[F], F]:
    """Decorate a command that writes the run folder passed as argument ``out``: the folder must
    not be one of the folders or files passed as ``inputs`` (argument names) nor a store, and it
    is locked (:func:`lfpdistill.data.guard.folder_lock`, the lock of ``lfpdistill run``) while
    the command runs, so two commands cannot write one run folder at once."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            folder = Path(bound.arguments[out])
            check_output_folder(folder, [bound.arguments.get(name) for name in inputs])
            if (folder / MANIFEST).is_file():
                raise ConfigError(f"--out '{folder}' is a session store; write the run to its own "
                                  "folder")
            with folder_lock(folder):
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
