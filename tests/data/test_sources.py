"""Training image streams: tar shards, mixed homogeneous batches, resumption, rank sharding, bad images."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.data.augment import AugmentConfig
from eupe.data.images import ImageDecodeError, ImageSourceError
from eupe.data.sources import BatchPlan, FileSource, ImageStream, Position, StreamConfig, TarShardSource, open_source

AUG = AugmentConfig(size=16)


def png_bytes(value: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 10, 3), value, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def write_shard(path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, files in samples.items():
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def image_folder(root: Path, n: int, bad: int = 0) -> Path:
    root.mkdir()
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), i * 3 % 256, np.uint8)).save(root / f"{i:03d}.png")
    for i in range(bad):
        (root / f"bad{i}.jpg").write_bytes(b"not an image")
    return root


def test_tar_shards_round_trip(tmp_path):
    write_shard(tmp_path / "s0.tar", {"a/x0": {"jpg": png_bytes(10, "JPEG"), "cls": b"3"},
                                      "a/x1": {"json": b"{}", "png": png_bytes(20)}})
    write_shard(tmp_path / "s1.tar", {"y.0": {"webp": png_bytes(30, "WEBP")}, "meta": {"txt": b"no image"},
                                      "broken": {"jpg": b"not a jpeg"}})
    source = open_source(str(tmp_path / "s*.tar"))
    assert isinstance(source, TarShardSource) and len(source) == 4
    assert [m.key for m in source.members] == ["a/x0", "a/x1", "y", "broken"]  # key = name before the first dot
    with pytest.raises(ImageDecodeError, match=r"s1.tar:broken.*corrupt"):
        source.load(3)
    assert source.load(1).getpixel((0, 0)) == (20, 20, 20)
    assert abs(source.load(0).getpixel((3, 3))[0] - 10) <= 2 and source.load(2).size == (10, 12)
    assert isinstance(open_source(tmp_path), TarShardSource)  # a folder of shards


def test_empty_sources_are_one_clear_error(tmp_path):
    write_shard(tmp_path / "empty.tar", {"k": {"txt": b"x"}})
    with pytest.raises(ImageSourceError, match="hold no images"):
        open_source(tmp_path / "empty.tar")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ImageSourceError):
        open_source(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing-*.tar")
    with pytest.raises(ValueError, match="fewer than one global batch"):
        BatchPlan(5, 4, world_size=2)


def test_mixed_batches_are_homogeneous_with_the_requested_share():
    plan = BatchPlan(4000, 4, extra_size=50, extra_prob=0.1, seed=3)
    batches = list(plan.epoch(0))
    main = [b for b in batches if b.source == 0]
    extra = [b for b in batches if b.source == 1]
    assert len(main) == 1000 and 0.07 < len(extra) / len(batches) < 0.13
    assert sorted(i for b in main for i in b.indices) == list(range(4000))  # every main image once per epoch
    assert all(max(b.indices) < 50 and len(set(b.indices)) == 4 for b in extra)
    assert [b.step for b in batches] == list(range(len(batches))) and plan.steps_in_epoch(0) == len(batches)


def test_resuming_from_a_position_equals_the_uninterrupted_sequence():
    plan = BatchPlan(30, 4, extra_size=9, extra_prob=0.3, seed=1)
    stream = plan.batches()
    full = [next(stream) for _ in range(20)]  # crosses into epoch 2
    cut = full[11]
    resumed = plan.batches(Position(cut.epoch, cut.step + 1))
    assert [next(resumed) for _ in range(8)] == full[12:20]
    assert [b.indices for b in plan.epoch(1)] != [b.indices for b in plan.epoch(0)]  # reshuffled per epoch


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_split_every_global_batch_without_duplicates(drop_last):
    size, world = 103, 4
    plans = [BatchPlan(size, 5, extra_size=40, extra_prob=0.2, seed=0, rank=r, world_size=world,
                       drop_last=drop_last) for r in range(world)]
    per_rank = [list(p.epoch(0)) for p in plans]
    assert len({len(batches) for batches in per_rank}) == 1
    for step_batches in zip(*per_rank, strict=True):
        assert len({b.source for b in step_batches}) == 1  # all ranks draw the same source at a step
    main = Counter(i for batches in per_rank for b in batches if b.source == 0 for i in b.indices)
    assert max(main.values()) == 1
    assert len(main) == (size // 20 * 20 if drop_last else size)


def test_stream_skips_and_counts_bad_images_and_is_resumable(tmp_path):
    folder = image_folder(tmp_path / "imgs", 10, bad=2)
    cfg = StreamConfig(source=str(folder), batch_size=4, seed=0, num_workers=0)
    stream = ImageStream(cfg, AUG)
    batches = list(stream.epoch(0))
    assert stream.skipped == 2
    assert sum(len(b.images) for b in batches) == 10 and {len(b.failures) for b in batches} <= {0, 1, 2}
    assert all(b.images.shape[1:] == (3, 16, 16) and b.images.max() <= 1 for b in batches)
    again = ImageStream(cfg, AUG)
    resumed = list(again.epoch(*batches[0].next_position))
    assert len(resumed) == len(batches) - 1
    assert all(torch.equal(a.images, b.images) for a, b in zip(batches[1:], resumed, strict=True))


def test_stream_with_workers_and_extra_tar_source(tmp_path):
    folder = image_folder(tmp_path / "imgs", 12)
    shard = write_shard(tmp_path / "in1k.tar", {f"k{i}": {"png": png_bytes(200 + i)} for i in range(6)})
    cfg = StreamConfig(source=str(folder), extra_source=str(shard), extra_prob=0.5, batch_size=3, seed=2,
                       num_workers=2)
    batches = list(ImageStream(cfg, AUG, rank=0, world_size=1).epoch(0))
    single = list(ImageStream(StreamConfig(**{**cfg.__dict__, "num_workers": 0}), AUG).epoch(0))
    assert {b.source for b in batches} == {str(folder), str(shard)}
    assert all(torch.equal(a.images, b.images) for a, b in zip(batches, single, strict=True))  # same data
    assert sum(len(b.images) for b in batches if b.source == str(folder)) == 12


def test_file_source_from_list_file(tmp_path):
    folder = image_folder(tmp_path / "imgs", 3)
    (tmp_path / "list.txt").write_text("imgs/000.png\nimgs/002.png\n")
    source = open_source(tmp_path / "list.txt")
    assert isinstance(source, FileSource) and len(source) == 2 and source.describe(1).endswith("002.png")
    assert source.load(0).mode == "RGB" and folder.is_dir()
