"""``eupe distill`` / ``eupe demo`` through the console entry point (commands registered here as the lead will)."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import eupe.cli.main as cli
from eupe.distill.checkpoint import export_student
from eupe.distill.monitor import read_metrics
from tests.distill.helpers import tiny_backbone


@pytest.fixture(autouse=True)
def commands(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("distill", "demo"))  # only the commands under test


def test_print_config_with_overrides(capsys):
    assert cli.main(["distill", "--config", "stage2", "--set", "train.lr=1e-4", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["lr"] == 1e-4
    assert cli.main(["demo", "--print-config", "--set", "stage1.train.iterations=7"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["stage1"]["train"]["iterations"] == 7


def test_unknown_key_is_one_line_error(capsys):
    assert cli.main(["distill", "--config", "stage2", "--set", "train.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "lrr" in err


def write_run_config(tmp_path):
    images = tmp_path / "images" / "cls"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (images / "broken.png").write_bytes(b"not a png")
    teacher = tiny_backbone(3, dim=16)
    export_student(tmp_path / "teacher.pt", {f"backbone.{k}": v for k, v in teacher.state_dict().items()}, {})
    arch = {"embed_dim": 16, "depth": 1, "num_heads": 2, "layerscale_init": 1.0}
    cfg = {
        "student": {"model": "eupe_vitt16", "arch": {"embed_dim": 32, "depth": 1, "num_heads": 2},
                    "head_hidden_dim": 32},
        "teachers": [{"kind": "eupe", "name": "proxy", "model": "eupe_vitt16", "weights": str(tmp_path / "teacher.pt"),
                      "input_size": 32, "model_kwargs": arch}],
        "data": {"source": str(tmp_path / "images"), "student_scales": [32], "augment": {"size": 32}},
        "train": {"iterations": 3, "global_batch_size": 4, "norm_iterations": 2, "device": "cpu", "amp": "fp32"},
        "output": {"dir": str(tmp_path / "run"), "progress": False, "tensorboard": False, "checkpoint_every": 2},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "run.yaml"


def test_empty_source_and_missing_teachers_are_one_clear_error(tmp_path, capsys):
    config = write_run_config(tmp_path)
    (tmp_path / "empty").mkdir()
    assert cli.main(["distill", "--config", str(config), "--set", f"data.source={tmp_path / 'empty'}"]) == 2
    assert "empty" in capsys.readouterr().err
    assert cli.main(["distill", "--config", str(config), "--set", "teachers=[]"]) == 2
    assert "teachers" in capsys.readouterr().err


def test_distill_end_to_end_on_an_image_folder(tmp_path, capsys):
    write_run_config(tmp_path)
    assert cli.main(["distill", "--config", str(tmp_path / "run.yaml")]) == 0
    assert "skipped images: " in capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["skipped_images"] >= 1  # the broken file was skipped, counted
    assert len(summary["skipped_examples"]) == summary["skipped_images"]
    assert all("broken" in reason for reason in summary["skipped_examples"])  # each names the file
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == 3
    sd = torch.load(tmp_path / "run" / "student.pt", weights_only=True)
    assert sd["projectors.proxy.cls.3.weight"].shape == (16, 32)
