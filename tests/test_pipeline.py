"""End-to-end `lfpdistill run` on a minute of simulated data, plus config validation."""

from __future__ import annotations

import collections
import csv
import json
import re

import numpy as np
import pytest
import yaml
from rich.console import Console
from tests.conftest import cli_error

from lfpdistill.cli import main
from lfpdistill.config import load_config
from lfpdistill.errors import ConfigError
from lfpdistill.study.plan import Roles, Runs
from lfpdistill.study.runner import Study

TINY = {
    "name": "tiny",
    "seeds": [0],
    "accelerator": "cpu",
    "data": {"simulate": {"n_sessions": 3, "seconds": 60, "seed": 0, "n_channels": 16,
                          "units_min": 30, "units_max": 40},
             "segment_s": 5.0},
    "sessions": {"teacher": ["sim00", "sim01"], "distill": ["sim00"], "heldout": ["sim02"]},
    "teacher": {"model": {"modality": "spikes", "patch_size": 16, "d_model": 16, "n_layers": 1,
                          "n_heads": 2},
                "train": {"max_epochs": 1, "progress": False}},
    "lfp_model": {"modality": "lfp", "patch_size": 8, "d_model": 16, "n_layers": 1, "n_heads": 2},
    "ss_lfp": {"max_epochs": 1, "progress": False},
    "ms_lfp": {"max_epochs": 1, "progress": False},
    "distill": {"train": {"max_epochs": 1, "progress": False}},
    "generalize": {"adapt": {"max_epochs": 1, "progress": False}},
    "finetune": {"models": ["distilled"], "train": {"max_epochs": 1, "progress": False}},
    "causal": {"enabled": True, "context_bins": 10},
    "labels": {"enabled": True, "seconds": [5, 10], "draws": 2},
}


def write_cfg(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    cfg = write_cfg(root / "tiny.yaml", {**TINY, "out": str(root / "out")})
    assert main(["run", str(cfg)]) == 0
    return root, cfg


@pytest.mark.slow
def test_run_writes_parseable_report(tiny_run):
    root, cfg_path = tiny_run
    out = root / "out"
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    models = {(r["model"], r["eval"]) for r in rows}
    for m in [("teacher", "probe"), ("ss_lfp", "probe"), ("ms_lfp", "probe"), ("distilled", "probe"),
              ("distilled_a", "probe"), ("teacher", "probe_wiener"), ("distilled", "probe_wiener"),
              ("distilled_a", "probe_wiener"), ("distilled", "finetune"), ("wiener_bandpower", "classic"),
              ("kalman_bandpower", "classic"), ("wiener_spikes", "classic"), ("wiener_lfp", "classic"),
              ("distilled", "causal"), ("ms_lfp", "causal"), ("distilled", "causal_wiener"),
              ("ms_lfp", "causal_wiener"), ("distilled", "probe_combined"),
              ("distilled", "causal_combined")]:
        assert m in models, m
    # the combined read-out only for the distilled model (its deployable candidate)
    assert {m for m, e in models if e.endswith("_combined")} == {"distilled"}
    # every candidate of the deployable decoder has a validation score, and the one chosen per
    # session is the best on validation among them (test bins never choose)
    cands = ("probe", "probe_wiener", "probe_combined", "causal", "causal_wiener",
             "causal_combined")
    assert all(np.isfinite(r["r2_val"]) for r in rows if r["eval"] in cands
               or (r["eval"] == "classic" and r["model"] != "wiener_spikes"))
    deploy = res["deployable"]
    assert {d["setting"] for d in deploy["rows"]} == {"offline", "causal"}
    for d in deploy["rows"]:
        evs = cands[:3] if d["setting"] == "offline" else cands[3:]
        vals = [r["r2_val"] for r in rows if r["session"] == d["session"] and (
            (r["model"] == "distilled" and r["eval"] in evs and r["seed"] == d["seed"])
            or (r["eval"] == "classic" and r["model"] != "wiener_spikes"))]
        assert d["r2_val"] == max(vals)
    assert "## The deployable decoder" in (out / "report.md").read_text()
    # every probe row is also scored on validation bins, and the report makes the call
    assert all(np.isfinite(r["r2_val"]) for r in rows if r["eval"] == "probe")
    assert {c["group"] for c in res["validation_check"]} == {"distilled", "unseen"}
    assert "## Validation check" in (out / "report.md").read_text()
    # the time-left estimate expects exactly the units the study ran
    ran = collections.Counter(s["stage"] for s in res["stages"] if s["stage"] != "data")
    roles = Roles(**{k: res["roles"][k] for k in ("teacher", "distill", "heldout", "ms_lfp")})
    study = Study(load_config(cfg_path), out=root / "expect", console=Console(quiet=True))
    assert study.expected_units(roles) == dict(ran)
    for r in rows:
        assert {"model", "session", "split", "seed", "r2"} <= set(r)
        assert r["split"] == "test"
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    md = (out / "report.md").read_text()
    # every number in the report's tables comes from results.json
    numbers = {f"{s['mean']:.3f}" for s in res["summary"]} | {f"{s['sd']:.3f}" for s in res["summary"]}
    numbers |= {f"{r['r2']:.3f}" for r in rows}
    numbers |= {f"{s[k]:.3f}" for s in res["labels"]["summary"] for k in ("mean", "sd")}
    numbers |= {f"{d['r2']:.3f}" for diag in res["diagnostics"].values()
                for d in [*diag["sessions"].values(), *diag.get("anchor", {}).get(
                    "sessions", {}).values()]}
    # the yardstick column (an LFP Wiener filter's share of the same targets)
    numbers |= {f"{d['lfp_filter_r2']:.3f}" for diag in res["diagnostics"].values()
                for d in diag["sessions"].values() if "lfp_filter_r2" in d}
    assert any("lfp_filter_r2" in d for diag in res["diagnostics"].values()
               for d in diag["sessions"].values()), "the yardstick is missing from the diagnostics"
    numbers |= {f"{c[k]:.3f}" for c in res["validation_check"]
                for k in ("distilled_val", "ms_lfp_val", "test_gain")}
    numbers |= {f"{c['test_gain']:+.3f}" for c in res["validation_check"]}
    numbers |= {f"{d[k]:.3f}" for d in deploy["rows"]
                for k in ("r2", "r2_val", "classic_r2", "spike_r2") if d[k] is not None}
    numbers |= {f"{s[k]:.3f}" for s in deploy["summary"]
                for k in ("mean", "sd", "classic_mean", "ratio", "spike_mean") if s[k] is not None}
    assert res["diagnostics"], "the distillation diagnostics are missing from results.json"
    # distill.anchor "validation" (the default): two students, the one kept is the one probed
    choice = res["anchor_choice"]["0"]
    assert choice["rule"] == "validation" and {"plain_val", "anchored_val"} <= set(choice)
    assert choice["anchored"] == (choice["anchored_val"] > choice["plain_val"])
    numbers |= {f"{choice[k]:.3f}" for k in ("plain_val", "anchored_val")}
    assert "## The student: plain or anchored to the MS-LFP" in md
    students = {json.loads(p.read_text()).get("anchor") is not None: p.parent
                for p in (out / "stages" / "distill").glob("seed0-*/run_config.json")}
    assert set(students) == {False, True}
    probed = {str(d) for d in (out / "stages" / "generalize").glob("adapt_distilled-*/")}
    assert probed  # mode (b) starts from the kept student
    init = json.loads(next((out / "stages" / "generalize").glob(
        "adapt_distilled-*/run_config.json")).read_text())["init_from"]
    assert init == str(students[choice["anchored"]])
    table_lines = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    for ln in table_lines:
        for num in re.findall(r"-?\d+\.\d{3}", ln):
            assert num in numbers or num.lstrip("-") in numbers, (num, ln)
    for png in ("per_session_r2.png", "summary_r2.png", "traces.png", "label_efficiency.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.slow
def test_rerun_is_cached_and_config_change_recomputes_dependents(tiny_run):
    root, cfg_path = tiny_run
    out = root / "out"
    assert main(["run", str(cfg_path)]) == 0
    stages = json.loads((out / "results.json").read_text())["stages"]
    assert stages and all(s["status"] == "cached" for s in stages)
    changed = {**TINY, "out": str(out),
               "finetune": {"models": ["distilled"], "train": {"max_epochs": 2, "progress": False}}}
    write_cfg(root / "changed.yaml", changed)
    assert main(["run", str(root / "changed.yaml")]) == 0
    stages = json.loads((out / "results.json").read_text())["stages"]
    ran = {s["stage"] for s in stages if s["status"] == "ran"}
    assert ran == {"finetune"}
    assert main(["run", str(root / "changed.yaml"), "--from", "probe"]) == 0
    stages = json.loads((out / "results.json").read_text())["stages"]
    ran = {s["stage"] for s in stages if s["status"] == "ran"}
    assert ran == {"probe", "finetune", "classic", "causal", "labels"}


@pytest.mark.slow
def test_label_study_fits_every_decoder_on_the_same_training_bins(tiny_run):
    from lfpdistill.data import open_store
    from lfpdistill.study.labels import label_mask, mask_sha

    root, _ = tiny_run
    res = json.loads((root / "out" / "results.json").read_text())
    rows = [r for r in res["labels"]["rows"] if not r.get("full")]
    by_subset = collections.defaultdict(set)
    decoders = collections.defaultdict(set)
    for r in rows:
        by_subset[(r["session"], r["seconds"], r["draw"])].add(r["mask_sha"])
        decoders[(r["session"], r["seconds"], r["draw"])].add((r["model"], r["readout"]))
    assert len(by_subset) == 2 * 2 * 2  # evaluated sessions x budgets x draws
    assert all(len(v) == 1 for v in by_subset.values())  # one mask per subset, for every decoder
    for key, got in decoders.items():  # frozen models' read-outs and the classic decoders
        assert {("distilled", "probe"), ("distilled", "wiener"), ("ms_lfp", "probe"),
                ("wiener_bandpower", None), ("kalman_bandpower", None),
                ("wiener_spikes", None)} <= got, key
    store = open_store(next((root / "out" / "stages" / "data").glob("*/store")))
    for (name, sec, draw), shas in by_subset.items():
        assert shas == {mask_sha(label_mask(store.session(name), sec, draw, seed=0))}
    # the whole training set closes every curve, from the study's own evaluations
    assert {r["model"] for r in res["labels"]["rows"] if r.get("full")} >= {
        "distilled", "ms_lfp", "ss_lfp", "wiener_bandpower"}
    claims = [c["claim"] for c in res["checks"]]
    assert any("label efficiency" in c for c in claims)
    assert "## Label efficiency" in (root / "out" / "report.md").read_text()


def test_unknown_and_mistyped_keys_rejected(tmp_path, capsys):
    bad = {**TINY, "teacher": {**TINY["teacher"], "trian": {"max_epochs": 1}}}
    with pytest.raises(ConfigError, match=r"unknown key 'teacher\.trian'"):
        load_config(write_cfg(tmp_path / "a.yaml", bad))
    bad = {**TINY, "distill": {"objective": {"align_loss": "l1"}}}
    with pytest.raises(ConfigError, match=r"distill\.objective\.align_loss"):
        load_config(write_cfg(tmp_path / "b.yaml", bad))
    assert main(["run", str(write_cfg(tmp_path / "c.yaml", {**TINY, "sedes": [1]}))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "unknown key 'sedes'" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "d.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "d.yaml")


def test_bad_roles_rejected(tmp_path):
    from lfpdistill.study import Cache, Study, prepare_data, resolve_roles

    cfg = load_config(write_cfg(tmp_path / "r.yaml", {
        **TINY, "out": str(tmp_path / "o"),
        "data": {**TINY["data"], "simulate": {**TINY["data"]["simulate"], "seconds": 20}},
        "sessions": {"teacher": ["sim00", "sim01"], "distill": ["sim00"], "heldout": ["sim01"]}}))
    study = Study(cfg)
    store = prepare_data(cfg, study.cache)
    with pytest.raises(ConfigError, match="held-out sessions must be unseen"):
        resolve_roles(cfg, store)
    assert isinstance(study.cache, Cache)
    with pytest.raises(ConfigError, match="unknown stage"):
        Study(cfg, from_stage="nope")


def test_generalization_mode_a_needs_same_channel_count(tmp_path):
    from tests.conftest import make_session

    from lfpdistill.commands.common import check_as_session
    from lfpdistill.data import write_store
    from lfpdistill.errors import DataValidationError
    from lfpdistill.models import ModelConfig, NeuralTransformer

    a, b = make_session("a", T=1500, C=8), make_session("b", T=1500, C=6)
    write_store([a, b], tmp_path)
    model = NeuralTransformer(ModelConfig(modality="lfp", patch_size=4, d_model=16, n_heads=2), {"a": 8})
    check_as_session(model, a, "a")
    with pytest.raises(DataValidationError, match=r"mode \(a\).*same channel count.*mode \(b\)"):
        check_as_session(model, b, "a")
    with pytest.raises(DataValidationError, match="not in the model's vocabulary"):
        check_as_session(model, b, "zz")


def test_checks_compare_the_same_decoder_on_latents_and_on_classic_features():
    from lfpdistill.study.report import claims

    def row(ev, grp, model, mean):
        return {"eval": ev, "group": grp, "model": model, "mean": mean, "sd": 0.0, "n": 3}

    summary = [row("probe", "distilled", m, v) for m, v in
               (("teacher", 0.55), ("ss_lfp", 0.1), ("ms_lfp", 0.15), ("distilled", 0.37))]
    summary += [row("probe_wiener", "distilled", "teacher", 0.75),
                row("probe_wiener", "distilled", "distilled", 0.53),
                row("probe_wiener", "unseen", "distilled", 0.45),
                row("classic", "distilled", "wiener_spikes", 0.72),
                row("classic", "distilled", "wiener_bandpower", 0.475),
                row("classic", "unseen", "wiener_bandpower", 0.49)]
    got = {c["claim"]: c["pass"] for c in claims(summary)}
    assert got["Distilled sessions, probe: Teacher within 0.05 of (or above) the spike Wiener "
               "filter"] is False
    assert got["Distilled sessions, Wiener on latents: Teacher within 0.05 of (or above) the spike "
               "Wiener filter"] is True
    assert got["Distilled sessions, probe: Distilled LFP ≥ 1.1 × best classic LFP decoder "
               "(LFP Wiener (LMP+band power))"] is False
    assert got["Distilled sessions, Wiener on latents: Distilled LFP ≥ 1.1 × best classic LFP "
               "decoder (LFP Wiener (LMP+band power))"] is True  # 0.53 >= 0.5225
    assert got["Unseen sessions, Wiener on latents: Distilled (generalized, b) ≥ best classic LFP "
               "decoder (LFP Wiener (LMP+band power))"] is False


def test_report_prints_the_causal_table_only_when_the_study_has_causal_rows():
    from types import SimpleNamespace

    from lfpdistill.study.report import markdown, summarise

    def row(ev, model, r2):
        return {"eval": ev, "group": "distilled", "model": model, "session": "s0", "seed": 0,
                "split": "test", "mode": None, "r2": r2}

    rows = [row("probe", "distilled", 0.4), row("classic", "kalman_bandpower", 0.2)]
    cfg = SimpleNamespace(name="t", seeds=[0])
    roles = {"teacher": ["s0"], "distill": ["s0"], "heldout": []}

    def text(rs):
        return markdown(cfg, roles, rs, summarise(rs), [], 1.0, {}, "store")

    assert "Causal (streaming)" not in text(rows)
    assert "Causal (streaming)" in text(rows + [row("causal", "distilled", 0.3)])


def test_validation_check_calls_from_validation_bins_only():
    from types import SimpleNamespace

    from lfpdistill.study.report import markdown, summarise, validation_check

    def row(model, session, r2_val, r2, seed=0, group="distilled"):
        return {"eval": "probe", "group": group, "model": model, "session": session,
                "seed": seed, "split": "test", "mode": None, "r2": r2, "r2_val": r2_val}

    rows = [row("distilled", "a", 0.5, 0.1), row("ms_lfp", "a", 0.3, 0.4),   # val says distilled
            row("distilled", "b", 0.2, 0.6), row("ms_lfp", "b", 0.4, 0.1),   # val says MS-LFP
            row("teacher", "a", 0.9, 0.9),
            {**row("distilled", "c", None, 0.3), "r2_val": None}]  # an old cache: no call
    check = validation_check(rows)
    calls = {c["session"]: c["call"] for c in check}
    assert calls == {"a": "distilled", "b": "ms_lfp"}  # the test R² never decides
    assert [c["test_gain"] for c in check] == pytest.approx([-0.3, 0.5])
    cfg = SimpleNamespace(name="t", seeds=[0])
    md = markdown(cfg, {"teacher": ["a"], "distill": ["a", "b"], "heldout": []}, rows,
                  summarise(rows), [], 1.0, {}, "store")
    assert "## Validation check" in md and "agrees with the sign of the test gain on 0 of 2" in md


@pytest.mark.slow
def test_study_anchors_the_students_to_their_own_ms_lfp_run(tmp_path):
    """With ``distill.anchor: always`` the study passes each student (bidirectional and causal)
    the MS-LFP run it is compared with as its anchor, and trains no plain one."""
    cfg = {**TINY, "out": str(tmp_path / "out"),
           "distill": {"anchor": "always", "anchor_pcs": 4,
                       "train": {"max_epochs": 1, "progress": False}},
           "finetune": {"enabled": False}, "classic": {"enabled": False},
           "labels": {"enabled": False}}
    assert main(["run", str(write_cfg(tmp_path / "anchored.yaml", cfg))]) == 0
    configs = {p.parent: json.loads(p.read_text())
               for p in (tmp_path / "out").rglob("run_config.json")}
    students = {d: c for d, c in configs.items() if c.get("stage") == "distill"}
    assert len(students) == 2  # the study's student and the causal one
    for c in students.values():
        anchor = configs[type(tmp_path)(c["anchor"])]
        assert anchor["modality"] == "lfp" and anchor["sessions"] == ["sim00", "sim01"]  # MS-LFP
        assert anchor["model"]["causal"] == c["student"]["causal"]
        assert c["distill"]["anchor_pcs"] == 4
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["anchor_choice"] == {"0": {"rule": "always", "anchored": True}}


def test_the_study_sets_the_anchor_itself(tmp_path, capsys):
    """objective.anchor_pcs in a study is refused with the fields to use instead; anchor 'off'
    and 'always' plan one student per seed, 'validation' two and the choice; inconsistent
    anchor options are one line each."""
    bad = {**TINY, "distill": {"objective": {"anchor_pcs": 16}}}
    cli_error(capsys, ["run", str(write_cfg(tmp_path / "bad.yaml", bad))],
              "distill.objective.anchor_pcs is set by the study", "distill.anchor", code=2)
    roles = Roles(teacher=["sim00", "sim01"], distill=["sim00"], heldout=["sim02"],
                  ms_lfp=["sim00", "sim01"])
    counts = {}
    for rule in ("off", "always", "validation"):
        cfg = load_config(write_cfg(tmp_path / f"{rule}.yaml",
                                    {**TINY, "seeds": [0, 1], "distill": {"anchor": rule}}))
        units = Study(cfg, out=tmp_path / rule, console=Console(quiet=True)).expected_units(roles)
        counts[rule] = (units["distill"], units.get("choose", 0))
        assert cfg.distill.student_objective(True).anchor_pcs == 16
        assert cfg.distill.student_objective(False).anchor_pcs == 0
    assert counts == {"off": (2, 0), "always": (2, 0), "validation": (4, 2)}
    for i, (distill, fragment) in enumerate([
            ({"anchor_pcs": 0}, "needs distill.anchor_pcs >= 1"),
            ({"anchor": "always", "objective": {"cache_teacher": False}}, "cache_teacher: true"),
            ({"anchor_pcs": 17}, "the MS-LFP anchor has 16 latent dimensions")]):
        err = cli_error(capsys, ["run", str(write_cfg(tmp_path / f"e{i}.yaml",
                                                      {**TINY, "distill": distill}))],
                        fragment, code=2)
        assert "distill.anchor" in err
    # without an anchor none of these apply
    load_config(write_cfg(tmp_path / "off.yaml", {**TINY, "distill": {
        "anchor": "off", "anchor_pcs": 0, "objective": {"cache_teacher": False}}}))


def test_report_names_the_student_the_study_kept():
    from lfpdistill.study.report import anchor_markdown

    md = anchor_markdown({0: {"rule": "validation", "anchored": True, "plain_val": 0.2,
                              "anchored_val": 0.3},
                          1: {"rule": "validation", "anchored": False, "plain_val": 0.4,
                              "anchored_val": 0.1}})
    assert "| 0 | 0.200 | 0.300 | anchored |" in md and "| 1 | 0.400 | 0.100 | plain |" in md
    assert "validation" in md and "test bins never do" in md
    assert anchor_markdown({0: {"rule": "off", "anchored": False}}) == ""  # nothing was chosen


def test_diagnostics_table_shows_the_anchor_column_only_for_anchored_students():
    from lfpdistill.study.report import diagnostics_markdown

    d = {"r2": 0.25, "r2_per_dim": [0.5, 0.4, 0.3], "r2_train": 0.6}
    plain = {"space": "target_pcs", "sessions": {"a": d}}
    assert "anchor PCs explained" not in diagnostics_markdown({0: plain})
    anchored = {**plain, "anchor": {"space": "anchor_pcs", "sessions": {"a": {**d, "r2": 0.125}}}}
    md = diagnostics_markdown({0: anchored, 1: plain})
    assert "anchor PCs explained" in md
    # validation, training, gap, first dims (validation / training), last dims, anchor
    assert "| 0 | a | 0.250 | 0.60 | +0.35 | 0.50 / 0.40 / 0.30 | — | 0.50 / 0.40 / 0.30 | 0.125 |" in md
    assert "| 1 | a | 0.250 | 0.60 | +0.35 | 0.50 / 0.40 / 0.30 | — | 0.50 / 0.40 / 0.30 | — |" in md


def test_choosing_the_student_needs_validation_bins(tmp_path, capsys):
    """A store without validation bins in the distilled sessions is refused before any model is
    trained, with the way out."""
    from tests.conftest import make_session

    from lfpdistill.data import write_store

    store = tmp_path / "store"
    write_store([make_session(f"s{i}", T=1500, N=7, C=5, seed=i) for i in range(3)], store,
                segment_s=1.0, fractions=(0.9, 0.0, 0.1))
    cfg = {**TINY, "out": str(tmp_path / "out"), "data": {"store": str(store)},
           "sessions": {"teacher": ["s0", "s1"], "distill": ["s0"], "heldout": ["s2"]}}
    cli_error(capsys, ["run", str(write_cfg(tmp_path / "v.yaml", cfg))],
              "distill.anchor 'validation'", "validation bins", "'always' or 'off'")
    assert not (tmp_path / "out" / "stages" / "teacher").exists()


def test_the_kept_student_flows_downstream_and_the_plain_one_keeps_its_key(tmp_path):
    """Units recorded instead of run: with distill.anchor 'validation' the plain student has
    the unit inputs of a study without anchors; the student each seed keeps is the one adapted
    to held-out sessions, and the causal student follows the same choice."""
    from lfpdistill.study.cache import canonical

    def recorded(rule):
        cfg = load_config(write_cfg(tmp_path / f"{rule}.yaml", {
            **TINY, "seeds": [0, 1], "causal": {"enabled": True}, "distill": {"anchor": rule}}))
        study = Study(cfg, out=tmp_path / rule, console=Console(quiet=True))
        calls = []

        def run(stage, name, work, **inputs):
            # the same folder under either rule (the cache tells students apart by their key)
            d = tmp_path / "units" / stage / (name + ("-anchored" if "anchor" in inputs else ""))
            d.mkdir(parents=True, exist_ok=True)
            calls.append({"stage": stage, "name": name, "work": work.__name__, "inputs": inputs,
                          "dir": d})
            if work.__name__ == "choose_student":  # seed 1 keeps the anchored student
                (d / "choice.json").write_text(json.dumps(
                    {"anchored": name == "seed1", "plain_val": 0.2, "anchored_val": 0.1}))
            (d / "rows.json").write_text("[]")
            return d

        study.cache.run = run
        roles = Roles(teacher=["sim00", "sim01"], distill=["sim00"], heldout=["sim02"],
                      ms_lfp=["sim00", "sim01"])
        runs = Runs()
        study.train_models(store=None, roles=roles, memo=None, runs=runs, seeds=study.cfg.seeds)
        study.causal(store=None, roles=roles, runs=runs, memo=None, seeds=study.cfg.seeds)
        return calls, runs

    def key(call):  # what the cache hashes, less the (absent) store and memo
        return canonical({k: v for k, v in call["inputs"].items() if k not in ("store", "memo")})

    calls, runs = recorded("validation")
    off, _ = recorded("off")
    students = [c for c in calls if c["work"] == "train_student" and c["stage"] == "distill"]
    plain = {c["name"]: c for c in students if "anchor" not in c["inputs"]}
    anchored = {c["name"]: c for c in students if "anchor" in c["inputs"]}
    assert set(plain) == set(anchored) == {"seed0", "seed1"}
    off_students = {c["name"]: c for c in off if c["work"] == "train_student"
                    and c["stage"] == "distill"}
    for seed in ("seed0", "seed1"):
        assert key(plain[seed]) == key(off_students[seed])  # same key: cached plain runs reused
        assert anchored[seed]["inputs"]["objective"].anchor_pcs == 16
    assert plain["seed1"]["dir"] != anchored["seed1"]["dir"]
    assert runs.distilled == {0: plain["seed0"]["dir"], 1: anchored["seed1"]["dir"]}
    assert runs.anchor_choice[1]["anchored"] and not runs.anchor_choice[0]["anchored"]
    for c in calls:
        if c["name"].startswith("adapt_distilled") and c["stage"] == "generalize":
            seed = int(c["name"][-1])
            assert c["inputs"]["init_from"] == runs.distilled[seed]
    causal = {c["name"]: c for c in calls if c["stage"] == "causal"
              and c["work"] == "train_student"}
    causal_ms = {c["name"]: c["dir"] for c in calls if c["stage"] == "causal"
                 and c["name"].startswith("ms_lfp")}
    assert "anchor" not in causal["distill-seed0"]["inputs"]
    assert causal["distill-seed1"]["inputs"]["anchor"] == causal_ms["ms_lfp-seed1"]
