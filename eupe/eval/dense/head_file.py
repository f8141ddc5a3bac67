"""Head files (``head.pt``): a trained head's weights with its task, what is needed to rebuild it, and the backbone
it was trained on (its feature width and identity), which a later use checks."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ...extract.provenance import require_same_weights
from ...utils.io import atomic_torch_save

H = TypeVar("H", bound=nn.Module)


def save_head(path: str | Path, head: nn.Module, *, task: str, meta: dict[str, Any]) -> None:
    """Writes the head's weights with what is needed to rebuild it (``task`` and constructor ``meta``, which should
    hold ``in_dim``, ``model`` and the ``backbone`` identity for :func:`require_fitting_backbone`)."""
    state = {f"head.{k}": v.detach().cpu() for k, v in head.state_dict().items()}
    atomic_torch_save({"task": task, "meta": meta, "state_dict": state}, path)


def load_head_file(path: str | Path, task: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Reads a head file written by :func:`save_head`; returns (head state dict, meta).

    Raises ``ValueError`` naming the file if it holds another task's head or is not a head file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head checkpoint {path} does not exist (it is written by `eupe eval {task}`)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} is not a plain head checkpoint: it needs pickled code to load, which is refused "
                         f"for safety; use a head.pt written by `eupe eval {task}`") from None
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise ValueError(f"Cannot read the head checkpoint {path} ({type(err).__name__}: {err}): it is truncated, "
                         f"corrupt or not a PyTorch file; use a head.pt written by `eupe eval {task}`") from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "task" not in blob:
        raise ValueError(f"{path} is not a head checkpoint written by `eupe eval {task}`")
    if blob["task"] != task:
        raise ValueError(f"{path} holds a {blob['task']!r} head, but a {task!r} head is needed")
    state = {k.removeprefix("head."): v for k, v in blob["state_dict"].items()}
    return state, dict(blob["meta"])


def require_fitting_backbone(path: str | Path, meta: Mapping[str, Any], width: int,
                             identity: Mapping[str, Any] | None = None) -> None:
    """Raises ``ValueError`` naming both backbones when a head file's recorded backbone (``meta``: ``in_dim``,
    ``model``, ``backbone``) is not the one given (feature ``width`` and, if known, its ``identity``)."""
    trained_on, current = meta.get("model"), (identity or {}).get("model")
    hint = f"use the backbone it was trained on (--model {trained_on} with the same weights)"
    if meta.get("in_dim") not in (None, width):
        raise ValueError(f"The head {path} was trained on {trained_on} ({meta['in_dim']}-d features), but the "
                         f"backbone {current or 'given'} gives {width}-d features; {hint}")
    if identity and "backbone" in meta:
        require_same_weights(meta["backbone"], identity, f"The head {path}", hint)
    elif trained_on and current and trained_on != current:
        raise ValueError(f"The head {path} was trained on {trained_on}, but the backbone is {current}; {hint}")


def load_head(path: str | Path, task: str, build: Callable[[dict[str, Any]], H], *, width: int | None = None,
              identity: Mapping[str, Any] | None = None) -> tuple[H, dict[str, Any]]:
    """Rebuilds a head saved by :func:`save_head`: ``build(meta)`` makes it, the file's weights fill it; returns
    (head in eval mode, meta). Given the backbone's feature ``width`` (and ``identity``), a head trained on another
    backbone is refused (:func:`require_fitting_backbone`)."""
    state, meta = load_head_file(path, task)
    if width is not None:
        require_fitting_backbone(path, meta, width, identity)
    head = build(meta)
    head.load_state_dict(state)
    return head.eval(), meta
