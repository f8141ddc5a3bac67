"""run_vlm_eval on a tiny POPE folder with a tiny built VLM: scores, strict results, resume, refusals, tables."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from eupe.config import ConfigError, load_config  # noqa: E402
from eupe.vlm import build_vlm, evaluate  # noqa: E402
from eupe.vlm.benchmarks import BenchmarkItem, BenchmarkLayoutError, LazyImage, read_pope, score  # noqa: E402
from eupe.vlm.evaluate import (  # noqa: E402
    ResumeError,
    VLMEvalConfig,
    chat_prompt,
    format_results_table,
    generate_replies,
    headline_interval,
    load_vlm,
    question_score,
    run_vlm_eval,
)

IMAGE_SIZE = 32  # 2 x 2 visual tokens for the patch-16 ViT-T
QUESTIONS = [("Is there a dog in the image?", "no"), ("Is there a cat in the image?", "yes")]


@pytest.fixture(scope="module")
def vlm_dir(tiny_lm_dir, tmp_path_factory) -> Path:
    return build_vlm("eupe_vitt16", None, tiny_lm_dir, tmp_path_factory.mktemp("vlm") / "vlm",
                     eupe_pretrained=False, image_size=IMAGE_SIZE).path


@pytest.fixture(scope="module")
def pope_dir(tmp_path_factory) -> Path:
    """POPE in its repository's layout: three splits of two questions (JSON lines) over COCO val2014 files."""
    root = tmp_path_factory.mktemp("pope")
    (root / "val2014").mkdir()
    for split in ("random", "popular", "adversarial"):
        lines = []
        for qid, (text, label) in enumerate(QUESTIONS):
            image = f"COCO_val2014_{qid:012d}.jpg"
            Image.new("RGB", (12, 8), (200 * qid, 50, 0)).save(root / "val2014" / image)
            lines.append(json.dumps({"question_id": qid, "image": image, "text": text, "label": label}))
        (root / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")
    return root


def _config(vlm_dir: Path, pope_dir: Path, **changes) -> VLMEvalConfig:
    settings = dict(model=str(vlm_dir), benchmark="pope", data_root=str(pope_dir), max_new_tokens=3, batch_size=4,
                    device="cpu", ci_resamples=50)
    return VLMEvalConfig(**{**settings, **changes})


def _predictions(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def _strict_json(path: Path) -> dict:
    def refuse(constant: str):
        raise AssertionError(f"{path} holds {constant}, which strict JSON has not")

    return json.loads(path.read_text(), parse_constant=refuse)


def _replies_spy(monkeypatch, reply: str | None = None) -> list[str]:
    """Records every prompt generated for; with ``reply``, answers it instead of the model."""
    seen: list[str] = []
    real = evaluate.generate_replies

    def spy(model, processor, prompts, images, **kwargs):
        seen.extend(prompts)
        return [reply] * len(prompts) if reply is not None else real(model, processor, prompts, images, **kwargs)

    monkeypatch.setattr(evaluate, "generate_replies", spy)
    return seen


def test_generated_replies_are_scored_end_to_end(vlm_dir, pope_dir, tmp_path):
    results = run_vlm_eval(_config(vlm_dir, pope_dir), tmp_path)
    assert _strict_json(tmp_path / "results.json") == results
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "fingerprint.json").is_file()
    assert {"benchmark", "model", "headline", "metrics", "questions", "benchmark_questions", "complete",
            "generation", "fingerprint"} <= results.keys()
    assert results["questions"] == results["benchmark_questions"] == 6 and results["complete"]
    assert results["generation"] == {"max_new_tokens": 3, "until": []}

    items = read_pope(pope_dir)
    records = _predictions(tmp_path)
    assert [r["index"] for r in records] == list(range(6))
    assert [r["question_id"] for r in records] == [item.question_id for item in items]
    assert [r["answers"] for r in records] == [list(item.answers) for item in items]
    assert records[0]["prompt"] == f"user: <image>\n{items[0].prompt}\nassistant:"
    replies = [r["reply"] for r in records]
    assert results["metrics"] == score("pope", items, replies)
    assert [r["score"] for r in records] == [question_score("pope", i, p) for i, p in zip(items, replies)]
    headline = results["headline"]
    assert headline["metric"] == "mean/f1" and headline["value"] == results["metrics"]["mean/f1"]
    assert headline["low"] <= headline["value"] <= headline["high"] and headline["confidence"] == 0.95


def test_known_replies_give_lmms_eval_metrics(vlm_dir, pope_dir, tmp_path, monkeypatch):
    _replies_spy(monkeypatch, reply=" Yes\n")  # lmms-eval strips and lower-cases POPE replies
    results = run_vlm_eval(_config(vlm_dir, pope_dir), tmp_path)
    for split in ("random", "popular", "adversarial", "all"):
        assert results["metrics"][f"{split}/accuracy"] == 0.5 and results["metrics"][f"{split}/recall"] == 1.0
    assert results["headline"]["value"] == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert [r["score"] for r in _predictions(tmp_path)] == [0.0, 1.0] * 3


@torch.no_grad()
def test_batched_generation_equals_one_by_one_and_stops_at_until(vlm_dir):
    model, processor = load_vlm(vlm_dir, device="cpu")
    assert processor.tokenizer.padding_side == "left"
    prompts = [chat_prompt(processor, "is it a cat?"), chat_prompt(processor, "what is in the image? describe it")]
    images = [[Image.new("RGB", (20, 30), (255, 0, 0))], [Image.new("RGB", (40, 30), (0, 0, 255))]]
    batched = generate_replies(model, processor, prompts, images, max_new_tokens=6)
    assert batched == [generate_replies(model, processor, [p], [i], max_new_tokens=6)[0]
                       for p, i in zip(prompts, images)]
    stop = batched[1][1:3]
    cut = generate_replies(model, processor, prompts[1:], images[1:], max_new_tokens=6, until=[stop])
    assert cut == [batched[1].split(stop)[0]]


def test_limit_then_resume_answers_only_the_rest(vlm_dir, pope_dir, tmp_path, monkeypatch):
    seen = _replies_spy(monkeypatch)
    partial = run_vlm_eval(_config(vlm_dir, pope_dir, limit=2, batch_size=1), tmp_path)
    assert len(seen) == 2 and len(_predictions(tmp_path)) == 2
    assert (partial["questions"], partial["benchmark_questions"], partial["complete"]) == (2, 6, False)
    first = _predictions(tmp_path)

    full = run_vlm_eval(_config(vlm_dir, pope_dir, batch_size=3), tmp_path)  # batch size may change
    assert len(seen) == 6 and full["complete"]
    records = _predictions(tmp_path)
    assert records[:2] == first and [r["index"] for r in records] == list(range(6))

    run_vlm_eval(_config(vlm_dir, pope_dir, seed=1), tmp_path)  # all answered: only rescored
    assert len(seen) == 6


def test_a_line_cut_by_an_interruption_is_answered_again(vlm_dir, pope_dir, tmp_path, monkeypatch):
    seen = _replies_spy(monkeypatch, reply="no")
    run_vlm_eval(_config(vlm_dir, pope_dir, limit=3), tmp_path)
    path = tmp_path / "predictions.jsonl"
    path.write_text(path.read_text()[:-20])  # the last record lost its end
    run_vlm_eval(_config(vlm_dir, pope_dir), tmp_path)
    assert len(seen) == 3 + 4
    assert [r["index"] for r in _predictions(tmp_path)] == list(range(6))


def test_other_settings_are_refused_naming_them(vlm_dir, pope_dir, tmp_path, monkeypatch):
    _replies_spy(monkeypatch, reply="yes")
    run_vlm_eval(_config(vlm_dir, pope_dir, limit=1), tmp_path)
    with pytest.raises(ResumeError, match=r"(?s)max_new_tokens: 3 then, 5 now.*delete predictions.jsonl"):
        run_vlm_eval(_config(vlm_dir, pope_dir, max_new_tokens=5), tmp_path)
    with pytest.raises(ResumeError, match=r"precision: 'fp32' then, 'bf16' now"):
        run_vlm_eval(_config(vlm_dir, pope_dir, amp="bf16"), tmp_path)
    config = vlm_dir / "generation_config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        with pytest.raises(ResumeError, match="model_files: generation_config.json changed"):
            run_vlm_eval(_config(vlm_dir, pope_dir), tmp_path)
    finally:
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_errors_say_what_to_do(vlm_dir, pope_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: give a folder written by eupe.vlm.build_vlm"):
        run_vlm_eval(_config(tmp_path / "nowhere", pope_dir), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"unknown benchmark 'popee': expected one of \['gqa', 'mme', 'pope'"):
        run_vlm_eval(_config(vlm_dir, pope_dir, benchmark="popee"), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"options \['split'\] are not read by the pope reader; it takes "
                                          r"\['image_root'\]"):
        run_vlm_eval(_config(vlm_dir, pope_dir, options={"split": "random"}), tmp_path / "out")
    with pytest.raises(BenchmarkLayoutError, match="coco_pope_"):
        run_vlm_eval(_config(vlm_dir, tmp_path), tmp_path / "out")
    with pytest.raises(ConfigError, match="model= is required"):
        VLMEvalConfig(data_root="x").validate()
    assert not (tmp_path / "out").exists()


def test_mme_end_to_end_and_a_limit_that_splits_an_image(vlm_dir, tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 255, 0)).save(buffer, format="PNG")
    rows = [(f"{i}.png", "Is it green? Please answer yes or no.", answer, "color")
            for i in range(2) for answer in ("Yes", "No")]
    image = pa.array([{"bytes": buffer.getvalue(), "path": None}] * len(rows),
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    columns = dict(zip(("question_id", "question", "answer", "category"), map(list, zip(*rows))))
    pq.write_table(pa.table({**{k: pa.array(v) for k, v in columns.items()}, "image": image}),
                   tmp_path / "test-00000-of-00001.parquet")
    _replies_spy(monkeypatch, reply="Yes")
    results = run_vlm_eval(_config(vlm_dir, tmp_path, benchmark="mme"), tmp_path / "out")
    assert results["metrics"] == {"perception": 50.0, "cognition": 0.0, "color": 50.0}  # acc 50, acc+ 0
    assert results["headline"]["metric"] == "perception" and results["generation"]["max_new_tokens"] == 3
    with pytest.raises(ValueError, match=r"questions \(the first 3: limit=3\) .* cannot be scored"):
        run_vlm_eval(_config(vlm_dir, tmp_path, benchmark="mme", limit=3), tmp_path / "out3")


def test_config_loads_from_overrides():
    config = load_config(VLMEvalConfig, None, ["model=runs/vlm", "benchmark=textvqa", "data_root=/data/textvqa",
                                                "options.split=train", "limit=10", "amp=bf16"])
    config.validate()
    assert config.options == {"split": "train"} and config.limit == 10
    assert config.generation.max_new_tokens == 1024 and config.generation.until == ("ASSISTANT:",)
    with pytest.raises(ConfigError, match="amp"):
        load_config(VLMEvalConfig, None, ["amp=fp16"])


def test_mme_interval_resamples_images_with_both_questions():
    items, replies = [], []
    for image in range(6):
        for answer, reply in (("Yes", "yes"), ("No", "no" if image % 2 else "yes")):
            items.append(BenchmarkItem(f"{image}.png", LazyImage("unused.png"), "q", (answer,),
                                       {"category": "existence" if image < 3 else "count"}))
            replies.append(reply)
    interval = headline_interval("mme", items, replies, resamples=200)
    assert interval.estimate == score("mme", items, replies)["perception"]
    assert interval.low < interval.estimate < interval.high <= 400


def test_results_table_rows_per_model_columns_per_benchmark():
    def result(model, benchmark, metric, value, low, complete=True):
        return {"model": model, "benchmark": benchmark, "complete": complete, "questions": 10,
                "benchmark_questions": 10 if complete else 100,
                "headline": {"metric": metric, "value": value, "low": low, "high": None}}

    table = format_results_table([result("a", "gqa", "accuracy", 0.5, 0.25),
                                  result("a", "mme", "perception", 1234.5, 1200),
                                  result("b", "pope", "mean/f1", 0.8, 0.75, complete=False)])
    assert table.splitlines() == [
        "| model | pope mean/f1 | gqa accuracy | mme perception |",
        "|---|---|---|---|",
        "| a |  | 50.0 [25.0, –] | 1234.5 [1200.0, –] |",
        "| b | 80.0 [75.0, –]<sup>1</sup> |  |  |",
        "",
        "<sup>1</sup> b on pope: the first 10 of 100 questions",
    ]
    with pytest.raises(ValueError, match="two results of a on gqa"):
        format_results_table([result("a", "gqa", "accuracy", 0.5, 0.25)] * 2)
