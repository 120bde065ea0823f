"""Shared test fixtures: small synthetic sessions that need no simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lfpdistill.session import Session


def make_session(name: str = "s0", T: int = 3000, N: int = 7, C: int = 5, seed: int = 0,
                 spikes: bool = True, lfp: bool = True, latents: bool = False) -> Session:
    """A small random session whose velocity is a linear function of the LFP and log rates."""
    rng = np.random.default_rng(seed)
    vel = np.cumsum(rng.normal(size=(T, 2)), axis=0).astype(np.float32) * 0.1
    vel -= vel.mean(0)
    out = {}
    if spikes:
        rate = np.exp(0.5 + 0.3 * vel @ rng.normal(size=(2, N)))
        out["spikes"] = rng.poisson(np.clip(rate, 0, 20)).astype(np.int32)
    if lfp:
        out["lfp"] = (vel @ rng.normal(size=(2, C)) + rng.normal(size=(T, C))).astype(np.float32)
    if latents:
        out["latents"] = np.concatenate([vel, rng.normal(size=(T, 2))], 1).astype(np.float32)
    return Session(name=name, velocity=vel, subject="test", **out)


@pytest.fixture
def session_factory():
    return make_session


#: the CLI's exit statuses of user errors (README, "Exit codes"): usage, data, environment
USER_ERROR_CODES = (2, 3, 4)


def cli_error(capsys, argv, *fragments, code: int | None = None) -> str:
    """Run the CLI; it must print one ``error:`` line holding every fragment and exit with
    ``code`` (by default: one of the user-error statuses, which tests/test_cli_conventions.py
    checks kind by kind)."""
    from lfpdistill.cli import main  # the CLI only for the tests that drive it

    capsys.readouterr()
    got = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert got == code if code is not None else got in USER_ERROR_CODES, (got, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


#: the smallest models and one epoch: a study config's plumbing, not its numbers
TINY_SPIKE_MODEL = {"modality": "spikes", "patch_size": 16, "d_model": 16, "n_layers": 1,
                    "n_heads": 2}
TINY_LFP_MODEL = {"modality": "lfp", "patch_size": 8, "d_model": 16, "n_layers": 1, "n_heads": 2}
ONE_EPOCH = {"max_epochs": 1, "progress": False}


def shrink_config(path, out, seconds: float = 60.0) -> dict:
    """The YAML study config at ``path`` with everything that costs time made tiny (shorter
    sessions on 16 LFP channels, two patches of the tiny LFP model; tiny models, one epoch,
    one seed) and every other key (sessions, roles, study sections) as the file has it."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    sim = cfg.setdefault("data", {}).setdefault("simulate", {})
    sim.update({"seconds": seconds, "n_channels": 16, "units_min": 30, "units_max": 40})
    cfg.update({"out": str(out), "seeds": [0], "accelerator": "cpu",
                "teacher": {"model": TINY_SPIKE_MODEL, "train": ONE_EPOCH},
                "lfp_model": TINY_LFP_MODEL, "ss_lfp": ONE_EPOCH, "ms_lfp": ONE_EPOCH})
    cfg.setdefault("distill", {})["train"] = ONE_EPOCH
    cfg.setdefault("generalize", {})["adapt"] = ONE_EPOCH
    if cfg.get("finetune", {}).get("enabled", True):
        cfg["finetune"]["train"] = ONE_EPOCH
    return cfg
