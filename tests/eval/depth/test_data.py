"""NYUv2 (BTS layout) reader and transforms, on a tiny dataset written in that layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.eval.depth.data import DepthDataError, DepthDataset, read_depth, read_split_list
from eupe.eval.depth.transforms import TrainAugment, eval_transform


def write_nyu(root, size=(48, 64), n_train=3, n_test=2, seed=0):
    """BTS layout: ``sync/<scene>/rgb_*.jpg`` + ``sync_depth_*.png`` (uint16 mm) and ``official_splits/test/``,
    list files ``nyudepthv2_{train,test}_files_with_gt.txt`` with ``rgb depth focal`` lines."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, folder, n, lead in (("train", "sync", n_train, "/"), ("test", "official_splits/test", n_test, "")):
        lines = []
        for i in range(n):
            scene = root / folder / f"kitchen_{i % 2:04d}"
            scene.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(scene / f"rgb_{i:05d}.jpg")
            depth_mm = rng.integers(500, 9000, (h, w)).astype(np.uint16)
            depth_mm[0, :4] = 0  # missing measurements
            Image.fromarray(depth_mm).save(scene / f"sync_depth_{i:05d}.png")
            rel = f"{lead}kitchen_{i % 2:04d}"
            lines.append(f"{rel}/rgb_{i:05d}.jpg {rel}/sync_depth_{i:05d}.png 518.8579")
        (root / f"nyudepthv2_{split}_files_with_gt.txt").write_text("\n".join(lines) + "\n")
    return root


def test_reads_bts_layout_and_depth_in_metres(tmp_path):
    write_nyu(tmp_path)
    samples = read_split_list(tmp_path / "nyudepthv2_train_files_with_gt.txt", tmp_path / "sync")
    assert len(samples) == 3 and samples[0].focal == pytest.approx(518.8579)
    assert samples[1].image == tmp_path / "sync" / "kitchen_0001" / "rgb_00001.jpg"
    raw = np.asarray(Image.open(samples[0].depth)).astype(np.float64)
    depth = read_depth(samples[0].depth)
    assert depth.dtype == np.float32 and depth[0, 0] == 0
    np.testing.assert_allclose(depth, raw / 1000, rtol=1e-6)
    test = read_split_list(tmp_path / "nyudepthv2_test_files_with_gt.txt", tmp_path / "official_splits" / "test")
    image, depth = DepthDataset(test, lambda i, d: (i, d)).load(1)
    assert image.size == (64, 48) and depth.shape == (48, 64)


def test_lines_without_ground_truth_are_skipped(tmp_path):
    write_nyu(tmp_path)
    list_file = tmp_path / "nyudepthv2_train_files_with_gt.txt"
    list_file.write_text(list_file.read_text() + "/kitchen_0000/rgb_00009.jpg None 518.8579\n")
    assert len(read_split_list(list_file, tmp_path / "sync")) == 3


def test_missing_files_are_named(tmp_path):
    write_nyu(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_split_list(tmp_path / "nope.txt", tmp_path / "sync")
    with pytest.raises(FileNotFoundError, match="data folder .*missing"):
        read_split_list(tmp_path / "nyudepthv2_train_files_with_gt.txt", tmp_path / "missing")
    (tmp_path / "sync" / "kitchen_0001" / "rgb_00001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"files_with_gt.txt:2 references .*rgb_00001.jpg"):
        read_split_list(tmp_path / "nyudepthv2_train_files_with_gt.txt", tmp_path / "sync")


def test_malformed_line(tmp_path):
    write_nyu(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("just_one_field.jpg\n")
    with pytest.raises(DepthDataError, match=r"bad.txt:1"):
        read_split_list(bad, tmp_path / "sync")


def test_depth_map_of_wrong_size_names_the_file(tmp_path):
    write_nyu(tmp_path)
    target = tmp_path / "sync" / "kitchen_0000" / "sync_depth_00000.png"
    Image.fromarray(np.ones((10, 12), np.uint16)).save(target)
    samples = read_split_list(tmp_path / "nyudepthv2_train_files_with_gt.txt", tmp_path / "sync")
    with pytest.raises(DepthDataError, match=r"sync_depth_00000.png is 12x10 but its image .* is 64x48"):
        DepthDataset(samples, eval_transform)[0]


def test_rgb_depth_map_is_rejected(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "d.png")
    with pytest.raises(DepthDataError, match="d.png has mode RGB"):
        read_depth(tmp_path / "d.png")


def test_train_augment_crops_flips_and_keeps_alignment():
    array = np.zeros((20, 30, 3), np.uint8)
    array[..., 0] = np.arange(30, dtype=np.uint8)[None] * 8  # red encodes the column
    depth = np.tile(np.arange(30, dtype=np.float32), (20, 1))
    augment = TrainAugment(crop_size=(8, 10), border_crop=(2, 1, 28, 19), rotation=0.0, flip_prob=1.0, color_prob=0.0)
    image, target = augment(Image.fromarray(array), depth)
    assert image.shape == (3, 8, 10) and target.shape == (1, 8, 10)
    cols = target[0, 0].long()
    assert (cols[:-1] - cols[1:] == 1).all() and cols.min() >= 2 and cols.max() < 28  # flipped, inside the border
    red = image[0, 0] * 0.229 + 0.485
    torch.testing.assert_close(red, cols.float() * 8 / 255, atol=1e-5, rtol=0)


def test_border_crop_that_does_not_fit_is_a_clear_error():
    with pytest.raises(DepthDataError, match="border_crop=null"):
        TrainAugment(border_crop=(43, 45, 608, 472))(Image.new("RGB", (64, 48)), np.zeros((48, 64), np.float32))


def test_colour_augmentation_hand_worked():
    augment = TrainAugment(crop_size=(4, 4), border_crop=None, rotation=0.0, flip_prob=0.0, color_prob=1.0,
                           brightness=(0.5, 0.5), gamma=(2.0, 2.0), color=(1.0, 1.0))
    image, _ = augment(Image.new("RGB", (4, 4), (200, 100, 50)), np.ones((4, 4), np.float32))
    red = image[0, 0, 0] * 0.229 + 0.485
    expected = round((200 / 255) ** 2 * 0.5 * 255) / 255  # gamma, then brightness, then 8-bit rounding
    torch.testing.assert_close(red, torch.tensor(expected), atol=1e-5, rtol=0)


def test_rotation_marks_uncovered_depth_invalid(monkeypatch):
    monkeypatch.setattr("random.random", lambda: 0.0)  # rotate (and flip, colour: not under test here)
    monkeypatch.setattr("random.uniform", lambda a, b: b)
    augment = TrainAugment(crop_size=(40, 40), border_crop=None, rotation=10.0, color_prob=0.0)
    _, depth = augment(Image.new("RGB", (40, 40), (255, 255, 255)), np.full((40, 40), 3.0, np.float32))
    assert depth[0, 0, 0] == 0 and depth[0, 20, 20] == 3.0  # corners rotated out, centre kept
    assert set(depth.unique().tolist()) == {0.0, 3.0}  # nearest resampling: no blended depths
