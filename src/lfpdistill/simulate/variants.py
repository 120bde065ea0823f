"""A family of simulators: generative parameters drawn from documented ranges.

A method tuned on one generator can fail on recordings it was not tuned on. ``variant="random"``
draws every parameter in :data:`VARIANT_RANGES` independently (uniform, or log-uniform for
amplitudes and rates) from a stream seeded by the config's ``seed``; the ranges and the reasons
for them are in docs/simulator.md ("Simulator variants"). The same seed always gives the same
variant, and a drawn value always lies inside its range (both tested). ``variant="calibrated"``
draws the same values, then scales three amplitudes until the variant decodes within the
calibration bands (:mod:`.calibration`). The recurrent family (``SimConfig.family``) draws
its own parameters, :data:`RECURRENT_VARIANT_RANGES`, from another stream of the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import SimConfig

_VARIANT_STREAM = 424242  # random stream id of the variant draw (independent of the data streams)


@dataclass(frozen=True)
class Range:
    """One drawn parameter: ``field`` (``lfp.x`` for the LFP mixture) in ``[low, high]``;
    ``kind`` is ``uniform``, ``log`` (log-uniform), ``int`` (uniform integer, both ends
    included) or ``choice`` (one of ``options``)."""

    field: str
    low: float = 0.0
    high: float = 0.0
    kind: str = "uniform"
    options: tuple[Any, ...] = ()

    def draw(self, rng: np.random.Generator) -> Any:
        if self.kind == "choice":
            return self.options[int(rng.integers(len(self.options)))]
        if self.kind == "int":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        if self.kind == "log":
            return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.options
        return self.low <= value <= self.high


#: The drawn parameters, in draw order. Ranges of pairs are drawn as a low end and a width.
VARIANT_RANGES: tuple[Range, ...] = (
    # population and spikes
    Range("units_min", 40, 150, "int"),
    Range("units_width", 10, 60, "int"),  # units_max = units_min + width
    Range("baseline_rate_hz", 4.0, 15.0, "log"),
    Range("tuning_depth_low", 0.05, 0.15),
    Range("tuning_depth_high", 0.25, 0.7),
    Range("speed_gain", 0.05, 0.3),
    Range("private_noise", 0.5, 1.2),
    Range("slow_loading", 0.3, 1.0),
    Range("n_slow_latents", 2, 8, "int"),
    Range("pd_clustering", 0.0, 3.0),
    Range("unit_turnover", 0.05, 0.45),
    Range("tuning_drift_deg", 0.0, 20.0),
    Range("lead_s", 0.05, 0.15),
    # behaviour
    Range("task", kind="choice", options=("random_target", "center_out")),
    Range("workspace_cm", 12.0, 20.0),
    Range("velocity_noise_cm_s", 0.5, 2.0),
    # LFP mixture
    Range("lfp.lmp", 0.04, 0.16, "log"),
    Range("lfp.lmp_hz", 2.0, 6.0),
    Range("lfp.spiking", 0.05, 0.3, "log"),
    Range("lfp.beta", 0.5, 2.0, "log"),
    Range("lfp.beta_hz", 15.0, 28.0),
    Range("lfp.beta_suppression_low", 0.2, 0.5),
    Range("lfp.beta_suppression_width", 0.1, 0.4),
    Range("lfp.broadband", 0.1, 0.6, "log"),
    Range("lfp.broadband_hp_hz", 10.0, 25.0),
    Range("lfp.exponent", 1.5, 2.5),
    Range("lfp.common", 0.5, 2.0, "log"),
    Range("lfp.white", 0.1, 0.5, "log"),
    Range("lfp.gain_jitter", 0.05, 0.2),
    # interference (the raw path's line noise; the fast path has none)
    Range("lfp.line", 0.0, 5.0),
    Range("line_freq", kind="choice", options=(50.0, 60.0)),
)


#: The drawn parameters of the recurrent family (simulate/recurrent.py), in draw order: the
#: config fields that family reads; its brain parameters are drawn from
#: :data:`lfpdistill.simulate.recurrent.BRAIN_RANGES` by the same seed.
RECURRENT_VARIANT_RANGES: tuple[Range, ...] = (
    # population and spikes
    Range("units_min", 60, 150, "int"),
    Range("units_width", 10, 60, "int"),
    Range("baseline_rate_hz", 3.0, 12.0, "log"),
    Range("tuning_depth_low", 0.1, 0.3),
    Range("tuning_depth_high", 0.4, 0.9),
    Range("private_noise", 0.3, 1.0),
    Range("unit_turnover", 0.05, 0.45),
    Range("tuning_drift_deg", 0.0, 25.0),
    Range("lead_s", 0.05, 0.2),
    # behaviour
    Range("task", kind="choice", options=("random_target", "center_out")),
    Range("workspace_cm", 12.0, 24.0),
    Range("velocity_noise_cm_s", 0.3, 1.5, "log"),
    # LFP: current sources, evoked potential, rhythm, background
    Range("lfp.lmp", 0.04, 0.16, "log"),
    Range("lfp.lmp_hz", 2.0, 8.0),
    Range("lfp.spiking", 0.05, 0.3, "log"),
    Range("lfp.synaptic_tau_s", 0.005, 0.03, "log"),
    Range("lfp.beta", 0.3, 1.5, "log"),
    Range("lfp.beta_hz", 12.0, 30.0),
    Range("lfp.beta_suppression_low", 0.2, 0.5),
    Range("lfp.beta_suppression_width", 0.1, 0.4),
    Range("lfp.broadband", 0.1, 0.6, "log"),
    Range("lfp.broadband_gain", 1.0, 2.0),
    Range("lfp.exponent", 1.2, 2.4),
    Range("lfp.common", 0.3, 1.5, "log"),
    Range("lfp.white", 0.05, 0.4, "log"),
    Range("lfp.gain_jitter", 0.05, 0.25),
)
_RECURRENT_STREAM = 525252  # random stream id of the recurrent family's variant draw


def family_ranges(family: str = "kinematic") -> tuple[Range, ...]:
    """The drawn parameters of ``family`` (``kinematic`` or ``recurrent``)."""
    if family == "kinematic":
        return VARIANT_RANGES
    if family == "recurrent":
        return RECURRENT_VARIANT_RANGES
    raise ValueError(f"unknown simulator family {family!r}; expected kinematic or recurrent")


def draw_variant(seed: int, family: str = "kinematic") -> dict[str, Any]:
    """The raw draws of variant ``seed`` of ``family``: ``{range field: value}`` in
    :data:`VARIANT_RANGES` (kinematic) or :data:`RECURRENT_VARIANT_RANGES` (recurrent)."""
    ranges = family_ranges(family)
    stream = _VARIANT_STREAM if family == "kinematic" else _RECURRENT_STREAM
    rng = np.random.default_rng([int(seed), stream])
    return {r.field: r.draw(rng) for r in ranges}


def resolve_random(cfg: SimConfig) -> SimConfig:
    """``cfg`` with its drawn fields replaced by the draws of ``cfg.seed`` (``drawn_from``
    records which draw; ``variant`` becomes ``default``). ``cfg.variant`` must be ``random`` or
    ``calibrated`` (whose draw is the same): use :func:`lfpdistill.simulate.resolve_variant`."""
    if cfg.variant == "default":
        raise ValueError("resolve_random needs a random or calibrated variant config")
    d = draw_variant(cfg.seed, cfg.family)
    top: dict[str, Any] = {}
    lfp: dict[str, Any] = {}
    for name, value in d.items():
        if name.startswith("lfp."):
            lfp[name[4:]] = value
        else:
            top[name] = value
    # the recorded units must fit in the hidden population (units_max <= n_hidden / 2)
    top["units_max"] = min(top["units_min"] + top.pop("units_width"), cfg.n_hidden // 2)
    top["units_min"] = min(top["units_min"], top["units_max"])
    top["tuning_depth"] = (top.pop("tuning_depth_low"), top.pop("tuning_depth_high"))
    if cfg.family == "recurrent":  # the same field names, another family's meaning
        top["units_max"] = min(top["units_max"], cfg.n_hidden // 8)
        top["units_min"] = min(top["units_min"], top["units_max"])
    low = lfp.pop("beta_suppression_low")
    lfp["beta_suppression"] = (low, min(0.95, low + lfp.pop("beta_suppression_width")))
    merged_lfp = {**cfg.lfp.model_dump(), **lfp}
    return SimConfig(**{**cfg.model_dump(), **top, "lfp": merged_lfp, "variant": "default",
                        "drawn_from": f"{cfg.variant} variant, seed {cfg.seed}",
                        "calibration": None})
