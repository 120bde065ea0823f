"""The recommended options live in one place (lfpdistill.config.RECOMMENDED) and every entry
point starts from them: the CLI commands, the experiment config and configs/demo.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lfpdistill.cli.common import COMMAND_ROLES, configs, defaults_help, distill_configs
from lfpdistill.config import (
    RECOMMENDED,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    recommended_distill,
    recommended_model,
    recommended_train,
)

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = {"teacher": ["a"], "distill": ["a"]}


def _holds(cfg: object, expected: dict) -> None:
    for k, v in expected.items():
        assert getattr(cfg, k) == v, (k, getattr(cfg, k), v)


@pytest.mark.parametrize("command", sorted(COMMAND_ROLES))
def test_cli_commands_start_from_the_recommended_options(command):
    model_role, train_role = COMMAND_ROLES[command]
    if command == "distill":
        model, train, objective = distill_configs(None)
        _holds(objective, RECOMMENDED["distill"]["objective"])
    else:
        model, train = configs(command, None)
    _holds(train, RECOMMENDED[train_role]["train"])
    if model_role:
        _holds(model, RECOMMENDED[model_role]["model"])
        assert f"patch_size={RECOMMENDED[model_role]['model']['patch_size']}" in defaults_help(command)


def test_the_cli_pretrain_roles_are_the_study_roles():
    assert COMMAND_ROLES["pretrain_spikes"] == ("teacher", "teacher")
    assert COMMAND_ROLES["pretrain_lfp"][0] == "lfp" and COMMAND_ROLES["distill"] == ("lfp", "distill")


def test_experiment_defaults_are_the_recommended_options():
    cfg = ExperimentConfig(sessions=SESSIONS)
    assert cfg.teacher.model == recommended_model("teacher")
    assert cfg.teacher.train == recommended_train("teacher")
    assert cfg.lfp_model == recommended_model("lfp")
    assert cfg.ss_lfp == recommended_train("ss_lfp") and cfg.ms_lfp == recommended_train("ms_lfp")
    assert cfg.distill.objective == recommended_distill()
    assert cfg.distill.train == recommended_train("distill")
    assert cfg.generalize.adapt == recommended_train("adapt")
    assert cfg.finetune.train == recommended_train("finetune")


def test_a_yaml_section_overrides_only_the_keys_it_names():
    cfg = ExperimentConfig(sessions=SESSIONS, teacher={"model": {"d_model": 64}},
                           lfp_model={"n_layers": 3}, distill={"objective": {"w_mae": 0.5}})
    expected = recommended_model("teacher").model_copy(update={"d_model": 64})
    assert cfg.teacher.model == expected and cfg.teacher.train == recommended_train("teacher")
    assert cfg.lfp_model == recommended_model("lfp").model_copy(update={"n_layers": 3})
    assert cfg.distill.objective == recommended_distill().model_copy(update={"w_mae": 0.5})


def test_demo_config_states_no_model_or_training_option():
    raw = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    for key in ("teacher", "lfp_model", "ss_lfp", "ms_lfp", "distill"):
        assert key not in raw, f"configs/demo.yaml sets '{key}': put recommended values in RECOMMENDED"
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    assert cfg.teacher.model == recommended_model("teacher") and cfg.lfp_model == recommended_model("lfp")


def test_recommended_values_are_valid_options():
    for role, parts in RECOMMENDED.items():
        for part, values in parts.items():
            cls = {"model": ModelConfig, "train": TrainConfig}.get(part)
            if cls is not None:
                assert set(values) <= set(cls.model_fields), (role, part)
                cls(**values)


def test_overrides_still_name_unknown_keys():
    with pytest.raises(Exception, match="unknown option 'nope'"):
        apply_overrides(recommended_model("lfp"), recommended_train("ms_lfp"), ["nope=1"])


def test_realtime_config_is_the_demo_plus_the_causal_comparison():
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    rt = yaml.safe_load((ROOT / "configs" / "realtime.yaml").read_text())
    assert rt.pop("causal") == {"enabled": True, "context_bins": 100}
    for key in ("name", "out"):
        assert rt.pop(key) != demo.pop(key)          # its own report folder
    assert rt == demo
    assert load_config(ROOT / "configs" / "realtime.yaml").causal.enabled
