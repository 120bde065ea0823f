"""``lfpdistill pack``: a trained model as a folder others can load (safetensors weights, JSON
config, model card), read back by ``load_model`` and every command that takes a run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from tests.conftest import cli_error, make_session

from lfpdistill.cli import main
from lfpdistill.data import open_store, write_store
from lfpdistill.evaluation import session_latents
from lfpdistill.models import load_model
from lfpdistill.models.pack import CONFIG, WEIGHTS, is_packed

TINY = ["--set", "patch_size=4", "--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2",
        "--set", "window_s=0.2", "--set", "stride_s=0.2", "--set", "batch_size=8",
        "--set", "max_epochs=1", "--set", "progress=false", "--set", "accelerator=cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A store, a spike pretrain run, a causal distilled student, and both packed."""
    root = tmp_path_factory.mktemp("pack")
    store = root / "store"
    write_store([make_session("a", T=1500, N=7, C=5, seed=0),
                 make_session("b", T=1500, N=9, C=6, seed=1)], store, segment_s=1.0)
    teacher, student = root / "teacher", root / "student"
    assert main(["pretrain", "--modality", "spikes", "--store", str(store), "--out", str(teacher),
                 *TINY]) == 0
    assert main(["distill", "--teacher", str(teacher), "--store", str(store), "--out",
                 str(student), *TINY, "--set", "causal=true", "--set", "context_bins=12"]) == 0
    # an evaluation next to the teacher run: what the model card reports
    assert main(["embed", str(teacher), "--store", str(store)]) == 0
    assert main(["probe", str(teacher / "latents.npz"), "--store", str(store),
                 "--out", str(teacher / "probe.json")]) == 0
    packed = {}
    for name, run in (("teacher", teacher), ("student", student)):
        packed[name] = root / f"{name}_packed"
        assert main(["pack", str(run), "--out", str(packed[name])]) == 0
    return {"root": root, "store": store, "teacher": teacher, "student": student,
            "packed": packed}


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_pack_then_load_gives_the_same_model_and_latents(runs, name):
    run, packed = runs[name], runs["packed"][name]
    model, meta = load_model(run)
    again, pmeta = load_model(packed)
    assert is_packed(packed) and not is_packed(run)
    assert again.vocab() == model.vocab() and again.cfg == model.cfg
    assert pmeta["stage"] == meta["stage"] and pmeta["bin_size"] == meta["bin_size"]
    assert pmeta["model_config"] == json.loads(json.dumps(meta["model_config"]))
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
    store = open_store(runs["store"])
    for s in store.names:
        sess = store.session(s)
        z0 = session_latents(model, sess, meta.get("window_s", 1.0))
        z1 = session_latents(again, sess, pmeta.get("window_s", 1.0))
        assert np.array_equal(z0, z1), s  # bit-identical in one process
    if name == "student":
        assert again.cfg.causal and pmeta["distill"] == json.loads(json.dumps(meta["distill"]))


def test_embed_from_the_packed_folder_equals_embed_from_the_run(runs):
    root = runs["root"]
    for name in ("teacher", "student"):
        a, b = root / f"{name}_run.npz", root / f"{name}_packed.npz"
        assert main(["embed", str(runs[name]), "--store", str(runs["store"]), "--out", str(a)]) == 0
        assert main(["embed", str(runs["packed"][name]), "--store", str(runs["store"]),
                     "--out", str(b)]) == 0
        za, zb = np.load(a), np.load(b)
        assert sorted(za.files) == sorted(zb.files) == ["a", "b"]
        for s in za.files:
            assert np.array_equal(za[s], zb[s]), (name, s)


def test_a_packed_folder_holds_no_pickle_and_a_model_card(runs):
    for name, packed in runs["packed"].items():
        files = sorted(p.name for p in packed.rglob("*"))
        assert files == ["README.md", "config.json", "model.safetensors"], files
        for p in packed.iterdir():
            assert p.suffix in (".json", ".md", ".safetensors")
            assert not p.read_bytes().startswith(b"\x80"), p  # no pickle protocol header
            assert b"PK\x03\x04" not in p.read_bytes()[:4]    # nor a torch zip archive
        cfg = json.loads((packed / CONFIG).read_text())
        assert cfg["lfpdistill"]["vocab"] == load_model(runs[name])[0].vocab()
        card = (packed / "README.md").read_text()
        assert card.startswith("---\nlibrary_name: lfpdistill\n")
        for s, c in cfg["lfpdistill"]["vocab"].items():  # the sessions and their channels
            assert f"{s}: {c}" in card
        assert f"stage: {cfg['lfpdistill']['stage']}" in card
        assert f"bin size: {cfg['lfpdistill']['bin_size']} s" in card
        assert "| d_model | 16 |" in card and "| max_epochs | 1 |" in card
    # the teacher had a probe next to it: its R² is in the card, the student has none
    rows = json.loads((runs["teacher"] / "probe.json").read_text())
    card = (runs["packed"]["teacher"] / "README.md").read_text()
    for r in rows:
        assert f"| {r['session']} | test | {r['r2']:.3f} |" in card
    assert "No evaluation was stored" in (runs["packed"]["student"] / "README.md").read_text()


def test_loading_a_packed_model_needs_no_lightning(runs):
    code = ("import sys\n"
            "sys.modules['lightning'] = None\n"          # any import of it now fails
            "sys.modules['pytorch_lightning'] = None\n"
            "from lfpdistill.models import load_model\n"
            f"model, meta = load_model({str(runs['packed']['student'])!r})\n"
            "assert 'lightning' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
            "print(meta['stage'], sorted(model.vocab()))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "distill ['a', 'b']"


def test_a_damaged_packed_folder_is_refused_in_one_line(runs, tmp_path, capsys):
    store = runs["store"]

    def copy(tag):
        d = tmp_path / tag
        assert main(["pack", str(runs["packed"]["teacher"]), "--out", str(d)]) == 0
        return d

    d = copy("flipped")
    data = bytearray((d / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (d / WEIGHTS).write_bytes(bytes(data))
    cli_error(capsys, ["embed", d, "--store", store, "--out", tmp_path / "x.npz"],
              "does not match the checksum")
    d = copy("no_weights")
    (d / WEIGHTS).unlink()
    cli_error(capsys, ["embed", d, "--store", store, "--out", tmp_path / "x.npz"],
              "has no model.safetensors")
    d = copy("no_config")
    (d / CONFIG).unlink()
    cli_error(capsys, ["embed", d, "--store", store, "--out", tmp_path / "x.npz"],
              "has no config.json")
    d = copy("bad_json")
    (d / CONFIG).write_text("{not json")
    cli_error(capsys, ["embed", d, "--store", store, "--out", tmp_path / "x.npz"],
              "is not valid JSON")
    d = copy("no_vocab")
    cfg = json.loads((d / CONFIG).read_text())
    del cfg["lfpdistill"]["vocab"]
    (d / CONFIG).write_text(json.dumps(cfg))
    cli_error(capsys, ["embed", d, "--store", store, "--out", tmp_path / "x.npz"],
              "lacks the model description")
    # weights swapped for another model's (a matching checksum written by hand): shapes differ
    d = copy("swapped")
    (d / WEIGHTS).write_bytes((runs["packed"]["student"] / WEIGHTS).read_bytes())
    cfg = json.loads((d / CONFIG).read_text())
    cfg["weights_sha256"] = json.loads(
        (runs["packed"]["student"] / CONFIG).read_text())["weights_sha256"]
    (d / CONFIG).write_text(json.dumps(cfg))
    cli_error(capsys, ["embed", d, "--store", store, "--out", tmp_path / "x.npz"])


def test_pack_refuses_unsafe_output_folders(runs, tmp_path, capsys):
    teacher = runs["teacher"]
    cli_error(capsys, ["pack", teacher, "--out", teacher], "is the run")
    cli_error(capsys, ["pack", teacher, "--out", teacher / "packed"], "inside it")
    cli_error(capsys, ["pack", teacher, "--out", teacher.parent], "holds the run")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    cli_error(capsys, ["pack", teacher, "--out", busy], "not empty", "--force")
    cli_error(capsys, ["pack", teacher, "--out", busy, "--force"], "not a packed lfpdistill model")
    assert (busy / "notes.txt").read_text() == "mine"
    # an existing packed model is replaced with --force only, atomically (no leftovers)
    out = tmp_path / "model"
    assert main(["pack", str(teacher), "--out", str(out)]) == 0
    cli_error(capsys, ["pack", runs["student"], "--out", out], "not empty")
    assert load_model(out)[1]["stage"] == "pretrain"
    assert main(["pack", str(runs["student"]), "--out", str(out), "--force"]) == 0
    assert load_model(out)[1]["stage"] == "distill"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "model"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pack", str(teacher), "--out", str(empty)]) == 0 and is_packed(empty)
    cli_error(capsys, ["pack", tmp_path / "nowhere", "--out", tmp_path / "p"], "no model checkpoint")
