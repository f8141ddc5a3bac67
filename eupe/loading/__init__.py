"""Weight loading: where checkpoints come from (sources) and how they are checked and loaded (checkpoint)."""

from .api import RANDOM_WEIGHTS, create_model, load, load_weights, read_weights
from .checkpoint import (
    CheckpointError,
    LoadReport,
    all_finite,
    check_fit,
    load_into,
    non_finite_keys,
    read_state_dict,
    require_finite_weights,
    suggest_architecture,
)
from .sources import resolve_weights

__all__ = ["RANDOM_WEIGHTS", "CheckpointError", "LoadReport", "all_finite", "check_fit", "create_model", "load",
           "load_into", "load_weights", "non_finite_keys", "read_state_dict", "read_weights", "require_finite_weights",
           "resolve_weights", "suggest_architecture"]
