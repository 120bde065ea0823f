"""The model commands of ``lfpdistill``: pretrain / distill / embed / probe, and their user errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from tests.conftest import cli_error, make_session

from lfpdistill.cli import main
from lfpdistill.data import write_store
from lfpdistill.models import load_model

TINY = ["--set", "patch_size=4", "--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2",
        "--set", "window_s=0.2", "--set", "stride_s=0.2", "--set", "batch_size=8",
        "--set", "max_epochs=1", "--set", "progress=false", "--set", "accelerator=cpu"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    d = {"root": root, "store": root / "store", "lfp_only": root / "lfp_only",
         "spk_only": root / "spk_only", "new": root / "new", "short": root / "short"}
    write_store([make_session("a", T=1500, N=7, C=5, seed=0),
                 make_session("b", T=1500, N=9, C=6, seed=1)], d["store"], segment_s=1.0)
    write_store([make_session("a", T=1500, N=7, C=5, spikes=False)], d["lfp_only"], segment_s=1.0)
    write_store([make_session("a", T=1500, N=7, C=5, lfp=False)], d["spk_only"], segment_s=1.0)
    write_store([make_session("zz", T=1500, N=7, C=5, seed=3)], d["new"], segment_s=1.0)
    write_store([make_session("a", T=300, N=7, C=5, seed=4)], d["short"], segment_s=0.5)
    return d


@pytest.fixture(scope="module")
def spike_run(dirs):
    out = dirs["root"] / "spike_run"
    assert main(["pretrain", "--modality", "spikes", "--store", str(dirs["store"]),
                 "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def lfp_run(dirs):
    out = dirs["root"] / "lfp_run"
    assert main(["pretrain", "--modality", "lfp", "--store", str(dirs["store"]),
                 "--out", str(out), *TINY]) == 0
    return out




def test_pretrain_embed_probe_write_files(dirs, spike_run, capsys):
    for name in ("model.ckpt", "summary.json", "run_config.json"):
        assert (spike_run / name).exists()
    assert main(["embed", str(spike_run), "--store", str(dirs["store"])]) == 0
    lat = np.load(spike_run / "latents.npz")
    assert sorted(lat.files) == ["a", "b"]
    assert lat["a"].shape == (1500, 16) and np.isfinite(lat["a"]).all()
    out_json = dirs["root"] / "probe.json"
    capsys.readouterr()
    assert main(["probe", str(spike_run / "latents.npz"), "--store", str(dirs["store"]),
                 "--out", str(out_json)]) == 0
    assert "mean R² over 2 sessions" in capsys.readouterr().out
    rows = json.loads(out_json.read_text())
    assert [r["session"] for r in rows] == ["a", "b"]
    for r in rows:
        assert r["split"] == "test" and {"r2", "r2_x", "r2_y"} <= set(r)
        assert np.isfinite(r["r2"]) and r["r2"] <= 1 and r["lag_s"] == 0
    lagged_json = dirs["root"] / "probe_lag.json"
    assert main(["probe", str(spike_run / "latents.npz"), "--store", str(dirs["store"]),
                 "--out", str(lagged_json), "--lag-ms", "100"]) == 0
    assert [r["lag_s"] for r in json.loads(lagged_json.read_text())] == [pytest.approx(0.1)] * 2
    cli_error(capsys, ["probe", spike_run / "latents.npz", "--store", dirs["store"], "--lag-ms", "-20"],
           "probe lag must be >= 0")
    # the classic decoders on the same store, as a command
    classic_json = dirs["root"] / "classic.json"
    assert main(["classic", "--store", str(dirs["store"]), "--sessions", "a",
                 "--out", str(classic_json)]) == 0
    crows = json.loads(classic_json.read_text())
    assert [r["model"] for r in crows] == ["wiener_spikes", "wiener_lfp", "wiener_bandpower",
                                           "kalman_bandpower"]
    assert all(r["session"] == "a" and np.isfinite(r["r2"]) for r in crows)
    cli_error(capsys, ["classic", "--store", dirs["store"], "--sessions", "zz*"], "zz")
    # LFP without spikes (what most LFP users have): the LFP decoders only
    assert main(["classic", "--store", str(dirs["lfp_only"]), "--out", str(classic_json)]) == 0
    assert [r["model"] for r in json.loads(classic_json.read_text())] == [
        "wiener_lfp", "wiener_bandpower", "kalman_bandpower"]
    cli_error(capsys, ["probe", spike_run / "latents.npz", "--store", dirs["store"], "--decoder",
                    "wiener", "--lag-ms", "100"], "lag applies to the linear probe only")
    # the classic Wiener filter on the latents (decoder-matched comparison)
    wiener_json = dirs["root"] / "probe_wiener.json"
    assert main(["probe", str(spike_run / "latents.npz"), "--store", str(dirs["store"]),
                 "--out", str(wiener_json), "--decoder", "wiener", "--n-lags", "5"]) == 0
    wrows = json.loads(wiener_json.read_text())
    assert [r["decoder"] for r in wrows] == ["wiener"] * 2 and all(np.isfinite(r["r2"]) for r in wrows)
    cli_error(capsys, ["probe", spike_run / "latents.npz", "--store", dirs["store"], "--decoder", "knn"],
           "Invalid value for '--decoder': 'knn' is not one of 'linear', 'wiener'", code=2)
    # a chosen subset and output path
    sub = dirs["root"] / "sub.npz"
    assert main(["embed", str(spike_run), "--store", str(dirs["store"]), "--sessions", "b",
                 "--out", str(sub)]) == 0
    assert np.load(sub).files == ["b"]
    np.testing.assert_array_equal(np.load(sub)["b"], lat["b"])
    # the one-pass read-out is a different view of the same model; a bad name is refused
    vis = dirs["root"] / "visible.npz"
    assert main(["embed", str(spike_run), "--store", str(dirs["store"]), "--sessions", "b",
                 "--out", str(vis), "--readout", "visible"]) == 0
    assert np.load(vis)["b"].shape == lat["b"].shape
    assert not np.allclose(np.load(vis)["b"], lat["b"])
    cli_error(capsys, ["embed", spike_run, "--store", dirs["store"], "--readout", "hidden"],
           "Invalid value for '--readout': 'hidden' is not one of", code=2)


def test_distill_then_embed_the_student(dirs, spike_run, capsys):
    out = dirs["root"] / "student"
    assert main(["distill", "--teacher", str(spike_run), "--store", str(dirs["store"]),
                 "--out", str(out), *TINY, "--set", "w_mae=0.2", "--set", "align_loss=cosine"]) == 0
    model, meta = load_model(out, modality="lfp")
    assert meta["stage"] == "distill" and meta["distill"]["align_loss"] == "cosine"
    assert meta["vocab"] == {"a": 5, "b": 6}
    assert main(["embed", str(out), "--store", str(dirs["store"]), "--sessions", "a"]) == 0
    assert np.load(out / "latents.npz")["a"].shape == (1500, 16)
    # the student is aligned on its one-pass latents, so that is its read-out
    assert model.cfg.readout == "visible" and meta["model_config"]["readout"] == "visible"


def test_unknown_session_pattern(dirs, capsys, tmp_path):
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", dirs["store"], "--out", tmp_path,
                    "--sessions", "a,nope*", *TINY], "session pattern 'nope*' matches no session")


def test_unknown_set_key(dirs, capsys, tmp_path):
    cli_error(capsys, ["pretrain", "--modality", "lfp", "--store", dirs["store"], "--out", tmp_path,
                    "--set", "d_modle=32"], "unknown option 'd_modle'")


def test_invalid_set_value(dirs, capsys, tmp_path):
    cli_error(capsys, ["pretrain", "--modality", "lfp", "--store", dirs["store"], "--out", tmp_path,
                    "--set", "d_model=30", "--set", "n_heads=4"], "invalid option")
    cli_error(capsys, ["pretrain", "--modality", "lfp", "--store", dirs["store"], "--out", tmp_path,
                    "--set", "mask_ratio=abc"], "mask_ratio")
    cli_error(capsys, ["pretrain", "--modality", "lfp", "--store", dirs["store"], "--out", tmp_path,
                    "--set", "d_model"], "is not key=value")


def test_bad_modality(dirs, capsys, tmp_path):
    cli_error(capsys, ["pretrain", "--modality", "eeg", "--store", dirs["store"], "--out", tmp_path],
           "Invalid value for '--modality': 'eeg' is not one of 'spikes', 'lfp'", code=2)


def test_missing_store(dirs, capsys, tmp_path):
    cli_error(capsys, ["pretrain", "--modality", "lfp", "--store", tmp_path / "nowhere",
                    "--out", tmp_path / "o"], "does not exist")


def test_store_without_spikes_for_a_spike_model(dirs, capsys, tmp_path):
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", dirs["lfp_only"],
                    "--out", tmp_path, *TINY], "have no spikes")


def test_embed_with_a_checkpoint_of_the_wrong_modality(dirs, spike_run, lfp_run, capsys):
    cli_error(capsys, ["embed", spike_run, "--store", dirs["lfp_only"]], "have no spikes")
    cli_error(capsys, ["embed", lfp_run, "--store", dirs["spk_only"]], "have no lfp")


def test_embed_unknown_session_and_bad_as_session(dirs, spike_run, capsys):
    cli_error(capsys, ["embed", spike_run, "--store", dirs["new"]],
           "'zz' is not in the model's vocabulary")
    cli_error(capsys, ["embed", spike_run, "--store", dirs["store"], "--as-session", "b",
                    "--sessions", "a"], "same channel count ('a' has 7, 'b' has 9)")


def test_embed_without_a_checkpoint(dirs, capsys, tmp_path):
    cli_error(capsys, ["embed", tmp_path, "--store", dirs["store"]], "no model checkpoint")


def test_distill_with_a_teacher_of_the_wrong_modality(dirs, lfp_run, capsys, tmp_path):
    cli_error(capsys, ["distill", "--teacher", lfp_run, "--store", dirs["store"], "--out", tmp_path,
                    *TINY], "is a lfp model but a spikes model is needed")


def test_distill_on_a_store_without_spikes(dirs, spike_run, capsys, tmp_path):
    cli_error(capsys, ["distill", "--teacher", spike_run, "--store", dirs["lfp_only"],
                    "--out", tmp_path, *TINY], "have no spikes")


def test_distill_with_an_anchor_from_the_command_line(dirs, spike_run, lfp_run, capsys, tmp_path):
    out = tmp_path / "anchored"
    assert main(["distill", "--teacher", str(spike_run), "--store", str(dirs["store"]),
                 "--out", str(out), "--anchor", str(lfp_run), *TINY, "--set", "anchor_pcs=4"]) == 0
    assert json.loads((out / "run_config.json").read_text())["anchor"] == str(lfp_run)
    table = capsys.readouterr().out.split("distillation diagnostics")[1]
    assert "anchor" in table and "PCs" in table  # the anchor column (rich may wrap its header)
    cli_error(capsys, ["distill", "--teacher", spike_run, "--store", dirs["store"],
                       "--out", tmp_path / "no_anchor", *TINY, "--set", "anchor_pcs=4"],
              "anchor_pcs=4 needs an anchor", "--anchor RUN")
    cli_error(capsys, ["distill", "--teacher", spike_run, "--store", dirs["store"],
                       "--out", tmp_path / "no_pcs", "--anchor", lfp_run, *TINY],
              "anchor_pcs is 0", "--set anchor_pcs=16")
    assert not (tmp_path / "no_anchor" / "model.ckpt").exists()


def test_distill_with_an_invalid_distillation_option(dirs, spike_run, capsys, tmp_path):
    cli_error(capsys, ["distill", "--teacher", spike_run, "--store", dirs["store"], "--out", tmp_path,
                    "--set", "align_loss=l1"], "invalid distillation option")


def test_patch_larger_than_the_channel_count_gives_one_token_per_bin(dirs, tmp_path):
    out = tmp_path / "wide"
    assert main(["pretrain", "--modality", "lfp", "--store", str(dirs["store"]), "--out", str(out),
                 *TINY, "--set", "patch_size=16"]) == 0
    model, _ = load_model(out)
    assert [e.shape[0] for e in model.tokenizer.session_emb] == [1] * len(model.vocab())


def test_window_longer_than_the_data(dirs, capsys, tmp_path):
    cli_error(capsys, ["pretrain", "--modality", "lfp", "--store", dirs["short"], "--out", tmp_path,
                    *TINY, "--set", "window_s=2.0"], "use a shorter window")


def test_probe_errors(dirs, spike_run, capsys, tmp_path):
    cli_error(capsys, ["probe", tmp_path / "missing.npz", "--store", dirs["store"]], "unreadable")
    np.savez(tmp_path / "only_a.npz", a=np.zeros((1500, 4), dtype=np.float32))
    cli_error(capsys, ["probe", tmp_path / "only_a.npz", "--store", dirs["store"], "--sessions", "b"],
           "has no latents for b")


def test_adapt_with_nothing_new(dirs, spike_run, capsys, tmp_path):
    cli_error(capsys, ["adapt", spike_run, "--store", dirs["store"], "--sessions", "a",
                    "--out", tmp_path], "already in the model")


def test_console_script_exit_code_and_single_line(dirs, tmp_path):
    exe = [sys.executable, "-c", "import sys; from lfpdistill.cli import main; sys.exit(main())"]
    res = subprocess.run([*exe, "pretrain", "--modality", "lfp", "--store", str(dirs["store"]),
                          "--out", str(tmp_path), "--set", "nope=1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown option 'nope'"), res.stderr


def test_finetune_command_writes_result_and_rejects_model_options(dirs, lfp_run, capsys):
    out = dirs["root"] / "ft"
    train = ["--set", "max_epochs=1", "--set", "progress=false", "--set", "window_s=0.5"]
    assert main(["finetune", str(lfp_run), "--store", str(dirs["store"]), "--session", "a",
                 "--out", str(out), *train]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["session"] == "a" and {"test_r2", "val_r2"} <= set(res)
    assert (out / "predictions.npz").exists() and (out / "model.ckpt").exists()
    cli_error(capsys, ["finetune", str(lfp_run), "--store", str(dirs["store"]), "--session", "a",
                    "--out", str(dirs["root"] / "ft2"), "--set", "d_model=64"],
           "'d_model' is a model option")
