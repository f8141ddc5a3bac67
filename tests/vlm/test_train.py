"""Training stages on transformers.Trainer: stage (a) moves only the projector, stage (b) also the LLM, the tower
never; global batch = per-device x processes x accumulation; a resumed run with other settings is refused; a run
from cached tower features trains as one without, and the cache is refused when another tower made it."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from eupe.data.images import load_image  # noqa: E402
from eupe.vlm import EupeImageProcessor, EupeVisionModel, build_vlm  # noqa: E402
from eupe.vlm.data import BAD_IMAGE, MISSING_IMAGE, SKIPPED, DataReport, LlavaDataset, pixel_values  # noqa: E402
from eupe.vlm.tower_cache import TowerCacheError, prepare_tower_cache  # noqa: E402
from eupe.vlm.train import VLMTrainConfig, accumulation_steps, load_train_config, train_stage  # noqa: E402

IMAGES = [f"{i}.png" for i in range(4)]  # the images of the `data` fixture


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava_data")
    rng = np.random.default_rng(0)
    records_a, records_b = [], []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / f"{i}.png")
        records_a.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\ndescribe it"}, {"from": "gpt", "value": "a photo of a cat"}]})
        records_b.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat is in the image?"}, {"from": "gpt", "value": "the dog"},
            {"from": "human", "value": "describe it"}, {"from": "gpt", "value": "a cat on a mat"}]})
    (root / "a.json").write_text(json.dumps(records_a))
    (root / "b.json").write_text(json.dumps(records_b))
    return root


@pytest.fixture(scope="module")
def initial(tiny_lm_dir, tmp_path_factory):
    return build_vlm("eupe_vitt16", None, tiny_lm_dir, tmp_path_factory.mktemp("vlm") / "init", eupe_pretrained=False,
                     image_size=32).path


def _parts(folder):
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    return {name: {k: v.clone() for k, v in module.state_dict().items()} for name, module in (
        ("tower", model.model.vision_tower), ("projector", model.model.multi_modal_projector),
        ("lm", model.model.language_model))}


def _changed(before, after):
    return {part for part in before if any(not torch.equal(before[part][k], after[part][k]) for k in before[part])}


def _config(stage, model, data, out, **kw):
    return load_train_config(f"stage_{stage}", [f"model={model}", f"data={data / f'{stage}.json'}",
                                                f"image_root={data}", f"output_dir={out}", "global_batch_size=2",
                                                "per_device_batch_size=2", "dataloader_workers=0",
                                                "max_length=64", "save_steps=1", "logging_steps=1", "lr=1e-2",
                                                *[f"{k}={v}" for k, v in kw.items()]])


def test_each_stage_updates_exactly_its_modules(initial, data, tmp_path):
    start = _parts(initial)
    stage_a = train_stage(_config("a", initial, data, tmp_path / "a"))
    after_a = _parts(stage_a)
    assert _changed(start, after_a) == {"projector"}
    summary = json.loads((stage_a / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["trainable"] == ["multi_modal_projector"]
    stage_b = train_stage(_config("b", stage_a, data, tmp_path / "b"))
    assert _changed(after_a, _parts(stage_b)) == {"projector", "lm"}


def test_resume_with_other_settings_is_refused(initial, data, tmp_path):
    train_stage(_config("a", initial, data, tmp_path / "a", max_steps=1))
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.01 -> 0.02\)"):
        train_stage(_config("a", initial, data, tmp_path / "a", max_steps=1, lr=2e-2))


def test_resume_after_the_data_file_was_replaced_is_refused_naming_it(initial, data, tmp_path):
    records = json.loads((data / "a.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(records))
    cfg = _config("a", initial, data, tmp_path / "run", max_steps=1)
    cfg.data = str(tmp_path / "a.json")
    train_stage(cfg)
    records[0]["conversations"][1]["value"] = "a photo of a dog"
    (tmp_path / "a.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"input files changed since the run started: data"):
        train_stage(cfg)


def test_supervised_logits_give_the_loss_and_gradients_of_the_full_head(initial, data):
    from eupe.vlm.data import LlavaCollator

    model = AutoModelForImageTextToText.from_pretrained(initial, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(initial)
    dataset = LlavaDataset(data / "b.json", data, image_token=processor.image_token)
    results = {}
    for supervised in (False, True):
        collate = LlavaCollator(processor.tokenizer, processor.image_processor, max_length=64, supervised_logits=supervised,
                                num_image_tokens=model.config.image_seq_length)
        batch = collate([dataset[i] for i in range(3)])
        model.zero_grad()
        out = model(**batch, num_items_in_batch=(batch["labels"][:, 1:] != -100).sum())
        out.loss.backward()
        results[supervised] = out, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    (full, full_grads), (kept, kept_grads) = results[False], results[True]
    supervised_positions = int((batch["labels"][:, 1:] != -100).sum())
    assert kept.logits.shape == (supervised_positions, full.logits.shape[-1]) and supervised_positions < full.logits.shape[1]
    assert torch.allclose(kept.loss, full.loss, atol=1e-6)
    assert full_grads.keys() == kept_grads.keys()
    assert all(torch.allclose(full_grads[k], kept_grads[k], atol=1e-6) for k in full_grads)


def test_a_run_with_supervised_logits_trains_as_one_with_the_full_head(initial, data, tmp_path):
    # two accumulation steps: the Trainer takes the extra inputs and counts the tokens of shift_labels
    runs = {flag: _parts(train_stage(_config("b", initial, data, tmp_path / str(flag), amp="fp32", max_steps=2,
                                             global_batch_size=4, supervised_logits=flag)))
            for flag in ("false", "true")}
    for part in ("projector", "lm"):
        for key, value in runs["false"][part].items():
            assert torch.allclose(value, runs["true"][part][key], atol=1e-5), (part, key)


def test_global_batch_is_per_device_times_processes_times_accumulation():
    assert accumulation_steps(VLMTrainConfig(global_batch_size=256, per_device_batch_size=16), 8) == 2
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_steps(VLMTrainConfig(global_batch_size=100, per_device_batch_size=16), 1)


def test_shipped_stages_hold_the_paper_values():
    a = load_train_config("stage_a", ["model=m", "data=d", "image_root=r", "output_dir=o"])
    b = load_train_config("stage_b", ["model=m", "data=d", "image_root=r", "output_dir=o"])
    assert (a.stage, a.lr, a.global_batch_size, b.stage, b.lr, b.global_batch_size) == ("a", 1e-3, 256, "b", 2e-5, 128)
    for cfg in (a, b):
        assert (cfg.warmup_ratio, cfg.weight_decay, cfg.epochs) == (0.03, 0.0, 1.0)
    with pytest.raises(ValueError, match="set model="):
        train_stage(load_train_config("stage_a", []))


# ---------------------------------------------------------------------------------------------- tower cache


@pytest.fixture(scope="module")
def runs_with_and_without_cache(initial, data, tmp_path_factory):
    """Two fp32 stage-(a) runs with the same seed: one running the tower at each step, one from a tower cache."""
    root = tmp_path_factory.mktemp("cache_runs")
    plain = train_stage(_config("a", initial, data, root / "plain", amp="fp32"))
    cached = train_stage(_config("a", initial, data, root / "cached", amp="fp32", tower_cache=root / "cache"))
    return plain, cached, root / "cache"


@pytest.fixture(scope="module")
def tower_and_processor(initial):
    model = AutoModelForImageTextToText.from_pretrained(initial, dtype=torch.float32)
    return model.model.vision_tower, AutoProcessor.from_pretrained(initial).image_processor


def _fill(folder, tower, image_processor, image_root, paths=IMAGES, **kw):
    kw = {"batch_size": 2, **kw}
    return prepare_tower_cache(folder, paths, image_root, tower, image_processor, device=torch.device("cpu"),
                               bf16=kw.pop("bf16", False), **kw)


def _counting_tower_forward(monkeypatch, fail_at_call=0):
    """Counts the tower's forward calls (images per call); the ``fail_at_call``-th call raises, as a killed run."""
    forward, calls = EupeVisionModel.forward, []

    def counted(self, pixel_values, **kwargs):
        calls.append(len(pixel_values))
        if len(calls) == fail_at_call:
            raise RuntimeError("killed")
        return forward(self, pixel_values, **kwargs)

    monkeypatch.setattr(EupeVisionModel, "forward", counted)
    return calls


def test_a_run_from_the_tower_cache_trains_the_projector_as_a_run_without(initial, runs_with_and_without_cache):
    plain, cached, _ = runs_with_and_without_cache
    trained, reference = _parts(cached), _parts(plain)
    assert _changed(_parts(initial), trained) == {"projector"}
    for name, value in reference["projector"].items():
        torch.testing.assert_close(trained["projector"][name], value, rtol=1e-5, atol=1e-6)


def test_the_folder_and_checkpoints_trained_from_the_cache_hold_the_real_tower(initial, runs_with_and_without_cache):
    _, cached, _ = runs_with_and_without_cache
    start = _parts(initial)
    for folder in (cached, cached / "checkpoint-1"):
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
        assert isinstance(model.model.vision_tower, EupeVisionModel)
        assert "tower" not in _changed(start, _parts(folder))


def test_a_second_run_reads_the_cache_without_running_the_tower(initial, data, runs_with_and_without_cache,
                                                                 tmp_path, monkeypatch):
    _, cached, cache = runs_with_and_without_cache
    calls = _counting_tower_forward(monkeypatch, fail_at_call=1)
    again = train_stage(_config("a", initial, data, tmp_path / "again", amp="fp32", tower_cache=cache))
    assert calls == []
    assert not _changed(_parts(cached), _parts(again))


def test_a_cache_filled_by_another_tower_or_processor_is_refused_naming_the_difference(tower_and_processor, data,
                                                                                      tmp_path):
    tower, image_processor = tower_and_processor
    _fill(tmp_path, tower, image_processor, data)
    other_weights = copy.deepcopy(tower)
    with torch.no_grad():
        next(other_weights.parameters()).add_(1.0)
    with pytest.raises(TowerCacheError, match=r"another tower .*tower_weights differs \('sha256:"):
        _fill(tmp_path, other_weights, image_processor, data)
    larger = copy.deepcopy(tower)
    larger.config.image_size = 48
    with pytest.raises(TowerCacheError, match=r"tower.image_size differs \(32 cached, 48 now\).*image_processor"):
        _fill(tmp_path, larger, EupeImageProcessor.for_tower(larger.config), data)
    with pytest.raises(TowerCacheError, match=r"precision differs \('fp32' cached, 'bf16' now\)"):
        _fill(tmp_path, tower, image_processor, data, bf16=True)
    with pytest.raises(TowerCacheError, match="a folder of other files"):
        _fill(data, tower, image_processor, data)


def test_an_interrupted_fill_continues_where_it_stopped(tower_and_processor, data, tmp_path, monkeypatch):
    tower, image_processor = tower_and_processor
    calls = _counting_tower_forward(monkeypatch, fail_at_call=2)
    with pytest.raises(RuntimeError, match="killed"):
        _fill(tmp_path, tower, image_processor, data, batch_size=1, shard_size=1)
    shards = tmp_path / "shards"
    assert len(list(shards.glob("*.safetensors"))) == 1
    partial = shards / ".0123456789abcdef.safetensors.abcd1234.tmp"  # what a write killed mid-file leaves
    partial.write_bytes(b"partial")
    calls = _counting_tower_forward(monkeypatch)
    cache = _fill(tmp_path, tower, image_processor, data, batch_size=1, shard_size=1)
    assert calls == [1, 1, 1] and not partial.exists()
    with torch.no_grad():
        for path in IMAGES:
            expected = tower(pixel_values(image_processor, [load_image(data / path)])).last_hidden_state[0]
            torch.testing.assert_close(cache.read(path), expected)


def test_images_the_cache_could_not_read_are_skipped_and_counted_as_without_it(tower_and_processor, data, tmp_path):
    tower, image_processor = tower_and_processor
    for path in IMAGES:
        shutil.copy(data / path, tmp_path / path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    records = json.loads((data / "a.json").read_text())
    records += [{**records[0], "id": "gone", "image": "gone.png"}, {**records[0], "id": "broken", "image": "broken.png"}]
    plain = LlavaDataset(records, tmp_path, report=DataReport(tmp_path / "plain.jsonl"))
    cache = _fill(tmp_path / "cache", tower, image_processor, tmp_path, paths=plain.image_paths())
    cached = LlavaDataset(records, tmp_path, report=DataReport(tmp_path / "cached.jsonl"), features=cache.read)
    for dataset in (plain, cached):
        samples = [dataset[i] for i in range(len(dataset))]
    assert all(isinstance(image, torch.Tensor) for sample in samples for image in sample.images)
    assert cached.report.events() == plain.report.events()
    assert cached.report.counts() == {SKIPPED: {MISSING_IMAGE: 1, BAD_IMAGE: 1}}


def test_stage_b_from_the_tower_cache_trains_as_without_it(initial, data, runs_with_and_without_cache, tmp_path):
    _, _, cache = runs_with_and_without_cache  # the tower of stage b is the built folder's: the same cache serves
    plain = _parts(train_stage(_config("b", initial, data, tmp_path / "plain", amp="fp32")))
    cached = _parts(train_stage(_config("b", initial, data, tmp_path / "cached", amp="fp32", tower_cache=cache)))
    assert _changed(_parts(initial), cached) == {"projector", "lm"}
    # The cache's features come from other batches than the run's (last-bit differences), and Adam divides each
    # gradient by its own size, so a weight may differ by ~1e-6; the steps (lr 1e-2) move weights ~1e-2.
    for part in ("projector", "lm"):
        for name, value in plain[part].items():
            torch.testing.assert_close(cached[part][name], value, rtol=1e-5, atol=1e-5)
