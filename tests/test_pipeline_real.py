"""A prepared real-format store (O'Doherty layout) runs through `lfpdistill run` like a simulated one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from lfpdistill.cli import main
from lfpdistill.data import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures_real import make_odoherty  # noqa: E402

NAMES = ["indy_20160407_02", "indy_20160411_01", "indy_20160414_01"]


@pytest.mark.slow
def test_prepared_odoherty_store_runs_the_study(tmp_path):
    raw = tmp_path / "raw"
    for i, name in enumerate(NAMES):
        make_odoherty(raw, name=name, n_ch=8, n_units=3, beh_t0=1000.25, beh_dur=36.0,
                      bb_t0=999.1, bb_dur=37.5, seed=i)
    store_dir = tmp_path / "store"
    assert main(["prepare", "--format", "odoherty", "--raw", str(raw), "--out", str(store_dir)]) == 0
    store = open_store(store_dir)
    assert store.names == NAMES
    tiny_model = {"patch_size": 4, "d_model": 16, "n_layers": 1, "n_heads": 2}
    train = {"max_epochs": 1, "progress": False, "batch_size": 8}
    cfg = {
        "name": "indy-tiny", "out": str(tmp_path / "out"), "seeds": [0], "accelerator": "cpu",
        "data": {"store": str(store_dir)},
        "sessions": {"teacher": NAMES[:2], "distill": NAMES[:1], "heldout": NAMES[2:]},
        "teacher": {"model": {"modality": "spikes", **tiny_model}, "train": train},
        "lfp_model": {"modality": "lfp", **tiny_model},
        "ss_lfp": train, "ms_lfp": train, "distill": {"train": train},
        "generalize": {"adapt": train}, "finetune": {"models": ["distilled"], "train": train},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "cfg.yaml")]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    got = {(r["model"], r["session"], r["eval"]) for r in res["rows"]}
    assert ("distilled", NAMES[0], "probe") in got
    assert ("distilled", NAMES[2], "probe") in got
    assert ("wiener_bandpower", NAMES[2], "classic") in got
    assert (tmp_path / "out" / "report.md").exists()
