"""Optional dependencies of the exporters: import them lazily and say exactly what to install when missing."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


class MissingDependencyError(RuntimeError):
    """An optional package needed for the requested export or benchmark backend is not installed."""


# What to install for each optional module (the project extra first, then the bare packages).
INSTALL_HINTS = {
    "onnx": "pip install 'eupe[onnx]'  (or: pip install onnx onnxruntime onnxscript)",
    "onnxruntime": "pip install 'eupe[onnx]'  (or: pip install onnxruntime)",
    "onnxscript": "pip install 'eupe[onnx]'  (or: pip install onnxscript), or use --onnx-exporter torchscript",
    "executorch": "pip install 'eupe[executorch]'  (or: pip install --no-deps executorch torchao + ruamel.yaml, "
    "tabulate, flatbuffers; the wheel must match your torch version)",
    "transformers": "pip install 'eupe[transformers]'  (or: pip install --no-deps transformers tokenizers "
    "huggingface_hub + regex, typer)",
    "skimage": "pip install scikit-image",
}


def require(module: str, purpose: str) -> ModuleType:
    """Imports ``module`` or raises :class:`MissingDependencyError` naming what to install for ``purpose``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        hint = INSTALL_HINTS.get(top, f"pip install {top}")
        raise MissingDependencyError(
            f"{purpose} needs the optional package '{top}' ({err}). Install it: {hint}"
        ) from err


def available(module: str, *, import_it: bool = True) -> bool:
    """Whether ``module`` imports (any import failure, e.g. a wheel built for another torch, counts as absent).

    ``import_it=False`` only looks the module up (cheap; a broken install then fails later, when used).
    """
    try:
        if not import_it:
            return importlib.util.find_spec(module) is not None
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - broken optional installs must read as "not available", not crash
        return False
    return True
