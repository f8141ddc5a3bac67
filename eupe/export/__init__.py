"""Deployment: export EUPE backbones to ONNX, ExecuTorch, TorchScript/torch.export, safetensors and Hugging Face
transformers, and quantise them to int8, each verified against eager PyTorch right after it is written."""

from ..models.int8 import quantize_int8
from ..utils.optional import MissingDependencyError
from .api import FORMATS, ExportResult, export_model, load_for_export
from .convert import checkpoint_to_safetensors, model_to_safetensors
from .prepare import ExportError, FeatureOutputs, export_ready
from .quantize import verify_quantized
from .verify import VerificationError, VerificationReport

__all__ = [
    "FORMATS", "ExportError", "ExportResult", "FeatureOutputs", "MissingDependencyError", "VerificationError",
    "VerificationReport", "checkpoint_to_safetensors", "export_model", "export_ready", "load_for_export",
    "model_to_safetensors", "quantize_int8", "verify_quantized",
]
