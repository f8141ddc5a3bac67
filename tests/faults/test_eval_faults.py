"""Evaluation faults: non-finite features and metrics, ambiguous inputs (a root of splits, a clamped k, repeated
class names, a head or features of another backbone), and unusable output folders. Each ends in a correct,
truthfully labelled result or one clear error, never in a silent wrong number."""

from __future__ import annotations

import errno
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from PIL import Image

import eupe
import eupe.cli.eval as cli_eval
import eupe.cli.main as cli_main
from eupe.eval.classification import evaluate_predictions
from eupe.eval.dense import LinearProbeHead, save_head
from eupe.eval.knn import KnnConfig, evaluate_knn
from eupe.eval.linear import LinearConfig, train_linear_probes
from eupe.eval.results import write_run_outputs
from eupe.eval.segmentation.protocol import SegEvalConfig
from eupe.extract import FeatureStore
from eupe.models import Projectors

TINY = ["--model", "eupe_vitt16", "--arch", "depth=1", "--resolution", "32", "--num-workers", "0"]
RANDOM = [*TINY, "--weights", "random"]


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """``cli(args)``: ``eupe``'s ``main`` with every command this file uses registered."""
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("extract", "eval", "visualize"))
    monkeypatch.setattr(cli_eval, "PROTOCOLS", ("knn", "zeroshot"))
    monkeypatch.setenv("EUPE_CACHE", str(tmp_path / "cache"))
    return cli_main.main


def _tree(root: Path, classes=("ant", "bee", "cow"), per_class=2) -> Path:
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((32, 32, 3), 60 * ci + 20 * i, np.uint8)).save(root / c / f"{i}.png")
    return root


def _checkpoint(path: Path, seed: int, projectors: bool = False) -> Path:
    torch.manual_seed(seed)
    state = eupe.create_model("eupe_vitt16", depth=1).state_dict()
    if projectors:
        heads = Projectors.build(192, 16, {"pe": 8})
        state.update({f"projectors.{k}": v for k, v in heads.state_dict().items()})
    torch.save(state, path)
    return path


def test_non_finite_stored_features_are_an_error_naming_the_image(cli, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    feats = tmp_path / "feats"
    assert cli(["extract", str(_tree(tmp_path / "images")), "--output-dir", str(feats), "--no-progress",
                *RANDOM]) == 0
    shard = feats / "shards" / "00000" / "features.safetensors"
    tensors = load_file(str(shard))
    tensors["cls"][1, 3] = float("nan")
    save_file(tensors, str(shard))
    assert cli(["eval", "knn", "--train", str(feats), "--val", str(feats), "--output-dir", str(tmp_path / "run"),
                *RANDOM]) == 2
    err = capsys.readouterr().err
    assert "features 'cls': 1 of 6 rows hold NaN or infinite values: " in err and "ant/1.png" in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_non_finite_inputs_of_the_protocols_are_errors():
    train, labels = torch.randn(8, 4), torch.arange(8) % 2
    queries = torch.randn(3, 4)
    queries[2, 0] = float("inf")
    with pytest.raises(ValueError, match="k-NN query features: 1 of 3 rows hold NaN or infinite values: row 2"):
        evaluate_knn(train, labels, queries, torch.zeros(3, dtype=torch.long), ["a", "b"], KnnConfig())
    with pytest.raises(ValueError, match="temperature"):
        KnnConfig(temperature=float("nan")).validate()
    with pytest.raises(ValueError, match="learning rates"):
        LinearConfig(learning_rates=[float("nan")]).validate()


def test_results_never_hold_nan(tmp_path):
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or infinity\) at results.knn.top1"):
        write_run_outputs(tmp_path / "run", config=KnnConfig(), results={"knn": {"top1": float("nan")}},
                          summary="x")
    assert not (tmp_path / "run" / "results.json").exists()
    with pytest.raises(ValueError, match="no image to evaluate"):
        evaluate_predictions(torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, dtype=torch.long), ["a"])
    res = evaluate_predictions(torch.tensor([[0]]), torch.tensor([0]), ["a", "b"])
    write_run_outputs(tmp_path / "ok", config=KnnConfig(), results=res.summary(), summary="x", table=res.per_class)
    assert "NaN" not in (tmp_path / "ok" / "results.json").read_text()


def test_every_diverged_linear_head_is_an_error_and_never_chosen():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g) * 100, torch.arange(40) % 4
    sets = {"cls": x}
    cfg = LinearConfig(learning_rates=[1e-3, 1e37], epochs=2, batch_size=8)
    probe = train_linear_probes(sets, y, 4, cfg, sets, y)
    diverged = [row for row in probe.sweep if row.get("diverged")]
    assert [row["learning_rate"] for row in diverged] == [1e37] and diverged[0]["holdout_top1"] is None
    assert probe.learning_rate == 1e-3
    with pytest.raises(ValueError, match="every linear head diverged"):
        train_linear_probes(sets, y, 4, LinearConfig(learning_rates=[1e37], epochs=2, batch_size=8), sets, y)


def test_a_k_above_the_training_set_is_reported_as_the_k_used(cli, tmp_path, capsys):
    data = tmp_path / "data"
    _tree(data / "train")
    _tree(data / "val")
    out = tmp_path / "run"
    assert cli(["eval", "knn", "--data", str(data), "--output-dir", str(out), "--paper-ks", "500", "10",
                "--protocol", "paper", *RANDOM]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["paper"]) == ["k=6"] and results["paper"]["k=6"]["requested_k"] == [500, 10]
    assert "knn: paper k=6:" in capsys.readouterr().out


def test_zeroshot_on_a_root_of_splits_evaluates_val_and_says_so(cli, tmp_path, caplog):
    data = tmp_path / "data"
    _tree(data / "train", per_class=1)
    _tree(data / "val")
    weights = _checkpoint(tmp_path / "ckpt.pt", seed=0, projectors=True)
    np.save(tmp_path / "emb.npy", torch.randn(3, 8).numpy())
    (tmp_path / "names.txt").write_text("cow\nant\nbee\n")
    common = ["eval", "zeroshot", "--class-embeddings", str(tmp_path / "emb.npy"), "--class-names",
              str(tmp_path / "names.txt"), *TINY, "--weights", str(weights)]
    assert cli([*common, "--data", str(data), "--output-dir", str(tmp_path / "root")]) == 0
    assert f"--data {data} holds the split folders train, val, not classes: using {data / 'val'}" in caplog.text
    assert cli([*common, "--data", str(data / "val"), "--output-dir", str(tmp_path / "val")]) == 0
    root, val = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("root", "val"))
    assert root == val and root["num_images"] == 6
    (tmp_path / "dup.txt").write_text("cow\nant\ncow\n")
    with pytest.raises(ValueError, match="'cow' more than once"):
        from eupe.eval.zeroshot import read_class_names

        read_class_names(tmp_path / "dup.txt")


def test_features_of_another_backbone_are_refused(cli, tmp_path, capsys):
    images = _tree(tmp_path / "images")
    a, b = _checkpoint(tmp_path / "a.pt", 1, projectors=True), _checkpoint(tmp_path / "b.pt", 2, projectors=True)
    feats = tmp_path / "feats"
    assert cli(["extract", str(images), "--output-dir", str(feats), "--no-progress", *TINY, "--weights",
                str(a)]) == 0
    # k-NN: train features of one checkpoint, val images extracted with another
    assert cli(["eval", "knn", "--train", str(feats), "--val", str(images), "--output-dir", str(tmp_path / "knn"),
                *TINY, "--weights", str(b)]) == 2
    assert "were not extracted alike: model.weights differs" in capsys.readouterr().err
    # zero-shot: the checkpoint's head on features another checkpoint extracted
    np.save(tmp_path / "emb.npy", torch.randn(3, 8).numpy())
    assert cli(["eval", "zeroshot", "--data", str(feats), "--class-embeddings", str(tmp_path / "emb.npy"),
                "--output-dir", str(tmp_path / "zs"), *TINY, "--weights", str(b)]) == 2
    assert f"The feature folder {feats} belongs to another backbone" in capsys.readouterr().err


def test_a_head_of_another_backbone_is_refused_naming_both(cli, tmp_path, capsys):
    image = _tree(tmp_path / "images") / "ant" / "0.png"
    meta = {"num_classes": 5, "eval": asdict(SegEvalConfig(img_size=32, crop_size=32, stride=21))}
    save_head(tmp_path / "vits.pt", LinearProbeHead(384, 5), task="segmentation",
              meta={**meta, "in_dim": 384, "model": "eupe_vits16"})
    args = ["visualize", "segmentation", str(image), "--output-dir", str(tmp_path / "out"),
            "--model", "eupe_vitt16", "--arch", "depth=1", "--weights", "random"]
    assert cli([*args, "--head", str(tmp_path / "vits.pt")]) == 2
    err = capsys.readouterr().err
    assert "trained on eupe_vits16 (384-d features), but the backbone eupe_vitt16 gives 192-d" in err
    identity = {"model": "eupe_vitt16", "weights": "random", "seed": 7, "arch": ["depth=1"]}
    save_head(tmp_path / "seed7.pt", LinearProbeHead(192, 5), task="segmentation",
              meta={**meta, "in_dim": 192, "model": "eupe_vitt16", "backbone": identity})
    assert cli([*args, "--head", str(tmp_path / "seed7.pt")]) == 2
    assert "belongs to another backbone than the one given (seed differs (7 recorded, 0 now))" in \
        capsys.readouterr().err
    assert cli([*args, "--seed", "7", "--head", str(tmp_path / "seed7.pt")]) == 0


def test_unusable_eval_and_picture_folders_are_one_clear_error(cli, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    _tree(data / "train")
    _tree(data / "val")
    knn = ["eval", "knn", "--data", str(data), *RANDOM]
    (tmp_path / "file").write_text("x")
    assert cli([*knn, "--output-dir", str(tmp_path / "file")]) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err
    assert cli(["eval", "knn", "--data", str(tmp_path / "missing"), *RANDOM, "--output-dir", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()  # a run refused before writing leaves no folder (nor lock file)
    (tmp_path / "busy").mkdir()
    with FileLock(tmp_path / "busy" / ".lock"):
        assert cli([*knn, "--output-dir", str(tmp_path / "busy")]) == 2
    assert "another eupe eval is writing to" in capsys.readouterr().err

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert cli(["visualize", "pca", str(data / "val"), "--output-dir", str(tmp_path / "ro"), "--size", "32",
                "--model", "eupe_vitt16", "--arch", "depth=1", "--weights", "random"]) == 2
    assert f"cannot write to {tmp_path / 'ro'}: Read-only file system" in capsys.readouterr().err


def test_feature_store_reads_the_identity_as_an_object(cli, tmp_path):
    assert cli(["extract", str(_tree(tmp_path / "images")), "--output-dir", str(tmp_path / "f"), "--no-progress",
                *RANDOM, "--seed", "3"]) == 0
    identity = FeatureStore(tmp_path / "f").identity
    assert identity == {"model": "eupe_vitt16", "weights": "random", "seed": 3, "arch": ["depth=1"],
                        "quantize": None, "precision": "fp32"}
