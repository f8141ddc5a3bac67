"""End to end: train + evaluate the depth head on a tiny NYU (BTS layout), through the library and the CLI module."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

from eupe.cli import eval_depth
from eupe.config import load_config
from eupe.eval import EvalBackbone
from eupe.eval.dense import extract_patch_features
from eupe.eval.depth import DepthConfig, DepthHead, load_depth_head, predict_depth, run_depth
from eupe.eval.depth.metrics import METRIC_NAMES
from tests.eval.depth.test_data import write_nyu
from tests.helpers import tiny_vit

TINY = ["train.iterations=3", "train.batch_size=2", "train.crop_size=[32,48]", "train.border_crop=null",
        "data.num_workers=0", "optim.warmup_iters=1", "head.n_bins=16"]


def test_defaults_are_the_papers():
    cfg = DepthConfig()
    assert (cfg.train.iterations, cfg.train.batch_size, cfg.train.crop_size) == (38400, 16, [416, 544])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_iters, cfg.optim.grad_clip) == (3e-4, 1e-3, 12800, 35)
    assert (cfg.head.n_bins, cfg.head.min_depth, cfg.head.max_depth, cfg.head.bin_strategy) == (256, 0.001, 10.0, "linear")
    assert cfg.train.brightness == [0.75, 1.25] and cfg.eval.eigen_crop and cfg.eval.flip_tta


def test_run_depth_writes_outputs(tmp_path):
    root = write_nyu(tmp_path / "nyu")
    cfg = load_config(DepthConfig, None, [f"data.root={root}", *TINY])
    backbone = tiny_vit().eval().requires_grad_(False)
    results = run_depth(EvalBackbone.of(backbone, name="tiny"), cfg, tmp_path / "out")
    assert set(METRIC_NAMES) <= set(results) and results["num_images"] == 2
    assert results["rmse"] > 0 and 0 <= results["delta1"] <= 1
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["rmse"] == pytest.approx(results["rmse"])
    head, meta = load_depth_head(tmp_path / "out" / "head.pt")
    assert meta["head"]["n_bins"] == 16 and head.centres.shape == (16,)


def test_flip_tta_averages_the_mirrored_prediction():
    backbone = tiny_vit().eval().requires_grad_(False)
    depth_head = DepthHead(64, 16).eval()
    torch.nn.init.normal_(depth_head.conv.weight)
    x = torch.randn(1, 3, 32, 48)
    plain = predict_depth(backbone, depth_head, x, flip_tta=False)
    mirrored = predict_depth(backbone, depth_head, x.flip(-1), flip_tta=False).flip(-1)
    torch.testing.assert_close(predict_depth(backbone, depth_head, x, flip_tta=True), (plain + mirrored) / 2)
    assert plain.shape == (1, 1, 32, 48)


def test_eval_upsamples_depth_not_bins():
    backbone = tiny_vit().eval().requires_grad_(False)
    head = DepthHead(64, 16).eval()
    x = torch.randn(1, 3, 32, 32)
    grid_depth = head(extract_patch_features(backbone, x))
    expected = F.interpolate(grid_depth, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(predict_depth(backbone, head, x, flip_tta=False), expected)


def test_cli_end_to_end(tmp_path, capsys):
    root = write_nyu(tmp_path / "nyu")
    parser = argparse.ArgumentParser()
    eval_depth.register(parser.add_subparsers())
    sets = [x for item in TINY for x in ("--set", item)]
    args = parser.parse_args(["depth", "--model", "eupe_vitt16", "--weights", "random", "--arch", "depth=1",
                              "--data-root", str(root), "--output-dir", str(tmp_path / "out"), "--lr", "1e-3", *sets])
    assert args.func(args) == 0
    assert "depth eupe_vitt16: RMSE" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["model"] == "eupe_vitt16" and saved["num_images"] == 2
    assert "lr: 0.001" in (tmp_path / "out" / "config.yaml").read_text()
