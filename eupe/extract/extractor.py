"""Images -> features on disk: batched multi-worker decoding, sharded crash-safe writes, resumable runs.

Shard ``s`` always holds dataset items ``[s * shard_size, (s + 1) * shard_size)`` (minus skipped files), so a
rerun after a kill recomputes only the shards whose folders do not exist yet.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import logging
import math
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..data.images import ImageFolderDataset, ImageRecord, collate_skipping_failures, scan_images
from ..utils.io import atomic_write_json, atomic_write_text, remove_stale_temporaries
from ..utils.outputs import locked_output_dir
from ..utils.workers import workers_field
from . import store as store_lib
from .provenance import backbone_identity, describe_differences, module_sha256
from .store import DTYPES, FORMATS, FeatureStore, FeatureStoreError, require_finite
from .transforms import RESIZE_MODES, make_eval_transform

logger = logging.getLogger(__name__)

#: Settings that only change speed; a resumed run may change them freely.
_SPEED_ONLY = ("batch_size", "num_workers")
#: The manifest layout this code writes (2: the model identity is a JSON object keyed by content).
FORMAT_VERSION = 2
#: The settings that decide what a stored feature means (train and val features must agree on them).
FEATURE_SETTINGS = ("model", "preprocessing", "resolution", "resize_mode", "layers")


@dataclass
class ExtractConfig:
    """What to extract and how. Defaults: class token at 224 with the reference kNN's resize 256 + crop 224."""

    resolution: int = 224
    resize_mode: str = "crop"  # crop: short side to resolution*256/224, centre crop; square: plain resize
    layers: list[int] | None = None  # block indices (negative count from the end); None: the final output
    storage_tokens: bool = False
    patch_tokens: bool = False
    patch_mean: bool = False  # mean of the patch tokens (for DINOv2-style linear probes)
    format: str = "safetensors"  # or npy
    dtype: str = "float32"  # float32, float16 or bfloat16 (safetensors only)
    shard_size: int = 1024
    batch_size: int = 64
    num_workers: int = workers_field(4)  # at most the CPUs this process may use

    def validate(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.format == "npy" and self.dtype == "bfloat16":
            raise ValueError("numpy has no bfloat16: use format=safetensors or dtype=float16/float32")
        if min(self.resolution, self.shard_size, self.batch_size) < 1 or self.num_workers < 0:
            raise ValueError("resolution, shard_size and batch_size must be positive, num_workers >= 0")


def feature_keys(config: ExtractConfig, n_blocks: int) -> list[str]:
    """The names under which features are stored: ``cls``, ``storage``, ``patch``, ``patch_mean``, each
    prefixed ``layer<i>.`` when ``layers`` is set."""
    kinds = ["cls"] + [k for k, on in (("storage", config.storage_tokens), ("patch", config.patch_tokens),
                                        ("patch_mean", config.patch_mean)) if on]
    if config.layers is None:
        return kinds
    return [f"layer{i}.{k}" for i in resolve_layers(config.layers, n_blocks) for k in kinds]


def resolve_layers(layers: Sequence[int], n_blocks: int) -> list[int]:
    """Block indices ``0..n_blocks-1`` of ``layers`` (negative: from the end); a missing or repeated block is an
    error."""
    out: dict[int, int] = {}
    for i in layers:
        j = int(i) + n_blocks if int(i) < 0 else int(i)
        if not 0 <= j < n_blocks:
            raise ValueError(f"Layer {i} does not exist: the model has {n_blocks} blocks (0..{n_blocks - 1}, or "
                             "negative indices from the end)")
        if j in out:
            raise ValueError(f"Layers {out[j]} and {i} are the same block ({j} of {n_blocks}); give each block once")
        out[j] = int(i)
    return list(out)


def compute_features(model: nn.Module, images: Tensor, config: ExtractConfig) -> dict[str, Tensor]:
    """One batch through the backbone -> ``{key: [B, ...]}`` as named by :func:`feature_keys`."""
    if config.layers is None:
        out = model.forward_features(images)
        groups = {"": (out["x_norm_patchtokens"], out["x_norm_clstoken"], out["x_storage_tokens"])}
    else:
        layers = resolve_layers(config.layers, model.n_blocks)
        outs = model.get_intermediate_layers(images, n=layers, return_class_token=True, return_extra_tokens=True)
        groups = {f"layer{i}.": o for i, o in zip(layers, outs)}
    feats = {}
    for prefix, (patch, cls, storage) in groups.items():
        feats[prefix + "cls"] = cls
        if config.storage_tokens:
            feats[prefix + "storage"] = storage
        if config.patch_tokens:
            feats[prefix + "patch"] = patch
        if config.patch_mean:
            feats[prefix + "patch_mean"] = patch.float().mean(1)
    return feats


def records_fingerprint(records: Sequence[ImageRecord]) -> str:
    digest = hashlib.sha1()
    for r in records:
        digest.update(f"{r.path}\t{r.label}\n".encode())
    return digest.hexdigest()


def _settings(config: ExtractConfig, identity: Mapping[str, Any]) -> dict[str, Any]:
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in _SPEED_ONLY}
    preprocessing = repr(make_eval_transform(config.resolution, config.resize_mode))
    return dict(settings, model=dict(identity), preprocessing=preprocessing)


def _mismatch(old: Mapping[str, Any], manifest: Mapping[str, Any]) -> str | None:
    """What differs between a folder's stored manifest and the one of this run (``None``: they agree)."""
    if old.get("format_version") != manifest["format_version"]:
        return (f"it was written by another version of eupe (manifest format {old.get('format_version')}, this "
                f"version writes {manifest['format_version']})")
    if old.get("records_sha1") != manifest["records_sha1"]:
        return f"the list of images differs ({old.get('num_records')} images stored, {manifest['num_records']} now)"
    return describe_differences(old.get("settings") or {}, manifest["settings"]) or None


def _prepare_folder(root: Path, manifest: dict[str, Any], overwrite: bool) -> bool:
    """Checks an existing folder against ``manifest``; returns True when it is already complete."""
    path = root / store_lib.MANIFEST
    if overwrite:
        for name in (store_lib.MANIFEST, store_lib.INDEX, store_lib.SKIPPED):
            (root / name).unlink(missing_ok=True)
        shutil.rmtree(root / store_lib.SHARDS, ignore_errors=True)
    elif path.is_file():
        old = store_lib.read_manifest(root)
        reason = _mismatch(old, manifest)
        if reason:
            raise FeatureStoreError(f"{root} holds features extracted with other settings ({reason}); use another "
                                    "output folder, or delete it (`eupe extract --overwrite` replaces it)")
        if old.get("complete"):
            return True
    elif (root / store_lib.SHARDS).exists():
        raise FeatureStoreError(f"{root} has shards but no {store_lib.MANIFEST}; use another output folder or "
                                "--overwrite")
    (root / store_lib.SHARDS).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root / store_lib.SHARDS)
    atomic_write_json(path, manifest)
    return False


def extract_features(
    model: nn.Module,
    source: Any,
    output_dir: str | Path,
    config: ExtractConfig | None = None,
    *,
    device: torch.device | str | None = None,
    autocast: contextlib.AbstractContextManager | None = None,
    identity: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> FeatureStore:
    """Extracts features of every image of ``source`` (anything :func:`list_images` accepts, several sources
    included; the manifest lists them all) into ``output_dir``.

    Resumes an interrupted run with the same settings. ``identity`` says what the backbone is by content (the
    CLI's: the model, its checkpoint's SHA-256 or the seed of random weights, precision; default: the SHA-256 of
    ``model``'s state), so that features of another model, or of the same path holding other weights, are never
    mixed in or taken as complete. Undecodable files, and links the listing left out, are listed in
    ``skipped.csv``. ``autocast`` (e.g. ``torch.autocast("cuda", torch.bfloat16)``) wraps every forward pass.
    The folder is locked while the run writes (a second run into it is refused). Returns the reader of the
    finished folder.
    """
    config = config or ExtractConfig()
    config.validate()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    listing = scan_images(source)
    records = listing.records
    root = Path(output_dir)
    keys = feature_keys(config, model.n_blocks)
    num_shards = math.ceil(len(records) / config.shard_size)
    if identity is None:
        identity = backbone_identity(type(model).__name__, f"sha256:{module_sha256(model)}")
    manifest = {
        "format_version": FORMAT_VERSION, "complete": False, "sources": _source_names(source),
        "settings": _settings(config, identity), "num_records": len(records),
        "records_sha1": records_fingerprint(records), "shard_size": config.shard_size, "num_shards": num_shards,
        "keys": keys, "class_names": listing.class_names, "left_out": [list(entry) for entry in listing.skipped],
    }
    with locked_output_dir(root, "eupe extract"):
        if _prepare_folder(root, manifest, overwrite):
            logger.info("%s is already complete; nothing to do", root)
            return FeatureStore(root)
        for path, reason in listing.skipped:
            logger.warning("skipped %s: %s", path, reason)
        pending = [s for s in range(num_shards) if not store_lib.shard_dir(root, s).exists()]
        if len(pending) < num_shards:
            logger.info("resuming: %d of %d shards already done", num_shards - len(pending), num_shards)
        _run(model, records, root, config, pending, device, autocast or contextlib.nullcontext(), progress)
        _finalise(root, records, manifest)
    return FeatureStore(root)


def _source_names(source: Any) -> list[str]:
    """Every source of a run, as given, for the manifest."""
    return [str(s) for s in source] if isinstance(source, (list, tuple)) else [str(source)]


def _shard_batches(pending: Sequence[int], n: int, shard_size: int, batch_size: int) -> list[list[int]]:
    batches = []
    for s in pending:
        end = min((s + 1) * shard_size, n)
        batches.extend(list(range(i, min(i + batch_size, end))) for i in range(s * shard_size, end, batch_size))
    return batches


def _run(model: nn.Module, records: list[ImageRecord], root: Path, config: ExtractConfig, pending: list[int],
         device: torch.device, autocast: contextlib.AbstractContextManager, progress: bool) -> None:
    batches = _shard_batches(pending, len(records), config.shard_size, config.batch_size)
    if not batches:  # killed after the last shard, before the index was written
        return
    dataset = ImageFolderDataset(records, make_eval_transform(config.resolution, config.resize_mode))
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.num_workers, collate_fn=collate_skipping_failures,
        pin_memory=device.type == "cuda", prefetch_factor=4 if config.num_workers else None,
    )
    out_dtype = DTYPES[config.dtype]
    todo = sum(len(b) for b in batches)
    bar = tqdm(total=len(records), initial=len(records) - todo, unit="img", desc="extract", disable=not progress)
    writes: list[Future] = []
    parts: dict[str, list[Tensor]] = {}
    indices: list[int] = []
    failures: list[tuple[int, str]] = []
    with ThreadPoolExecutor(max_workers=1) as writer, torch.inference_mode():
        for batch_ids, batch in zip(batches, loader):
            for index, reason in batch.failures:
                logger.warning("skipped %s: %s", records[index].path, reason)
            failures.extend(batch.failures)
            if batch.images is not None:
                images = batch.images.to(device, non_blocking=True)
                with autocast:
                    feats = compute_features(model, images, config)
                for key, value in feats.items():
                    value = value.to(out_dtype).cpu()
                    require_finite(value, f"features {key!r} ({config.dtype}) computed into {root}",
                                   [records[i].path for i in batch.indices.tolist()],
                                   hint="the model or its weights give NaN/inf, or the values overflow "
                                        f"{config.dtype} (try --dtype float32)")
                    parts.setdefault(key, []).append(value)
                indices.extend(batch.indices.tolist())
            bar.update(len(batch_ids))
            if (batch_ids[-1] + 1) % config.shard_size == 0 or batch_ids[-1] + 1 == len(records):
                shard = batch_ids[-1] // config.shard_size
                tensors = _gather(parts, model, config, out_dtype, device)
                writes.append(writer.submit(store_lib.write_shard, root, shard, tensors, indices, failures,
                                            config.format))
                parts, indices, failures = {}, [], []
                for done in [f for f in writes if f.done()]:
                    done.result()  # surface a failed write now, not at the end
        for f in writes:
            f.result()
    bar.close()


def _gather(parts: dict[str, list[Tensor]], model: nn.Module, config: ExtractConfig, dtype: torch.dtype,
            device: torch.device) -> dict[str, Tensor]:
    """Concatenated shard tensors; a shard whose every file was skipped gets empty tensors of the right shape."""
    if parts:
        return {k: torch.cat(v) for k, v in parts.items()}
    probe = torch.zeros(1, 3, config.resolution, config.resolution, device=device)
    return {k: v[:0].to(dtype).cpu().clone() for k, v in compute_features(model, probe, config).items()}


def _finalise(root: Path, records: list[ImageRecord], manifest: dict[str, Any]) -> None:
    index_rows, skipped_rows = io.StringIO(), io.StringIO()
    index_csv, skipped_csv = csv.writer(index_rows), csv.writer(skipped_rows)
    index_csv.writerow(["row", "path", "label", "class_name"])
    skipped_csv.writerow(["path", "reason"])
    skipped_csv.writerows(manifest["left_out"])
    row = 0
    for s in range(manifest["num_shards"]):
        meta = store_lib.read_shard_meta(store_lib.shard_dir(root, s))
        for i in meta["indices"]:
            r = records[i]
            index_csv.writerow([row, r.path, "" if r.label is None else r.label, r.class_name or ""])
            row += 1
        for i, reason in meta["failures"]:
            skipped_csv.writerow([records[i].path, reason])
    atomic_write_text(root / store_lib.INDEX, index_rows.getvalue())
    atomic_write_text(root / store_lib.SKIPPED, skipped_rows.getvalue())
    num_skipped = len(records) - row + len(manifest["left_out"])
    atomic_write_json(root / store_lib.MANIFEST, dict(manifest, complete=True, num_images=row,
                                                      num_skipped=num_skipped))
    logger.info("extracted %d images into %s, skipped %d (listed in %s)", row, root, num_skipped, store_lib.SKIPPED)
