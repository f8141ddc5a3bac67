"""Optional dependencies: imported only when a feature needs them, with an install hint that is right when missing."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

# What to install for each optional top-level module (the project extra first, then the bare packages).
INSTALL_HINTS = {
    "onnx": "pip install 'eupe[onnx]'  (or: pip install onnx onnxruntime onnxscript)",
    "onnxruntime": "pip install 'eupe[onnx]'  (or: pip install onnxruntime)",
    "onnxscript": "pip install 'eupe[onnx]'  (or: pip install onnxscript), or use --onnx-exporter torchscript",
    "executorch": "pip install 'eupe[executorch]' && pip install --no-deps -r requirements/executorch.txt  "
    "(the ExecuTorch wheel must match your torch version)",
    "transformers": "pip install 'eupe[transformers]'  (or: pip install transformers)",
    "matplotlib": "pip install 'eupe[plot]'  (or: pip install matplotlib)",
    "huggingface_hub": "pip install 'eupe[hf]'  (or: pip install huggingface_hub)",
    "skimage": "pip install scikit-image",
    "timm": "pip install timm",
    "open_clip": "pip install open_clip_torch",
}


class MissingDependencyError(ImportError):
    """An optional package that the requested feature needs is not installed (the message says what to install)."""


def install_hint(module: str) -> str:
    """The command that installs ``module`` (its top-level package)."""
    top = module.split(".")[0]
    return INSTALL_HINTS.get(top, f"pip install {top}")


def require(module: str, purpose: str, *, install: str | None = None,
            error: type[MissingDependencyError] = MissingDependencyError) -> ModuleType:
    """Imports ``module`` or raises ``error`` saying that ``purpose`` needs it and what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise error(f"{purpose} needs the Python package '{top}', which is not importable ({err}). "
                    f"Install it with: {install or install_hint(module)}") from err


def package_dir(package: str, purpose: str, *, install: str | None = None,
                error: type[MissingDependencyError] = MissingDependencyError) -> Path:
    """Folder of an installed package, found without importing it (its ``__init__`` may pull heavy dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise error(f"{purpose} needs the package '{package}', which is not installed. "
                    f"Install it with: {install or install_hint(package)}")
    return Path(spec.submodule_search_locations[0])


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
