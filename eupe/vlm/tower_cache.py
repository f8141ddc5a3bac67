"""Cached tower features: the frozen EUPE tower's output for every image of a data set, computed once, so that
training runs read it instead of running the tower at every step.

Valid wherever the tower is frozen and its input is fixed, i.e. in both of LLaVA's stages: the image processor is
deterministic (pad, resize, normalise: no augmentation) and the tower has no dropout, so an image's features are the
same at every step and in every run. A cache pays when the ViT forward is a large share of a step (stage a, where
only the projector trains), over several epochs or several projector runs; it costs ``tokens x channels`` values
per image on disk (bf16: 576 x 768 x 2 bytes = 0.9 MB per image for ViT-B at 384).

Layout of a cache folder: ``tower_cache.json`` (what made it: see :func:`cache_identity`) and
``shards/<digest>.safetensors``, each holding up to ``shard_size`` images' features keyed by the image's path
relative to the image root (as the data file writes it), plus, in its metadata, the images of its share that were
missing or did not decode. Shards are written atomically, so an interrupted fill continues where it stopped; a
cache is only ever added to, so data files that share images share their features.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from itertools import accumulate
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..extract.provenance import describe_differences, module_sha256
from ..utils.io import atomic_path, atomic_write_json, remove_stale_temporaries
from ..utils.outputs import LOCK_FILE, locked_output_dir
from .data import ImageProcessor, UnreadableImage, pixel_values, read_image
from .tower import EupeVisionModel

logger = logging.getLogger(__name__)

MANIFEST = "tower_cache.json"
SHARDS = "shards"
SHARD_IMAGES = 512  # images per shard file (about 0.45 GB for ViT-B at 384 in bf16); a killed fill redoes at most one
FORMAT_VERSION = 1
TOWER_SETTINGS = ("eupe_model", "arch", "feature_layer", "image_size", "image_mean", "image_std")
IDENTITY_SECTIONS = ("tower", "tower_weights", "image_processor", "precision")  # in the order errors name them
_SKIPPED_KEY = "skipped"  # shard metadata: JSON {path: [reason, detail]}
_MAX_OPEN_SHARDS = 64  # shard files a reading process keeps open


class TowerCacheError(ValueError):
    """A tower cache that cannot be used for this run; the message says what differs and what to do."""


def cache_identity(tower: EupeVisionModel, image_processor: Any, bf16: bool) -> dict[str, Any]:
    """What a cache's features depend on: the tower's settings, its weights (SHA-256 of the module's state, so the
    stage-(a) output, whose tower is the stage-(b) input's, keys the same cache as the built folder), the image
    processor's settings and the precision the tower ran at."""
    processor = image_processor.to_dict() if hasattr(image_processor, "to_dict") else {"type": repr(image_processor)}
    identity = {
        "tower": {name: getattr(tower.config, name) for name in TOWER_SETTINGS},
        "tower_weights": "sha256:" + module_sha256(tower),
        "image_processor": processor,
        "precision": "bf16" if bf16 else "fp32",
    }
    return json.loads(json.dumps(identity, default=str))  # as tower_cache.json will hold it: tuples -> lists


class CachedFeatureTower(nn.Module):
    """Stands in for the tower while training from a cache: ``forward`` returns the batch's ``pixel_values``,
    which hold the cached features ``[n, tokens, channels]``, as the tower's output.

    It holds the real tower's backbone under the same name (``backbone``), so the model's state dict, and with it
    every checkpoint and the saved folder, is the normal VLM's, real tower weights included, whatever wraps the
    model (DDP, FSDP, DeepSpeed).
    """

    def __init__(self, tower: EupeVisionModel) -> None:
        super().__init__()
        self.config = tower.config
        self.backbone = tower.backbone

    def forward(self, pixel_values: Tensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        """The cached features as ``last_hidden_state`` and the single ``hidden_states`` entry LLaVA selects;
        the tower's other keyword arguments have no effect, as in :class:`~eupe.vlm.EupeVisionModel`."""
        return BaseModelOutputWithPooling(last_hidden_state=pixel_values, hidden_states=(pixel_values,))


class TowerCache:
    """Reader of a cache folder made with ``identity`` (refused, naming what differs, when it was made by another
    tower, image processor or precision)."""

    def __init__(self, folder: str | Path, identity: dict[str, Any]) -> None:
        self.folder = Path(folder)
        _check_identity(self.folder, identity)
        self._shard_of: dict[str, str] = {}
        self.unreadable: dict[str, UnreadableImage] = {}
        for shard in sorted((self.folder / SHARDS).glob("*.safetensors")):
            with _open_shard(shard) as f:
                self._shard_of.update(dict.fromkeys(f.keys(), shard.name))
                skipped = json.loads((f.metadata() or {}).get(_SKIPPED_KEY, "{}"))
            self.unreadable.update({path: UnreadableImage(*problem) for path, problem in skipped.items()})
        self._open: dict[str, Any] = {}

    def missing(self, paths: Sequence[str]) -> list[str]:
        """Those of ``paths`` the cache holds nothing about yet, in the given order."""
        return [p for p in paths if p not in self._shard_of and p not in self.unreadable]

    def read(self, path: str) -> Tensor | UnreadableImage:
        """The cached features ``[tokens, channels]`` of the image at ``path`` (relative to the image root), or
        why the image could not be used when the cache was filled."""
        if path in self.unreadable:
            return self.unreadable[path]
        shard = self._shard_of.get(path)
        if shard is None:
            raise TowerCacheError(f"tower cache {self.folder} holds no features of image {path!r}: fill it for this "
                                  "data file (vlm train does, with tower_cache=...)")
        if shard not in self._open:
            if len(self._open) >= _MAX_OPEN_SHARDS:
                self._open.clear()
            self._open[shard] = _open_shard(self.folder / SHARDS / shard)
        return self._open[shard].get_tensor(path)

    def __getstate__(self) -> dict[str, Any]:
        """Without the open shard files (DataLoader workers open their own)."""
        return {**self.__dict__, "_open": {}}

    def fill(self, paths: Sequence[str], image_root: str | Path, tower: EupeVisionModel,
             image_processor: ImageProcessor, *, device: torch.device, bf16: bool, batch_size: int,
             workers: int = 0, shard_size: int = SHARD_IMAGES, rank: int = 0, world_size: int = 1) -> None:
        """Runs ``tower`` (frozen, no grad, bf16 autocast when ``bf16``) on ``paths``' images, processed by
        ``image_processor`` as the collator does, and writes them in shards of ``shard_size`` images; process
        ``rank`` of ``world_size`` takes every ``world_size``-th shard. Under bf16 the features are stored in bf16:
        the projector's first Linear, the only reader, casts them to bf16 under autocast anyway."""
        chunks = [list(paths[i:i + shard_size]) for i in range(0, len(paths), shard_size)][rank::world_size]
        mine = [path for chunk in chunks for path in chunk]
        starts = accumulate((len(chunk) for chunk in chunks), initial=0)
        batches = [list(range(start + i, start + min(i + batch_size, len(chunk))))  # none across two shards
                   for start, chunk in zip(starts, chunks) for i in range(0, len(chunk), batch_size)]
        loader = torch.utils.data.DataLoader(_ImagesToEncode(mine, Path(image_root), image_processor),
                                             batch_sampler=batches, collate_fn=list, num_workers=workers)
        was_training, was_on = tower.training, next(tower.parameters()).device
        tower.to(device).eval()
        store_dtype = torch.bfloat16 if bf16 else torch.float32
        chunk_index, features, unreadable = 0, {}, {}
        try:
            for batch in loader:
                images = [(path, item) for path, item in batch if not isinstance(item, UnreadableImage)]
                unreadable.update({path: item for path, item in batch if isinstance(item, UnreadableImage)})
                if images:
                    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        out = tower(torch.stack([pixels for _, pixels in images]).to(device)).last_hidden_state
                    out = out.to(device="cpu", dtype=store_dtype)
                    features.update({path: row.clone() for (path, _), row in zip(images, out)})
                if len(features) + len(unreadable) == len(chunks[chunk_index]):
                    self._write_shard(chunks[chunk_index], features, unreadable)
                    chunk_index, features, unreadable = chunk_index + 1, {}, {}
        finally:
            tower.to(was_on).train(was_training)

    def _write_shard(self, paths: list[str], features: dict[str, Tensor],
                     unreadable: dict[str, UnreadableImage]) -> None:
        name = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16] + ".safetensors"
        metadata = {_SKIPPED_KEY: json.dumps({path: list(problem) for path, problem in unreadable.items()})}
        with atomic_path(self.folder / SHARDS / name) as tmp:
            save_file(features, str(tmp), metadata=metadata)
        self._shard_of.update(dict.fromkeys(features, name))
        self.unreadable.update(unreadable)


def prepare_tower_cache(folder: str | Path, paths: Sequence[str], image_root: str | Path, tower: EupeVisionModel,
                        image_processor: Any, *, device: torch.device, bf16: bool, batch_size: int, workers: int = 0,
                        shard_size: int = SHARD_IMAGES) -> TowerCache:
    """The cache at ``folder`` (created if absent) completed for ``paths``: images it holds nothing about go
    through ``tower`` once. Under ``torchrun`` every process fills its share and all wait for the others; process
    0 holds the folder's lock meanwhile, so a second run cannot fill the same cache at the same time."""
    folder = Path(folder)
    identity = cache_identity(tower, image_processor, bf16)
    # In every process, before any of them waits for the others:
    if (folder / MANIFEST).is_file():
        _check_identity(folder, identity)
    elif folder.is_dir() and any(p.name != LOCK_FILE for p in folder.iterdir()):
        raise TowerCacheError(f"tower_cache={str(folder)!r} is a folder of other files (no {MANIFEST}): give a new "
                              "or empty folder for the cache")
    rank, world_size = _rank_and_world_size()
    with locked_output_dir(folder, "vlm train filling this tower cache") if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            remove_stale_temporaries(folder / SHARDS)  # of a killed fill: the lock says no one else writes here
            if not (folder / MANIFEST).is_file():
                atomic_write_json(folder / MANIFEST, {"format": FORMAT_VERSION, "identity": identity})
        _barrier()
        cache = TowerCache(folder, identity)
        missing = cache.missing(paths)
        _barrier()  # every process has listed what is missing before any adds to it
        if missing:
            logger.info("tower cache %s: %d of %d images to compute (%d processes)", folder, len(missing),
                        len(paths), world_size)
            cache.fill(missing, image_root, tower, image_processor, device=device, bf16=bf16, batch_size=batch_size,
                       workers=workers, shard_size=shard_size, rank=rank, world_size=world_size)
        _barrier()
    cache = TowerCache(folder, identity) if world_size > 1 else cache  # the other processes' shards too
    if cache.unreadable:
        logger.warning("tower cache %s: %d images are missing or do not decode; their records are skipped and "
                       "counted in training (the cache keeps that verdict: fill a new one once they are fixed)", folder,
                       len(cache.unreadable))
    return cache


class _ImagesToEncode(torch.utils.data.Dataset):
    """Image paths -> ``(path, pixel_values [3, H, W])``, or ``(path, UnreadableImage)``, decoded in workers."""

    def __init__(self, paths: list[str], image_root: Path, image_processor: ImageProcessor) -> None:
        self.paths, self.image_root, self.image_processor = paths, image_root, image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, Tensor | UnreadableImage]:
        path = self.paths[index]
        image = read_image(self.image_root / path)
        if isinstance(image, UnreadableImage):
            return path, image
        return path, pixel_values(self.image_processor, [image])[0]


def _check_identity(folder: Path, identity: dict[str, Any]) -> None:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise TowerCacheError(f"{folder} is not a tower cache (no {MANIFEST}); give an empty or new folder to fill")
    try:
        recorded = json.loads(manifest.read_text())["identity"]
    except (ValueError, KeyError, TypeError):
        raise TowerCacheError(f"{manifest} is not a tower cache manifest: delete {folder} to fill it again") from None
    differences = [describe_differences({s: recorded.get(s)}, {s: identity.get(s)}, labels=("cached", "now"))
                   for s in IDENTITY_SECTIONS]
    if any(differences):
        raise TowerCacheError(f"tower cache {folder} was filled by another tower or image processor ("
                              + "; ".join(d for d in differences if d) + "); use another tower_cache folder for "
                              "this model, or delete this one to fill it again")


def _open_shard(path: Path) -> Any:
    return safe_open(str(path), framework="pt")


def _rank_and_world_size() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
