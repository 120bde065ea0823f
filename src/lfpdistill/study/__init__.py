"""A whole study from one config (``lfpdistill run``): cache engine, plan, units, runner, report."""

from .cache import Cache
from .plan import EvalItem, Roles, Runs, eval_plan, resolve_roles
from .runner import STAGES, Study, prepare_data, run_experiment

__all__ = ["STAGES", "Cache", "EvalItem", "Roles", "Runs", "Study", "eval_plan", "prepare_data",
           "resolve_roles", "run_experiment"]
