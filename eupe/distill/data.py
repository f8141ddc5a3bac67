"""Deterministic, resumable streams of augmented views for distillation.

A *view* is identified by ``(image index, view id)`` and is a pure function of that key and the run's seed: the
augmentation generator is seeded from the key. A stream's batch at step ``s`` is a pure function of ``s`` and of
how many earlier steps drew from each source, so resuming only needs the step and two counters, and a run on W
ranks sees exactly the samples of a one-process run with the same global batch (rank ``r`` takes the ``r``-th
contiguous slice). The view id is the epoch, or ``epoch % views_per_image`` when a fixed number of views per
image is used (the teacher-feature cache). Images that cannot be decoded are counted and replaced by another
image of the same epoch (a deterministic choice), so a bad file never stops a run.

With ``workers > 0`` the views of the coming batches are decoded and augmented in DataLoader worker processes
(forked, one torch thread each) while the current step trains; the batches are the same as without workers.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

import torch
from PIL import Image
from torch import Tensor

from ..data.images import ImageDecodeError
from ..data.sources import ImageSource
from ..utils.workers import default_workers

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """An image source that cannot feed training (empty, too small for the batch...)."""


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers; stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ViewSource(Protocol):
    """An indexed image set that renders view ``view`` of image ``index`` as a ``[3, S, S]`` tensor in [0, 1].

    ``seed`` is the view's augmentation seed (a function of the key); sources that store views ignore it.
    """

    def __len__(self) -> int: ...

    def view(self, index: int, view: int, seed: int) -> Tensor: ...


class AugmentedImages:
    """The images of an :class:`~eupe.data.sources.ImageSource` (files or tar shards), augmented per view.

    ``augment(image, generator) -> Tensor`` is e.g. :class:`eupe.data.augment.Augment` at the crop size.
    Decoding errors propagate as :class:`ImageDecodeError` for the stream to count and skip.
    """

    def __init__(self, source: ImageSource, augment: Callable[[Image.Image, torch.Generator], Tensor]) -> None:
        self.source = source
        self.augment = augment

    def __len__(self) -> int:
        return len(self.source)

    def view(self, index: int, view: int, seed: int) -> Tensor:
        return self.augment(self.source.load(index), torch.Generator().manual_seed(seed))


class InMemoryImages:
    """Images decoded once and kept as uint8 tensors (small sets: the demo), augmented per view."""

    def __init__(self, images: Sequence[Tensor], augment: Callable[[Tensor, torch.Generator], Tensor]) -> None:
        if not images:
            raise DataError("The image source is empty: it lists no images")
        self.images = list(images)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def view(self, index: int, view: int, seed: int) -> Tensor:
        return self.augment(self.images[index], torch.Generator().manual_seed(seed))


@dataclass
class StreamState:
    """Position of a stream: steps drawn from the primary and from the second source, images skipped."""

    primary_steps: int = 0
    second_steps: int = 0
    skipped: int = 0
    skipped_reasons: list[str] = field(default_factory=list)  # the first 1000 "file: why", for the run summary


@dataclass
class _Rendered:
    """One sample of a batch: the view, its key, and the unreadable images skipped to find it."""

    view: Tensor
    key: tuple[int, int, int]
    skipped: list[str]  # why each unreadable image met on the way was skipped (naming its file)


@dataclass
class ViewBatch:
    images: Tensor  # [b, 3, S, S] in [0, 1]
    keys: Tensor  # [b, 3] long: (source 0/1, image index, view id)


class _KeyRenderer:
    """Map-style dataset of a stream's samples, keyed ``(source, sample)``; runs in DataLoader workers."""

    def __init__(self, stream: ViewStream) -> None:
        self.stream = stream

    def __getitem__(self, key: tuple[int, int]) -> _Rendered:
        return self.stream._render(*key)


class ViewStream:
    """Global batches of ``global_batch`` views, of which this rank renders its contiguous slice."""

    MAX_RETRIES = 64
    PREFETCH_BATCHES = 2  # batches rendered ahead of the one being trained on (DataLoader prefetch_factor)

    def __init__(self, primary: ViewSource, global_batch: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 second: ViewSource | None = None, second_prob: float = 0.0, views_per_image: int = 0,
                 is_bad: Callable[[int, int, int], bool] | None = None, workers: int = 0) -> None:
        if len(primary) == 0:
            raise DataError("The image source is empty: it lists no images")
        if second is not None and len(second) == 0:
            raise DataError("The second image source is empty: it lists no images")
        if global_batch % world_size:
            raise DataError(f"Global batch {global_batch} is not divisible by the world size {world_size}")
        self.sources = (primary, second)
        self.global_batch, self.seed = global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.second_prob = second_prob if second is not None else 0.0
        self.views_per_image = views_per_image
        self.is_bad = is_bad  # optional: (source, index, view) known to be unreadable (e.g. by the feature cache)
        self.state = StreamState()
        self._perm_cache: dict[tuple[int, int], Tensor] = {}
        if workers > 0 and "fork" not in multiprocessing.get_all_start_methods():
            logger.warning("data.workers=%d needs the 'fork' start method, which this platform lacks; reading the "
                           "data inside the step instead", workers)
            workers = 0
        self.workers = default_workers(workers)
        self._loader: Iterator[list[_Rendered]] | None = None  # worker processes' batches, from _loader_position
        self._loader_position: tuple[int, int, int] | None = None  # (step, primary steps, second steps) it serves

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    def state_dict(self) -> dict:
        s = self.state
        return {"primary_steps": s.primary_steps, "second_steps": s.second_steps, "skipped": s.skipped,
                "skipped_reasons": list(s.skipped_reasons)}

    def load_state_dict(self, state: dict) -> None:
        self.state = StreamState(**state)

    def close(self) -> None:
        """Stops the worker processes (batches they prepared are dropped)."""
        self._loader = self._loader_position = None

    def uses_second(self, step: int) -> bool:
        """Whether global ``step`` is a homogeneous batch of the second source (drawn with ``second_prob``)."""
        if self.second_prob <= 0:
            return False
        u = torch.rand((), generator=torch.Generator().manual_seed(mix_seed(self.seed, 2, step))).item()
        return u < self.second_prob

    def _perm(self, source: int, epoch: int) -> Tensor:
        key = (source, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            if len(self._perm_cache) > 4:
                self._perm_cache.clear()
            perm = torch.randperm(len(self.sources[source]), generator=torch.Generator().manual_seed(
                mix_seed(self.seed, 1, source, epoch)))
            self._perm_cache[key] = perm
        return perm

    def key_at(self, source: int, sample: int, retry: int = 0) -> tuple[int, int]:
        """``(image index, view id)`` of the ``sample``-th draw of ``source``; ``retry`` picks a replacement."""
        n = len(self.sources[source])
        epoch, pos = divmod(sample, n)
        index = int(self._perm(source, epoch)[(pos + retry * 7919) % n])
        view = epoch % self.views_per_image if self.views_per_image else epoch
        return index, view

    def view_seed(self, source: int, index: int, view: int) -> int:
        return mix_seed(self.seed, 3, source, index, view)

    def _render(self, source: int, sample: int) -> _Rendered:
        """The ``sample``-th draw of ``source``; pure (no stream state changes), so worker processes may run it."""
        skipped: list[str] = []
        for retry in range(self.MAX_RETRIES):
            index, view = self.key_at(source, sample, retry)
            if self.is_bad is not None and self.is_bad(source, index, view):
                continue
            try:
                return _Rendered(self.sources[source].view(index, view, self.view_seed(source, index, view)),
                                 (source, index, view), skipped)
            except ImageDecodeError as err:
                skipped.append(str(err))
        raise DataError(f"{self.MAX_RETRIES} images in a row could not be read; check the image source")

    def _plan(self, step: int, primary_steps: int, second_steps: int) -> tuple[int, int]:
        """(source, first global sample of this rank's slice) of ``step``, given the steps drawn before it."""
        source = 1 if self.uses_second(step) else 0
        drawn = second_steps if source else primary_steps
        return source, drawn * self.global_batch + self.rank * self.local_batch

    def _planned_chunks(self, step: int, primary_steps: int, second_steps: int) -> Iterator[list[tuple[int, int]]]:
        """The ``(source, sample)`` keys of this rank's slices of ``step``, ``step + 1``, ..., in order, each cut
        into ``_chunks_per_batch`` chunks so that all workers render parts of the same batch (low latency)."""
        chunks = self._chunks_per_batch()
        while True:
            source, start = self._plan(step, primary_steps, second_steps)
            keys = [(source, start + j) for j in range(self.local_batch)]
            for i in range(chunks):
                yield keys[i * len(keys) // chunks:(i + 1) * len(keys) // chunks]
            second_steps, primary_steps = second_steps + source, primary_steps + 1 - source
            step += 1

    def _chunks_per_batch(self) -> int:
        return min(self.workers, self.local_batch)

    def _worker_batch(self, step: int, source: int) -> list[_Rendered]:
        """Batch ``step`` from the worker processes, (re)starting them when the stream was moved elsewhere."""
        position = (step, self.state.primary_steps, self.state.second_steps)
        if self._loader is None or self._loader_position != position:
            from torch.utils.data import DataLoader

            class Plan:  # a batch sampler must be re-iterable; this one is iterated once per loader
                def __iter__(plan) -> Iterator[list[tuple[int, int]]]:
                    return self._planned_chunks(*position)

            # its own generator: starting workers must not draw from the global RNG (resumed runs restore it)
            self._loader = iter(DataLoader(_KeyRenderer(self), batch_sampler=Plan(), num_workers=self.workers,
                                           collate_fn=list, prefetch_factor=self.PREFETCH_BATCHES,
                                           multiprocessing_context="fork",
                                           generator=torch.Generator().manual_seed(mix_seed(self.seed, 6))))
        self._loader_position = (step + 1, position[1] + 1 - source, position[2] + source)
        return [sample for _ in range(self._chunks_per_batch()) for sample in next(self._loader)]

    def next_batch(self, step: int) -> ViewBatch:
        """This rank's slice of global ``step``'s batch; advances the stream's position."""
        source, start = self._plan(step, self.state.primary_steps, self.state.second_steps)
        if self.workers:
            samples = self._worker_batch(step, source)
        else:
            samples = [self._render(source, start + j) for j in range(self.local_batch)]
        if source:
            self.state.second_steps += 1
        else:
            self.state.primary_steps += 1
        for sample in samples:
            for reason in sample.skipped:
                self.state.skipped += 1
                if len(self.state.skipped_reasons) < 1000:
                    self.state.skipped_reasons.append(reason)
                logger.warning("Skipping unreadable image (%d skipped so far): %s", self.state.skipped, reason)
        return ViewBatch(torch.stack([s.view for s in samples]),
                         torch.tensor([s.key for s in samples], dtype=torch.long))
