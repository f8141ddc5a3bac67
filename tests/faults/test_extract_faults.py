"""``eupe extract`` faults: loops in the source tree, stored features keyed by content (replaced checkpoints, seeded
random weights), non-finite features, two runs into one folder, unusable output folders (a file, read-only, full
disk). Each ends in a correct result or one clear error line, never in a traceback or a silent mix."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from PIL import Image

import eupe
import eupe.cli.main as cli_main
from eupe.extract import ExtractConfig, FeatureStore, extract_features
from eupe.extract.extractor import resolve_layers
from tests.helpers import tiny_vit

TINY = ["--model", "eupe_vitt16", "--arch", "depth=1", "--resolution", "32", "--num-workers", "0", "--no-progress"]
RANDOM = [*TINY, "--weights", "random"]


@pytest.fixture
def main(monkeypatch, tmp_path):
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("extract",))
    monkeypatch.setenv("EUPE_CACHE", str(tmp_path / "cache"))
    return cli_main.main


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("a/0.png", "a/1.png", "b/0.png", "b/1.png", "b/2.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(root / name)
    return root


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(eupe.create_model("eupe_vitt16", depth=1).state_dict(), path)
    return path


def test_a_symlink_loop_gives_one_row_per_image_and_lists_the_links(main, tmp_path, images, capsys):
    os.symlink("..", images / "a" / "up")
    os.symlink(".", images / "b" / "self")
    assert main(["extract", str(images), "--output-dir", str(tmp_path / "out"), *RANDOM]) == 0
    store = FeatureStore(tmp_path / "out")
    assert len(store) == 5 and store.labels.tolist() == [0, 0, 1, 1, 1]
    with open(tmp_path / "out" / "skipped.csv") as f:
        assert sorted(Path(r["path"]).name for r in csv.DictReader(f)) == ["self", "up"]


def test_a_replaced_checkpoint_is_never_taken_as_complete(main, tmp_path, images, capsys):
    weights = _checkpoint(tmp_path / "ck.pt", seed=1)
    args = ["extract", str(images), "--output-dir", str(tmp_path / "out"), *TINY, "--weights", str(weights)]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert isinstance(manifest["settings"]["model"], dict)  # an object, not JSON inside a string
    assert manifest["settings"]["model"]["weights"].startswith("sha256:")
    assert main(args) == 0  # same file: complete
    _checkpoint(weights, seed=2)  # other weights at the same path
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.weights differs" in err and err.count("\n") == 1


def test_random_weights_are_seeded_so_a_resumed_run_is_one_model(main, tmp_path, images, capsys):
    out = tmp_path / "out"
    args = ["extract", str(images), "--output-dir", str(out), *RANDOM, "--set", "shard_size=2"]
    assert main(args) == 0
    full = FeatureStore(out).load()
    for shard in ("00001", "00002"):  # a run killed after its first shard
        for f in (out / "shards" / shard).iterdir():
            f.unlink()
        (out / "shards" / shard).rmdir()
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(manifest, complete=False)))
    torch.manual_seed(123)  # whatever the global RNG holds
    assert main(args) == 0
    torch.testing.assert_close(FeatureStore(out).load(), full, rtol=0, atol=0)
    assert FeatureStore(out).identity["seed"] == 0
    assert main([*args, "--seed", "1"]) == 2
    assert "model.seed differs (0 stored, 1 now)" in capsys.readouterr().err


def test_non_finite_features_are_an_error_naming_the_images(tmp_path, images):
    model = tiny_vit(depth=1).eval()
    with torch.no_grad():
        model.norm.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"rows hold NaN or infinite values: .*a/0\.png"):
        extract_features(model, images, tmp_path / "out", ExtractConfig(resolution=32, num_workers=0),
                         progress=False)


def test_a_second_run_into_a_locked_folder_is_refused(main, tmp_path, images, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with FileLock(out / ".lock"):
        assert main(["extract", str(images), "--output-dir", str(out), *RANDOM]) == 2
    err = capsys.readouterr().err
    assert f"another eupe extract is writing to {out} (lock file {out / '.lock'})" in err
    assert not (out / "manifest.json").exists()
    assert main(["extract", str(images), "--output-dir", str(out), *RANDOM]) == 0  # released: it runs


def test_an_output_dir_that_is_a_file_is_one_clear_error(main, tmp_path, images, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["extract", str(images), "--output-dir", str(tmp_path / "file"), *RANDOM]) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err


def test_a_read_only_output_folder_is_one_clear_error(main, tmp_path, images, capsys, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["extract", str(images), "--output-dir", str(tmp_path / "ro" / "out"), *RANDOM]) == 2
    assert "cannot write to" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_chmod_read_only_output_folder_is_one_clear_error(main, tmp_path, images, capsys):
    (tmp_path / "ro").mkdir(mode=0o500)
    assert main(["extract", str(images), "--output-dir", str(tmp_path / "ro"), *RANDOM]) == 2
    assert "cannot write to" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["safetensors", "npy"])
def test_a_full_disk_is_one_clear_error_naming_the_folder(main, tmp_path, images, capsys, monkeypatch, fmt):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        if fmt == "safetensors":  # what safetensors raises on a full disk
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "out"
    assert main(["extract", str(images), "--output-dir", str(out), *RANDOM, "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert f"no space left on device while writing to {out}" in err and err.count("\n") == 1


def test_a_block_given_twice_is_refused():
    with pytest.raises(ValueError, match="Layers -1 and 11 are the same block"):
        resolve_layers([-1, 11], 12)
