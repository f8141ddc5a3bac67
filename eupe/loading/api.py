"""``eupe.load``: build a registered model and fill it with weights from any supported source."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from ..models import get_model_entry
from .checkpoint import LoadReport, load_into, read_state_dict
from .sources import resolve_weights, split_key

RANDOM_WEIGHTS = "random"  # the weights value of an untrained model, for the API as for --weights


def create_model(name: str, pretrained: bool = False, *, pretrained_cfg_overlay: dict | None = None,
                 **overrides) -> nn.Module:
    """timm's entry point: model ``name``, with its released weights when ``pretrained`` (or those of
    ``pretrained_cfg_overlay=dict(file=PATH)``), random otherwise; ``overrides`` replace architecture arguments.
    Unlike :func:`load` the model is returned in training mode, as timm does."""
    unknown = set(pretrained_cfg_overlay or {}) - {"file"}
    if unknown:
        raise ValueError(f"pretrained_cfg_overlay supports only 'file' (a local checkpoint), not {sorted(unknown)}")
    weights = (pretrained_cfg_overlay or {}).get("file") if pretrained else None
    return load(name, weights, pretrained=pretrained, **overrides).train()


def read_weights(weights: str | os.PathLike, *, default_filename: str | None = None) -> dict[str, Tensor]:
    """The state dict of any ``weights`` source :func:`load` accepts, ``#<key>`` suffix included."""
    spec, key = split_key(os.fspath(weights))
    return read_state_dict(resolve_weights(spec, default_filename=default_filename), key=key)


def load(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    pretrained: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
    **overrides,
) -> nn.Module:
    """Builds model ``name`` in eval mode and loads ``weights`` into it.

    ``weights``: a local ``.pt``/``.pth``/``.safetensors`` file, a ``file://``/``https://`` URL or an
    ``hf://org/repo[/file]`` reference, each optionally ending in ``#<key>`` to pick one state dict of a checkpoint
    that holds several (``ckpt.pt#student``); ``None`` takes the released file (``hf://``) when ``pretrained`` is set,
    and keeps random weights otherwise; ``"random"`` (as on the command line) is random weights too. Adapter heads
    in the checkpoint (``projectors.*``) land in ``model.projectors``; :func:`load_weights` returns the
    :class:`LoadReport` of a load.
    ``quantize="int8"`` returns a CPU model whose Linear layers run as dynamically quantised int8 GEMMs.
    """
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize={quantize!r} is not supported; use quantize='int8' (CPU) or None")
    entry = get_model_entry(name)
    if weights == RANDOM_WEIGHTS:
        weights, pretrained = None, False
    if weights is None and pretrained:
        weights = entry.pretrained.default_source if entry.pretrained else None
        if weights is None:
            raise ValueError(f"{name} has no released weights; pass weights=PATH or pretrained=False")
    state_dict = None
    if weights is not None:  # read the file first: a bad source fails before a large model is built
        default_file = entry.pretrained.filename if entry.pretrained else None
        state_dict = read_weights(weights, default_filename=default_file)
    model = entry.build(**overrides)
    if state_dict is not None:
        load_into(model, state_dict, model_name=name, source=os.fspath(weights))
    model = model.to(device=device, dtype=dtype).eval()
    if quantize == "int8":
        from ..models.int8 import quantize_int8

        model = quantize_int8(model, inplace=True)
    return model


def load_weights(model: nn.Module, weights: str | os.PathLike, *, model_name: str | None = None) -> LoadReport:
    """Loads ``weights`` (any source :func:`load` accepts) into an existing ``model``; returns what was loaded."""
    state_dict = read_weights(weights)
    return load_into(model, state_dict, model_name=model_name or type(model).__name__, source=os.fspath(weights))
