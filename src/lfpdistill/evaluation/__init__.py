"""Evaluation: from a trained model (or raw features) to velocity R².

Layered without cycles, bottom to top:

- :mod:`.metrics` -- the one R² (per column, mean, x/y);
- :mod:`.features` -- causal lags inside split runs, LMP and log band-power features;
- :mod:`.decoders` -- Wiener and Kalman decoders (scikit-learn estimators);
- :mod:`.classic` -- the classic baselines of a session (spike / LFP Wiener, Kalman);
- :mod:`.latents` -- per-timestep latents of a model over whole sessions (torch);
- :mod:`.probes` -- linear probe and Wiener read-out of frozen latents.
"""

from .classic import classic_decoders
from .decoders import (
    DEFAULT_ALPHAS,
    DecoderNotFittedError,
    KalmanDecoder,
    WienerDecoder,
    fit_predict,
)
from .features import (
    DEFAULT_BANDS,
    band_power_feature_names,
    band_power_features,
    group_runs,
    lagged,
    lagged_runs,
    mask_groups,
    mask_runs,
)
from .latents import compute_latents, lag_latents, session_latents, stitch_plan
from .metrics import r2_columns, r2_mean, r2_xy
from .probes import (
    check_probe_options,
    linear_probe,
    linear_probe_decoder,
    probe_sessions,
    wiener_fits,
    wiener_probe,
)

__all__ = [
    "DEFAULT_ALPHAS", "DEFAULT_BANDS", "DecoderNotFittedError", "KalmanDecoder", "WienerDecoder",
    "band_power_feature_names", "band_power_features", "check_probe_options", "classic_decoders",
    "compute_latents", "fit_predict", "group_runs", "lag_latents", "lagged", "lagged_runs",
    "linear_probe", "linear_probe_decoder", "mask_groups", "mask_runs",
    "probe_sessions", "r2_columns", "r2_mean", "r2_xy", "session_latents", "stitch_plan",
    "wiener_fits", "wiener_probe",
]
