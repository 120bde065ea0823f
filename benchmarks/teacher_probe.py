"""How good are masked-autoencoder latents for a linear velocity probe? (teacher ablation)

Trains one masked neural transformer on the train segments of simulated sessions with a plain
loop (no Lightning, for speed), then reports the linear-probe R² (test segments) of:
  - the pooled per-timestep latents read out in one pass with nothing hidden (``visible``),
  - the same latents read out ``held_out`` (each bin averaged over passes in which it is
    hidden; the model default, ``--set readout_block=B --set readout_shifts=S``),
  - the predicted rates / reconstructions,
  - the concatenated (unpooled) patch tokens,
next to reference read-outs of the same session: Gaussian-smoothed spike counts and a supervised
model of the same architecture (``--supervised``).

Examples::

    python benchmarks/teacher_probe.py --store stores/sim --sessions sim00 --steps 600 \\
        --set patch_size=64 --set embedder=filterbank --set d_model=128 --lr 0.003
    python benchmarks/teacher_probe.py --store stores/sim --sessions sim00 --supervised
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from lfpdistill.config import TrainConfig, apply_overrides
from lfpdistill.data import WindowDataset, collate_windows, open_store
from lfpdistill.evaluation import compute_latents, linear_probe, session_latents
from lfpdistill.models import ModelConfig, NeuralTransformer, masked_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--sessions", default="sim00")
    ap.add_argument("--modality", default="spikes", choices=["spikes", "lfp"])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--window-s", type=float, default=1.0)
    ap.add_argument("--supervised", action="store_true", help="train with a velocity head instead")
    ap.add_argument("--set", action="append", default=[], help="model option key=value")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    store = open_store(args.store)
    sessions = [store.session(n) for n in store.select(args.sessions)]
    mod = args.modality
    cfg, _, _ = apply_overrides(ModelConfig(modality=mod), TrainConfig(), args.set)
    model = NeuralTransformer(cfg, {s.name: getattr(s, mod).shape[1] for s in sessions})
    head = torch.nn.Linear(cfg.d_model, 2)
    ds = WindowDataset(sessions, "train", args.window_s, args.window_s / 2, modalities=(mod,))
    params = list(model.parameters()) + (list(head.parameters()) if args.supervised else [])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps,
                                                pct_start=0.05)
    vscale = float(np.concatenate([s.velocity for s in sessions]).std())
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for _ in range(args.steps):
        batch = collate_windows([ds[i] for i in rng.choice(len(ds), args.batch_size, replace=False)])
        model.train()
        if args.supervised:
            out = model(batch[mod], batch["session"], batch[f"n_{mod}"], reconstruct=False)
            loss = ((head(out.latents) - batch["velocity"] / vscale) ** 2).mean()
        else:
            out = model(batch[mod], batch["session"], batch[f"n_{mod}"], mask=True)
            loss, _ = masked_loss(out, mod)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    train_s = time.time() - t0

    model.eval()
    rows = []
    for s in sessions:
        tr, te = s.split_mask("train"), s.split_mask("test")
        x = getattr(s, mod)
        window = int(round(args.window_s / s.bin_size))

        def recon(xb: torch.Tensor, name: str = s.name) -> torch.Tensor:
            return model(xb, [name] * xb.shape[0], mask=None).pred.flatten(2)[..., : xb.shape[2]]

        def tokens(xb: torch.Tensor, name: str = s.name) -> torch.Tensor:
            return model(xb, [name] * xb.shape[0], reconstruct=False).tokens.flatten(2)

        with torch.no_grad():
            z = session_latents(model, s, args.window_s, readout="visible")
            rec = compute_latents(recon, x, s.segments, window)
            tok = compute_latents(tokens, x, s.segments, window)
            hid = session_latents(model, s, args.window_s, readout="held_out")
        row = {"session": s.name,
               "pooled_latents": linear_probe(z, s.velocity, tr, te)["r2"],
               "reconstruction": linear_probe(rec, s.velocity, tr, te)["r2"],
               "patch_tokens": linear_probe(tok, s.velocity, tr, te)["r2"],
               "held_out_latents": linear_probe(hid, s.velocity, tr, te)["r2"]}
        if mod == "spikes":
            sm = gaussian_filter1d(np.sqrt(s.spikes.astype(float)), 10, axis=0)
            row["smoothed_spikes_100ms"] = linear_probe(sm, s.velocity, tr, te)["r2"]
        rows.append(row)
    print(json.dumps({"config": cfg.model_dump(), "steps": args.steps, "lr": args.lr,
                      "supervised": args.supervised, "train_seconds": round(train_s, 1),
                      "rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                               for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
