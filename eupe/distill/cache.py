"""Teacher-feature cache: teacher outputs for a fixed number of augmented views per image, in shards on disk.

Teachers dominate the cost of distillation on small hardware. With ``views_per_image = V`` the stream shows the
student view ``epoch % V`` of each image (its augmentation seed is a function of the key, so the student sees
exactly the crop the teacher saw); the cache computes every teacher's output for all ``V`` views once and later
epochs, and later runs with the same fingerprint, read them back instead of running the teachers. Optionally the
views themselves are stored (uint8), so later epochs skip decoding and augmentation as well.

Layout: ``<root>/meta.json`` (fingerprint, sizes, dims) and ``<root>/s<source>-<shard>.pt`` shards, each written
atomically; rows are ``view * n_images + index``. ``meta.json`` is written before the first shard, so every shard
is known to belong to its fingerprint, and an interrupted precompute resumes at the first missing shard (only
with the same settings). Outputs are stored as float16; a teacher whose features are NaN/inf or exceed float16's
range is an error, not a cache of infinities.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from ..data.images import ImageDecodeError
from ..loading import all_finite
from ..teachers import Teacher, TeacherOutput
from ..utils.io import atomic_torch_save, atomic_write_json
from .data import ViewStream
from .distributed import barrier

logger = logging.getLogger(__name__)


class CacheError(RuntimeError):
    """A cache folder that does not match the run (other teachers, data, augmentation or seed)."""


class FeatureCache:
    def __init__(self, root: str | Path, meta: dict, max_shards_in_memory: int = 16) -> None:
        self.root = Path(root)
        self.meta = meta
        self.shard_size = int(meta["shard_size"])
        self.sizes = list(meta["sizes"])
        self.views_per_image = int(meta["views_per_image"])
        self._shards: OrderedDict[tuple[int, int], dict[str, Tensor]] = OrderedDict()
        self._max = max_shards_in_memory

    # ---- building

    @staticmethod
    def shard_path(root: Path, source: int, shard: int) -> Path:
        return root / f"s{source}-{shard:05d}.pt"

    @classmethod
    def build(cls, root: str | Path, stream: ViewStream, teachers: Sequence[Teacher], *, fingerprint: str,
              views_per_image: int, shard_size: int = 256, batch_size: int = 64, store_views: bool = True,
              teacher_scale: int | None = None, rank: int = 0, world_size: int = 1,
              progress: bool = True) -> "FeatureCache":
        """Computes the missing shards (rank ``r`` does shards ``r, r + W, ...``) and returns the cache.

        ``teacher_scale`` runs every teacher at that square size instead of its native one (a fixed stage-3 scale).
        An existing cache keeps its own layout (shard size), whatever ``shard_size`` says now."""
        root = Path(root)
        meta_path = root / "meta.json"
        sizes = [len(s) if s is not None else 0 for s in stream.sources]
        meta = {"fingerprint": fingerprint, "views_per_image": views_per_image, "shard_size": shard_size,
                "sizes": sizes, "store_views": store_views,
                "teachers": {t.name: [t.summary_dim, t.patch_dim] for t in teachers}}
        if meta_path.is_file():
            old = json.loads(meta_path.read_text())
            if old.get("fingerprint") != fingerprint:
                raise CacheError(
                    f"The feature cache in {root} was built for another run (teachers, images, augmentation, crop "
                    f"size or seed differ); delete it or set cache.dir to a new folder"
                )
            if old["sizes"] != sizes:  # rows are view * n_images + index: another count maps them to other images
                raise CacheError(f"The feature cache in {root} was built for image sources of {old['sizes']} images; "
                                 f"they now hold {sizes}. Delete it or set cache.dir to a new folder")
            meta = old
            shard_size = int(meta["shard_size"])  # the shards on disk decide how rows map to files
        elif any(root.glob("s*-*.pt")):
            raise CacheError(f"The feature cache in {root} holds shards but no meta.json (an interrupted build of an "
                             "older eupe), so their settings are unknown; delete it or set cache.dir to a new folder")
        barrier()  # every rank has seen the folder as it was before rank 0 claims it
        if rank == 0 and not meta_path.is_file():
            atomic_write_json(meta_path, meta)
        teacher_size = (teacher_scale, teacher_scale) if teacher_scale else None
        device = next((p.device for t in teachers for p in t.parameters()), torch.device("cpu"))
        for source, n in enumerate(sizes):
            n_shards = -(-n * views_per_image // shard_size) if n else 0
            todo = [s for s in range(rank, n_shards, world_size) if not cls.shard_path(root, source, s).is_file()]
            bar = progress and bool(todo)  # a source with nothing to compute (absent, or cached already) shows none
            for shard in tqdm(todo, desc=f"teacher cache (source {source})", disable=not bar, unit="shard"):
                rows = range(shard * shard_size, min((shard + 1) * shard_size, n * views_per_image))
                data = cls._compute_shard(stream, source, rows, teachers, batch_size, store_views, device,
                                          teacher_size)
                atomic_torch_save(data, cls.shard_path(root, source, shard))
        barrier()
        return cls(root, meta)

    @staticmethod
    def _compute_shard(stream: ViewStream, source: int, rows: range, teachers: Sequence[Teacher],
                       batch_size: int, store_views: bool, device: torch.device,
                       teacher_size: tuple[int, int] | None) -> dict[str, Tensor]:
        n = len(stream.sources[source])
        views, valid, seeds = [], [], []
        for row in rows:
            view_id, index = divmod(row, n)
            seeds.append(stream.view_seed(source, index, view_id))
            try:
                views.append(stream.sources[source].view(index, view_id, seeds[-1]))
                valid.append(True)
            except ImageDecodeError as err:
                logger.warning("Feature cache: skipping unreadable image: %s", err)
                valid.append(False)
        size = views[0].shape if views else None
        # the augmentation seed of every row: the view is reproducible from (seed, image, view id) alone
        out: dict[str, Tensor] = {"valid": torch.tensor(valid), "seeds": torch.tensor(seeds, dtype=torch.long)}
        stacked = torch.stack(views) if views else torch.zeros(0)
        outputs: dict[str, list[TeacherOutput]] = {t.name: [] for t in teachers}
        for i in range(0, len(stacked), batch_size):
            chunk = stacked[i : i + batch_size].to(device)
            for t in teachers:
                outputs[t.name].append(t(chunk, teacher_size))
        for t in teachers:
            for part in ("summary", "patches"):
                values = torch.cat([getattr(o, part) for o in outputs[t.name]]) if views else torch.zeros(0)
                stored = values.half().cpu()
                if not all_finite(stored):
                    problem = ("NaN/inf values" if not all_finite(values) else
                               f"values up to {values.abs().max().item():.3g}, beyond the range of float16 (65504)")
                    raise CacheError(f"Teacher {t.name} gives {part} features with {problem}; the feature cache "
                                     "stores float16 finite values: check the teacher, or set cache.enabled=false")
                out[f"{t.name}.{part}"] = _scatter(stored, valid)
        if store_views and size is not None:
            out["views"] = _scatter((stacked * 255).round().to(torch.uint8), valid)
        return out

    # ---- reading

    def is_bad(self, source: int, index: int, view: int) -> bool:
        """Whether the image could not be decoded when the cache was built (the stream then skips it)."""
        shard, offset = self._row(source, index, view)
        return not bool(shard["valid"][offset])

    def _row(self, source: int, index: int, view: int) -> tuple[dict[str, Tensor], int]:
        row = (view % self.views_per_image) * self.sizes[source] + index
        shard, offset = divmod(row, self.shard_size)
        key = (source, shard)
        if key not in self._shards:
            path = self.shard_path(self.root, source, shard)
            if not path.is_file():
                raise CacheError(f"Feature cache shard {path} is missing; rebuild the cache (delete {self.root})")
            self._shards[key] = torch.load(path, map_location="cpu", weights_only=True)
            while len(self._shards) > self._max:
                self._shards.popitem(last=False)
        self._shards.move_to_end(key)
        return self._shards[key], offset

    def targets(self, keys: Tensor, teachers: Sequence[str], device: torch.device) -> dict[str, TeacherOutput]:
        """Cached ``TeacherOutput`` (fp32, on ``device``) of each teacher for ``keys`` ``[b, 3]``."""
        rows = [self._row(int(s), int(i), int(v)) for s, i, v in keys.tolist()]
        return {
            name: TeacherOutput(
                torch.stack([shard[f"{name}.summary"][o] for shard, o in rows]).to(device).float(),
                torch.stack([shard[f"{name}.patches"][o] for shard, o in rows]).to(device).float(),
            )
            for name in teachers
        }

    def view(self, source: int, index: int, view: int) -> Tensor:
        shard, offset = self._row(source, index, view)
        if "views" not in shard:
            raise CacheError(f"The feature cache in {self.root} stores no views (built with store_views=false)")
        return shard["views"][offset].float() / 255


class CachedViews:
    """A :class:`~eupe.distill.data.ViewSource` whose views come from the cache (no decoding, no augmentation)."""

    def __init__(self, cache: FeatureCache, source: int) -> None:
        self.cache, self.source = cache, source

    def __len__(self) -> int:
        return self.cache.sizes[self.source]

    def view(self, index: int, view: int, seed: int) -> Tensor:
        return self.cache.view(self.source, index, view)


def _scatter(values: Tensor, valid: list[bool]) -> Tensor:
    """Rows of ``values`` placed at the valid positions of a zero tensor with ``len(valid)`` rows."""
    if not len(values):
        return torch.zeros(len(valid))
    out = torch.zeros(len(valid), *values.shape[1:], dtype=values.dtype)
    out[torch.tensor(valid)] = values
    return out
