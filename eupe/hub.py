"""torch.hub entry points, one per released model (re-exported by the repository's ``hubconf.py``)."""

from __future__ import annotations

import os

from torch import nn

from .loading import load


def _entry_point(name: str):
    def build(*, pretrained: bool = True, weights: str | os.PathLike | None = None, **kwargs) -> nn.Module:
        return load(name, weights, pretrained=pretrained, **kwargs)

    build.__name__ = name
    build.__doc__ = (
        f"{name}: pass ``weights=`` a local file, a URL or an hf:// reference "
        "(defaults to the released file on Hugging Face); ``pretrained=False`` gives random weights."
    )
    return build


eupe_vitt16 = _entry_point("eupe_vitt16")
eupe_vits16 = _entry_point("eupe_vits16")
eupe_vitb16 = _entry_point("eupe_vitb16")
eupe_convnext_tiny = _entry_point("eupe_convnext_tiny")
eupe_convnext_small = _entry_point("eupe_convnext_small")
eupe_convnext_base = _entry_point("eupe_convnext_base")
