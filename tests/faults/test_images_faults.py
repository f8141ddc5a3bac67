"""Listing and resizing faults: symbolic-link loops and broken links, extreme aspect ratios. Each case once ended
in a wrong result (mislabelled duplicates) or a crash / memory blow-up; now it is a correct result with the odd
entries listed, or a bounded cost."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.data.images import list_images, scan_images
from eupe.data.sources import open_source
from eupe.extract.transforms import ResizeCenterCrop, resize_short_side_bounded
from eupe.viz import pca_pictures
from tests.helpers import tiny_vit

#: Largest image (pixels) a resize may produce in these tests: far above what the transforms need, far below what
#: a short-side resize of a 3x100000 image asks for (256 x 8.5M).
RESIZE_LIMIT = 4_000_000


def _image(path: Path, value: int = 100, size: tuple[int, int] = (20, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _relative(records, root: Path) -> list[tuple[str, str | None]]:
    return [(os.path.relpath(r.path, root), r.class_name) for r in records]


@pytest.fixture
def bounded_resizes(monkeypatch):
    """Fails any PIL resize to more than RESIZE_LIMIT pixels before it allocates; records the sizes asked for."""
    sizes = []
    original = Image.Image.resize

    def resize(self, size, *args, **kwargs):
        sizes.append(tuple(size))
        assert size[0] * size[1] <= RESIZE_LIMIT, f"resize to {size} is unbounded"
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    return sizes


def test_symlink_loops_list_each_real_folder_once_with_true_labels(tmp_path):
    root = tmp_path / "L"
    _image(root / "a" / "x.jpg")
    _image(root / "b" / "y.jpg")
    os.symlink("..", root / "a" / "up")
    os.symlink(".", root / "b" / "self")
    listing = scan_images(root)
    assert _relative(listing.records, root) == [("a/x.jpg", "a"), ("b/y.jpg", "b")]
    assert sorted(os.path.relpath(p, root) for p, _ in listing.skipped) == ["a/up", "b/self"]
    assert all("listed already" in reason for _, reason in listing.skipped)


def test_loops_and_broken_links_at_the_top_level_are_listed_not_raised(tmp_path, caplog):
    root = tmp_path / "M"
    _image(root / "a" / "x.jpg")
    os.symlink("c", root / "c")  # loops on itself
    os.symlink("nowhere", root / "broken.jpg")
    with caplog.at_level(logging.WARNING):
        records, classes = list_images(root)
    assert _relative(records, root) == [("a/x.jpg", "a")] and classes == ["a"]
    assert "symbolic link loop" in caplog.text and "broken symbolic link" in caplog.text
    (tmp_path / "shards").mkdir()
    os.symlink("loop.tar", tmp_path / "shards" / "loop.tar")
    with pytest.raises(ValueError, match="symbolic link loop"):  # no OSError from the tar-shard check
        open_source(tmp_path / "shards")


def test_a_link_into_another_class_never_relabels_its_images(tmp_path):
    root = tmp_path / "C"
    _image(root / "a" / "x.jpg")
    _image(root / "b" / "y.jpg")
    _image(root / "b" / "sub" / "z.jpg")
    outside = _image(tmp_path / "elsewhere" / "w.jpg").parent
    os.symlink("../b", root / "a" / "to_b")
    os.symlink("b/sub", root / "d")  # a class folder that is a link into class b
    os.symlink(outside, root / "a" / "more")  # a link out of the tree: followed, its images are class a
    listing = scan_images(root)
    assert _relative(listing.records, root) == [("a/more/w.jpg", "a"), ("a/x.jpg", "a"), ("b/sub/z.jpg", "b"),
                                                ("b/y.jpg", "b")]
    reasons = {os.path.relpath(p, root): r for p, r in listing.skipped}
    assert set(reasons) == {"a/to_b", "d"} and all("class 'b'" in r for r in reasons.values())


def test_a_double_star_glob_over_a_loop_lists_each_file_once(tmp_path):
    root = tmp_path / "L"
    _image(root / "a" / "x.jpg")
    _image(root / "b" / "y.jpg")
    os.symlink("..", root / "a" / "up")
    os.symlink(".", root / "b" / "self")
    records, _ = list_images(str(root / "**" / "*.jpg"))
    assert [os.path.relpath(r.path, root) for r in records] == ["a/x.jpg", "b/y.jpg"]


def test_a_source_that_is_a_looping_link_says_so(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(FileNotFoundError, match="symbolic link loop"):
        list_images(tmp_path / "loop")


def test_the_extraction_crop_of_an_extreme_aspect_ratio_is_bounded(bounded_resizes):
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 255, (3, 100_000, 3), dtype=np.uint8))
    out = ResizeCenterCrop(256, 224)(wide)
    assert out.shape == (3, 224, 224) and torch.isfinite(out).all()
    assert max(w * h for w, h in bounded_resizes) <= 224 * 224


def test_pictures_of_an_extreme_aspect_ratio_are_bounded_and_say_so(bounded_resizes, caplog):
    wide = Image.fromarray(np.zeros((3, 100_000, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        (picture,) = pca_pictures(tiny_vit(depth=1).eval(), [wide], size=64, names=["wide.png"])
    assert max(picture.size) <= 2 * 8 * 64 + 4  # the titled figure of the bounded 512x16 input stays small
    assert "wide.png is 100000x3 pixels" in caplog.text
    normal = Image.new("RGB", (40, 30))
    assert resize_short_side_bounded(normal, 32, multiple=16).size == (48, 32)  # ordinary images: unchanged
