import pytest
import torch

from eupe.distill.data import DataError, ViewStream
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
