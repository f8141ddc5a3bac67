"""Backbone families (one module each) and the registry that names them."""

from . import convnext, vision_transformer  # noqa: F401  (import registers the architectures)
from .adapters import AdapterHead, Projectors
from .base import Backbone
from .convnext import ConvNeXt
from .registry import ModelEntry, PretrainedCfg, create_model, get_model_entry, list_models, register_model
from .vision_transformer import VisionTransformer

__all__ = [
    "AdapterHead",
    "Backbone",
    "ConvNeXt",
    "ModelEntry",
    "PretrainedCfg",
    "Projectors",
    "VisionTransformer",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
