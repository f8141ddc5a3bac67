"""The lmms-eval plugin: request handling on faked Instances (no lmms-eval needed), then the real base class and
registry where lmms-eval is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from eupe.vlm import build_vlm, evaluate  # noqa: E402
from eupe.vlm import lmms_eval_model as plugin  # noqa: E402
from eupe.vlm.evaluate import chat_prompt, generate_replies, load_vlm  # noqa: E402
from tests.vlm.conftest import import_lmms_eval  # noqa: E402

IMAGES = [Image.new("RGB", (12, 8), (255, 0, 0)), Image.new("RGB", (8, 12), (0, 0, 255))]
DOCS = {"pope": {"test": [{"image": IMAGES[0]}, {"image": IMAGES[1]}]}}
SHORT = {"max_new_tokens": 3, "temperature": 0, "do_sample": False}


def doc_to_visual(doc):
    return [doc["image"]]


def _args(context: str, gen_kwargs: dict, doc_id: int) -> tuple:
    """lmms-eval's generate_until Instance.args: (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
    return context, gen_kwargs, doc_to_visual, doc_id, "pope", "test"


@pytest.fixture(scope="module")
def vlm(tiny_lm_dir, tmp_path_factory):
    path = build_vlm("eupe_vitt16", None, tiny_lm_dir, tmp_path_factory.mktemp("vlm") / "vlm",
                     eupe_pretrained=False, image_size=32).path
    return (path, *load_vlm(path, device="cpu"))


def _spy(monkeypatch, generate: bool = True) -> list[dict]:
    """Records every generate_replies call of the plugin (its prompts and settings); returns the model's replies, or
    empty ones without generating."""
    seen = []

    def spy(model, processor, prompts, images, **kwargs):
        seen.append({"prompts": list(prompts), "images": images, **kwargs})
        return generate_replies(model, processor, prompts, images, **kwargs) if generate else [""] * len(prompts)

    monkeypatch.setattr(evaluate, "generate_replies", spy)
    return seen


def test_requests_are_batched_by_settings_and_answered_in_order(vlm, monkeypatch):
    _, model, processor = vlm
    calls = _spy(monkeypatch)
    long = {"max_new_tokens": 5, "until": ["\n"]}
    requests = [SimpleNamespace(args=_args(f"question {i}?", SHORT if i % 2 else long, i % 2)) for i in range(4)]
    seen = []
    replies = plugin.generate_for_requests(model, processor, requests, DOCS, batch_size=2,
                                           on_reply=lambda request, reply: seen.append((request, reply)))
    assert [c["max_new_tokens"] for c in calls] == [5, 3] and [len(c["prompts"]) for c in calls] == [2, 2]
    assert calls[0]["until"] == ("\n",) and calls[1]["until"] == ()
    for i, reply in enumerate(replies):
        expected = generate_replies(model, processor, [chat_prompt(processor, f"question {i}?")], [[IMAGES[i % 2]]],
                                    max_new_tokens=3 if i % 2 else 5, until=() if i % 2 else ("\n",))
        assert reply == expected[0]
    assert sorted((r.args[0], reply) for r, reply in seen) == sorted((r.args[0], x) for r, x in zip(requests, replies))


def test_gen_kwargs_and_image_placement(vlm, monkeypatch):
    _, model, processor = vlm
    calls = _spy(monkeypatch, generate=False)
    sampled = {"temperature": 0.7, "top_p": 0.9, "until": "ASSISTANT:", "image_aspect_ratio": "original"}
    requests = [SimpleNamespace(args=_args("<image>\nWhat is this?", sampled, 0)),
                SimpleNamespace(args=_args("What is this?", {}, 1))]
    plugin.generate_for_requests(model, processor, requests, DOCS)
    first, second = calls
    assert first["do_sample"] and (first["temperature"], first["top_p"], first["until"]) == (0.7, 0.9, ("ASSISTANT:",))
    assert first["prompts"] == ["user: <image>\nWhat is this?\nassistant:"]  # the context's own image token
    assert second["max_new_tokens"] == 1024 and "do_sample" not in second  # lmms-eval's default, greedy
    assert second["prompts"] == [chat_prompt(processor, "What is this?")] and second["images"] == [[IMAGES[1]]]


def test_non_image_visuals_are_refused(vlm):
    _, model, processor = vlm
    request = SimpleNamespace(args=("describe the video", {}, lambda doc: ["clip.mp4"], 0, "videomme", "test"))
    with pytest.raises(ValueError, match="task 'videomme' gives str visuals; eupe_llava reads images only"):
        plugin.generate_for_requests(model, processor, [request], {"videomme": {"test": [{}]}})


def test_module_imports_without_lmms_eval():
    assert plugin.MODEL_ID == "eupe_llava" and plugin.CLASS_PATH == "eupe.vlm.lmms_eval_model.EupeLlava"
    with pytest.raises(AttributeError, match="no attribute 'Other'"):
        plugin.Other  # noqa: B018


def test_the_lmms_eval_model_class(vlm):
    import_lmms_eval("lmms_eval.api.model")
    from lmms_eval.api.instance import Instance
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    registry = ModelRegistryV2()
    registry.register_manifest(plugin.lmms_eval_manifest())
    cls = registry.get_model_class("eupe_llava")  # checks the lmms subclass and its is_simple
    assert cls is plugin.EupeLlava and issubclass(cls, lmms)

    path, model, processor = vlm
    lm = cls.create_from_arg_string(f"pretrained={path},batch_size=2", {"device": "cpu"})
    lm.task_dict = DOCS
    requests = [Instance("generate_until", _args(f"question {i}?", SHORT, i), idx=0,
                         metadata={"task": "pope", "doc_id": i, "repeats": 1}) for i in range(2)]
    expected = plugin.generate_for_requests(model, processor, requests, DOCS, batch_size=2)
    assert lm.generate_until(requests) == expected
    with pytest.raises(NotImplementedError, match="generate_until only"):
        lm.loglikelihood(requests)
    with pytest.raises(TypeError, match=r"unknown model_args \['dtype'\]"):
        cls(pretrained=str(path), dtype="bfloat16")
    with pytest.raises(ValueError, match="integer batch_size"):
        cls(pretrained=str(path), batch_size="auto")
    with pytest.raises(ValueError, match="amp='fp16' is not one of"):
        cls(pretrained=str(path), amp="fp16")



def test_a_real_lmms_eval_run_gives_the_replies_and_scores_of_eupe_vlm_eval(vlm, tmp_path):
    """``lmms-eval --model eupe_llava`` on lmms-eval's own POPE task (its YAML and utils, only the data read from a
    local parquet file instead of the hub) answers every question as ``eupe vlm eval`` does, and lmms-eval's POPE
    metrics equal ours."""
    import_lmms_eval("lmms_eval.api.model")
    from importlib.resources import files

    import datasets  # lmms-eval reads every task with it (the lmms-eval extra)

    from eupe.vlm.evaluate import VLMEvalConfig, run_vlm_eval

    path = vlm[0]
    colours = [(255, 0, 0), (0, 0, 255), (0, 160, 0)]
    rows = [{"question_id": str(i), "question": f"Is there a {obj} in the image?", "answer": answer,
             "image_source": f"picture{i % 3}", "category": split,
             "image": Image.new("RGB", (20, 14), colours[i % 3])}
            for i, (obj, answer, split) in enumerate([("cat", "yes", "random"), ("dog", "no", "random"),
                                                       ("mat", "yes", "popular"), ("park", "no", "adversarial")])]
    features = datasets.Features({key: datasets.Value("string") for key in rows[0] if key != "image"}
                                 | {"image": datasets.Image()})
    data = tmp_path / "pope"
    data.mkdir()
    parquet = data / "test-00000-of-00001.parquet"
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(parquet))

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shipped = (files("lmms_eval.tasks") / "pope" / "pope.yaml").read_text()
    head, rest = shipped.split('task: "pope"', 1)
    assert head.startswith("dataset_path:")  # the only lines replaced: where the data comes from, the task name
    (tasks / "pope_local.yaml").write_text(
        f"dataset_path: parquet\ndataset_kwargs:\n  data_files:\n    test: {parquet}\ntask: pope_local{rest}")
    (tasks / "utils.py").write_text("from lmms_eval.tasks.pope.utils import *  # noqa: F401,F403\n")

    out = tmp_path / "lmms_out"
    run = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "eupe_llava", "--model_args",
                          f"pretrained={path},device=cpu,amp=fp32", "--tasks", "pope_local", "--include_path",
                          str(tasks), "--batch_size", "2", "--output_path", str(out), "--log_samples"],
                         capture_output=True, text=True, env=dict(os.environ, HF_DATASETS_OFFLINE="1",
                                                                 HF_HUB_OFFLINE="1"), timeout=600)
    log = run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 0, log
    results_files = list(out.rglob("*_results.json"))  # lmms-eval exits 0 after an error too: no results then
    assert len(results_files) == 1, log
    (results_file,) = results_files
    (samples_file,) = out.rglob("*_samples_pope_local.jsonl")
    lmms_metrics = json.loads(results_file.read_text())["results"]["pope_local"]
    lmms_replies = {s["doc_id"]: s["filtered_resps"] for s in map(json.loads, samples_file.read_text().splitlines())}

    ours = run_vlm_eval(VLMEvalConfig(model=str(path), benchmark="pope", data_root=str(data), device="cpu",
                                      amp="fp32", batch_size=2), tmp_path / "ours")
    our_replies = {p["index"]: p["reply"] for p in
                   map(json.loads, (tmp_path / "ours" / "predictions.jsonl").read_text().splitlines())}
    # lmms-eval strips each reply before its filters and metrics (as our POPE scoring does)
    assert lmms_replies == {index: reply.strip() for index, reply in our_replies.items()} and len(our_replies) == 4
    for metric in ("accuracy", "precision", "recall", "f1"):
        assert lmms_metrics[f"pope_{'f1_score' if metric == 'f1' else metric},none"] == pytest.approx(
            ours["metrics"][f"all/{metric}"])
