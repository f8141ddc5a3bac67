"""Cases found by the adversarial campaign over the CLI (README, Reliability): each was a traceback for a user error
or a silent wrong result, and is now one clear error line (or a correct result)."""

from __future__ import annotations

import pytest

import eupe
import eupe.cli.main as cli_main


@pytest.fixture
def main(monkeypatch, tmp_path):
    monkeypatch.setenv("EUPE_CACHE", str(tmp_path / "cache"))
    return cli_main.main


def one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    line = err.splitlines()[-1]
    assert ": error: " in line and all(n in line for n in needles), err
    return line


def test_an_architecture_typo_is_one_line_listing_the_valid_arguments(main, tmp_path, capsys):
    with pytest.raises(ValueError, match="eupe_vitt16 has no architecture argument deepth; valid ones: depth, "):
        eupe.create_model("eupe_vitt16", deepth=1)
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (32, 32)).save(image)
    assert main(["extract", str(image), "--output-dir", str(tmp_path / "out"), "--model", "eupe_vitt16",
                 "--weights", "random", "--arch", "deepth=1", "--no-progress"]) == 2
    one_error_line(capsys, "deepth", "depth")


def test_unreadable_class_embeddings_are_one_error_naming_the_file(tmp_path):
    import numpy as np

    from eupe.eval.zeroshot import load_class_embeddings

    garbage, pickled = tmp_path / "garbage.npy", tmp_path / "objects.npy"
    garbage.write_text("not an array")
    np.save(pickled, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    for path in (garbage, pickled, tmp_path / "bad.safetensors"):
        with pytest.raises(ValueError, match=f"Cannot read class embeddings {path} .*pickled objects are refused"):
            load_class_embeddings(path)


def test_a_zero_top_k_in_zero_shot_is_refused_before_any_work(tmp_path):
    from eupe.eval.zeroshot import ZeroShotRunConfig, run_zeroshot

    config = ZeroShotRunConfig(data=str(tmp_path), class_embeddings=str(tmp_path / "e.npy"), topk=[0, 5])
    with pytest.raises(ValueError, match=r"eval zeroshot: invalid setting\(s\) topk=\[0, 5\]"):
        run_zeroshot(None, config, tmp_path / "out")


def test_spair_keypoints_outside_their_image_are_refused(tmp_path):
    from eupe.eval.keypoints.data import KeypointDataError, list_pairs
    from tests.eval.keypoints.test_keypoints import KPS, write_spair

    write_spair(tmp_path, [("p0", "cat", "a.jpg", "b.jpg", [[500, 40], *KPS[1:]], KPS, [0, 0, 100, 80])])
    with pytest.raises(KeypointDataError, match=r"p0:cat.json: src_kps: 1 point\(s\) outside the 100x80 image a.jpg "
                                                r"\(first: \[500.0, 40.0\]\)"):
        list_pairs(tmp_path)


@pytest.mark.parametrize("protocol", ["knn", "linear"])
def test_a_single_class_training_set_is_refused(main, tmp_path, capsys, protocol):
    from PIL import Image

    for split, n in (("train", 3), ("val", 2)):
        (tmp_path / "data" / split / "cat").mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / "data" / split / "cat" / f"{i}.png")
    assert main(["eval", protocol, "--data", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"),
                 "--model", "eupe_vitt16", "--arch", "depth=1", "--weights", "random", "--resolution", "32",
                 "--num-workers", "0"]) == 2
    one_error_line(capsys, "has only the class 'cat'", "at least two classes")
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_head_file_with_pickled_code_or_garbage_is_one_error(tmp_path):
    import os

    import torch

    from eupe.eval.dense.head_file import load_head_file

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    evil, garbage = tmp_path / "evil.pt", tmp_path / "garbage.pt"
    torch.save({"task": "segmentation", "meta": {}, "state_dict": {}, "x": Evil()}, evil)
    garbage.write_text("hello")
    with pytest.raises(ValueError, match=f"{evil} is not a plain head checkpoint: it needs pickled code"):
        load_head_file(evil, "segmentation")
    with pytest.raises(ValueError, match=f"Cannot read the head checkpoint {garbage} .*written by `eupe eval depth`"):
        load_head_file(garbage, "depth")
    assert not (tmp_path / "ran").exists()


def test_a_zero_executorch_batch_is_refused_before_exporting(tmp_path):
    from eupe.export import ExportError, export_model

    with pytest.raises(ExportError, match="--batch must be a positive number of images, got 0"):
        export_model(eupe.create_model("eupe_vitt16", depth=1), "executorch", tmp_path / "m.pte", batch=0)
    assert not (tmp_path / "m.pte").exists()


@pytest.mark.parametrize("fmt, name", [("torchscript", "m.ts"), ("hf", "hf")])
def test_an_export_that_cannot_fit_on_the_disk_is_refused_before_writing(tmp_path, monkeypatch, fmt, name):
    import shutil
    from collections import namedtuple

    from eupe.export import export_model
    from eupe.utils.outputs import OutputDirError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 4096, 4096))
    with pytest.raises(OutputDirError, match="no space left on device for the export to .*: the weights alone need "
                                             r"[0-9.]+ MiB and 0.0 MiB are free"):
        export_model(eupe.create_model("eupe_vitt16", depth=1), fmt, tmp_path / "out" / name, verify=False)
    assert not (tmp_path / "out").exists()
