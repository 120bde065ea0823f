"""The built-in simulator of paired spike / LFP / behaviour recordings (:mod:`.generator`) and its
family of variants with parameters drawn from documented ranges (:mod:`.variants`), optionally
calibrated into the calibration bands (:mod:`.calibration`). A second, structurally different
family (``SimConfig(family="recurrent")``: a chaotic recurrent network drives the units, the LFP
comes from current dipoles through a volume conductor) is :mod:`.recurrent`;
:func:`simulate_sessions` and :func:`resolve_variant` serve both."""

from ..config import LATENT_NAMES_KINEMATIC, SimConfig, SimLfpConfig
from .calibration import CALIBRATION_BANDS, calibrate, calibrate_variant, calibration_r2
from .generator import electrode_grid, resolve_variant, simulate_sessions
from .variants import RECURRENT_VARIANT_RANGES, VARIANT_RANGES, draw_variant

__all__ = ["CALIBRATION_BANDS", "LATENT_NAMES_KINEMATIC", "RECURRENT_VARIANT_RANGES",
           "VARIANT_RANGES", "SimConfig", "SimLfpConfig", "calibrate", "calibrate_variant",
           "calibration_r2", "draw_variant", "electrode_grid", "resolve_variant",
           "simulate_sessions"]
