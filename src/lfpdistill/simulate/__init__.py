"""The built-in simulator of paired spike / LFP / behaviour recordings (:mod:`.generator`) and its
family of variants with parameters drawn from documented ranges (:mod:`.variants`)."""

from ..config import LATENT_NAMES_KINEMATIC, SimConfig, SimLfpConfig
from .generator import electrode_grid, simulate_sessions
from .variants import VARIANT_RANGES, draw_variant, resolve_variant

__all__ = ["LATENT_NAMES_KINEMATIC", "VARIANT_RANGES", "SimConfig", "SimLfpConfig", "draw_variant",
           "electrode_grid", "resolve_variant", "simulate_sessions"]
