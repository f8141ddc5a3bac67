"""End to end: train + evaluate the linear head on a tiny ADE20K, through the library and the CLI module."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml

from eupe.cli import eval_segmentation
from eupe.config import load_config
from eupe.eval import EvalBackbone
from eupe.eval.segmentation import SegmentationConfig, load_segmentation_head, predict_segmentation, run_segmentation
from tests.eval.segmentation.test_data import write_ade20k
from tests.helpers import tiny_vit

TINY = ["train.iterations=3", "train.batch_size=2", "train.img_size=32", "train.crop_size=32",
        "eval.img_size=32", "eval.crop_size=32", "eval.stride=21", "data.num_workers=0", "optim.warmup_iters=1"]


def test_defaults_are_the_papers():
    cfg = SegmentationConfig()
    assert (cfg.train.iterations, cfg.train.batch_size, cfg.train.crop_size, cfg.train.img_size) == (40000, 16, 512, 512)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_iters) == (1e-3, 1e-3, 1500)
    assert (cfg.eval.crop_size, cfg.eval.stride, cfg.data.num_classes) == (512, 341, 150)
    assert cfg.train.scale_range == [0.5, 2.0] and cfg.train.flip_prob == 0.5


def test_run_segmentation_writes_outputs(tmp_path):
    root = write_ade20k(tmp_path / "ade", sizes=((40, 56), (48, 40), (32, 32)))
    cfg = load_config(SegmentationConfig, None, [f"data.root={root}", *TINY])
    backbone = tiny_vit().eval().requires_grad_(False)
    out = tmp_path / "out"
    results = run_segmentation(EvalBackbone.of(backbone, name="tiny"), cfg, out)
    assert 0.0 <= results["mIoU"] <= 100.0 and results["num_images"] == 3
    saved = json.loads((out / "results.json").read_text())
    assert saved["mIoU"] == pytest.approx(results["mIoU"]) and len(saved["IoU"]) == 150
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["iterations"] == 3
    assert (out / "results.csv").read_text().splitlines()[0] == "class,IoU,Acc"
    head, meta = load_segmentation_head(out / "head.pt")
    assert meta["num_classes"] == 150 and meta["model"] == "tiny"
    logits = predict_segmentation(backbone, head, torch.randn(1, 3, 32, 48), cfg.eval)
    assert logits.shape == (1, 150, 32, 48)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--data-root"):
        run_segmentation(EvalBackbone.of(tiny_vit()), SegmentationConfig(), tmp_path)


def _cli(argv):
    parser = argparse.ArgumentParser()
    eval_segmentation.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_end_to_end(tmp_path, capsys):
    root = write_ade20k(tmp_path / "ade")
    sets = [x for item in TINY for x in ("--set", item)]
    code = _cli(["segmentation", "--model", "eupe_vitt16", "--weights", "random", "--data-root", str(root),
                 "--output-dir", str(tmp_path / "out"), "--iterations", "2", *sets])
    assert code == 0
    assert "segmentation eupe_vitt16: mIoU" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["train"]["iterations"] == 3  # --set wins
    assert (tmp_path / "out" / "head.pt").is_file()


def test_main_reports_a_missing_split_in_one_line(tmp_path, capsys):
    from eupe.cli import main as cli_main

    write_ade20k(tmp_path / "ade", splits=("validation",))
    code = cli_main.main(["eval", "segmentation", "--model", "eupe_vitt16", "--weights", "random",
                          "--data-root", str(tmp_path / "ade"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "training" in err and "does not exist" in err
