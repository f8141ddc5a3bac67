"""Provenance of stored results: content digests of weights (a checkpoint file, or a module in memory) and the
comparison that says which recorded setting differs.

Stored features and trained heads are keyed by what was loaded, never by the name it was loaded under: replacing a
checkpoint at the same path changes its digest, and so the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..loading.sources import cache_dir
from ..utils.io import atomic_write_json

logger = logging.getLogger(__name__)

#: Digests of checkpoint files, keyed by real path and checked against (size, mtime, inode, ctime).
DIGEST_CACHE = "sha256.json"
_CHUNK = 1 << 22
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


RACY_WINDOW_NS = 2_000_000_000  # files modified less than 2 s ago are not cached (coarse timestamp ticks)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, cached (``$EUPE_CACHE/sha256.json``) until the file's size, modification time,
    inode or change time moves, so a large checkpoint is hashed once, not at every run."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    cache_file = cache_dir() / DIGEST_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(str(path))
    if isinstance(entry, dict) and entry.get("stat") == stamp:
        return str(entry["sha256"])
    logger.info("hashing %s (%.1f MB) to key stored results by its content", path, st.st_size / 2**20)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if time.time_ns() - st.st_mtime_ns < RACY_WINDOW_NS:
        # A file written just now could be rewritten within the same timestamp tick with the same size: its stat
        # would then match a stale entry (git's "racy" case). Hash such files again next time instead.
        return digest.hexdigest()
    cache[str(path)] = {"stat": stamp, "sha256": digest.hexdigest()}
    try:
        atomic_write_json(cache_file, cache)
    except OSError as err:  # the cache only saves time: an unwritable one means hashing again next time
        logger.debug("cannot write the digest cache %s: %s", cache_file, err)
    return digest.hexdigest()


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
