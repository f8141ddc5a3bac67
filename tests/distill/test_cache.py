"""The teacher feature cache's build output."""

from __future__ import annotations

from tests.distill.run_tiny import build


def test_cache_build_shows_a_bar_only_for_sources_with_shards_to_compute(tmp_path, capsys):
    build(str(tmp_path), ["train.iterations=1", "cache.enabled=true", "cache.views_per_image=1",
                          "cache.shard_size=16", "output.progress=true"])
    err = capsys.readouterr().err
    assert "teacher cache (source 0)" in err  # the images to compute
    assert "source 1" not in err  # no second source: nothing to do, no empty "0shard" bar
    build(str(tmp_path), ["train.iterations=1", "cache.enabled=true", "cache.views_per_image=1",
                          "cache.shard_size=16", "output.progress=true"])
    assert "teacher cache" not in capsys.readouterr().err  # complete: no bar at all
