"""Training image streams: folders, list files and WebDataset-style tar shards, mixed, sharded and resumable.

* A *source* is an indexable set of images: :class:`FileSource` (anything ``list_images`` accepts) or
  :class:`TarShardSource` (uncompressed ``.tar`` shards; files grouped into samples by key, the part of the
  name before the first dot, as WebDataset does; the sample's first file whose last suffix is
  jpg/jpeg/png/webp is its image).
* :class:`BatchPlan` fixes the order: for every epoch a seeded permutation of the main source; before each
  step a seeded coin picks, with probability ``extra_prob``, a *homogeneous* batch from the extra source
  instead (the paper's 10 % ImageNet-1k batches). An epoch ends when the main source is used up. The plan of
  step ``(epoch, step)`` depends only on the seed, so a resumed run sees exactly the data of an uninterrupted
  one; each global batch is split across ranks, so ranks never share a sample.
* :class:`ImageStream` turns the plan into augmented batches with a DataLoader; images that cannot be read
  are skipped and counted, never raised mid-epoch. Augmentation is seeded per sample, so batches do not depend
  on the number of workers.
"""

from __future__ import annotations

import glob
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from .augment import Augment, AugmentConfig
from .images import ImageDecodeError, ImageSourceError, list_images, load_image, to_rgb

logger = logging.getLogger(__name__)

TAR_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


# ------------------------------------------------------------------------------------------------- sources


class FileSource:
    """Image files listed by ``list_images`` (folder tree, glob, list file or a sequence of paths)."""

    def __init__(self, spec: str | Path | Sequence[str | Path]) -> None:
        records, _ = list_images(spec)
        self.name = str(spec) if isinstance(spec, (str, Path)) else f"{len(records)} files"
        self.paths = [r.path for r in records]

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return self.paths[index]

    def load(self, index: int) -> Image.Image:
        return load_image(self.paths[index])


class TarMember(NamedTuple):
    shard: int
    key: str
    offset: int
    size: int


class TarShardSource:
    """Samples of uncompressed tar shards, read by offset (random access, no ``webdataset`` dependency)."""

    def __init__(self, shards: Sequence[str | Path]) -> None:
        self.shards = [str(s) for s in shards]
        self.name = self.shards[0] if len(self.shards) == 1 else f"{len(self.shards)} tar shards"
        self.members = [m for i, shard in enumerate(self.shards) for m in _index_shard(i, shard)]
        if not self.members:
            raise ImageSourceError(f"Tar shards {self.name} hold no images (looked for samples with a "
                                   f"{'/'.join(TAR_IMAGE_EXTENSIONS)} file)")
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.members)

    def describe(self, index: int) -> str:
        member = self.members[index]
        return f"{self.shards[member.shard]}:{member.key}"

    def load(self, index: int) -> Image.Image:
        member = self.members[index]
        where = self.describe(index)
        try:
            handle = self._handle(member.shard)
            handle.seek(member.offset)
            data = handle.read(member.size)
        except OSError as err:
            raise ImageDecodeError(where, f"cannot read shard ({err})") from None
        return decode_bytes(data, where)

    def _handle(self, shard: int):
        if self._pid != os.getpid():  # forked into a DataLoader worker: never share file offsets with the parent
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = open(self.shards[shard], "rb")
        return self._handles[shard]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}


def _index_shard(shard_index: int, path: str) -> list[TarMember]:
    import tarfile

    found: dict[str, TarMember] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                folder, _, base = info.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                key = f"{folder}/{stem}" if folder else stem
                if dot and ext.rpartition(".")[2].lower() in TAR_IMAGE_EXTENSIONS and key not in found:
                    found[key] = TarMember(shard_index, key, info.offset_data, info.size)
    except tarfile.ReadError as err:
        raise ImageSourceError(f"{path} is not an uncompressed tar shard ({err}); shards must be plain .tar "
                               f"files (WebDataset layout)") from err
    return list(found.values())


def decode_bytes(data: bytes, where: str) -> Image.Image:
    """Image bytes (from a shard) -> RGB PIL image, with the conversions of ``images.load_image``."""
    if not data:
        raise ImageDecodeError(where, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except Exception as err:  # PIL raises many types for corrupt data
        raise ImageDecodeError(where, f"corrupt image: {err or type(err).__name__}") from None


ImageSource = FileSource | TarShardSource


def open_source(spec: str | Path | Sequence[str | Path]) -> ImageSource:
    """A ``.tar`` file, a glob of them or a folder holding only ``.tar`` files -> tar shards; else image files."""
    if isinstance(spec, (list, tuple)):
        paths = [str(p) for p in spec]
        return TarShardSource(paths) if paths and all(p.endswith(".tar") for p in paths) else FileSource(paths)
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        entries = [e for e in sorted(os.scandir(path), key=lambda e: e.name) if not e.name.startswith(".")]
        if entries and all(e.is_file() and e.name.endswith(".tar") for e in entries):
            return TarShardSource([e.path for e in entries])
    elif text.endswith(".tar"):
        shards = sorted(glob.glob(os.path.expanduser(text))) if set("*?[") & set(text) else [text]
        if not shards or not all(os.path.isfile(s) for s in shards):
            raise FileNotFoundError(f"Tar shards {text!r} not found: give an existing .tar file or a glob of them")
        return TarShardSource(shards)
    return FileSource(spec)


# ---------------------------------------------------------------------------------------------------- plan


class Position(NamedTuple):
    """Where a stream is: the next step to run of an epoch. Save it with a checkpoint to resume exactly."""

    epoch: int = 0
    step: int = 0


START = Position()


class PlannedBatch(NamedTuple):
    epoch: int
    step: int
    source: int  # 0 = main source, 1 = extra source
    indices: list[int]  # this rank's sample indices in that source


def _generator(*keys: int) -> torch.Generator:
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    return torch.Generator().manual_seed(seed)


class BatchPlan:
    """Deterministic, resumable and rank-sharded batch order over a main and an optional extra source."""

    def __init__(self, main_size: int, batch_size: int, *, extra_size: int = 0, extra_prob: float = 0.0,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True) -> None:
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"Need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        if not 0.0 <= extra_prob < 1.0 or (extra_prob > 0 and extra_size == 0):
            raise ValueError(f"extra_prob must be in [0, 1) and needs a non-empty extra source, got {extra_prob} "
                             f"with {extra_size} extra images")
        self.main_size, self.extra_size, self.extra_prob = main_size, extra_size, extra_prob
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.drop_last = seed, drop_last
        self.global_batch = batch_size * world_size
        self.main_batches = main_size // self.global_batch if drop_last else -(-main_size // self.global_batch)
        if self.main_batches == 0:
            raise ValueError(f"The source has {main_size} images, fewer than one global batch ({batch_size} per "
                             f"rank x {world_size} ranks); use a smaller batch or drop_last=False")
        if extra_prob > 0 and extra_size < self.global_batch:
            raise ValueError(f"The extra source has {extra_size} images, fewer than one global batch "
                             f"({self.global_batch})")

    def _choices(self, epoch: int) -> list[int]:
        """Source of every step of ``epoch`` (0 main, 1 extra); ends with the last main batch."""
        g = _generator(self.seed, epoch, 1)
        choices: list[int] = []
        main = 0
        while main < self.main_batches:
            extra = self.extra_prob > 0 and torch.rand((), generator=g).item() < self.extra_prob
            choices.append(int(extra))
            main += not extra
        return choices

    def steps_in_epoch(self, epoch: int) -> int:
        """Number of steps (main + extra batches) of ``epoch``."""
        return len(self._choices(epoch))

    def _extra_order(self, epoch: int, needed: int) -> list[int]:
        """Fresh permutations of the extra source, each cut to whole global batches (no repeats within a batch)."""
        usable = self.extra_size // self.global_batch * self.global_batch
        order: list[int] = []
        cycle = 0
        while len(order) < needed:
            perm = torch.randperm(self.extra_size, generator=_generator(self.seed, epoch, 2, cycle))
            order += perm[:usable].tolist()
            cycle += 1
        return order

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[PlannedBatch]:
        """This rank's batches of ``epoch`` from ``start_step`` on."""
        choices = self._choices(epoch)
        main_order = torch.randperm(self.main_size, generator=_generator(self.seed, epoch, 0)).tolist()
        extra_order = self._extra_order(epoch, sum(choices) * self.global_batch) if any(choices) else []
        counts = [0, 0]
        for step, source in enumerate(choices):
            order = extra_order if source else main_order
            start = counts[source] * self.global_batch
            counts[source] += 1
            if step < start_step:
                continue
            chunk = order[start : start + self.global_batch]
            per_rank = -(-len(chunk) // self.world_size)
            yield PlannedBatch(epoch, step, source, chunk[self.rank * per_rank : (self.rank + 1) * per_rank])

    def batches(self, start: Position = START) -> Iterator[PlannedBatch]:
        """Endless stream of this rank's batches from ``start``, epoch after epoch."""
        epoch, step = start
        while True:
            yield from self.epoch(epoch, step)
            epoch, step = epoch + 1, 0


# -------------------------------------------------------------------------------------------------- stream


@dataclass
class StreamConfig:
    """The training data of a distillation run.

    source: folder, list file, glob, or tar shards (a ``.tar``, a glob of them, or a folder of ``.tar`` files).
    extra_source: optional second source drawn as whole batches with probability ``extra_prob`` (ImageNet-1k in
        the paper, 10 %).
    batch_size: per rank. seed: fixes order and augmentation. num_workers: DataLoader worker processes.
    """

    source: str = ""
    extra_source: str | None = None
    extra_prob: float = 0.1
    batch_size: int = 64
    seed: int = 0
    num_workers: int = 4
    drop_last: bool = True


class StreamBatch(NamedTuple):
    """Augmented crops ``[b, 3, S, S]`` in [0, 1] (``b`` may be below the batch size after skips), where they
    came from, and ``(image, reason)`` for each skipped image. Resume after it from ``next_position``."""

    images: torch.Tensor
    epoch: int
    step: int
    source: str
    failures: list[tuple[str, str]]

    @property
    def next_position(self) -> Position:
        return Position(self.epoch, self.step + 1)


class _AugmentedItems(torch.utils.data.Dataset):
    """Item ``(epoch, source, index)`` -> ``(crop, None)`` or ``(None, (image, reason))``; never raises."""

    def __init__(self, sources: Sequence[ImageSource], augment: Augment, seed: int) -> None:
        self.sources, self.augment, self.seed = list(sources), augment, seed

    def __getitem__(self, key: tuple[int, int, int]):
        epoch, source, index = key
        src = self.sources[source]
        try:
            image = src.load(index)
            return self.augment(image, _generator(self.seed, epoch, 3, source, index)), None
        except ImageDecodeError as err:
            return None, (err.path, err.reason)
        except Exception as err:  # an odd image must not stop training
            return None, (src.describe(index), f"{type(err).__name__}: {err}")

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)


def _collate(items):
    good = [crop for crop, _ in items if crop is not None]
    return (torch.stack(good) if good else None), [failure for _, failure in items if failure is not None]


class ImageStream:
    """Endless, resumable stream of augmented training batches for one rank (see the module docstring)."""

    def __init__(self, cfg: StreamConfig, augment: AugmentConfig | Augment | None = None, *,
                 rank: int | None = None, world_size: int | None = None) -> None:
        if not cfg.source:
            raise ValueError("StreamConfig.source is empty: give an image folder, list file, glob or tar shards")
        if rank is None or world_size is None:
            dist = torch.distributed
            initialised = dist.is_available() and dist.is_initialized()
            rank = dist.get_rank() if initialised else 0
            world_size = dist.get_world_size() if initialised else 1
        self.cfg = cfg
        self.sources = [open_source(cfg.source)] + ([open_source(cfg.extra_source)] if cfg.extra_source else [])
        self.plan = BatchPlan(len(self.sources[0]), cfg.batch_size,
                              extra_size=len(self.sources[1]) if cfg.extra_source else 0,
                              extra_prob=cfg.extra_prob if cfg.extra_source else 0.0, seed=cfg.seed, rank=rank,
                              world_size=world_size, drop_last=cfg.drop_last)
        self.augment = augment if isinstance(augment, Augment) else Augment(augment)
        self.items = _AugmentedItems(self.sources, self.augment, cfg.seed)
        self.skipped = 0  # images skipped so far (unreadable or failing augmentation)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[StreamBatch]:
        """The batches of one epoch from ``start_step``; a batch whose images all fail is skipped (and counted)."""
        planned = list(self.plan.epoch(epoch, start_step))
        loader = torch.utils.data.DataLoader(
            self.items, batch_sampler=[[(b.epoch, b.source, i) for i in b.indices] for b in planned],
            num_workers=self.cfg.num_workers, collate_fn=_collate, persistent_workers=False)
        for batch, (images, failures) in zip(planned, loader, strict=True):
            for image, reason in failures:
                logger.warning("skipping unreadable image %s: %s", image, reason)
            self.skipped += len(failures)
            if images is not None:
                yield StreamBatch(images, batch.epoch, batch.step, self.sources[batch.source].name, failures)

    def batches(self, start: Position = START) -> Iterator[StreamBatch]:
        """Endless batches from ``start`` (a saved ``StreamBatch.next_position``), epoch after epoch."""
        epoch, step = start
        while True:
            yield from self.epoch(epoch, step)
            epoch, step = epoch + 1, 0
