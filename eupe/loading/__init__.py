"""Weight loading: where checkpoints come from (sources) and how they are checked and loaded (checkpoint)."""

from .api import load, load_weights
from .checkpoint import CheckpointError, LoadReport, load_into, read_state_dict, suggest_architecture
from .sources import resolve_weights

__all__ = ["CheckpointError", "LoadReport", "load", "load_into", "load_weights", "read_state_dict", "resolve_weights",
           "suggest_architecture"]
