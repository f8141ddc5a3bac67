"""Benchmark readers over tiny folders in each released layout, lmms-eval's prompts, and scoring."""

from __future__ import annotations

import io
import json
import sys

import pytest
from PIL import Image

from eupe.data.images import ImageDecodeError
from eupe.utils.optional import MissingDependencyError
from eupe.vlm.benchmarks import (
    BenchmarkLayoutError,
    load_benchmark,
    question_scores,
    read_gqa,
    read_mme,
    read_pope,
    read_realworldqa,
    read_scienceqa_img,
    read_textvqa,
    score,
)

SHORT = "\nAnswer the question using a single word or phrase."


def png(path=None, colour=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def write_parquet(path, rows, image=True, row_group_size=None):
    """A parquet file as the hub ships them: the image column is a struct {bytes, path}."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {key: [r[key] for r in rows] for key in rows[0] if key != "image"}
    arrays = {k: pa.array(v) for k, v in columns.items()}
    if image:
        arrays["image"] = pa.array([r["image"] for r in rows],
                                   type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays), path, row_group_size=row_group_size)


def cell(colour=(255, 0, 0)):
    return {"bytes": png(colour=colour), "path": None}


# ---------------------------------------------------------------------------------------------- TextVQA


def test_textvqa_original_release(tmp_path):
    answers = ["nokia"] * 8 + ["nokia phone", "toshiba"]
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_name": "textvqa", "data": [
        {"question_id": 34602, "image_id": "003a8ae2ef43b901", "question": "what is the BRAND of this phone?",
         "answers": answers, "set_name": "val"}]}))
    png(tmp_path / "train_images" / "003a8ae2ef43b901.jpg")
    [item] = read_textvqa(tmp_path)
    # str.capitalize: first letter up, the rest down (lmms-eval's textvqa_doc_to_text)
    assert item.prompt == "What is the brand of this phone?" + SHORT
    assert item.question_id == 34602 and item.answers == tuple(answers)
    assert item.image.load().size == (4, 4)
    assert score("textvqa", [item], ["Nokia"]) == {"accuracy": 1.0}


def test_textvqa_hub_parquet(tmp_path):
    rows = [{"question_id": 1, "image_id": "a", "question": "what?", "answers": ["x"] * 10, "ocr_tokens": ["x"],
             "image": cell()}]
    write_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet", rows)
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows)  # other splits are left alone
    [item] = read_textvqa(tmp_path)
    assert item.prompt == "What?" + SHORT and item.extra["ocr_tokens"] == ["x"]
    assert item.image.load().getpixel((0, 0)) == (255, 0, 0)


def test_a_folder_in_the_wrong_layout_is_one_error_naming_what_was_expected(tmp_path):
    (tmp_path / "questions.json").write_text("[]")
    with pytest.raises(BenchmarkLayoutError, match=r"TextVQA_0\.5\.1_val\.json.*train_images.*validation-\*\.parquet"):
        read_textvqa(tmp_path)
    with pytest.raises(BenchmarkLayoutError, match="does not exist"):
        read_mme(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- POPE


def test_pope_original_json_lines_with_coco_images(tmp_path):
    for split, label in (("random", "yes"), ("popular", "no"), ("adversarial", "no")):
        line = {"question_id": 1, "image": "COCO_val2014_000000000001.jpg", "text": " Is there a dog in the image?",
                "label": label}
        (tmp_path / "coco").mkdir(exist_ok=True)
        (tmp_path / "coco" / f"coco_pope_{split}.json").write_text(json.dumps(line) + "\n")
    png(tmp_path / "val2014" / "COCO_val2014_000000000001.jpg")
    items = read_pope(tmp_path)
    assert [i.extra["split"] for i in items] == ["adversarial", "popular", "random"]
    assert items[0].prompt == "Is there a dog in the image?" + SHORT
    assert [i.answers for i in items] == [("no",), ("no",), ("yes",)]
    assert items[2].image.load().size == (4, 4)
    with pytest.raises(BenchmarkLayoutError, match="val2014"):
        read_pope(tmp_path, image_root=tmp_path / "elsewhere")


def test_files_that_are_not_the_released_records_are_one_layout_error_naming_the_place(tmp_path):
    png(tmp_path / "val2014" / "COCO_val2014_000000000001.jpg")
    good = '{"question_id": 1, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a dog?", "label": "yes"}'
    (tmp_path / "coco_pope_random.json").write_text(good + '\n{oops\n')
    with pytest.raises(BenchmarkLayoutError, match=r"coco_pope_random\.json line 2 is not a JSON record"):
        load_benchmark("pope", tmp_path)
    (tmp_path / "coco_pope_random.json").write_text('{"question_id": 1, "image": "x.jpg"}\n')
    with pytest.raises(BenchmarkLayoutError, match=r"a record has no 'text' field"):
        load_benchmark("pope", tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "testdev_balanced_questions.json").write_text("{not json")
    with pytest.raises(BenchmarkLayoutError, match=r"testdev_balanced_questions\.json is not valid JSON"):
        load_benchmark("gqa", tmp_path)


def test_pope_hub_parquet_default_and_full_configs(tmp_path):
    row = {"id": "0", "question_id": "1", "question": "Is there a cat?", "answer": "yes", "image_source": "x",
           "category": "popular", "image": cell()}
    write_parquet(tmp_path / "default" / "data" / "test-00000-of-00001.parquet", [row])
    [item] = read_pope(tmp_path / "default")
    assert item.extra["split"] == "popular" and item.prompt == "Is there a cat?" + SHORT
    # Full: one file per split; beside the default config's files, only these are read (no question twice)
    write_parquet(tmp_path / "default" / "Full" / "adversarial" / "0000.parquet", [dict(row, answer="no")])
    [item] = read_pope(tmp_path / "default")
    assert item.extra["split"] == "adversarial" and item.answers == ("no",)


def test_pope_scores_per_split(tmp_path):
    rows = [{"id": str(i), "question_id": str(i), "question": "q", "answer": a, "image_source": "x",
             "category": c, "image": cell()} for i, (a, c) in enumerate(
        [("yes", "random"), ("no", "random"), ("yes", "adversarial"), ("no", "adversarial")])]
    write_parquet(tmp_path / "test-00000-of-00001.parquet", rows)
    items = read_pope(tmp_path)
    result = score("pope", items, ["Yes", "no", "yes", "yes"])
    # random: TP 1, TN 1 -> f1 1; adversarial: TP 1, FP 1 -> precision 1/2, recall 1, f1 2/3
    # all: TP 2, FP 1, FN 0 -> precision 2/3, recall 1, f1 0.8; mean of the split f1s: (1 + 2/3) / 2 = 5/6
    assert result["random/f1"] == 1.0 and result["adversarial/f1"] == pytest.approx(2 / 3)
    assert result["all/f1"] == pytest.approx(0.8) and result["mean/f1"] == pytest.approx(5 / 6)
    assert result["all/accuracy"] == 0.75


# ---------------------------------------------------------------------------------------------- GQA


def test_gqa_original_release(tmp_path):
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps({
        "20968379": {"imageId": "n288870", "question": "Is it overcast?", "answer": "no",
                     "fullAnswer": "No, it is clear."}}))
    png(tmp_path / "images" / "n288870.jpg")
    [item] = read_gqa(tmp_path)
    assert (item.question_id, item.prompt, item.answers) == ("20968379", "Is it overcast?" + SHORT, ("no",))
    assert item.image.load().size == (4, 4)
    assert score("gqa", [item], ["No."]) == {"accuracy": 1.0}


def test_gqa_hub_parquet_joins_questions_to_images(tmp_path):
    write_parquet(tmp_path / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet",
                  [{"id": "q1", "imageId": "n2", "question": "Which color?", "answer": "red", "fullAnswer": "Red."}],
                  image=False)
    write_parquet(tmp_path / "testdev_balanced_images" / "testdev-00000-of-00001.parquet",
                  [{"id": "n1", "image": cell((0, 0, 255))}, {"id": "n2", "image": cell((0, 255, 0))}])
    [item] = read_gqa(tmp_path)
    assert item.question_id == "q1" and item.image.load().getpixel((0, 0)) == (0, 255, 0)
    with pytest.raises(BenchmarkLayoutError, match="testdev_balanced_questions.json"):
        read_gqa(tmp_path / "testdev_balanced_images")


# ---------------------------------------------------------------------------------------------- parquet-only


def test_scienceqa_img_prompt_with_and_without_context(tmp_path):
    base = {"question": "Which is a mammal?", "choices": ["frog", "dog", "trout"], "answer": 1, "subject": "bio",
            "image": cell()}
    write_parquet(tmp_path / "ScienceQA-IMG" / "test-00000-of-00001.parquet",
                  [dict(base, hint="Look closely."), dict(base, hint="")])
    write_parquet(tmp_path / "ScienceQA-FULL" / "test-00000-of-00001.parquet", [dict(base, hint="")])
    with_hint, without = read_scienceqa_img(tmp_path)
    options = "\nA. frog\nB. dog\nC. trout\nAnswer with the option's letter from the given choices directly."
    assert with_hint.prompt == "Context: Look closely.\nWhich is a mammal?" + options
    assert without.prompt == "Which is a mammal?" + options
    assert with_hint.answers == ("B",) and with_hint.question_id == 0
    assert score("scienceqa_img", [with_hint, without], ["B", "A. frog"]) == {"accuracy": 0.5}
    (tmp_path / "ScienceQA-IMG" / "test-00000-of-00001.parquet").unlink()
    (tmp_path / "ScienceQA-IMG").rmdir()
    with pytest.raises(BenchmarkLayoutError, match="ScienceQA-FULL"):  # the full set mixes in text-only questions
        read_scienceqa_img(tmp_path)


def test_realworldqa_keeps_the_question_as_shipped(tmp_path):
    question = "How many cars?\nA. 1\nB. 2\nPlease answer directly with only the letter of the correct option."
    write_parquet(tmp_path / "data" / "test-00000-of-00002.parquet",
                  [{"question": question + "  ", "answer": "B", "image": cell()}])
    write_parquet(tmp_path / "data" / "test-00001-of-00002.parquet",
                  [{"question": "Which way is the road going?", "answer": "Downhill", "image": cell()}])
    letter, word = read_realworldqa(tmp_path)
    assert letter.prompt == question and (letter.question_id, word.question_id) == (0, 1)
    assert question_scores("realworldqa", [letter, word], ["The answer is B.", "downhill."]) == [1.0, 1.0]


def test_mme_prompt_and_scores(tmp_path):
    rows = [{"question_id": "code_reasoning/0020.png", "question": "Is the output 3? Please answer yes or no.",
             "answer": a, "category": "code_reasoning", "image": cell()} for a in ("Yes", "No")]
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows, row_group_size=1)
    items = read_mme(tmp_path)
    assert items[0].prompt == "Is the output 3?" + SHORT and items[1].extra == {"category": "code_reasoning"}
    assert items[1].image.row_group == 1 and items[1].image.load().size == (4, 4)
    # one image, both right: acc 100 + acc+ 100 = 200 (cognition); no perception subtask present
    assert score("mme", items, ["Yes", "No"]) == {"perception": 0.0, "cognition": 200.0, "code_reasoning": 200.0}


def test_an_undecodable_embedded_image_raises_the_decode_error_only_when_loaded(tmp_path):
    write_parquet(tmp_path / "test-00000-of-00001.parquet",
                  [{"question_id": "a.png", "question": "q", "answer": "Yes", "category": "OCR",
                    "image": {"bytes": b"garbage", "path": None}}])
    [item] = load_benchmark("mme", tmp_path)
    with pytest.raises(ImageDecodeError, match="not an image"):
        item.image.load()


def test_missing_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "test-00000-of-00001.parquet").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependencyError, match="pip install pyarrow"):
        read_mme(tmp_path)


def test_unknown_benchmark_and_mismatched_predictions_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="expected one of"):
        load_benchmark("vqav2", tmp_path)
    with pytest.raises(ValueError, match="one per item"):
        score("gqa", [], ["x"])
