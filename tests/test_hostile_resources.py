"""Options that exhaust the machine (issue #16): CPU devices beyond the usable cores, a Wiener
design larger than memory. Each must be refused in one line before anything large starts;
the memory case runs under an address-space limit, so even a regression cannot take the
machine's memory."""

from __future__ import annotations

import resource
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import cli_error, make_session
from threadpoolctl import threadpool_limits

from lfpdistill.cli import main
from lfpdistill.commands import pretrain_run
from lfpdistill.config import ModelConfig, TrainConfig, usable_cpus
from lfpdistill.data import write_store
from lfpdistill.errors import ConfigError

TINY = ["--set", "patch_size=4", "--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2",
        "--set", "window_s=0.2", "--set", "stride_s=0.2", "--set", "batch_size=8",
        "--set", "max_steps=2", "--set", "progress=false"]




@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resources") / "store"
    write_store([make_session("a", T=2000, N=7, C=5, seed=0)], root, segment_s=1.0)
    return root


# ------------------------------------------------------------------ 8: CPU devices
def test_cpu_devices_beyond_the_usable_cores_are_refused_by_the_config():
    with pytest.raises(ValueError, match="only .* cores are usable; use devices="):
        TrainConfig(accelerator="cpu", devices=64)
    with pytest.raises(ValueError, match="only .* cores are usable"):
        TrainConfig(accelerator="cpu", devices="64")  # a count written as a string (YAML)
    with pytest.raises(ValueError, match="lists GPU indices but accelerator is cpu"):
        TrainConfig(accelerator="cpu", devices="0,1")
    TrainConfig(accelerator="cpu", devices=usable_cpus())  # as many as there are is fine
    TrainConfig(accelerator="gpu", devices=8)  # GPUs are checked where torch is loaded


def test_cpu_devices_beyond_the_usable_cores_stop_the_command_in_one_line(store, tmp_path, capsys):
    too_many = usable_cpus() + 1  # bounded even if the check regressed
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", tmp_path / "r",
                    *TINY, "--set", "accelerator=cpu", "--set", f"devices={too_many}"],
           f"devices={too_many}", "cores are usable")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="'auto' picks the GPU here")
def test_auto_accelerator_on_a_cpu_machine_caps_devices_at_the_cores(store, tmp_path):
    cfg = TrainConfig(window_s=0.2, stride_s=0.2, batch_size=8, max_steps=2, progress=False,
                      accelerator="auto", devices=usable_cpus() + 1)
    mcfg = ModelConfig(modality="spikes", patch_size=4, d_model=16, n_layers=1, n_heads=2)
    with pytest.raises(ConfigError, match="training runs on the CPU here"):
        pretrain_run(store, None, "spikes", tmp_path / "r", mcfg, cfg)
    assert not (tmp_path / "r" / "run_config.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_asked_for_on_a_machine_without_one(store, tmp_path, capsys):
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", tmp_path / "r",
                    *TINY, "--set", "accelerator=gpu"], "no usable CUDA GPU", "accelerator=cpu")


@pytest.mark.parametrize(("option", "fragment"), [
    ("precision=bogus", "precision 'bogus' is not one of"),
    ("strategy=foo", "strategy 'foo' is not one of"),
    ("devices=0", "devices=0 must be at least 1"),
    ("devices=-1", "devices=-1 must be at least 1"),
    ("devices=two", "devices 'two' must be"),
    ("max_steps=0", "max_steps=0"),
    ("stride_s=0", "stride_s=0"),
])
def test_invalid_training_options_are_refused_before_any_work(store, tmp_path, capsys, option,
                                                              fragment):
    cli_error(capsys, ["pretrain", "--modality", "spikes", "--store", store, "--out", tmp_path / "r",
                    *TINY, "--set", option], "invalid option", fragment)
    assert not (tmp_path / "r").exists()


def test_half_precision_on_the_cpu_is_refused():
    with pytest.raises(ValueError, match="needs a GPU"):
        TrainConfig(accelerator="cpu", precision="16-mixed")


# ------------------------------------------------------------------ 9: the Wiener design
@contextmanager
def address_space_limit(extra: int = 1 << 30):
    """At most ``extra`` bytes more address space than this process has now (RLIMIT_AS): an
    allocation beyond it fails with MemoryError instead of taking the machine's memory."""
    vm = next(int(line.split()[1]) * 1024
              for line in Path("/proc/self/status").read_text().splitlines()
              if line.startswith("VmSize:"))
    old = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_wiener_probe_too_large_for_memory_is_refused_with_its_size(store, tmp_path, capsys):
    import lfpdistill.commands.evaluate  # noqa: F401 - loaded before the limit

    lat = tmp_path / "latents.npz"
    np.savez(lat, a=np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32))
    probe = ["probe", lat, "--store", store, "--decoder", "wiener", "--out", tmp_path / "p.json"]
    with threadpool_limits(1), address_space_limit(1 << 30):
        line = cli_error(capsys, [*probe, "--n-lags", "5000"], "80000 features = 5000 lags x 16 inputs",
                      "lower --n-lags")
        assert line.startswith("error: the Wiener filter would need about ")
        assert not (tmp_path / "p.json").exists()
        assert main([str(a) for a in probe]) == 0  # the default lags fit under the same limit
    assert (tmp_path / "p.json").exists()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_classic_decoders_with_too_many_lags_are_refused_with_their_size(store, tmp_path, capsys):
    import lfpdistill.commands.evaluate  # noqa: F401 - loaded before the limit

    with threadpool_limits(1), address_space_limit(1 << 30):
        cli_error(capsys, ["classic", "--store", store, "--n-lags", "5000", "--out",
                        tmp_path / "c.json"], "the Wiener filter would need about", "5000 lags x",
               "lower --n-lags")
    assert not (tmp_path / "c.json").exists()
