"""``lfpdistill distill``: a frozen spike teacher distilled into an LFP student on paired sessions.

Three steps, each its own function: check that teacher and data fit (:func:`_load_teacher`),
build the student (:func:`_build_student`), and compute the teacher's targets once per session
with the statistics of their transform (:func:`teacher_targets`); then the shared fit loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from ..config import DistillConfig, ModelConfig, TrainConfig
from ..data import WindowDataset, open_store, write_json_atomic
from ..data.windows import budget_runs, runs_mask
from ..errors import ConfigError, DataValidationError
from ..evaluation import (
    WienerDecoder,
    band_power_features,
    compute_latents,
    lag_latents,
    r2_columns,
    session_latents,
)
from ..models import NeuralTransformer, load_checkpoint, load_model
from ..session import Session
from ..training import DistillModule, check_teacher_sessions, fit, teacher_pca, teacher_target_stats
from .common import load_selected, writes_run_folder


@dataclass
class TeacherTargets:
    """Stitched teacher latents per session (``cache``: None when the teacher runs per batch) and
    the transform of the targets fit on the training bins: PCA ``basis`` and ``stats``."""

    cache: dict[str, np.ndarray] | None
    stats: tuple[np.ndarray, np.ndarray] | None
    basis: tuple[np.ndarray, np.ndarray] | None
    weights: np.ndarray | None = None


def _load_teacher(teacher_run: Path, sel: Sequence[Session]) -> tuple[NeuralTransformer, dict[str, Any]]:
    teacher, tmeta = load_model(Path(teacher_run), modality="spikes")
    bin_size = sel[0].bin_size
    if abs(tmeta["bin_size"] - bin_size) > 1e-9:
        raise DataValidationError(
            f"teacher '{teacher_run}' was trained on {tmeta['bin_size']}s bins but the store uses "
            f"{bin_size}s bins; train the teacher on this store's bin grid")
    check_teacher_sessions(teacher, [s.name for s in sel], {s.name: s.n_units for s in sel})
    return teacher, tmeta


def _build_student(sel: Sequence[Session], student_cfg: ModelConfig, student_init: Path | None
                   ) -> NeuralTransformer:
    """A new LFP student, or a copy of an LFP run extended with the sessions. Either way it is
    read out on its one-pass (nothing hidden) latents: those are what it is aligned on."""
    lfp_vocab = {s.name: s.n_channels for s in sel}
    if student_init is None:
        cfg = ModelConfig(**{**student_cfg.model_dump(), "modality": "lfp", "readout": "visible"})
        return NeuralTransformer(cfg, lfp_vocab)
    model, smeta = load_model(Path(student_init), modality="lfp")
    bin_size = sel[0].bin_size
    if abs(smeta["bin_size"] - bin_size) > 1e-9:
        raise DataValidationError(f"student init '{student_init}' uses {smeta['bin_size']}s bins "
                                  f"but the store uses {bin_size}s bins")
    wants, has = student_cfg, model.cfg
    if wants.causal != has.causal or (wants.causal and wants.context_bins != has.context_bins):
        raise ConfigError(
            f"student init '{student_init}' is {'a causal' if has.causal else 'a bidirectional'} "
            f"model (context_bins={has.context_bins}) but causal={wants.causal}, "
            f"context_bins={wants.context_bins} was asked; a student started from a run keeps its "
            "architecture: distil this student from scratch, or start from a run built that way")
    model.tokenizer.extend(lfp_vocab)
    model.train()
    model.with_readout("visible")
    return model


def teacher_targets(teacher: NeuralTransformer, sel: Sequence[Session], window_s: float,
                    dcfg: DistillConfig, given: dict[str, np.ndarray] | None = None,
                    train_seconds: float | None = None, seed: int = 0) -> TeacherTargets:
    """The teacher latents of every bin (stitched, as for the probe), lagged if asked, and the
    target transform fit on the training bins only (with ``train_seconds``, on the same
    budgeted bins the student trains on). ``given`` (session -> latents of this teacher, e.g.
    shared by several students of one study) skips recomputing them."""
    for key, off in (("target_lag_s", 0.0), ("target_smooth_s", 0.0), ("target_center", "pooled")):
        if getattr(dcfg, key) != off and not dcfg.cache_teacher:
            raise ConfigError(f"{key} needs cache_teacher: true (it is applied to the stitched "
                              "teacher latents of the whole session)")
    if not (dcfg.cache_teacher or dcfg.target_pcs or dcfg.target_norm == "standardize"
            or dcfg.target_weighting != "uniform"):
        return TeacherTargets(None, None, None)
    cache = stitched_latents(teacher, sel, window_s, given, "teacher")
    lag = int(round(dcfg.target_lag_s / sel[0].bin_size))
    if lag:
        cache = {n: lag_latents(z, lag) for n, z in cache.items()}
    if dcfg.target_smooth_s:
        sigma = dcfg.target_smooth_s / sel[0].bin_size
        cache = {s.name: smooth_within_segments(cache[s.name], s.segments, sigma) for s in sel}
    train_bins = _train_bins(sel, train_seconds, seed)
    cache, basis, stats = _fit_target_transform(
        cache, train_bins, dcfg.target_center, dcfg.target_pcs, "target_pcs", "teacher",
        lfp_sessions=sel if dcfg.target_basis == "lfp" else None)
    weights = None
    if dcfg.target_weighting == "lfp_predictable":
        targets = {n: transform_targets(z, basis, stats, dcfg.target_norm) for n, z in cache.items()}
        weights = lfp_predictability(sel, targets, train_bins=train_bins)
    return TeacherTargets(cache if dcfg.cache_teacher else None, stats, basis, weights)


def _train_bins(sel: Sequence[Session], train_seconds: float | None, seed: int
                ) -> dict[str, np.ndarray]:
    return {s.name: runs_mask(budget_runs(s, "train", train_seconds, seed), s.n_bins) for s in sel}


def stitched_latents(model: NeuralTransformer, sel: Sequence[Session], window_s: float,
                     given: dict[str, np.ndarray] | None, source: str) -> dict[str, np.ndarray]:
    """Every bin's stitched latents of each session under ``model`` (``given`` ones are used as
    they are), checked to cover the session's bin grid."""
    given = given or {}
    cache = {s.name: given[s.name] if s.name in given else session_latents(model, s, window_s)
             for s in sel}
    for s in sel:
        if cache[s.name].shape[0] != s.n_bins:
            raise DataValidationError(
                f"{source} latents of '{s.name}' have {cache[s.name].shape[0]} bins but its LFP "
                f"has {s.n_bins}; spikes and LFP must share one bin grid")
    return cache


def _fit_target_transform(cache: dict[str, np.ndarray], train_bins: dict[str, np.ndarray],
                          center: str, k: int, option: str, source: str,
                          lfp_sessions: Sequence[Session] | None = None
                          ) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray] | None,
                                     tuple[np.ndarray, np.ndarray]]:
    """Latents centred per session (``center == "session"``), then the top-``k`` basis (``k`` 0:
    none; ``option`` names ``k`` in errors): principal axes, or with ``lfp_sessions`` the axes
    the LFP of those sessions predicts (:func:`lfp_predictable_basis`); and the per-dimension
    statistics, all fit on the training bins."""
    if center == "session":
        cache = {n: (z - z[train_bins[n]].mean(0)).astype(np.float32) for n, z in cache.items()}
    if not k:
        basis = None
    elif lfp_sessions is not None:
        basis = lfp_predictable_basis(lfp_sessions, cache, train_bins, k, option, source)
    else:
        basis = teacher_pca(cache, train_bins, k, option, source)
    return cache, basis, teacher_target_stats(cache, train_bins, basis)


def _fit_and_held_out(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first 80 % of a session's ``train`` bins and the last 20 % (contiguous in time)."""
    idx = np.flatnonzero(train)
    cut = idx[int(0.8 * len(idx))]
    t = np.arange(len(train))
    return train & (t < cut), train & (t >= cut)


def _band_power_filter(s: Session, y: np.ndarray, fit_bins: np.ndarray, n_lags: int,
                       lag_step: int) -> tuple[np.ndarray, WienerDecoder]:
    """Session ``s``'s LMP + band-power features and a Wiener filter from them to ``y``
    (``[bins, d]``) fit on ``fit_bins``: the linear LFP model the target transforms and the
    diagnostics' yardstick share."""
    x = band_power_features(s.lfp, fs=1.0 / s.bin_size)
    return x, WienerDecoder(n_lags=n_lags, lag_step=lag_step).fit(x, y, fit_bins)


def lfp_predictable_basis(sessions: Sequence[Session], cache: dict[str, np.ndarray],
                          train_bins: dict[str, np.ndarray], k: int, option: str = "target_pcs",
                          source: str = "teacher", n_lags: int = 3, lag_step: int = 10
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``[d]`` and ``k`` axes ``[k, d]`` of the latents in ``cache`` that the LFP predicts
    out of sample (reduced-rank ridge regression): per session a Wiener filter from LMP +
    band-power features to every latent dimension is fit on the first 80 % of the training bins;
    the axes are the principal axes of its predictions on the last 20 %, pooled over sessions
    (so an axis the filter only fits on the bins it saw carries no weight). Validation and test
    bins are never read."""
    preds = []
    for s in sessions:
        fit_bins, held_out = _fit_and_held_out(train_bins[s.name])
        x, dec = _band_power_filter(s, cache[s.name], fit_bins, n_lags, lag_step)
        preds.append(dec.predict(x, held_out))
    p = np.concatenate(preds).astype(np.float64)
    if k > min(p.shape):
        raise DataValidationError(
            f"{option}={k} but the {source} latents have {p.shape[1]} dimensions over {p.shape[0]} "
            f"held-out training bins; use {option} <= {min(p.shape)}")
    _, _, vt = np.linalg.svd(p - p.mean(0), full_matrices=False)
    centre = teacher_target_stats(cache, train_bins)[0]
    return centre.astype(np.float32), vt[:k].astype(np.float32)


def anchor_targets(anchor: NeuralTransformer, sel: Sequence[Session], window_s: float,
                   dcfg: DistillConfig, given: dict[str, np.ndarray] | None = None,
                   train_seconds: float | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The anchor's (a frozen LFP model's) stitched latents of every bin in the space the student
    is aligned to them: centred as the teacher's targets, top ``anchor_pcs`` PCs, normalised as
    the teacher's, all fit on the same training bins. ``given`` as in :func:`teacher_targets`."""
    cache = stitched_latents(anchor, sel, window_s, given, "anchor")
    train_bins = _train_bins(sel, train_seconds, seed)
    cache, basis, stats = _fit_target_transform(cache, train_bins, dcfg.target_center,
                                                dcfg.anchor_pcs, "anchor_pcs", "anchor")
    return {n: transform_targets(z, basis, stats, dcfg.target_norm).astype(np.float32)
            for n, z in cache.items()}


def _load_anchor(anchor_run: Path, sel: Sequence[Session]) -> tuple[NeuralTransformer, float]:
    anchor, ameta = load_model(Path(anchor_run), modality="lfp")
    if abs(ameta["bin_size"] - sel[0].bin_size) > 1e-9:
        raise DataValidationError(f"anchor '{anchor_run}' uses {ameta['bin_size']}s bins but the "
                                  f"store uses {sel[0].bin_size}s bins")
    check_teacher_sessions(anchor, [s.name for s in sel], {s.name: s.n_channels for s in sel},
                           who=f"the anchor '{anchor_run}'",
                           fix="anchor on an LFP run trained (or adapted) on the distillation "
                               "sessions, e.g. the MS-LFP run")
    anchor.eval()
    return anchor, float(ameta.get("window_s", 1.0))


def smooth_within_segments(z: np.ndarray, segments: np.ndarray | None, sigma_bins: float
                           ) -> np.ndarray:
    """``z`` ``[T, d]`` smoothed along time by a Gaussian of ``sigma_bins``, separately inside
    each split segment (no bin mixes values of another split); bins outside every segment are
    left as they are."""
    if sigma_bins <= 0:
        return z
    out = np.array(z, dtype=np.float32, copy=True)
    spans = [(0, len(z))] if segments is None else [(int(a), int(b)) for a, b, _ in segments]
    for a, b in spans:
        if b > a:
            out[a:b] = gaussian_filter1d(out[a:b], sigma_bins, axis=0, mode="nearest")
    return out


def transform_targets(z: np.ndarray, basis: tuple[np.ndarray, np.ndarray] | None,
                      stats: tuple[np.ndarray, np.ndarray], norm: str) -> np.ndarray:
    """Teacher latents ``[T, d]`` in the space the student is aligned in (numpy twin of
    :meth:`DistillModule.normalise`)."""
    if basis is not None:
        z = (z - basis[0]) @ basis[1].T
    if norm == "standardize":
        return (z - stats[0]) / np.maximum(stats[1], 1e-6)
    if norm == "layernorm":
        return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5)
    return z


def lfp_predictability(sessions: Sequence[Session], targets: dict[str, np.ndarray],
                       n_lags: int = 3, lag_step: int = 10,
                       train_bins: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Per target dimension, how well the LFP predicts it: R² of a ridge (Wiener filter) from
    LMP + band-power features, fit on the first 80 % of each session's training bins and scored
    on the last 20 % (contiguous; validation and test bins are not touched), averaged over
    sessions and floored at 0. Uniform when no dimension is predictable."""
    scores = []
    for s in sessions:
        fit_bins, score_bins = _fit_and_held_out(
            train_bins[s.name] if train_bins else s.split_mask("train"))
        y = targets[s.name]
        x, dec = _band_power_filter(s, y, fit_bins, n_lags, lag_step)
        scores.append(r2_columns(y[score_bins], dec.predict(x, score_bins)))
    w = np.clip(np.mean(scores, axis=0), 0.0, None)
    return w if w.sum() > 0 else np.ones_like(w)


@writes_run_folder("out", ("teacher_run", "store_dir", "student_init", "anchor_run"))
def distill_run(teacher_run: Path, store_dir: Path, sessions: str | Sequence[str] | None,
                out: Path, student_cfg: ModelConfig, train_cfg: TrainConfig,
                dcfg: DistillConfig | None = None, student_init: Path | None = None,
                resume: bool = True, teacher_latents: dict[str, np.ndarray] | None = None,
                anchor_run: Path | None = None,
                anchor_latents: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Distil the frozen spike teacher into an LFP student on paired sessions.

    ``teacher_latents`` (session -> stitched latents of this teacher) skips recomputing them;
    they are checked against every session. ``anchor_run`` (an LFP run that knows the sessions,
    e.g. MS-LFP) is needed when ``dcfg.anchor_pcs`` > 0; ``anchor_latents`` are its latents, as
    ``teacher_latents``.
    """
    dcfg = dcfg or DistillConfig()
    if dcfg.anchor_pcs and anchor_run is None:
        raise ConfigError(f"anchor_pcs={dcfg.anchor_pcs} needs an anchor: an LFP run that knows these "
                          "sessions, e.g. the MS-LFP run (lfpdistill distill --anchor RUN); or "
                          "anchor_pcs=0 to distil without one")
    if dcfg.anchor_pcs and not dcfg.cache_teacher:
        raise ConfigError("anchor_pcs needs cache_teacher: true")
    if anchor_run is not None and not dcfg.anchor_pcs:
        raise ConfigError("an anchor run was given but anchor_pcs is 0; set it (e.g. --set "
                          "anchor_pcs=16) or drop the anchor")
    L.seed_everything(train_cfg.seed, verbose=False)
    store = open_store(store_dir)
    sel = load_selected(store, sessions, "spikes")
    load_selected(store, [s.name for s in sel], "lfp")  # paired data needed
    teacher, tmeta = _load_teacher(teacher_run, sel)
    model = _build_student(sel, student_cfg, student_init)
    targets = teacher_targets(teacher, sel, tmeta.get("window_s", train_cfg.window_s), dcfg,
                              teacher_latents, train_cfg.train_seconds, train_cfg.seed)
    anchor = None
    if anchor_run is not None:
        anchor_model, anchor_window = _load_anchor(anchor_run, sel)
        anchor = anchor_targets(anchor_model, sel, anchor_window, dcfg, anchor_latents,
                                train_cfg.train_seconds, train_cfg.seed)
    mods = ("lfp",) if targets.cache is not None else ("spikes", "lfp")
    train_ds = WindowDataset(sel, "train", train_cfg.window_s, train_cfg.stride_s, mods,
                             require=("spikes", "lfp"), budget_s=train_cfg.train_seconds,
                             budget_seed=train_cfg.seed)
    val_ds = WindowDataset(sel, "val", train_cfg.window_s, None, mods, require=("spikes", "lfp"))
    run_config = {"stage": "distill", "store": str(store.root), "store_hash": store.options_hash,
                  "store_content": store.content_key,
                  "teacher": str(teacher_run), "sessions": [s.name for s in sel],
                  "student": model.cfg.model_dump(), "train": train_cfg.model_dump(),
                  "distill": dcfg.model_dump(),
                  "student_init": str(student_init) if student_init else None,
                  "anchor": str(anchor_run) if anchor_run else None}
    module = DistillModule(model, teacher, train_cfg, dcfg, sel[0].bin_size, targets.cache,
                           targets.stats, targets.basis,
                           extra_meta={"sessions_trained": [s.name for s in sel],
                                       "window_s": train_cfg.window_s},
                           target_weights=targets.weights, anchor_targets=anchor)
    summary = fit(module, train_ds, val_ds, Path(out), train_cfg, run_config, resume=resume)
    if summary.get("global_rank", 0) != 0:
        return summary  # under DDP rank 0 evaluates the kept weights
    module.load_state_dict(load_checkpoint(Path(out) / "model.ckpt")["state_dict"])
    diag = distillation_diagnostics(module, sel, train_cfg.window_s, targets.cache)
    if targets.weights is not None:
        diag["target_weights"] = [float(v) for v in targets.weights]
    diag["generalisation"] = generalisation_gap(diag)
    write_json_atomic(Path(out) / "diagnostics.json", diag)
    summary["diagnostics"] = diag
    write_json_atomic(Path(out) / "summary.json", summary)
    return summary


@torch.no_grad()
def distillation_diagnostics(module: DistillModule, sessions: Sequence[Session], window_s: float,
                             cache: dict[str, np.ndarray] | None = None, split: str = "val"
                             ) -> dict[str, Any]:
    """How much of the teacher's (transformed) latent variance the student explains, per
    session, on the bins of ``split`` only (validation by default: never the test bins).

    Student latents are read out one pass per stitched window and mapped by the projection head;
    targets are the teacher latents in the space the student is aligned in (after the PCA basis
    and normalisation). ``r2``: 1 - SSE/SST over every target dimension; ``r2_per_dim``: one per
    dimension (the principal components, in order, when ``target_pcs`` is set); ``sd_per_dim``:
    the targets' spread on these bins; ``r2_train``: the overall value on the training bins (the
    fit the student reached; far above ``r2`` means it did not generalise across segments).
    With an anchor, ``anchor`` holds the same for the anchor's PCs through the anchor head.
    """
    module.eval()
    module.to("cpu")
    teacher, model = module.teacher, module.model
    teacher.to("cpu")
    out: dict[str, Any] = {"split": split, "space": "target_pcs" if module.t_basis is not None
                           else "teacher latents", "sessions": {}}
    if module.anchor_proj is not None:
        out["anchor"] = {"space": "anchor_pcs", "sessions": {}}
    for s in sessions:
        mask = s.split_mask(split)
        if not mask.any():
            continue
        z_t = cache[s.name] if cache is not None else session_latents(teacher, s, window_s)
        target = module.normalise(torch.from_numpy(np.asarray(z_t, dtype=np.float32))).numpy()
        window = max(1, int(round(window_s / s.bin_size)))

        def fn(xb: torch.Tensor, name: str = s.name) -> torch.Tensor:
            widths = torch.full((xb.shape[0],), xb.shape[2], dtype=torch.long)
            return model(xb, [name] * xb.shape[0], widths, reconstruct=False).latents

        assert s.segments is not None
        latents = torch.from_numpy(compute_latents(fn, s.lfp, s.segments, window))
        train = s.split_mask("train")
        out["sessions"][s.name] = _explained(target, module.proj(latents).numpy(), mask, train)
        yardstick = lfp_filter_alignment(s, target, train, mask)
        if yardstick is not None:
            out["sessions"][s.name]["lfp_filter_r2"] = yardstick
        if module.anchor_proj is not None:
            assert module.anchor_targets is not None
            out["anchor"]["sessions"][s.name] = _explained(
                module.anchor_targets[s.name], module.anchor_proj(latents).numpy(), mask, train)
    return out


def lfp_filter_alignment(s: Session, target: np.ndarray, train: np.ndarray, mask: np.ndarray,
                         n_lags: int = 3, lag_step: int = 10) -> float | None:
    """The yardstick of the student's alignment: the share of ``target``'s variance on the
    ``mask`` bins that a linear Wiener filter from the session's LMP + band-power features
    explains, fit on the ``train`` bins (the same targets, bins and R² as the student's).
    None where the session has too few training bins to fit the filter (the student's own
    diagnostics still stand)."""
    try:
        x, dec = _band_power_filter(s, target, train, n_lags, lag_step)
    except DataValidationError:
        return None
    return _pooled_r2(*_sums_of_squares(target[mask], dec.predict(x, mask)))


def _sums_of_squares(target: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per dimension, the squared error of ``pred`` and the spread of ``target`` around its own
    mean (the two sums of an R²), in double precision."""
    t, p = target.astype(np.float64), pred.astype(np.float64)
    return ((t - p) ** 2).sum(0), ((t - t.mean(0)) ** 2).sum(0)


def _pooled_r2(sse: np.ndarray, sst: np.ndarray) -> float:
    """One R² over every dimension from the sums of :func:`_sums_of_squares`."""
    return float(1 - sse.sum() / max(sst.sum(), 1e-12))


def _explained(target: np.ndarray, pred: np.ndarray, mask: np.ndarray, train: np.ndarray
               ) -> dict[str, Any]:
    """Share of ``target``'s variance that ``pred`` explains on the ``mask`` bins (overall and
    per dimension), and overall on the ``train`` bins."""
    sse, sst = _sums_of_squares(target[mask], pred[mask])
    sse_t, sst_t = _sums_of_squares(target[train], pred[train])
    return {
        "r2": _pooled_r2(sse, sst),
        "r2_per_dim": [float(v) for v in 1 - sse / np.maximum(sst, 1e-12)],
        "sd_per_dim": [float(v) for v in target[mask].astype(np.float64).std(0)],
        "bins": int(mask.sum()),
        # the same on the training bins: far above the validation value = overfitting
        "r2_train": _pooled_r2(sse_t, sst_t),
        "r2_train_per_dim": [float(v) for v in 1 - sse_t / np.maximum(sst_t, 1e-12)],
        "bins_train": int(train.sum()),
    }


#: Memorisation flags of :func:`generalisation_gap`: training minus validation alignment above
#: this, or validation alignment at or below zero.
MEMORISATION_GAP = 0.3


def generalisation_gap(diag: dict[str, Any], n_dims: int = 3) -> dict[str, Any]:
    """How far the student's alignment generalises, from :func:`distillation_diagnostics`:
    the share of the aligned teacher dimensions it explains on validation bins (``val``) and on
    training bins (``train``), their means over sessions, the first ``n_dims`` dimensions (the
    leading PCs with ``target_pcs``) averaged over sessions, and ``memorising``: true when the
    mean training alignment exceeds the validation one by more than :data:`MEMORISATION_GAP` or
    the validation alignment is at or below zero (the student fits the targets of the bins it
    trained on and predicts nothing of them elsewhere)."""
    per = diag.get("sessions", {})
    if not per:
        return {"sessions": {}, "memorising": None}
    rows = {}
    for name, d in per.items():
        rows[name] = {"val": d["r2"], "train": d.get("r2_train"),
                      "lfp_filter_val": d.get("lfp_filter_r2"),
                      "val_per_dim": d["r2_per_dim"][:n_dims],
                      "train_per_dim": d.get("r2_train_per_dim", [])[:n_dims]}
    val = float(np.mean([r["val"] for r in rows.values()]))
    trains = [r["train"] for r in rows.values() if r["train"] is not None]
    train = float(np.mean(trains)) if trains else None
    k = min(len(r["val_per_dim"]) for r in rows.values())
    val_dims = [float(np.mean([r["val_per_dim"][i] for r in rows.values()])) for i in range(k)]
    kt = min(len(r["train_per_dim"]) for r in rows.values())
    train_dims = [float(np.mean([r["train_per_dim"][i] for r in rows.values()]))
                  for i in range(kt)]
    gap = None if train is None else train - val
    filt = [r["lfp_filter_val"] for r in rows.values() if r["lfp_filter_val"] is not None]
    return {"space": diag.get("space"), "val": val, "train": train, "gap": gap,
            "lfp_filter_val": float(np.mean(filt)) if filt else None,
            "val_per_dim": val_dims, "train_per_dim": train_dims,
            "memorising": bool(val <= 0 or (gap is not None and gap > MEMORISATION_GAP)),
            "threshold": MEMORISATION_GAP, "sessions": rows}


def generalisation_summary(gen: dict[str, Any]) -> list[str]:
    """A few lines for a person: validation vs training alignment (mean and the leading
    dimensions) and, when the student memorises, what that means."""
    if not gen.get("sessions"):
        return ["generalisation: no session had validation bins to measure it on"]

    def dims(values: list[float]) -> str:
        return " / ".join(f"{v:+.2f}" for v in values) or "-"

    n = len(gen["val_per_dim"])
    train = "n/a" if gen["train"] is None else f"{gen['train']:+.3f}"
    gap = "" if gen["gap"] is None else f" (gap {gen['gap']:+.3f})"
    lines = [f"alignment generalisation ({gen.get('space')}, share of the aligned teacher "
             f"dimensions the student explains, mean over {len(gen['sessions'])} session(s)): "
             f"validation {gen['val']:+.3f}, training {train}{gap}",
             f"  first {n} dims: validation {dims(gen['val_per_dim'])}; training "
             f"{dims(gen['train_per_dim'])}"]
    if gen.get("lfp_filter_val") is not None:
        lines.append(f"  yardstick: a linear LMP + band-power filter explains "
                     f"{gen['lfp_filter_val']:+.3f} of the same targets on the same validation "
                     "bins (how much of them the LFP predicts at all, linearly)")
    if gen["memorising"]:
        lines.append(
            "  WARNING: the student memorises its teacher: it fits the targets of the bins it "
            "trained on but not of bins it has not seen (validation alignment "
            f"{'<= 0' if gen['val'] <= 0 else 'more than ' + str(gen['threshold']) + ' below training'}"
            "); on new data only the dimensions with positive validation alignment carry the "
            "teacher's knowledge")
    else:
        lines.append("  the alignment generalises to validation bins (no memorisation flag)")
    return lines
