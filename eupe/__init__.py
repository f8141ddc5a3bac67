"""EUPE: Efficient Universal Perception Encoders (arXiv 2603.22387) — models, loading, evaluation, distillation."""

from .data import make_transform
from .loading import CheckpointError, LoadReport, create_model, load, load_weights
from .models import list_models

__version__ = "0.1.0"

__all__ = ["CheckpointError", "LoadReport", "__version__", "create_model", "list_models", "load", "load_weights",
           "make_transform"]
