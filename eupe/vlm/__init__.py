"""EUPE as the vision tower of LLaVA-style VLMs in transformers.

Importing this package registers :class:`EupeVisionConfig` / :class:`EupeVisionModel` with ``AutoConfig`` /
``AutoModel`` and :class:`EupeImageProcessor` with ``AutoImageProcessor``, so that folders written by
:func:`build_vlm` load with ``AutoModelForImageTextToText.from_pretrained`` and ``AutoProcessor.from_pretrained``.
Without transformers 5 the package still imports (its modules that do not need transformers work); the names
below then raise an error saying what to install.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ..utils.optional import MissingDependencyError

__all__ = [
    "BuiltVLM",
    "EupeImageProcessor",
    "EupeVisionConfig",
    "EupeVisionModel",
    "VLMFolderError",
    "build_vlm",
    "check_vlm_folder",
    "image_aware_template",
]


def _transformers_version() -> str | None:
    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


_TRANSFORMERS = _transformers_version()

if _TRANSFORMERS is not None and int(_TRANSFORMERS.split(".")[0]) >= 5:
    from .build import BuiltVLM, VLMFolderError, build_vlm, check_vlm_folder, image_aware_template
    from .processor import EupeImageProcessor
    from .tower import EupeVisionConfig, EupeVisionModel
else:
    def __getattr__(name: str):
        if name in __all__:
            found = f"found {_TRANSFORMERS}" if _TRANSFORMERS else "not installed"
            raise MissingDependencyError(f"eupe.vlm.{name} needs transformers>=5 ({found}). Install it with: "
                                         f"pip install 'eupe[vlm]'")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
