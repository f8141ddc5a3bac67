import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.data.augment import AugmentConfig
from eupe.distill.config import DataConfig
from eupe.distill.data import DataError, ViewStream
from eupe.distill.sources import build_view_sources
from tests.distill.helpers import TensorViews, random_images


def collect(stream, steps):
    return [stream.next_batch(s) for s in range(steps)]


def test_stream_is_deterministic_and_resumable():
    src = TensorViews(random_images(10), 16)
    full = collect(ViewStream(src, 4, seed=3), 6)
    resumed = ViewStream(src, 4, seed=3)
    collect(resumed, 2)
    state = resumed.state_dict()
    again = ViewStream(src, 4, seed=3)
    again.load_state_dict(state)
    tail = [again.next_batch(s) for s in range(2, 6)]
    for a, b in zip(full[2:], tail):
        assert torch.equal(a.images, b.images) and torch.equal(a.keys, b.keys)


def test_each_epoch_visits_every_image_once_with_new_views():
    stream = ViewStream(TensorViews(random_images(8), 16), 4, seed=0)
    keys = torch.cat([b.keys for b in collect(stream, 4)])
    assert sorted(keys[:8, 1].tolist()) == list(range(8)) and sorted(keys[8:, 1].tolist()) == list(range(8))
    assert set(keys[:8, 2].tolist()) == {0} and set(keys[8:, 2].tolist()) == {1}
    cached = ViewStream(TensorViews(random_images(8), 16), 4, seed=0, views_per_image=1)
    assert set(torch.cat([b.keys for b in collect(cached, 4)])[:, 2].tolist()) == {0}


def test_ranks_split_the_global_batch_without_overlap():
    src = TensorViews(random_images(12), 16)
    single = collect(ViewStream(src, 4, seed=1), 3)
    ranks = [collect(ViewStream(src, 4, seed=1, rank=r, world_size=2), 3) for r in range(2)]
    for s in range(3):
        joined = torch.cat([ranks[0][s].images, ranks[1][s].images])
        assert torch.equal(joined, single[s].images)


def test_bad_images_are_skipped_and_counted():
    stream = ViewStream(TensorViews(random_images(6), 16, bad={1, 4}), 3, seed=0)
    keys = torch.cat([b.keys for b in collect(stream, 4)])
    assert not set(keys[:, 1].tolist()) & {1, 4}
    assert stream.state.skipped >= 2


def test_second_source_gives_homogeneous_batches_at_its_rate():
    primary, second = TensorViews(random_images(8), 16), TensorViews(random_images(8, seed=1), 16)
    stream = ViewStream(primary, 2, seed=0, second=second, second_prob=0.3)
    sources = [set(stream.next_batch(s).keys[:, 0].tolist()) for s in range(200)]
    assert all(len(s) == 1 for s in sources)
    frac = sum(1 in s for s in sources) / 200
    assert 0.2 < frac < 0.4
    assert stream.state.second_steps + stream.state.primary_steps == 200


def test_empty_source_is_one_clear_error():
    with pytest.raises(DataError, match="empty"):
        ViewStream(TensorViews(torch.zeros(0, 3, 8, 8), 8), 2)
    with pytest.raises(DataError, match="divisible"):
        ViewStream(TensorViews(random_images(4), 8), 3, world_size=2)


def write_png_shard(path, keys, corrupt=()):
    """A WebDataset-style shard: ``<key>.png`` members (random pixels), ``corrupt`` keys holding garbage bytes."""
    with tarfile.open(path, "w") as tar:
        for key in keys:
            buf = io.BytesIO()
            Image.fromarray(np.random.default_rng(key).integers(0, 256, (20, 24, 3), np.uint8)).save(buf, "PNG")
            data = b"not a png" if key in corrupt else buf.getvalue()
            info = tarfile.TarInfo(f"{key:06d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_shards_feed_the_stream_deterministically_skipping_corrupt_members(tmp_path):
    write_png_shard(tmp_path / "train-000.tar", range(1, 5))
    write_png_shard(tmp_path / "train-001.tar", range(5, 9), corrupt={6})
    data = DataConfig(source=str(tmp_path / "train-{000..001}.tar"), augment=AugmentConfig(size=16))
    primary, second = build_view_sources(data)
    assert len(primary) == 8 and second is None
    first = ViewStream(primary, 4, seed=5)
    batches = collect(first, 4)  # two epochs: the corrupt member is met (and replaced) once in each
    assert all(b.images.shape == (4, 3, 16, 16) for b in batches)
    keys = torch.cat([b.keys for b in batches])
    corrupt_index = [m.key for m in primary.source.members].index("000006")
    assert corrupt_index not in keys[:, 1].tolist() and first.state.skipped == 2
    with_workers = ViewStream(build_view_sources(data)[0], 4, seed=5, workers=2)  # forked: shard handles reopened
    try:
        again = collect(with_workers, 4)
    finally:
        with_workers.close()
    for a, b in zip(batches, again):
        assert torch.equal(a.images, b.images) and torch.equal(a.keys, b.keys)
    assert with_workers.state.skipped == 2
    globbed = build_view_sources(DataConfig(source=str(tmp_path / "*.tar"), augment=AugmentConfig(size=16)))[0]
    assert torch.equal(collect(ViewStream(globbed, 4, seed=5), 1)[0].images, batches[0].images)


def test_config_sources_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="data.source is empty"):
        build_view_sources(DataConfig())
    write_png_shard(tmp_path / "train-000.tar", [1])
    with pytest.raises(DataError, match=r"data.source: .*train-001.tar"):
        build_view_sources(DataConfig(source=str(tmp_path / "train-{000..001}.tar")))
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="data.second_source is empty"):
        build_view_sources(DataConfig(source=str(tmp_path / "train-000.tar"), second_source=str(tmp_path / "none")))


def test_worker_processes_give_the_same_batches_skips_and_resume_as_the_main_process():
    def src():
        return TensorViews(random_images(10), 16, bad={2, 7})

    primary, second = src(), TensorViews(random_images(6, seed=1), 16)
    plain = ViewStream(primary, 4, seed=5, second=second, second_prob=0.3)
    with_workers = ViewStream(primary, 4, seed=5, second=second, second_prob=0.3, workers=2)
    try:
        for step in range(7):
            a, b = plain.next_batch(step), with_workers.next_batch(step)
            assert torch.equal(a.images, b.images) and torch.equal(a.keys, b.keys)
            assert plain.state_dict() == with_workers.state_dict()
        assert plain.state.skipped > 0
        # restart from an earlier position: prefetched batches of the old position must not leak in
        with_workers.load_state_dict(plain.state_dict() | {"primary_steps": 1, "second_steps": 0, "skipped": 0})
        fresh = ViewStream(primary, 4, seed=5, second=second, second_prob=0.3)
        fresh.load_state_dict(with_workers.state_dict())
        for step in (1, 2, 3):
            a, b = fresh.next_batch(step), with_workers.next_batch(step)
            assert torch.equal(a.images, b.images) and torch.equal(a.keys, b.keys)
    finally:
        with_workers.close()
