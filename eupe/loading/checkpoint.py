"""Read state dicts safely and load them into a model with a strict, explained key check.

Nothing here executes pickled code: ``.safetensors`` files are read with safetensors and everything else with
``torch.load(weights_only=True)``. Checkpoints may carry adapter heads under ``projectors.*``; they are loaded
into the backbone's ``projectors`` submodule (built from the tensors' shapes) under the same strict check.
A checkpoint that holds several state dicts (``student`` and ``teacher``, a model and its EMA) is never guessed
from: one is chosen with ``key`` (``path#key`` in a ``weights`` argument). Weights holding NaN or inf are refused.
"""

from __future__ import annotations

import logging
import math
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

PROJECTOR_PREFIX = "projectors."
# Buffers that are pure functions of the architecture: recomputed when a checkpoint lacks them.
DERIVED_SUFFIXES = (".bias_mask", "rope_embed.periods")
# Keys under which checkpoints hold a state dict; when several hold one, the caller must choose (``path#key``).
CONTAINER_KEYS = ("state_dict", "model", "teacher", "student", "state_dict_ema", "model_ema", "ema")
STRIP_PREFIXES = ("module.", "backbone.", "_orig_mod.")


class CheckpointError(RuntimeError):
    """A weights file that cannot be read, or that does not fit the model."""


@dataclass(frozen=True)
class LoadReport:
    """What a load did: how many tensors went into the model, which buffers were recomputed, which heads came."""

    model_name: str
    source: str
    loaded: int
    derived_keys: tuple[str, ...] = ()
    projector_teachers: tuple[str, ...] = ()  # teachers whose adapter heads the checkpoint carried

    def __str__(self) -> str:
        heads = f", adapter heads (projectors) for {', '.join(self.projector_teachers)}" \
            if self.projector_teachers else ""
        derived = f", recomputed {list(self.derived_keys)}" if self.derived_keys else ""
        return f"loaded {self.loaded} tensors into {self.model_name} from {self.source}{heads}{derived}"


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """Reads a flat ``{name: tensor}`` dict from ``.safetensors``, ``.pt`` or ``.pth``; unwraps common containers.

    ``key`` picks the state dict under that entry (dotted for nested ones: ``model.teacher``); without it, a file
    that holds several state dicts is an error listing them. Non-finite (NaN/inf) weights are an error too.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"Weights file {path} is empty (0 bytes); the download or copy did not finish.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is not a plain tensor checkpoint: it needs pickled code to load, which is refused for safety "
            f"({err}). Convert it with `eupe export ... --format safetensors` from a trusted environment."
        ) from err
    except Exception as err:
        raise CheckpointError(
            f"Cannot read {path} ({type(err).__name__}: {err}). The file is truncated or corrupt, "
            f"or not a PyTorch/safetensors checkpoint; download it again."
        ) from err
    state = _unwrap(obj, path, key)
    require_finite_weights(state, f"{path}{'#' + key if key else ''}")
    return state


def require_finite_weights(state: Mapping[str, Tensor], source: str,
                           hint: str = "it was saved from a run that diverged. Use an earlier checkpoint of that run"
                           ) -> None:
    """Raises :class:`CheckpointError` naming the tensors of ``state`` (read from ``source``) that hold NaN or inf;
    ``hint`` says what to do about it."""
    bad = non_finite_keys(state)
    if bad:
        raise CheckpointError(f"{source} holds NaN/inf values in {len(bad)} of its {len(state)} tensors "
                              f"({_summarise(bad)}): {hint}.")


def non_finite_keys(tree: object, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors and floats in ``tree`` (a tensor or float, or nested mappings,
    lists and tuples of them, e.g. a training checkpoint or a results record) that hold a NaN or an infinity."""
    if isinstance(tree, Tensor):
        return [prefix] if tree.is_floating_point() and not all_finite(tree) else []
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [prefix or "value"]
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return []
    return [bad for key, value in items for bad in non_finite_keys(value, f"{prefix}.{key}" if prefix else str(key))]


def all_finite(tensor: Tensor) -> bool:
    """Whether the floating-point ``tensor`` holds no NaN and no infinity."""
    # The 2-norm is NaN/inf whenever an element is, and is one fast pass (elementwise isfinite is 10x slower on
    # CPU); only a tensor of finite values so large that its norm overflows needs the elementwise check.
    return bool(torch.isfinite(torch.linalg.vector_norm(tensor))) or bool(torch.isfinite(tensor).all())


def _unwrap(obj: object, path: Path, key: str | None) -> dict[str, Tensor]:
    where = ""  # the dotted key of obj inside the file
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                held = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
                raise CheckpointError(f"{path} has no entry {where + part!r} (asked for with #{key}); "
                                      f"{where or 'the top level'} holds {held}.")
            obj, where = obj[part], f"{where}{part}."
    while isinstance(obj, dict) and not _is_tensor_dict(obj):
        found = [k for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)]
        if len(found) > 1:
            choices = ", ".join(f"{path}#{where}{k}" for k in found)
            raise CheckpointError(f"{path} holds several state dicts ({', '.join(where + k for k in found)}); "
                                  f"say which one to load: {choices} (key= in read_state_dict).")
        if not found:
            raise CheckpointError(
                f"{path} holds a dict without tensors at the top level nor under {list(CONTAINER_KEYS)} "
                f"(keys: {sorted(map(str, obj))[:8]}); if the weights are under another key, add #<key> to the path."
            )
        obj, where = obj[found[0]], f"{where}{found[0]}."
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}{'#' + key if key else ''} holds a {type(obj).__name__}, not a state dict.")
    for prefix in STRIP_PREFIXES:
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj  # type: ignore[return-value]


def _is_tensor_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _summarise(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_into(model: nn.Module, state_dict: dict[str, Tensor], *, model_name: str, source: str) -> LoadReport:
    """Loads ``state_dict`` into ``model`` after checking it fits exactly; raises :class:`CheckpointError` otherwise.

    ``projectors.*`` tensors replace ``model.projectors`` with heads of their shapes; derived buffers may be
    absent; everything else must match the model's keys and shapes: there is never a silent partial load.
    """
    heads = {k: v for k, v in state_dict.items() if k.startswith(PROJECTOR_PREFIX)}
    if heads:
        _attach_projectors(model, heads, source)
    derived = check_fit(model.state_dict(), state_dict, model_name=model_name, source=source)
    model.load_state_dict(state_dict, strict=False)
    report = LoadReport(model_name, source, len(state_dict), tuple(derived),
                        tuple(getattr(model, "projectors", {}).keys()) if heads else ())
    logger.info("%s", report)
    return report


def check_fit(expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor], *, model_name: str,
              source: str) -> list[str]:
    """The derived buffers ``state_dict`` lacks; raises :class:`CheckpointError` (naming the keys, and the
    registered architecture the file fits, if any) unless its keys and shapes are exactly ``expected``'s."""
    missing = [k for k in expected if k not in state_dict]
    derived = [k for k in missing if k.endswith(DERIVED_SUFFIXES)]
    missing = [k for k in missing if k not in derived]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s): {_summarise(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s): {_summarise(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatch(es): {_summarise(mismatched, 3)}")
        hint = suggest_architecture({k: v for k, v in state_dict.items() if not k.startswith(PROJECTOR_PREFIX)})
        advice = f" The file looks like '{hint}'; load it with that name." if hint and hint != model_name else \
            " The file is for a different architecture or is incomplete."
        raise CheckpointError(f"Cannot load {source} into {model_name}: " + "; ".join(problems) + "." + advice)
    return derived


def _attach_projectors(model: nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Gives ``model`` a ``projectors`` submodule shaped like the checkpoint's heads (on the model's device)."""
    from ..models import Projectors

    if not isinstance(getattr(model, "projectors", None), Projectors):
        raise CheckpointError(f"{source} carries adapter heads (projectors.*) but {type(model).__name__} has no "
                              "projectors submodule to hold them; load it into an eupe backbone.")
    try:
        heads = Projectors.from_state_dict(tensors, prefix=PROJECTOR_PREFIX)
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from None
    reference = next(model.parameters(), None)
    if reference is not None:
        heads = heads.to(device=reference.device, dtype=reference.dtype)
    model.projectors = heads


def suggest_architecture(state_dict: dict[str, Tensor]) -> str | None:
    """The registered model whose keys and shapes match ``state_dict`` exactly (built on the meta device)."""
    from ..models import create_model, list_models

    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith(DERIVED_SUFFIXES)}
    for name in list_models():
        with torch.device("meta"):
            candidate = create_model(name).state_dict()
        if {k: tuple(v.shape) for k, v in candidate.items() if not k.endswith(DERIVED_SUFFIXES)} == shapes:
            return name
    return None
