"""A study run seed by seed (the default: a provisional report after the first seed) gives
exactly the numbers of the same study run stage by stage: every unit seeds its own random
numbers and is keyed by its inputs, so the order the units run in cannot move a number."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from lfpdistill.config import ExperimentConfig
from lfpdistill.errors import ConfigError
from lfpdistill.study.runner import PROVISIONAL, Study

TINY_MODEL = {"patch_size": 16, "d_model": 16, "n_layers": 1, "n_heads": 2}
#: 16 LFP channels in two patches of 8
ONE_EPOCH = {"max_epochs": 1, "progress": False}
#: two seeds, the causal and label stages, each as small as it goes (the scaling stage
#: follows the same per-seed rounds; left out to keep this test short)
TWO_SEEDS = {
    "name": "order",
    "seeds": [0, 1],
    "accelerator": "cpu",
    "data": {"simulate": {"n_sessions": 3, "seconds": 60, "seed": 0, "n_channels": 16,
                          "units_min": 30, "units_max": 40},
             "segment_s": 5.0},
    "sessions": {"teacher": ["sim00", "sim01"], "distill": ["sim00"], "heldout": ["sim02"]},
    "teacher": {"model": {"modality": "spikes", **TINY_MODEL}, "train": ONE_EPOCH},
    "lfp_model": {"modality": "lfp", **TINY_MODEL, "patch_size": 8},
    "ss_lfp": ONE_EPOCH,
    "ms_lfp": ONE_EPOCH,
    "distill": {"train": ONE_EPOCH},
    "generalize": {"adapt": ONE_EPOCH},
    "finetune": {"models": ["distilled"], "train": ONE_EPOCH},
    "causal": {"enabled": True, "context_bins": 10},
    "labels": {"enabled": True, "seconds": [5, 10], "draws": 1},
}
#: what results.json holds that may differ between two runs of one study: timings, the cache log
TIMINGS = ("seconds", "stages")


class Recording(Study):
    """A study that keeps a copy of its provisional results.json and the console lines."""

    provisional_results: dict | None = None

    def provisional(self, *args, **kwargs):
        super().provisional(*args, **kwargs)
        self.provisional_results = json.loads(
            (self.out / PROVISIONAL / "results.json").read_text())


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The study run stage by stage: the numbers every other order must give."""
    root = tmp_path_factory.mktemp("order")
    cfg = ExperimentConfig(**TWO_SEEDS, out=str(root / "unused"))
    return Study(cfg, out=root / "stages", console=Console(quiet=True), order="stages").run(), root


@pytest.mark.slow
def test_seed_order_gives_the_stage_order_numbers_and_a_provisional_first_seed(staged, tmp_path):
    staged, root = staged
    cfg = ExperimentConfig(**TWO_SEEDS, out=str(root / "unused"))  # the same config as staged's
    console = Console(record=True, width=200)
    study = Recording(cfg, out=tmp_path / "seeds", console=console, order="seeds",
                      background=False)
    seeded = study.run()
    assert seeded.keys() == staged.keys() and "rows" in seeded
    for key in set(seeded) - set(TIMINGS):  # rows, summary, checks, labels, diagnostics, ...
        assert json.dumps(seeded[key], sort_keys=True) == json.dumps(staged[key], sort_keys=True), key
    on_disk = json.loads((tmp_path / "seeds" / "results.json").read_text())
    assert on_disk["rows"] == json.loads((root / "stages" / "results.json").read_text())["rows"]
    # the same units ran, in another order
    def units(res):
        return sorted((s["stage"], s["unit"]) for s in res["stages"])
    assert units(seeded) == units(staged)
    order = [(s["stage"], s["unit"]) for s in seeded["stages"]]
    # seed order: the classic decoders first, each model group probed once it is trained
    assert order.index(("classic", "decoders")) < order.index(("teacher", "seed0"))
    assert order.index(("teacher", "seed0")) < order.index(("probe", "teacher-seed0")) \
        < order.index(("ss_lfp", "sim00-seed0"))
    assert order.index(("probe", "distilled-seed0")) < order.index(("ss_lfp", "sim00-seed1"))
    assert order.index(("generalize", "adapt_ms-sim02-seed0")) \
        < order.index(("probe", "ms_lfp-seed0")) < order.index(("distill", "seed0"))

    # the provisional report: seed 0's probes and the classic decoders, marked, then removed
    prov = study.provisional_results
    assert prov is not None and prov["provisional"] is True and prov["final_seeds"] == [0, 1]
    assert "PROVISIONAL" in prov["name"]
    assert {r["seed"] for r in prov["rows"]} == {0, None}
    evals = {r["eval"] for r in prov["rows"]}
    assert {"probe", "probe_wiener", "classic"} <= evals
    assert all(e.startswith("probe") or e == "classic" for e in evals)  # the probe unit's, classic
    final_seed0 = [r for r in seeded["rows"] if (r["seed"] == 0 and r["eval"].startswith("probe"))
                   or r["eval"] == "classic"]
    assert prov["rows"] == json.loads(json.dumps(final_seed0))  # the same numbers, seed 0's
    assert not (tmp_path / "seeds" / PROVISIONAL).exists()
    text = console.export_text()
    assert text.index("provisional report") < text.index("ss_lfp/sim00-seed1")
    assert text.count("PROVISIONAL") >= 1
    # a table of the numbers so far after the classic decoders and after each model group
    firsts = [text.index("first numbers — seed 0, after", start) for start in
              [0] + [text.index(f"▶ probe/{g}-seed0") for g in ("teacher", "ss_lfp", "ms_lfp",
                                                               "distilled")]]
    assert firsts == sorted(set(firsts)) and len(firsts) == 5
    assert "still training: teacher, ss_lfp, ms_lfp, distilled" in text
    assert "every model of this seed" in text


@pytest.mark.slow
def test_background_ss_lfp_gives_the_same_rows(staged, tmp_path):
    """LFPDISTILL_STUDY_BACKGROUND=1: the SS-LFP models train in a background worker and are
    probed last, yet their rows take the same place."""
    staged, _ = staged
    cfg = ExperimentConfig(**TWO_SEEDS, out=str(tmp_path / "unused"))
    console = Console(record=True, width=200)
    back = Study(cfg, out=tmp_path / "back", console=console, order="seeds", background=True).run()
    assert back["rows"] == staged["rows"]
    text = console.export_text()
    assert "▶ ss_lfp/sim00-seed0 (in the background" in text
    assert text.index("▶ probe/distilled-seed0") < text.index("▶ probe/ss_lfp-seed0")


def test_unknown_order_is_refused(tmp_path):
    cfg = ExperimentConfig(**TWO_SEEDS, out=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown run order 'random'"):
        Study(cfg, out=tmp_path, console=Console(quiet=True), order="random")


def _where(out, parent: int) -> None:
    """A unit that records the process and CPU priority it ran with."""
    import os

    out.mkdir(parents=True)
    (out / "ran.json").write_text(json.dumps({"pid": os.getpid(), "parent": parent,
                                              "nice": os.getpriority(os.PRIO_PROCESS, 0)}))


def _dies_in_a_worker(out, parent: int) -> None:
    """A unit whose background worker dies (as one killed for memory would)."""
    import os

    if os.getpid() != parent:
        os._exit(3)
    out.mkdir(parents=True)
    (out / "ran.json").write_text(json.dumps({"pid": os.getpid()}))


def test_a_background_unit_runs_at_low_priority_into_the_folder_run_would_use(tmp_path):
    import os

    from lfpdistill.study.cache import Cache

    cache = Cache(tmp_path, set(), Console(quiet=True))
    try:
        pending = cache.start("s", "u", _where, parent=os.getpid())
        d = pending.wait()
        ran = json.loads((d / "ran.json").read_text())
        assert ran["pid"] != os.getpid() and ran["nice"] >= os.getpriority(os.PRIO_PROCESS, 0)
        assert ran["nice"] == 19 or os.getpriority(os.PRIO_PROCESS, 0) == 19
        # the same unit through run(): the same folder, found finished
        assert cache.run("s", "u", _where, parent=os.getpid()) == d
        assert [e["status"] for e in cache.log] == ["ran", "cached"]
        # a worker that dies: the unit runs in this process instead, and so do later ones
        d = cache.start("s", "dies", _dies_in_a_worker, parent=os.getpid()).wait()
        assert json.loads((d / "ran.json").read_text())["pid"] == os.getpid()
        d = cache.start("s", "after", _where, parent=os.getpid()).wait()
        assert json.loads((d / "ran.json").read_text())["pid"] == os.getpid()
        assert all((p / "done.json").exists() for p in (tmp_path / "stages" / "s").iterdir())
    finally:
        cache.close()
