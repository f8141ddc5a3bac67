"""Provenance of stored results: content digests of weights in memory (a checkpoint file's digest is
:func:`eupe.utils.cache.file_sha256`) and the comparison that says which recorded setting differs.

Stored features and trained heads are keyed by what was loaded, never by the name it was loaded under: replacing a
checkpoint at the same path changes its digest, and so the key.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import torch
from torch import nn

#: The entries of a backbone identity that say which weights it has (the others say how it runs).
WEIGHT_KEYS = ("model", "weights", "seed", "arch")


def backbone_identity(model: str, weights: str, *, seed: int | None = None, arch: Sequence[str] = (),
                      quantize: str | None = None, precision: str | None = None) -> dict[str, Any]:
    """The record that keys stored results by what a backbone is: its ``model`` name, ``weights`` by content
    (``sha256:<hex>`` of the checkpoint file or of the module's state, or ``random`` with its ``seed``), the
    architecture overrides, the quantisation and the precision it runs at."""
    identity: dict[str, Any] = {"model": model, "weights": weights}
    if seed is not None:
        identity["seed"] = seed
    identity.update(arch=sorted(arch), quantize=quantize, precision=precision)
    return identity


def weights_of(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`WEIGHT_KEYS` of an identity: what must agree for features or heads of one backbone to fit
    another."""
    return {key: identity.get(key) for key in WEIGHT_KEYS if key in identity}


def module_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's state (every entry's name, dtype, shape and bytes), for a model given in memory."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        _update(digest, value)
    return digest.hexdigest()


def _update(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        tensor = tensor.dequantize() if tensor.is_quantized else tensor
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, (tuple, list)):
        for item in value:
            _update(digest, item)
    else:
        digest.update(repr(value).encode())


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings (``model.weights``); ``[prefix]`` (or
    ``["value"]``) when two non-mappings differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new), key=str)
        return [k for key in keys for k in differing_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".") or "value"]


def describe_differences(old: Mapping[str, Any], new: Mapping[str, Any], *, labels: tuple[str, str] = ("stored", "now"),
                         limit: int = 3) -> str:
    """``key differs (<old> stored, <new> now)`` for the first ``limit`` differing keys of two records (empty when
    they agree), for error messages; ``labels`` names the two sides."""
    keys = differing_keys(old, new)
    shown = [f"{key} differs ({_lookup(old, key)!r} {labels[0]}, {_lookup(new, key)!r} {labels[1]})"
             for key in keys[:limit]]
    return "; ".join(shown) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def _lookup(record: Any, key: str) -> Any:
    for part in key.split("."):
        record = record.get(part) if isinstance(record, Mapping) else None
    return record


def require_same_weights(recorded: Mapping[str, Any], current: Mapping[str, Any], what: str, hint: str) -> None:
    """Raises ``ValueError`` when two backbone identities differ in their :data:`WEIGHT_KEYS`; ``what`` names
    what carries ``recorded`` (``the head file X``) and ``hint`` what to do."""
    difference = describe_differences(weights_of(recorded), weights_of(current), labels=("recorded", "now"))
    if difference:
        raise ValueError(f"{what} belongs to another backbone than the one given ({difference}); {hint}")
