"""ADE20K reader and transforms, on a tiny dataset in the release layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.eval.dense import image_to_tensor
from eupe.eval.segmentation.data import (
    IGNORE_INDEX,
    SegmentationDataError,
    SegmentationDataset,
    list_ade20k,
    read_label,
)
from eupe.eval.segmentation.transforms import EvalResize, TrainAugment, photometric_distortion


def write_ade20k(root, sizes=((40, 56), (48, 48)), splits=("training", "validation"), num_classes=150, seed=0):
    """Writes ``images/<split>/*.jpg`` and ``annotations/<split>/*.png`` with labels 0..num_classes."""
    rng = np.random.default_rng(seed)
    for split in splits:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i, (h, w) in enumerate(sizes):
            name = f"ADE_{split[:5]}_{i:08d}"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / split / f"{name}.jpg")
            label = rng.integers(0, num_classes + 1, (h, w), dtype=np.uint8)
            Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")
    return root


def test_reads_release_layout(tmp_path):
    write_ade20k(tmp_path)
    samples = list_ade20k(tmp_path, "training")
    assert [s.image.name for s in samples] == ["ADE_train_00000000.jpg", "ADE_train_00000001.jpg"]
    assert all(s.label.parent.name == "training" and s.label.stem == s.image.stem for s in samples)
    image, label = SegmentationDataset(samples, lambda i, l: (i, l)).load(0)
    assert image.mode == "RGB" and image.size == (56, 40) and label.shape == (40, 56)


def test_reduce_zero_label(tmp_path):
    raw = np.array([[0, 1, 2], [150, 75, 0]], dtype=np.uint8)
    Image.fromarray(raw).save(tmp_path / "l.png")
    expected = np.array([[255, 0, 1], [149, 74, 255]])
    np.testing.assert_array_equal(read_label(tmp_path / "l.png"), expected)
    np.testing.assert_array_equal(read_label(tmp_path / "l.png", num_classes=151, reduce_zero_label=False), raw)


def test_label_outside_class_range_names_the_file(tmp_path):
    Image.fromarray(np.array([[3, 151]], dtype=np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(SegmentationDataError, match=r"bad\.png.*151.*0\.\.150"):
        read_label(tmp_path / "bad.png")


def test_rgb_label_is_rejected(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(SegmentationDataError, match="single-channel"):
        read_label(tmp_path / "rgb.png")


def test_missing_split_folder(tmp_path):
    write_ade20k(tmp_path, splits=("training",))
    with pytest.raises(FileNotFoundError, match=r"images[/\\]validation"):
        list_ade20k(tmp_path, "validation")


def test_image_without_annotation(tmp_path):
    write_ade20k(tmp_path)
    (tmp_path / "annotations" / "training" / "ADE_train_00000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="ADE_train_00000001.jpg has no annotation"):
        list_ade20k(tmp_path, "training")


def test_label_size_mismatch_names_both_files(tmp_path):
    write_ade20k(tmp_path)
    Image.fromarray(np.ones((5, 5), np.uint8)).save(tmp_path / "annotations" / "training" / "ADE_train_00000000.png")
    dataset = SegmentationDataset(list_ade20k(tmp_path, "training"), lambda i, l: (i, l))
    with pytest.raises(SegmentationDataError, match="ADE_train_00000000.png is 5x5 but image .* is 56x40"):
        dataset[0]


def test_train_augment_crops_pads_and_keeps_pixels_aligned():
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    # the label encodes each pixel's column, so image/label alignment survives any crop or flip
    label = np.tile(np.arange(20, dtype=np.uint8), (30, 1))
    augment = TrainAugment(img_size=20, crop_size=24, scale_range=(1.0, 1.0), flip_prob=1.0, photometric=False)
    image, target = augment(Image.fromarray(array), label)
    assert image.shape == (3, 24, 24) and target.shape == (24, 24) and target.dtype == torch.int64
    # flipped, then width 20 < crop 24 padded on the right: label 255, image 0 after normalisation
    assert (target[:, :20] == torch.arange(19, -1, -1)).all() and (target[:, 20:] == IGNORE_INDEX).all()
    assert (image[:, :, 20:] == 0).all()
    # the image is the flipped array at the crop's (random) row offset
    assert any(torch.allclose(image[:, :, :20], image_to_tensor(array[y:y + 24, ::-1])) for y in range(7))


def test_train_augment_random_scale_range():
    augment = TrainAugment(img_size=16, crop_size=64, scale_range=(2.0, 2.0), flip_prob=0.0, photometric=False)
    _, target = augment(Image.new("RGB", (16, 24)), np.zeros((24, 16), np.uint8))
    assert (target != IGNORE_INDEX).sum() == 32 * 48  # short side 16 -> 32, keeping the aspect ratio


def test_eval_resize_keeps_label():
    image, label = EvalResize(16)(Image.new("RGB", (64, 32)), np.zeros((32, 64), np.uint8))
    assert image.shape == (3, 16, 32) and label.shape == (32, 64)


def test_photometric_distortion_hand_worked(monkeypatch):
    grey = np.full((2, 3, 3), 100, np.uint8)
    monkeypatch.setattr("random.random", lambda: 0.9)  # nothing applied: the image is returned unchanged
    colourful = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(photometric_distortion(colourful), colourful)
    monkeypatch.setattr("random.random", lambda: 0.0)  # everything applied, contrast first
    values = iter([10.0, 1.5, 2.0, 9.0])  # brightness +10, contrast x1.5, saturation x2, hue +9
    monkeypatch.setattr("random.uniform", lambda a, b: next(values))
    # grey has no saturation, so saturation and hue leave it alone: (100 + 10) * 1.5 = 165
    np.testing.assert_array_equal(photometric_distortion(grey), np.full((2, 3, 3), 165, np.uint8))
    values = iter([0.0, 1.0, 1.0, 60.0])  # a hue shift of 60 (of 180, i.e. 120 degrees) turns red into green
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 200
    out = photometric_distortion(red)[0, 0].astype(int)
    assert out[1] > 150 and out[0] < 60 and out[2] < 60
