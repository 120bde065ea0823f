"""Training throughput of the demo and paper-sized models, and how close it gets to the machine.

Two measurements, both printed as a table and saved as JSON (machine, torch version, threads,
device, load average):

1. **Model step** (``--what step``): one optimiser step of the masked-autoencoding objective
   (``forward_masked`` + loss + backward + AdamW) on random windows shaped like the role's
   training batches (1 s windows of 10 ms bins; demo teacher: 160 units in 64-unit patches;
   LFP models: 96 channels, one token per bin). Reported: windows/s, tokens/s, optimiser
   steps/s, and the achieved FLOP/s (matmul + attention FLOPs of one step, forward and
   backward, counted by ``torch.utils.flop_counter``) as a fraction of this machine's dense
   matmul peak, measured in the same run (fp32; bf16 where the CPU or GPU supports it).
2. **Training loop** (``--what loop``): the real Lightning loop (``pretrain_run``: data loader,
   logging, validation, checkpoints) on a small simulated store, one epoch after a warm-up
   epoch. The gap between its windows/s and the model step's is the framework's overhead.

    python benchmarks/bench_training.py --json results/bench_training.json
    python benchmarks/bench_training.py --models demo_student --what step --steps 20

Compare two versions of the code side by side in one run (same machine state), e.g. with the
old commit checked out in a worktree::

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old/src python benchmarks/bench_training.py --json old.json
    python benchmarks/bench_training.py --json new.json

Timings are only meaningful on a quiet machine: never run this next to another heavy job.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import lfpdistill
from lfpdistill.allocator import tune_cpu_allocator
from lfpdistill.config import ModelConfig, recommended_model, recommended_train
from lfpdistill.data import write_json_atomic
from lfpdistill.models import NeuralTransformer, masked_loss

BINS = 100          # 1 s windows of 10 ms bins (the recommended window)
UNITS = 160         # a typical demo session (100-200 units)
CHANNELS = 96

#: name -> (role for the recommended model, size overrides, channels, batch size role)
MODELS: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "demo_teacher": ("teacher", {}, UNITS, "teacher"),
    "demo_student": ("lfp", {}, CHANNELS, "distill"),
    "paper_teacher": ("teacher", {"d_model": 256, "n_layers": 6, "n_heads": 8}, UNITS, "teacher"),
    "paper_student": ("lfp", {"d_model": 256, "n_layers": 6, "n_heads": 8}, CHANNELS, "distill"),
}


def machine() -> dict[str, Any]:
    flags = ""
    with contextlib.suppress(OSError, IndexError):
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
    return {"machine": platform.machine(), "processor": platform.processor(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "torch": torch.__version__, "lfpdistill": lfpdistill.__version__,
            "threads": torch.get_num_threads(), "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "loadavg_1min": os.getloadavg()[0]}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 2.0
                ) -> float:
    """Dense matmul FLOP/s of ``n x n`` products in ``dtype`` (best of repeated runs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        sync(device)
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def build(name: str, device: torch.device) -> tuple[NeuralTransformer, int, int]:
    role, size, channels, batch_role = MODELS[name]
    cfg = ModelConfig(**{**recommended_model(role).model_dump(), **size})
    torch.manual_seed(0)
    model = NeuralTransformer(cfg, {"bench": channels}).to(device).train()
    return model, channels, recommended_train(batch_role).batch_size


def batch(modality: str, B: int, channels: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if modality == "spikes":
        x = torch.poisson(torch.full((B, BINS, channels), 0.1), generator=g)
    else:
        x = torch.randn(B, BINS, channels, generator=g)
    return x.to(device)


def step_flops(model: NeuralTransformer, x: torch.Tensor, sessions: list[str]) -> float:
    """Matmul + attention FLOPs of one forward + backward pass (optimiser not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = model.forward_masked(x, sessions)
        loss, _ = masked_loss(out, model.modality)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench_step(name: str, device: torch.device, steps: int, warmup: int,
               precision: str) -> dict[str, Any]:
    model, channels, B = build(name, device)
    x = batch(model.modality, B, channels, device)
    sessions = ["bench"] * B
    flops = step_flops(model, x, sessions)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else torch.autocast(device.type, enabled=False))

    def one() -> None:
        with autocast:
            out = model.forward_masked(x, sessions)
            loss, _ = masked_loss(out, model.modality)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        one()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    npatch = out_tokens_per_bin(model, channels)
    return {"model": name, "what": "step", "precision": precision, "batch": B, "bins": BINS,
            "tokens_per_window": BINS * npatch,
            "params": sum(p.numel() for p in model.parameters()),
            "step_ms": dt * 1e3, "steps_per_s": 1 / dt, "windows_per_s": B / dt,
            "tokens_per_s": B * BINS * npatch / dt, "flops_per_step": flops,
            "flops_per_s": flops / dt}


def out_tokens_per_bin(model: NeuralTransformer, channels: int) -> int:
    return -(-channels // model.cfg.patch_size)


def bench_loop(name: str, device: torch.device) -> dict[str, Any]:
    """Windows/s of the real training loop (``pretrain_run``: loader, logging, validation,
    checkpoints) on a small simulated store: the time of a 2-epoch run minus a 1-epoch run, so
    start-up costs cancel."""
    from lfpdistill.commands.common import window_dataset
    from lfpdistill.commands.pretrain import pretrain_run
    from lfpdistill.config import SimConfig
    from lfpdistill.data.store import open_store, write_store
    from lfpdistill.simulate import simulate_sessions

    role, size, _, batch_role = MODELS[name]
    cfg = ModelConfig(**{**recommended_model(role).model_dump(), **size})
    base = recommended_train(batch_role).model_copy(
        update={"accelerator": "gpu" if device.type == "cuda" else "cpu", "progress": False})
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "store"
        write_store(simulate_sessions(SimConfig(n_sessions=2, seconds=100, seed=0)), store_dir)
        walls = []
        for epochs in (1, 2):
            train = base.model_copy(update={"max_epochs": epochs, "patience": 10})
            t0 = time.perf_counter()
            pretrain_run(store_dir, None, cfg.modality, Path(tmp) / f"run{epochs}", cfg, train,
                         resume=False)
            walls.append(time.perf_counter() - t0)
        store = open_store(store_dir)
        sel = [store.session(n) for n in store.names]
        n_windows = len(window_dataset(sel, "train", base, cfg.modality, True))
    epoch_s = walls[1] - walls[0]
    return {"model": name, "what": "loop", "precision": "fp32", "batch": base.batch_size,
            "train_windows": n_windows, "wall_1_epoch_s": walls[0], "epoch_s": epoch_s,
            "windows_per_s": n_windows / epoch_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"any of {', '.join(MODELS)}")
    ap.add_argument("--what", default="step,loop", help="step, loop or both")
    ap.add_argument("--steps", type=int, default=10, help="timed optimiser steps per model")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    info = machine()
    info["allocator_tuned"] = tune_cpu_allocator()  # as the command line does
    bf16 = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (
        device.type == "cpu" and (info["avx512_bf16"] or info["amx_bf16"]))
    peaks = {"fp32": matmul_peak(device, torch.float32)}
    if bf16:
        peaks["bf16"] = matmul_peak(device, torch.bfloat16)
    rows: list[dict[str, Any]] = []
    whats = args.what.split(",")
    for name in names:
        if "step" in whats:
            for prec in ["fp32"] + (["bf16"] if bf16 else []):
                r = bench_step(name, device, args.steps, args.warmup, prec)
                r["peak_fraction"] = r["flops_per_s"] / peaks[prec]
                rows.append(r)
                print(f"{name:14s} step {prec}: {r['step_ms']:8.1f} ms/step  "
                      f"{r['windows_per_s']:7.1f} windows/s  {r['tokens_per_s']:9.0f} tokens/s  "
                      f"{r['flops_per_s'] / 1e9:6.1f} GFLOP/s = {r['peak_fraction']:.0%} of the "
                      f"{prec} matmul peak", flush=True)
        if "loop" in whats and name.startswith("demo"):
            r = bench_loop(name, device)
            rows.append(r)
            print(f"{name:14s} loop fp32: {r['epoch_s']:6.1f} s/epoch  "
                  f"{r['windows_per_s']:7.1f} windows/s ({r['train_windows']} windows)", flush=True)
    print("\nmatmul peak: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items())
          + f"  ({info['threads']} threads, {device}, load {info['loadavg_1min']:.2f})")
    if args.json:
        write_json_atomic(args.json, {"machine": info, "device": str(device),
                                      "peak_flops": peaks, "rows": rows})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
