"""docs/own_recordings.md cannot rot: its ``bash`` blocks are run, exactly as written and in order,
on small NWB files made with the project's own NWB export.

The only substitution is the one the page documents: the shell variables of its step 0 (``RAW``,
``STORE``, ``RUNS``, ``PAIRED``, ``NEW``, ``SESSION``, ``TRAIN``) are set in the environment, and
the page's ``export VAR=${VAR:-default}`` lines keep them. ``TRAIN="--set max_epochs=1"`` keeps
the run short, as the page says. A block preceded by ``<!-- guide: not run ... -->`` is skipped
(it needs files the test cannot make, e.g. a public dataset's).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "own_recordings.md"
VARIABLES = {"RAW", "STORE", "RUNS", "PAIRED", "NEW", "SESSION", "TRAIN"}
BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)


def guide_blocks() -> tuple[list[str], list[str]]:
    """(blocks to run, blocks skipped) of the page, in order."""
    run, skipped = [], []
    for m in BLOCK.finditer(GUIDE.read_text()):
        (skipped if m.group(1) and "guide: not run" in m.group(1) else run).append(m.group(2))
    return run, skipped


def test_guide_blocks_use_only_its_documented_variables():
    run, skipped = guide_blocks()
    assert len(run) >= 6 and len(skipped) == 1
    script = "\n".join(run)
    for step in ("prepare --format nwb", "pretrain --modality spikes", "distill --teacher",
                 "lfpdistill classic", "lfpdistill adapt", "lfpdistill export", "--stream",
                 "lfpdistill pack"):
        assert step in script, f"the guide no longer runs `{step}`"
    used = set(re.findall(r"\$\{?([A-Z_]+)", script))
    assert used <= VARIABLES, f"the guide uses undocumented variables {used - VARIABLES}"
    for var in VARIABLES:
        assert f"export {var}=${{{var}:-" in script, f"step 0 no longer sets {var} with a default"


@pytest.mark.slow
def test_guide_runs_on_generated_nwb_files(tmp_path):
    from lfpdistill.config import SimConfig
    from lfpdistill.data import write_store
    from lfpdistill.readers import export_nwb
    from lfpdistill.readers.nwb_export import ExportMetadata
    from lfpdistill.simulate import simulate_sessions

    # three small paired sessions as NWB 2.x files: sim00, sim01 paired, sim02 the "later" one
    sessions = simulate_sessions(SimConfig(n_sessions=3, seconds=40, seed=0, n_channels=16,
                                           units_min=20, units_max=30))
    write_store(sessions, tmp_path / "sim_store", options={}, segment_s=5.0)
    raw = tmp_path / "nwb"
    export_nwb(tmp_path / "sim_store", raw, metadata=ExportMetadata(
        species="Macaca mulatta", sex="M", age="P8Y", session_start="2020-01-01T09:00:00+00:00"))
    assert len(list(raw.glob("*.nwb"))) == 3

    run, _ = guide_blocks()
    script = "set -euo pipefail\n" + "\n".join(run)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAW": str(raw), "STORE": str(work / "store"), "RUNS": str(work / "runs"),
           "PAIRED": "sim00,sim01", "NEW": "sim02", "SESSION": "sim00",
           "TRAIN": "--set max_epochs=1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    res = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, f"the guide's commands failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"

    runs = work / "runs"
    for model in ("teacher", "ms_lfp", "distilled", "distilled_new", "causal"):
        assert (runs / model / "model.ckpt").is_file(), model
    for model, sessions_expected in (("distilled", {"sim00", "sim01"}), ("ms_lfp", {"sim00", "sim01"}),
                                     ("distilled_new", {"sim02"})):
        rows = json.loads((runs / model / "wiener.json").read_text())
        rows = rows["rows"] if isinstance(rows, dict) else rows
        assert {r["session"] for r in rows} == sessions_expected, model
        assert all(np.isfinite(r["r2"]) for r in rows)
    classic = json.loads((runs / "classic_new.json").read_text())
    classic = classic["rows"] if isinstance(classic, dict) else classic
    assert {r["session"] for r in classic} == {"sim02"}
    assert (runs / "causal" / "sim00.onnx").is_file() and (runs / "causal" / "sim00.json").is_file()
    pred = np.load(runs / "causal" / "sim00.pred.npz")
    assert "latency_ms" in pred.files and np.isfinite(pred["pred"]).all()
    packed = runs / "distilled_packed"
    names = {p.name for p in packed.iterdir()}
    assert any(n.endswith(".safetensors") for n in names) and "config.json" in names, names
    assert not any(n.endswith((".ckpt", ".pt", ".pth", ".pkl", ".pickle")) for n in names), names
    a, b = np.load(runs / "distilled" / "latents.npz"), np.load(runs / "packed_latents.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)
