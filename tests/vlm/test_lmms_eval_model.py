"""The lmms-eval plugin: request handling on faked Instances (no lmms-eval needed), then the real base class and
registry where lmms-eval is installed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from eupe.vlm import build_vlm, evaluate  # noqa: E402
from eupe.vlm import lmms_eval_model as plugin  # noqa: E402
from eupe.vlm.evaluate import chat_prompt, generate_replies, load_vlm  # noqa: E402

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
    pytest.importorskip("lmms_eval.api.model", reason="lmms-eval is not installed")
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

