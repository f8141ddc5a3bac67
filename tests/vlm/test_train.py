"""Training stages on transformers.Trainer: stage (a) moves only the projector, stage (b) also the LLM, the tower
never; global batch = per-device x processes x accumulation; a resumed run with other settings is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from transformers import AutoModelForImageTextToText  # noqa: E402

from eupe.vlm import build_vlm  # noqa: E402
from eupe.vlm.train import VLMTrainConfig, accumulation_steps, load_train_config, train_stage  # noqa: E402


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
