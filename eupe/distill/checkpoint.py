"""Training checkpoints (atomic, last good ones kept) and the export of a trained student.

A checkpoint holds the student (backbone and adapter heads), the optimizer, the step (the LR schedule is a pure
function of it), the RNG states, the data-stream position and the frozen normalisation statistics. Files are
``ckpt-<step>.pt`` written with :func:`eupe.utils.io.atomic_torch_save`, so a crash leaves the previous file
intact; :func:`prune_checkpoints` keeps the newest ``keep`` files and loading falls back to an older one if the
newest is unreadable.

State dicts are gathered as full, CPU tensors with ``torch.distributed.checkpoint.state_dict`` so the same file
serves plain, DDP and FSDP2 runs on any number of ranks.

The export is a plain state dict in the reference key layout plus ``projectors.<teacher>.<cls|patch>.{0,1,3}.*``,
loadable with ``eupe.load(name, weights=path)`` and torch.hub; the normalisation statistics go next to it as
``<stem>.norms.pt`` (``{"<teacher>.<cls|patch>.<mean|std>": tensor}``).
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..utils.io import atomic_torch_save

logger = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded, CPU) model and optimizer state dicts; a collective in distributed runs."""
    return get_model_state_dict(model, options=FULL), get_optimizer_state_dict(model, optimizer, options=FULL)


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints in ``folder``, newest (highest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(folder: str | Path, step: int, payload: dict[str, Any]) -> Path:
    """Writes ``ckpt-<step>.pt`` atomically."""
    path = Path(folder) / f"ckpt-{step:08d}.pt"
    atomic_torch_save(payload, path)
    return path


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Deletes all but the newest ``keep`` (at least one) checkpoints of ``folder``."""
    for old in list_checkpoints(folder)[max(1, keep):]:
        old.unlink(missing_ok=True)


class CheckpointError(ValueError):
    """The output folder holds checkpoints, but none of them can be read."""


def load_latest(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint in ``folder`` (older ones are tried if it is damaged), or ``None`` when it
    holds none. When it holds some but none is readable, a :class:`CheckpointError`: starting over would silently
    throw away the run they belong to (and pruning would delete them).

    Its tensors are memory-mapped: reading its settings first costs no memory, and they are read in when restored.
    """
    damaged = []
    for path in list_checkpoints(folder):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception as err:  # a damaged file must not block resuming from the previous one
            logger.warning("Cannot read checkpoint %s (%s); trying an older one", path, err)
            damaged.append(path.name)
    if damaged:
        raise CheckpointError(f"{folder} holds checkpoints but none can be read ({', '.join(damaged)}); restore a "
                              "good copy to resume, or move them away (or use another output.dir) to start afresh")
    return None


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, payload: dict[str, Any]) -> None:
    """Loads a payload written by the trainer into a (possibly DDP/FSDP-wrapped) model and its optimizer."""
    set_model_state_dict(model, payload["model"], options=FULL)
    set_optimizer_state_dict(model, optimizer, payload["optimizer"], options=FULL)
    set_rng_state(payload["rng"])


def student_state(full_model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``DistillStudent`` state -> export layout: the backbone's keys, its heads under ``projectors.``."""
    out = {}
    for key, value in full_model_state.items():
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
        if key.startswith("backbone."):
            out[key[len("backbone."):]] = value
    return out


def export_student(path: str | Path, full_model_state: dict[str, torch.Tensor],
                   norms: dict[str, torch.Tensor]) -> tuple[Path, Path]:
    """Writes the student (``path``) and its normalisation statistics (``<stem>.norms.pt``), atomically."""
    path = Path(path)
    norms_path = path.with_name(path.stem + ".norms.pt")
    atomic_torch_save({k: v.contiguous() for k, v in student_state(full_model_state).items()}, path)
    atomic_torch_save(norms, norms_path)
    return path, norms_path


def load_student_init(model: nn.Module, path: str | Path, *, model_name: str = "the student") -> list[str]:
    """Initialises a ``DistillStudent`` (``model_name``: its registered model, for errors) from an exported student
    (stage 3 starts from the stage-2 export), or any weights source ``eupe.load`` accepts.

    Backbone weights must fit exactly (same architecture); adapter heads are loaded when their shapes match (same
    teachers and width), else kept fresh. Returns the names of the head tensors that were not loaded.
    """
    from ..loading import check_fit, read_weights

    try:
        sd = read_weights(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"student.init: {err} Pass the stage-2 export (student.pt).") from None
    backbone_sd = {k: v for k, v in sd.items() if not k.startswith("projectors.")}
    own = {k: v for k, v in model.backbone.state_dict().items() if not k.startswith("projectors.")}
    check_fit(own, backbone_sd, model_name=model_name, source=f"student.init {path}")
    model.backbone.load_state_dict(backbone_sd, strict=False)
    heads = {k[len("projectors."):]: v for k, v in sd.items() if k.startswith("projectors.")}
    own = model.heads.state_dict()
    usable = {k: v for k, v in heads.items() if k in own and own[k].shape == v.shape}
    model.heads.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
