"""SPair-71k reader, coordinate maps, matching and PCK, on a tiny dataset in the release layout."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eupe.cli import eval_keypoints
from eupe.eval import EvalBackbone
from eupe.eval.keypoints import (
    KeypointDataError,
    KeypointsConfig,
    evaluate_keypoints,
    list_pairs,
    match_points,
    pck_correct,
    read_pair,
    rescale_points,
    run_keypoints,
    sample_features,
    transfer_keypoints,
)
from tests.helpers import tiny_vit


def write_spair(root, pairs, sizes=None, split="test", seed=0):
    """``pairs``: (name, category, src, trg, src_kps, trg_kps, trg_bbox). Writes JPEGImages, PairAnnotation and
    ImageAnnotation as in the SPair-71k release."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {}
    for name, category, src, trg, src_kps, trg_kps, bbox in pairs:
        images = root / "JPEGImages" / category
        images.mkdir(parents=True, exist_ok=True)
        (root / "ImageAnnotation" / category).mkdir(parents=True, exist_ok=True)
        for image in (src, trg):
            if not (images / image).exists():
                w, h = sizes.get(image, (100, 80))
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / image)
                (root / "ImageAnnotation" / category / image.replace(".jpg", ".json")).write_text(
                    json.dumps({"filename": image, "category": category, "image_width": w, "image_height": h}))
        folder = root / "PairAnnotation" / split
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}:{category}.json").write_text(json.dumps({
            "src_imname": src, "trg_imname": trg, "category": category, "src_kps": src_kps, "trg_kps": trg_kps,
            "src_bndbox": [0, 0, 10, 10], "trg_bndbox": bbox}))
    return root


KPS = [[50, 40], [30, 25], [70, 55]]


def test_pck_hand_worked():
    bbox = np.array([10, 20, 110, 70])  # 100 x 50 -> threshold 0.1 * 100 = 10 pixels
    pred = np.array([[0, 0], [5, 5], [20, 20]])
    gt = np.array([[6, 8], [5, 15.1], [20, 20]])  # distances 10 (on the threshold), 10.1, 0
    np.testing.assert_array_equal(pck_correct(pred, gt, bbox), [True, False, True])
    np.testing.assert_array_equal(pck_correct(pred, gt, bbox, alpha=0.05), [False, False, True])


def test_rescale_points_uses_pixel_centres():
    out = rescale_points(np.array([[0.0, 0.0], [99.0, 79.0]]), (100, 80), (512, 512))
    np.testing.assert_allclose(out, [[0.5 * 5.12 - 0.5, 0.5 * 6.4 - 0.5], [99.5 * 5.12 - 0.5, 79.5 * 6.4 - 0.5]])
    np.testing.assert_allclose(rescale_points(out, (512, 512), (100, 80)), [[0, 0], [99, 79]])


def test_sample_features_equals_full_upsampling():
    fmap = torch.randn(5, 4, 6)
    full = F.interpolate(fmap[None], size=(64, 96), mode="bilinear", align_corners=False)[0]
    points = torch.tensor([[0.0, 0.0], [95.0, 63.0], [17.0, 40.0], [50.0, 3.0]])
    expected = torch.stack([full[:, int(y), int(x)] for x, y in points])
    torch.testing.assert_close(sample_features(fmap, points, (96, 64)), expected)


def test_match_points_finds_the_mirrored_pixel():
    source = torch.randn(16, 4, 4)
    target = source.flip(-1)  # bilinear upsampling commutes with the mirror, so pixel (x, y) -> (63 - x, y)
    points = torch.tensor([[10.0, 12.0], [40.0, 30.0], [20.4, 50.6]])
    matched = match_points(source, target, points, (64, 64), chunk_rows=7)
    torch.testing.assert_close(matched, torch.tensor([[53.0, 12.0], [23.0, 30.0], [43.0, 51.0]]))


def test_reader_limits_pairs_per_category_and_filters(tmp_path):
    pairs = [(f"{i:06d}-a-b", cat, "a.jpg", "b.jpg", KPS, KPS, [0, 0, 50, 50])
             for i, cat in enumerate(["cat", "cat", "cat", "dog"])]
    write_spair(tmp_path, pairs)
    found = list_pairs(tmp_path, "test", pairs_per_category=2)
    assert [p.category for p in found] == ["cat", "cat", "dog"]
    assert found[0].source == tmp_path / "JPEGImages" / "cat" / "a.jpg"
    assert found[0].source_kps.shape == (3, 2) and found[0].target_bbox.tolist() == [0, 0, 50, 50]
    assert [p.category for p in list_pairs(tmp_path, "test", None, ["dog"])] == ["dog"]


def test_bad_inputs_are_named(tmp_path):
    write_spair(tmp_path, [("000001-a-b", "cat", "a.jpg", "b.jpg", KPS, KPS, [0, 0, 50, 50])])
    with pytest.raises(FileNotFoundError, match=r"PairAnnotation[/\\]val"):
        list_pairs(tmp_path, "val")
    with pytest.raises(ValueError, match="unknown SPair split"):
        list_pairs(tmp_path, "train")
    (tmp_path / "JPEGImages" / "cat" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"000001-a-b:cat.json references .*b.jpg"):
        list_pairs(tmp_path, "test")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"src_imname": "a.jpg", "trg_imname": "a.jpg", "category": "cat",
                               "src_kps": KPS, "trg_kps": KPS[:2], "trg_bndbox": [0, 0, 5, 5]}))
    with pytest.raises(KeypointDataError, match="bad.json: 3 source but 2 target"):
        read_pair(bad, tmp_path)


def test_identity_pair_maps_keypoints_back_to_original_coordinates(tmp_path):
    # source = target image: every keypoint matches its own (rounded) pixel on the 64x64 grid, which maps back to
    # original coordinates within half a resized pixel; one target keypoint is annotated 20 px off -> PCK 2/3.
    wrong = [KPS[0], KPS[1], [KPS[2][0] + 20, KPS[2][1]]]
    write_spair(tmp_path, [("000001-a-a", "cat", "a.jpg", "a.jpg", KPS, wrong, [0, 0, 100, 80])])
    backbone = tiny_vit().eval().requires_grad_(False)
    cfg = KeypointsConfig(root=str(tmp_path), image_size=64)
    pred = transfer_keypoints(backbone, list_pairs(tmp_path)[0], cfg, torch.device("cpu"))
    resized = np.round(rescale_points(np.array(KPS), (100, 80), (64, 64)))
    np.testing.assert_allclose(pred, rescale_points(resized, (64, 64), (100, 80)), atol=1e-4)
    assert np.abs(pred - np.array(KPS)).max() <= 0.5 * 100 / 64 + 1e-6
    results, rows = evaluate_keypoints(backbone, cfg, torch.device("cpu"))
    assert results["pck"] == pytest.approx(200 / 3) and rows == [
        {"category": "cat", "pck": pytest.approx(200 / 3), "keypoints": 3, "pairs": 1}]


def test_images_shared_by_pairs_are_forwarded_once_with_the_same_results(tmp_path):
    shifted = [[x + 3, y - 2] for x, y in KPS]
    write_spair(tmp_path, [("000001-a-b", "cat", "a.jpg", "b.jpg", KPS, shifted, [0, 0, 100, 80]),
                           ("000002-b-a", "cat", "b.jpg", "a.jpg", KPS, KPS, [0, 0, 100, 80]),
                           ("000003-a-c", "cat", "a.jpg", "c.jpg", KPS, shifted, [0, 0, 100, 80])])
    backbone = tiny_vit().eval().requires_grad_(False)
    cached, _ = evaluate_keypoints(backbone, KeypointsConfig(root=str(tmp_path), image_size=64), torch.device("cpu"))
    uncached, _ = evaluate_keypoints(backbone, KeypointsConfig(root=str(tmp_path), image_size=64, cached_images=0),
                                     torch.device("cpu"))
    assert cached["image_forwards"] == 3 and uncached["image_forwards"] == 6
    assert {k: v for k, v in cached.items() if k != "image_forwards"} == {
        k: v for k, v in uncached.items() if k != "image_forwards"}


def test_image_size_must_fit_the_stride(tmp_path):
    write_spair(tmp_path, [("000001-a-a", "cat", "a.jpg", "a.jpg", KPS, KPS, [0, 0, 100, 80])])
    with pytest.raises(ValueError, match="multiple of the backbone's stride 16"):
        evaluate_keypoints(tiny_vit(), KeypointsConfig(root=str(tmp_path), image_size=50), torch.device("cpu"))


def test_run_and_cli(tmp_path, capsys):
    write_spair(tmp_path / "spair", [("000001-a-b", "cat", "a.jpg", "b.jpg", KPS, KPS, [0, 0, 100, 80]),
                                     ("000002-c-d", "dog", "c.jpg", "d.jpg", KPS[:1], KPS[:1], [0, 0, 100, 80])],
                sizes={"c.jpg": (60, 90)})
    results = run_keypoints(EvalBackbone.of(tiny_vit().eval(), name="tiny"),
                            KeypointsConfig(root=str(tmp_path / "spair"), image_size=32), tmp_path / "out")
    assert results["num_pairs"] == 2 and results["num_keypoints"] == 4 and set(results["per_category"]) == {"cat", "dog"}
    assert results["pck_category_mean"] == pytest.approx(np.mean(list(results["per_category"].values())))
    assert (tmp_path / "out" / "results.csv").read_text().startswith("category,pck,keypoints,pairs")
    parser = argparse.ArgumentParser()
    eval_keypoints.register(parser.add_subparsers())
    args = parser.parse_args(["keypoints", "--model", "eupe_vitt16", "--weights", "random", "--arch", "depth=1",
                              "--data-root", str(tmp_path / "spair"), "--output-dir", str(tmp_path / "cli"),
                              "--image-size", "32", "--pairs-per-category", "1"])
    assert args.func(args) == 0
    assert "keypoints eupe_vitt16: PCK@0.1" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "results.json").read_text())["num_pairs"] == 2


def test_cli_checks_the_dataset_root_before_loading_weights(tmp_path):
    parser = argparse.ArgumentParser()
    eval_keypoints.register(parser.add_subparsers())
    # no --weights: the released checkpoint would be fetched, so the data must be checked first
    args = parser.parse_args(["keypoints", "--output-dir", str(tmp_path), "--data-root", str(tmp_path / "nope")])
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        args.func(args)
    args = parser.parse_args(["keypoints", "--output-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--data-root"):
        args.func(args)
