"""Head files (``head.pt``): a trained head's weights with its task and what is needed to rebuild it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ...utils.io import atomic_torch_save

H = TypeVar("H", bound=nn.Module)


def save_head(path: str | Path, head: nn.Module, *, task: str, meta: dict[str, Any]) -> None:
    """Writes the head's weights with what is needed to rebuild it (``task`` and constructor ``meta``)."""
    state = {f"head.{k}": v.detach().cpu() for k, v in head.state_dict().items()}
    atomic_torch_save({"task": task, "meta": meta, "state_dict": state}, path)


def load_head_file(path: str | Path, task: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Reads a head file written by :func:`save_head`; returns (head state dict, meta).

    Raises ``ValueError`` naming the file if it holds another task's head or is not a head file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head checkpoint {path} does not exist (it is written by `eupe eval {task}`)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "state_dict" not in blob or "task" not in blob:
        raise ValueError(f"{path} is not a head checkpoint written by `eupe eval {task}`")
    if blob["task"] != task:
        raise ValueError(f"{path} holds a {blob['task']!r} head, but a {task!r} head is needed")
    state = {k.removeprefix("head."): v for k, v in blob["state_dict"].items()}
    return state, dict(blob["meta"])


def load_head(path: str | Path, task: str, build: Callable[[dict[str, Any]], H]) -> tuple[H, dict[str, Any]]:
    """Rebuilds a head saved by :func:`save_head`: ``build(meta)`` makes it, the file's weights fill it; returns
    (head in eval mode, meta)."""
    state, meta = load_head_file(path, task)
    head = build(meta)
    head.load_state_dict(state)
    return head.eval(), meta
