"""``eupe vlm build`` writes a folder the Auto classes reload; ``eupe vlm train --print-config`` resolves a stage."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from eupe.cli.main import main  # noqa: E402
from eupe.vlm import check_vlm_folder  # noqa: E402


def test_build_then_print_a_training_config(tiny_lm_dir, tmp_path, capsys):
    out = tmp_path / "vlm"
    assert main(["vlm", "build", "--eupe-model", "eupe_vitt16", "--eupe-weights", "random", "--language-model",
                 str(tiny_lm_dir), "--image-size", "32", "--output", str(out)]) == 0
    assert "(4 visual tokens per image)" in capsys.readouterr().out
    check_vlm_folder(out)
    assert main(["vlm", "train", "--config", "stage_b", "--set", f"model={out}", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "stage: b" in printed and f"model: {out}" in printed and "lr: 2.0e-05" in printed


def test_build_fits_the_feature_standardization_on_a_folder_of_images(tiny_lm_dir, tmp_path, capsys):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (40, 30), (40 * i, 200 - 30 * i, 90)).save(images / f"{i}.png")
    out = tmp_path / "vlm"
    assert main(["vlm", "build", "--eupe-model", "eupe_vitt16", "--eupe-weights", "random", "--language-model",
                 str(tiny_lm_dir), "--image-size", "32", "--standardize-features", str(images),
                 "--output", str(out)]) == 0
    model, processor = AutoModelForImageTextToText.from_pretrained(out), AutoProcessor.from_pretrained(out)
    tower = model.model.vision_tower.eval()
    assert tower.config.feature_standardization
    pixels = processor.image_processor([Image.open(p) for p in sorted(images.iterdir())],
                                       return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = tower(pixels).last_hidden_state.flatten(0, 1)
    assert tokens.mean(0).abs().max() < 1e-4 and (tokens.std(0) - 1).abs().max() < 1e-4

    (tmp_path / "empty").mkdir()
    assert main(["vlm", "build", "--eupe-model", "eupe_vitt16", "--eupe-weights", "random", "--language-model",
                 str(tiny_lm_dir), "--standardize-features", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "looked for .bmp" in capsys.readouterr().err  # list_images refuses a folder without images

    (images / "broken.png").write_bytes(b"not a png")
    assert main(["vlm", "build", "--eupe-model", "eupe_vitt16", "--eupe-weights", "random", "--language-model",
                 str(tiny_lm_dir), "--image-size", "32", "--standardize-features", str(images),
                 "--output", str(tmp_path / "other")]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_build_refuses_a_non_empty_output(tiny_lm_dir, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["vlm", "build", "--eupe-model", "eupe_vitt16", "--eupe-weights", "random", "--language-model",
                 str(tiny_lm_dir), "--output", str(tmp_path / "taken")]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_eval_writes_results_and_prints_the_table(tiny_lm_dir, tmp_path, capsys):
    import json

    from PIL import Image

    vlm, pope = tmp_path / "vlm", tmp_path / "pope"
    assert main(["vlm", "build", "--eupe-model", "eupe_vitt16", "--eupe-weights", "random", "--language-model",
                 str(tiny_lm_dir), "--image-size", "32", "--output", str(vlm)]) == 0
    (pope / "val2014").mkdir(parents=True)
    for split in ("random", "popular", "adversarial"):
        lines = []
        for qid, label in enumerate(("yes", "no")):
            Image.new("RGB", (12, 8), (120 * qid, 50, 0)).save(pope / "val2014" / f"COCO_val2014_{qid:012d}.jpg")
            lines.append(json.dumps({"question_id": qid, "image": f"COCO_val2014_{qid:012d}.jpg",
                                     "text": "Is there a cat in the image?", "label": label}))
        (pope / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    out = tmp_path / "run"
    assert main(["vlm", "eval", "--model", str(vlm), "--benchmark", "pope", "--data-root", str(pope),
                 "--output-dir", str(out), "--set", "max_new_tokens=2", "--set", "ci_resamples=20"]) == 0
    assert "pope" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["benchmark"] == "pope" and len((out / "predictions.jsonl").read_text().splitlines()) == 6
    assert main(["vlm", "eval", "--model", str(vlm), "--benchmark", "popes", "--data-root", str(pope),
                 "--output-dir", str(tmp_path / "other")]) == 2
    assert "pope" in capsys.readouterr().err


def test_vlm_demo_prints_its_config(capsys):
    assert main(["vlm", "demo", "--print-config", "--set", "stage_b.lr=5e-5"]) == 0
    printed = capsys.readouterr().out
    assert "topics:" in printed and "lr: 5.0e-05" in printed
