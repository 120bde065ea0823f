"""``lfpdistill export`` and ``decode``: a causal LFP model decoding velocity bin by bin.

A *causal decoder* steps one session's LFP one bin at a time: normalise each channel with the
statistics of the session's training bins, advance the causal model by one bin
(:class:`~lfpdistill.models.streaming.CausalStepper`: a key/value cache of the last
``context_bins`` bins per layer and the filter bank's short history — bounded state, one token
per patch of work per layer), and map the new bin's latent to velocity with a linear read-out.
The read-out is the fine-tuned head of a ``finetune`` run, or else a linear regression (the
linear probe) fit on the causal latents of the session's training bins, saved with the run under
``realtime/SESSION.npz``.

The latent of bin ``t`` is that of a causal pass over the recording up to ``t`` (every layer
attends to the last ``context_bins`` bins of the layer below); the offline twin
(:func:`~lfpdistill.models.streaming.causal_latents`) computes the same pass in chunks, and the
two agree. The whole session is decoded continuously, as a recording would be (the state at a
test bin holds the LFP, never the velocity, of whatever precedes it); R² is scored on the test
bins.

Dropped bins: a bin with NaN/inf channels is, by default, read with each such channel holding
its last finite value (``nan_policy="hold"``; the normalisation mean before any); with
``nan_policy="error"`` it is refused. The exported ONNX graph itself does not check its input.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data import open_store, write_json_atomic
from ..data.store import atomic_path
from ..errors import CheckpointMismatchError, ConfigError, DataValidationError
from ..evaluation import r2_xy
from ..evaluation.readouts import LaggedReadout, readout_features
from ..evaluation.readouts import fit_readout as fit_lagged_readout
from ..models import NeuralTransformer, load_checkpoint, load_model
from ..models.streaming import STATE_NAMES, CausalStepper, causal_latents
from ..session import Session
from .common import load_selected
from .onnx_meta import open_graph, read_onnx_meta
from .stream_readout import BANDPOWER_STATE, RING_STATE, BandPowerStepper, LagRing

READOUT_DIR = "realtime"
NAN_POLICIES = ("hold", "error")
FORMAT = "lfpdistill-realtime/3"
#: largest |ONNX - eager| velocity difference accepted by the export's own check, relative to
#: the scale of the eager outputs (their root mean square over the checked bins, at least 1)
EXPORT_RTOL = 1e-4
#: the read-outs ``export``/``decode`` fit on a distill or pretrain run; ``auto``: each of them,
#: the one with the best validation R² kept (test bins never choose)
READOUTS = ("auto", "linear_probe", "wiener", "combined")
#: the lags of the Wiener and combined read-outs (the classic decoders' 10 lags x 20 ms)
READOUT_LAGS = (10, 2)

#: one decoding step: ``(bin [C] float32, state) -> (velocity [2], new state)``
Step = Callable[[np.ndarray, tuple[Any, ...]], tuple[np.ndarray, tuple[Any, ...]]]


@dataclass
class Readout:
    """What maps a causal model's latents to velocity for one session, and the input
    normalisation it was fit with: ``velocity[t] = bias + weight @ lagged features`` (see
    :class:`~lfpdistill.evaluation.readouts.LaggedReadout`: ``n_lags`` lags ``lag_step`` bins
    apart of the ``features`` — the latents, or the latents and the LMP + band power)."""

    session: str
    kind: str            # linear_probe, finetune_head, wiener or combined
    weight: np.ndarray   # [2, n_lags * F]
    bias: np.ndarray     # [2]
    mean: np.ndarray     # [C] per-channel input mean (training bins)
    std: np.ndarray      # [C] per-channel input standard deviation (training bins)
    n_lags: int = 1
    lag_step: int = 1
    features: str = "latents"
    fs: float = 100.0    # sampling rate of the bins (Hz): the band-power filters' design
    scores: dict[str, float] = field(default_factory=dict)  # validation R² of each candidate

    def lagged(self) -> LaggedReadout:
        return LaggedReadout(self.kind, self.weight, self.bias, self.n_lags, self.lag_step,
                             self.features)


class CausalDecoder(nn.Module):
    """``forward(lfp_bin [C], *state) -> (velocity [2], *new_state)``: normalisation, one step of
    the causal model, linear read-out — the one graph that is exported. The state before the
    first bin is :meth:`initial_state`; :meth:`offline` decodes a whole recording at once."""

    def __init__(self, model: NeuralTransformer, readout: Readout):
        super().__init__()
        self.model = model.eval()
        self.stepper = CausalStepper(model, readout.session)
        self.session, self.readout_kind = readout.session, readout.kind
        self.readout = readout
        self.register_buffer("mean", torch.as_tensor(readout.mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(readout.std, dtype=torch.float32))
        self.register_buffer("weight", torch.as_tensor(readout.weight, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor(readout.bias, dtype=torch.float32))
        n_feat = model.cfg.d_model
        self.bandpower: BandPowerStepper | None = None
        if readout.features == "latents+bandpower":
            self.bandpower = BandPowerStepper(self.stepper.n_channels, readout.fs)
            n_feat += self.stepper.n_channels * (1 + self.bandpower.n_bands)
        self.ring = LagRing(n_feat, readout.n_lags, readout.lag_step) if readout.n_lags > 1 \
            else None
        if tuple(self.weight.shape) != (2, readout.n_lags * n_feat):
            raise CheckpointMismatchError(
                f"the read-out of session '{readout.session}' has weights of shape "
                f"{list(self.weight.shape)} but the model gives {readout.n_lags} x {n_feat} "
                "features; fit it again (--refit)")
        self.state_names: tuple[str, ...] = (
            STATE_NAMES + (BANDPOWER_STATE if self.bandpower is not None else ())
            + (RING_STATE if self.ring is not None else ()))

    def initial_state(self) -> tuple[torch.Tensor, ...]:
        state = self.stepper.initial_state()
        if self.bandpower is not None:
            state += self.bandpower.initial_state()
        if self.ring is not None:
            state += self.ring.initial_state()
        return state

    def forward(self, lfp_bin: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k = len(STATE_NAMES)
        latent, *new = self.stepper((lfp_bin - self.mean) / self.std, *state[:k])
        f = latent
        if self.bandpower is not None:
            feats, *bp = self.bandpower(lfp_bin, *state[k:k + len(BANDPOWER_STATE)])
            f = torch.cat([latent, feats])
            new += bp
            k += len(BANDPOWER_STATE)
        if self.ring is not None:
            f, ring = self.ring(f, state[k])
            new.append(ring)
        return (f @ self.weight.T + self.bias, *new)

    @torch.no_grad()
    def latents(self, lfp: np.ndarray) -> np.ndarray:
        """Causal latents ``[T, d]`` of a whole recording ``lfp [T, C]`` (one pass, chunked)."""
        x = (torch.from_numpy(np.asarray(lfp, np.float32)) - self.mean) / self.std
        return causal_latents(self.model, self.session, x).numpy()

    def offline(self, lfp: np.ndarray) -> np.ndarray:
        """Velocity ``[T, 2]`` of every bin of ``lfp [T, C]``: what streaming it gives."""
        r = self.readout
        f = readout_features(self.latents(lfp), lfp, r.features, r.fs)
        return r.lagged().predict(f)


def eager_step(dec: CausalDecoder) -> Step:
    """:class:`CausalDecoder` as a :data:`Step` on numpy bins (state: torch tensors)."""

    def step(x: np.ndarray, state: tuple[Any, ...]) -> tuple[np.ndarray, tuple[Any, ...]]:
        with torch.inference_mode():
            vel, *new = dec(torch.from_numpy(x), *state)
        return vel.numpy(), tuple(new)

    return step


class StreamingDecoder:
    """Decode one bin at a time with bounded state (the model's key/value cache).

    ``step`` advances the decoder by one bin ``[C]`` (float32) and returns the velocity and the
    new state; ``initial_state`` is the state before the first bin. ``fill`` is the value a
    non-finite channel holds before any finite one (the normalisation mean). ``nan_policy``:
    ``hold`` (a non-finite channel of a bin takes that channel's last finite value) or ``error``.
    """

    def __init__(self, step: Step, initial_state: tuple[Any, ...], channels: int,
                 fill: np.ndarray, nan_policy: str = "hold"):
        if nan_policy not in NAN_POLICIES:
            raise ConfigError(f"unknown nan policy '{nan_policy}'; use {' or '.join(NAN_POLICIES)}")
        self._step, self._initial = step, tuple(initial_state)
        self.channels = int(channels)
        self.nan_policy = nan_policy
        self.fill = np.asarray(fill, dtype=np.float32).reshape(self.channels)
        self.reset()

    def reset(self) -> None:
        self.state = self._initial
        self._last = self.fill.copy()
        self.n_bins = 0
        self.n_held = 0

    def clean(self, lfp_bin: np.ndarray) -> np.ndarray:
        """Check one bin ``[C]`` and apply the NaN policy; returns the bin the model reads."""
        x = np.asarray(lfp_bin, dtype=np.float32)
        if x.shape != (self.channels,):
            raise DataValidationError(
                f"bin {self.n_bins} has shape {list(x.shape)} but the decoder reads one row of "
                f"{self.channels} channels per bin; feed the session it was exported for")
        bad = ~np.isfinite(x)
        if bad.any():
            if self.nan_policy == "error":
                raise DataValidationError(
                    f"bin {self.n_bins} has NaN/inf in {int(bad.sum())} of {self.channels} "
                    "channels; drop or repair it, or decode with nan_policy 'hold' (each such "
                    "channel holds its last finite value)")
            x = np.where(bad, self._last, x)
            self.n_held += 1
        self._last = x
        return x

    def step(self, lfp_bin: np.ndarray) -> np.ndarray:
        """Add one bin and return the velocity decoded for it."""
        x = self.clean(lfp_bin)
        vel, self.state = self._step(x, self.state)
        self.n_bins += 1
        return vel


# ------------------------------------------------------------------ models and read-outs
def load_causal(run_dir: Path) -> tuple[NeuralTransformer, dict[str, Any]]:
    """The causal LFP model of a run (distill, pretrain or finetune)."""
    model, meta = load_model(Path(run_dir), modality="lfp")
    if not model.cfg.causal:
        raise ConfigError(f"run '{run_dir}' is not a causal model; streaming needs one trained "
                          "with --set causal=true (e.g. lfpdistill distill ... --set causal=true)")
    return model, meta


def _checkpoint_hash(run_dir: Path) -> str:
    from ..models.checkpoint import weights_file  # model.ckpt, or a packed model's weights

    path = weights_file(Path(run_dir))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _session(store_dir: Path, session: str) -> Session:
    sel = load_selected(open_store(store_dir), [session], "lfp")
    if len(sel) != 1:
        raise DataValidationError(f"--session must name one session; '{session}' matches "
                                  f"{len(sel)} ({', '.join(s.name for s in sel)})")
    return sel[0]


def _check_model_session(model: NeuralTransformer, meta: dict[str, Any], s: Session) -> None:
    model.tokenizer.check_sessions([s.name], [s.n_channels])
    if abs(float(meta["bin_size"]) - s.bin_size) > 1e-9:
        raise DataValidationError(f"the model was trained on {meta['bin_size']}s bins but session "
                                  f"'{s.name}' has {s.bin_size}s bins")


def _check_readout_kind(kind: str) -> None:
    if kind not in READOUTS:
        raise ConfigError(f"unknown read-out '{kind}'; use one of {', '.join(READOUTS)}")


def fit_readout(model: NeuralTransformer, meta: dict[str, Any], run_dir: Path, s: Session,
                kind: str = "auto") -> Readout:
    """The velocity read-out of a causal model on session ``s``.

    ``kind``: ``linear_probe`` (same-bin linear regression), ``wiener`` (ridge on the past
    :data:`READOUT_LAGS` of the latents), ``combined`` (one ridge on the past lags of the latents
    and the LMP + band-power features, a penalty per block chosen on the validation bins), or
    ``auto``: every one of them fit on the training bins and the one whose causal pass scores the
    best validation R² kept (without validation bins: ``wiener``). For a ``finetune`` run,
    ``auto`` is its fine-tuned head (it must be that run's session). Test bins are never read."""
    _check_readout_kind(kind)
    train = s.split_mask("train")
    if not train.any():
        raise DataValidationError(f"session '{s.name}' has no training bins to fit a read-out on")
    mean = s.lfp[train].mean(0).astype(np.float32)
    std = np.maximum(s.lfp[train].std(0), 1e-6).astype(np.float32)
    fs = 1.0 / s.bin_size
    if meta.get("stage") == "finetune" and kind == "auto":
        if meta.get("session") != s.name:
            raise CheckpointMismatchError(
                f"the fine-tuned head of run '{run_dir}' was trained on session "
                f"'{meta.get('session')}', not '{s.name}'; decode that session, or use a "
                "distill/pretrain run (a read-out is then fit on the session)")
        state = load_checkpoint(Path(run_dir))["state_dict"]
        v_std = state["v_std"].float().numpy()
        weight = state["head.weight"].float().numpy() * v_std[:, None]
        bias = state["head.bias"].float().numpy() * v_std + state["v_mean"].float().numpy()
        return Readout(s.name, "finetune_head", weight, bias, mean, std, fs=fs)
    probe = Readout(s.name, "linear_probe", np.zeros((2, model.cfg.d_model), np.float32),
                    np.zeros(2, np.float32), mean, std, fs=fs)
    z = CausalDecoder(model, probe).latents(s.lfp)
    val = s.split_mask("val")
    if kind == "auto":
        kinds = ["linear_probe", "wiener", "combined"] if val.any() else ["wiener"]
    else:
        kinds = [kind]
    fitted: dict[str, LaggedReadout] = {}
    scores: dict[str, float] = {}
    n_lags, lag_step = READOUT_LAGS
    for k in kinds:
        r = fit_lagged_readout(k, z, s.velocity, train, val, s.lfp, fs, n_lags, lag_step)
        fitted[k] = r
        if val.any():
            pred = r.predict(readout_features(z, s.lfp, r.features, fs))
            scores[k] = r2_xy(s.velocity[val], pred[val])["r2"]
    best = max(kinds, key=lambda k: scores.get(k, -np.inf)) if len(kinds) > 1 else kinds[0]
    r = fitted[best]
    return Readout(s.name, r.kind, r.weight, r.bias, mean, std, r.n_lags, r.lag_step,
                   r.features, fs, scores)


def readout_path(run_dir: Path, session: str, kind: str = "auto") -> Path:
    return Path(run_dir) / READOUT_DIR / f"{session}.{kind}.npz"


def session_sha256(s: Session) -> str:
    """A digest of what a read-out is fit on: the session's LFP, velocity and splits."""
    h = hashlib.sha256()
    for a in (s.lfp, s.velocity, s.split_mask("train"), s.split_mask("val")):
        arr = np.ascontiguousarray(a)
        h.update(str((arr.dtype.str, arr.shape)).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def load_or_fit_readout(run_dir: Path, s: Session, model: NeuralTransformer,
                        meta: dict[str, Any], refit: bool = False, kind: str = "auto"
                        ) -> Readout:
    """The read-out saved with the run for session ``s`` and ``kind`` (fit and saved when
    missing, when the checkpoint or the session's data changed since, or when ``refit``)."""
    _check_readout_kind(kind)
    path = readout_path(run_dir, s.name, kind)
    ckpt, data = _checkpoint_hash(run_dir), session_sha256(s)
    if path.exists() and not refit:
        try:
            with np.load(path, allow_pickle=False) as f:
                if (str(f["checkpoint_sha256"]) == ckpt and str(f["session_sha256"]) == data
                        and f["mean"].shape == (s.n_channels,)):
                    return Readout(s.name, str(f["kind"]), f["weight"], f["bias"], f["mean"],
                                   f["std"], int(f["n_lags"]), int(f["lag_step"]),
                                   str(f["features"]), float(f["fs"]),
                                   json.loads(str(f["scores"])))
        except (OSError, KeyError, ValueError, json.JSONDecodeError):
            pass  # an unreadable or older read-out file is fit again
    r = fit_readout(model, meta, run_dir, s, kind)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, kind=r.kind, weight=r.weight, bias=r.bias, mean=r.mean, std=r.std,
                 n_lags=r.n_lags, lag_step=r.lag_step, features=r.features, fs=r.fs,
                 scores=json.dumps(r.scores), checkpoint_sha256=ckpt, session_sha256=data,
                 context_bins=model.cfg.context_bins)
    return r


def causal_decoder(run_dir: Path, s: Session, refit: bool = False, readout: str = "auto"
                   ) -> tuple[CausalDecoder, dict[str, Any]]:
    """The eager causal decoder of a run for session ``s`` (its read-out fit if needed)."""
    model, meta = load_causal(run_dir)
    _check_model_session(model, meta, s)
    r = load_or_fit_readout(run_dir, s, model, meta, refit, readout)
    return CausalDecoder(model, r).eval(), meta


# ------------------------------------------------------------------ export
def _onnx_modules() -> tuple[Any, Any]:
    try:
        # optional dependencies (the 'realtime' extra), imported only where ONNX is used
        import onnx  # noqa: F401  # torch's exporter needs onnx and onnxscript
        import onnxruntime as ort
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"ONNX needs the optional packages onnx, onnxscript and onnxruntime "
                          f"({e.name} is missing): pip install 'lfpdistill[realtime]'") from None
    return onnx, ort


def onnx_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime session on ``threads`` intra-op threads (CPU)."""
    _, ort = _onnx_modules()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_decoder(decoder: CausalDecoder, channels: int, out: Path) -> dict[str, list[int]]:
    """Write one step of ``decoder`` as an ONNX graph: inputs ``lfp [channels]`` float32 and the
    state tensors (``decoder.state_names``: the model's
    :data:`~lfpdistill.models.streaming.STATE_NAMES`, then the read-out's), outputs
    ``velocity [2]`` and the new state (the same names with ``_next``). Returns the state's
    shapes."""
    _onnx_modules()
    state = decoder.initial_state()
    example = (torch.zeros(channels), *state)
    # the exporter reports its progress on stdout and notes about its own internals (e.g. that
    # torchvision's operators are not registered) as warnings and log records: keep them out of
    # the command's output
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with atomic_path(Path(out), suffix=".onnx") as tmp, warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(decoder.eval(), example, str(tmp),
                              input_names=["lfp", *decoder.state_names],
                              output_names=["velocity",
                                            *(f"{n}_next" for n in decoder.state_names)],
                              dynamo=True, external_data=False, verbose=False)
    finally:
        log.setLevel(level)
    return {n: list(t.shape) for n, t in zip(decoder.state_names, state, strict=True)}


def state_dtypes(decoder: CausalDecoder) -> dict[str, str]:
    """The dtype of every state tensor of ``decoder`` (float32, or float64 for the band-power
    filters' delay lines and averages), by name."""
    return {n: str(t.dtype).replace("torch.", "")
            for n, t in zip(decoder.state_names, decoder.initial_state(), strict=True)}


def onnx_step(sess: Any, names: tuple[str, ...] = STATE_NAMES) -> Step:
    """An onnxruntime session of an exported decoder as a :data:`Step` (state: numpy arrays,
    in the order of ``names``)."""

    def step(x: np.ndarray, state: tuple[Any, ...]) -> tuple[np.ndarray, tuple[Any, ...]]:
        outs = sess.run(None, {"lfp": x, **dict(zip(names, state, strict=True))})
        return outs[0], tuple(outs[1:])

    return step


def zero_state(shapes: dict[str, list[int]], names: tuple[str, ...] = STATE_NAMES,
               dtypes: dict[str, str] | None = None) -> tuple[np.ndarray, ...]:
    """The initial state (zeros) of the named state tensors."""
    dtypes = dtypes or {}
    return tuple(np.zeros(shapes[n], dtype=np.dtype(dtypes.get(n, "float32"))) for n in names)


def export_run(run_dir: Path, store_dir: Path, session: str, out: Path, refit: bool = False,
               check_bins: int = 256, readout: str = "auto") -> dict[str, Any]:
    """Export the causal decoder of ``run_dir`` for ``session`` to ``out`` (ONNX) plus its
    metadata ``out.with_suffix('.json')``; checks the graph against the eager decoder on
    ``check_bins`` bins of the session stepped through both (largest difference, relative to
    the outputs' scale, kept in the metadata). ``readout``: see :func:`fit_readout`."""
    _onnx_modules()
    out = Path(out)
    s = _session(store_dir, session)
    dec, meta = causal_decoder(run_dir, s, refit, readout)
    context, C = dec.model.cfg.context_bins, s.n_channels
    shapes = export_decoder(dec, C, out)
    names, dtypes = dec.state_names, state_dtypes(dec)
    # the check: bins from the middle of the session, stepped from the initial state by both
    a = max(0, s.n_bins // 2 - check_bins // 2)
    bins = s.lfp[a:min(s.n_bins, a + check_bins)].astype(np.float32)
    eager = StreamingDecoder(eager_step(dec), dec.initial_state(), C, dec.mean.numpy())
    graph = StreamingDecoder(onnx_step(onnx_session(out), names),
                             zero_state(shapes, names, dtypes), C, dec.mean.numpy())
    ref = np.stack([eager.step(x) for x in bins])
    got = np.stack([graph.step(x) for x in bins])
    diff = float(np.abs(ref - got).max())
    scale = max(1.0, float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))))
    if not diff <= EXPORT_RTOL * scale:
        out.unlink(missing_ok=True)
        raise CheckpointMismatchError(
            f"the ONNX graph differs from the eager model by {diff:.2e} (> {EXPORT_RTOL} x "
            f"the outputs' scale {scale:.3g}); the export is not trustworthy — report this "
            "with the run")
    info = {
        "format": FORMAT,
        "lfpdistill_version": __version__,
        "onnx": out.name,
        "run": str(run_dir),
        "stage": meta.get("stage"),
        "session": s.name,
        "n_channels": C,
        "bin_size_s": s.bin_size,
        "context_bins": context,
        "input": {"name": "lfp", "shape": [C], "dtype": "float32",
                  "layout": "one bin: the LFP of every channel, in the session's order",
                  "units": "LFP as in the lfpdistill store (the LFP chain's output, z-scored "
                           "per channel)"},
        "state": {"names": list(names), "shapes": shapes, "dtypes": dtypes,
                  "initial": "zeros before the recording's first bin",
                  "update": "each call returns the next state as '<name>_next'; pass it to the "
                            "call of the next bin",
                  "bytes": int(sum(np.prod(shapes[n]) * np.dtype(dtypes[n]).itemsize
                                   for n in names))},
        "output": {"name": "velocity", "shape": [2], "dtype": "float32",
                   "meaning": "velocity (x, y) at the input bin, in the session's units"},
        "normalisation": {"formula": "(lfp - mean) / std per channel, inside the graph",
                          "fit_on": "the session's training bins",
                          "mean": [float(v) for v in dec.mean],
                          "std": [float(v) for v in dec.std]},
        "readout": dec.readout_kind,
        "readout_detail": {"kind": dec.readout_kind, "n_lags": dec.readout.n_lags,
                           "lag_step": dec.readout.lag_step, "features": dec.readout.features,
                           "validation_r2": dec.readout.scores,
                           "requested": readout},
        "nan_policy": "not checked inside the graph; lfpdistill decode holds each non-finite "
                      "channel at its last finite value (or refuses the bin: --nan error)",
        "check": {"bins": len(bins), "max_abs_diff_vs_eager": diff, "rtol": EXPORT_RTOL,
                  "output_scale": scale},
    }
    write_json_atomic(out.with_suffix(".json"), info)
    return info


# ------------------------------------------------------------------ decode
def _onnx_backend(path: Path, s: Session, threads: int) -> dict[str, Any]:
    meta_path = Path(path).with_suffix(".json")
    if not meta_path.exists():
        raise CheckpointMismatchError(f"'{path}' has no metadata file '{meta_path.name}' next to "
                                      "it; export it with lfpdistill export")
    info = read_onnx_meta(meta_path, FORMAT)
    if info.get("format") != FORMAT:
        raise CheckpointMismatchError(
            f"'{meta_path}' is not an lfpdistill real-time metadata file of this version "
            f"({FORMAT}); export the run again with lfpdistill export")
    if info["session"] != s.name:
        raise CheckpointMismatchError(
            f"'{path}' was exported for session '{info['session']}', not '{s.name}'; export the "
            f"run for it (lfpdistill export RUN --session {s.name} ...)")
    if info["n_channels"] != s.n_channels:
        raise DataValidationError(f"'{path}' reads {info['n_channels']} channels but session "
                                  f"'{s.name}' has {s.n_channels}")
    if abs(float(info["bin_size_s"]) - s.bin_size) > 1e-9:
        raise DataValidationError(f"'{path}' was exported for {info['bin_size_s']}s bins but "
                                  f"session '{s.name}' has {s.bin_size}s bins")
    names = tuple(info["state"]["names"])
    graph = open_graph(path, lambda: onnx_session(path, threads), info)
    return {"step": onnx_step(graph, names),
            "state": zero_state(info["state"]["shapes"], names, info["state"].get("dtypes")),
            "context": int(info["context_bins"]),
            "fill": np.asarray(info["normalisation"]["mean"], dtype=np.float32),
            "backend": "onnx", "offline": None, "readout": str(info.get("readout"))}


def _eager_backend(run_dir: Path, s: Session, refit: bool, readout: str = "auto"
                   ) -> dict[str, Any]:
    dec, _ = causal_decoder(run_dir, s, refit, readout)
    return {"step": eager_step(dec), "state": dec.initial_state(),
            "context": dec.model.cfg.context_bins, "fill": dec.mean.numpy(), "backend": "eager",
            "offline": dec.offline, "readout": dec.readout_kind}


def decode_run(source: Path, store_dir: Path, session: str, out: Path | None = None,
               stream: bool = False, nan_policy: str = "hold", threads: int = 1,
               refit: bool = False, readout: str = "auto") -> dict[str, Any]:
    """Decode velocity from ``session``'s LFP with a causal run (eager) or an exported ``.onnx``
    file; R² on the validation and test bins. ``stream``: one bin at a time through a
    :class:`StreamingDecoder` on ``threads`` CPU threads, with per-bin latency (median, p99);
    otherwise the same causal pass at once (eager: in chunks; ONNX: stepped, untimed).
    ``out``: ``.npz`` with ``pred``, ``velocity`` and, streamed, ``latency_ms`` per bin.
    ``readout`` (a run only; an ONNX file carries its own): see :func:`fit_readout`."""
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"unknown nan policy '{nan_policy}'; use {' or '.join(NAN_POLICIES)}")
    if threads < 1:
        raise ConfigError(f"threads={threads} must be >= 1")
    source = Path(source)
    s = _session(store_dir, session)
    is_onnx = source.suffix == ".onnx"
    if is_onnx and not source.is_file():
        raise CheckpointMismatchError(f"no ONNX file at '{source}'; export one with lfpdistill export")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        b = (_onnx_backend(source, s, threads) if is_onnx
             else _eager_backend(source, s, refit, readout))
        latency = None
        if stream or b["offline"] is None:
            dec = StreamingDecoder(b["step"], b["state"], s.n_channels, b["fill"], nan_policy)
            pred = np.empty((s.n_bins, 2), dtype=np.float32)
            lat = np.empty(s.n_bins, dtype=np.float64)
            clock = time.perf_counter_ns
            for t in range(s.n_bins):
                t0 = clock()
                pred[t] = dec.step(s.lfp[t])
                lat[t] = (clock() - t0) / 1e6
            latency = lat if stream else None
        else:
            pred = b["offline"](s.lfp)
    finally:
        torch.set_num_threads(old_threads)
    result: dict[str, Any] = {"session": s.name, "source": str(source), "backend": b["backend"],
                              "mode": "stream" if stream else "offline", "bins": s.n_bins,
                              "context_bins": b["context"], "readout": b["readout"]}
    for split in ("val", "test"):
        m = s.split_mask(split)
        if m.any():
            result.update({f"{split}_{k}": v for k, v in r2_xy(s.velocity[m], pred[m]).items()})
    if latency is not None:
        result.update({"threads": threads, "latency_ms_median": float(np.median(latency)),
                       "latency_ms_p99": float(np.percentile(latency, 99)),
                       "latency_ms_max": float(latency.max())})
    if out is not None:
        with atomic_path(Path(out), suffix=".npz") as tmp:
            extra = {} if latency is None else {"latency_ms": latency}
            np.savez(tmp, pred=pred, velocity=s.velocity, **extra)
    return result
