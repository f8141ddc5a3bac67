"""The VLM demo end to end on tiny stand-ins (a 2-layer Llama, a ViT-T tower at 32 px, generated PNG topics), and its
picture selection: shared files and distillation pictures left out, name groups never split."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw
from safetensors.torch import load_file

pytest.importorskip("transformers", reason="the VLM demo needs transformers (the vlm extra)")

from eupe.config import resolve_config  # noqa: E402
from eupe.demo.vlm import (  # noqa: E402
    MODELS,
    SPLITS,
    format_vlm_table,
    list_pictures,
    load_vlm_demo_config,
    pope_text,
    prepare_pictures,
    run_vlm_demo,
    split_pictures,
    training_records,
)
from eupe.models import create_model  # noqa: E402
from eupe.utils.optional import available  # noqa: E402
from tests.vlm.conftest import CHAT_TEMPLATE, _tiny_lm  # noqa: E402

SHAPES = {"circle": "ellipse", "square": "rectangle", "triangle": "polygon"}
COLOURS = ("red", "green", "blue", "orange", "purple", "black")


def _draw(path: Path, shape: str, colour: str, size: int) -> None:
    image = Image.new("RGBA", (size, size + 8), (0, 0, 0, 0))  # transparent and not square, as clip-art is
    draw = ImageDraw.Draw(image)
    box = (4, 4, size - 4, size - 4)
    if shape == "polygon":
        draw.polygon([(size // 2, 4), (4, size - 4), (size - 4, size - 4)], fill=colour)
    else:
        getattr(draw, shape)(box, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def clipart(tmp_path: Path) -> Path:
    """``shapes/<circles|squares|triangles>/<colour>_<shape>.png``: three topics of six pictures each."""
    root = tmp_path / "clipart"
    for i, colour in enumerate(COLOURS):
        for topic, shape in SHAPES.items():
            _draw(root / "shapes" / f"{topic}s" / f"{colour}_{topic}.png", shape, colour, 40 + 8 * i)
    return root


def _config(root: Path, out: Path, *extra: str):
    """The shipped config with the generated topics (a ``topics=`` override would merge into the shipped ones)."""
    settings = yaml.safe_load(resolve_config("demo", "vlm").read_text())
    settings["topics"] = {topic: f"shapes/{topic}s" for topic in SHAPES}
    path = out.parent / "vlm.yaml"
    path.write_text(yaml.safe_dump(settings))
    return load_vlm_demo_config(path, [f"images={root}", "exclude_distillation_pictures=false", f"output_dir={out}",
                                       *extra])


def test_demo_pipeline_end_to_end_on_tiny_stand_ins(tmp_path, clipart, one_thread):
    lm = _tiny_lm(tmp_path / "lm", CHAT_TEMPLATE)
    weights = tmp_path / "student.pt"
    torch.save(create_model("eupe_vitt16").state_dict(), weights)
    steps = [f"{stage}.{key}={value}" for stage in ("stage_a", "stage_b")
             for key, value in (("per_device_batch_size", 4), ("global_batch_size", 4), ("max_steps", 2))]
    cfg = _config(clipart, tmp_path / "out", f"student_weights={weights}", f"language_model={lm}", "gguf_file=",
                  "chat_template=lm", "image_size=32", "ci_resamples=50", "eval_batch_size=8", *steps)

    report = run_vlm_demo(cfg)

    text = (tmp_path / "out" / "results.json").read_text()
    results = json.loads(text, parse_constant=lambda c: pytest.fail(f"results.json holds {c}: not strict JSON"))
    assert set(results["models"]) == set(MODELS)
    for model in results["models"].values():
        assert set(model["pope"]) == {*SPLITS, "all"}
        for split in model["pope"].values():
            low, high = split["f1_ci95"]
            assert low <= split["f1"] <= high and 0 <= low and high <= 1
            assert split["accuracy_ci95"][0] <= split["accuracy"] <= split["accuracy_ci95"][1]
        assert model["vqa"]["ci95"][0] <= model["vqa"]["accuracy"] <= model["vqa"]["ci95"][1]
        assert [s["stage"] for s in model["training"]] in (["a", "b"], ["b"])
    assert results["models"]["blind"]["training"][0]["stage"] == "b"
    data = results["data"]
    assert data["pope_questions"] == 6 * data["heldout_pictures"] and data["vqa_questions"] == data["heldout_pictures"]
    assert set(results["comparisons"]) == {"random", "blind"}
    assert all(set(c) == {"f1", "accuracy"} for c in results["comparisons"].values())
    assert set(results["outcome"]) == {"beats_random", "beats_blind"}
    assert results["total_s"] > 0 and "build VLMs, probe the towers" in results["times_s"]
    assert results["peak_rss_mib"] > 100
    probes = {name: model["tower_probe"] for name, model in results["models"].items()}
    assert probes["blind"] is None and all(0 <= probes[t]["top1"] <= 1 for t in ("student", "random"))
    assert all(0 < probes[t]["mean_token_energy_share"] < 1 for t in ("student", "random"))
    means = {}
    for name in ("student", "random"):  # each tower standardised with its own statistics on the training pictures
        saved = json.loads((tmp_path / "out" / "build" / name / "config.json").read_text())
        assert saved["vision_config"]["feature_standardization"] is True
        means[name] = load_file(str(tmp_path / "out" / "build" / name / "model.safetensors"))[
            "vision_tower.feature_mean"]
    assert not torch.allclose(means["student"], means["random"])
    for name in MODELS:
        lines = (tmp_path / "out" / name / "predictions.jsonl").read_text().splitlines()
        assert len(lines) == data["pope_questions"] + data["vqa_questions"]
    assert (tmp_path / "out" / "pope_f1.png").is_file() or not available("matplotlib")
    references = results["reference_probes"]
    assert list(references) == ["raw pixels (8x8)", "teacher efficientnet_lite2", "teacher mobilenet_v2"]
    assert all(0 <= p["top1"] <= 1 for p in references.values())
    table = format_vlm_table(report)
    assert all(m in table for m in MODELS.values()) and "F1 adversarial" in table
    assert "other features of the pictures: raw pixels (8x8)" in table and "teacher mobilenet_v2" in table


def test_pictures_in_several_topics_or_the_distillation_pool_are_left_out(tmp_path, clipart):
    shared = clipart / "shapes" / "squares" / "red_circle.png"
    os.symlink(clipart / "shapes" / "circles" / "red_circle.png", shared)  # OpenClipart links files across folders
    distilled = clipart / "shapes" / "triangles" / "blue_triangle.png"
    cfg = _config(clipart, tmp_path / "out")

    pictures, frequency, skipped = list_pictures(cfg, excluded={os.path.realpath(distilled)})

    names = {Path(p.source).name for ps in pictures.values() for p in ps}
    assert "red_circle.png" not in names and "blue_triangle.png" not in names
    assert skipped == {"in several topics": 2, "in the distillation pool": 1}
    assert frequency == {"circle": 5, "square": 6, "triangle": 5}


def test_held_out_pictures_never_share_a_name_group_with_training_ones(tmp_path, clipart):
    for colour in COLOURS:  # black-and-white copies of each drawing
        _draw(clipart / "shapes" / "circles" / f"{colour}_circle_bw.png", "ellipse", "gray", 40)
    cfg = _config(clipart, tmp_path / "out")
    pictures, _, _ = list_pictures(cfg, excluded=set())

    train, held = split_pictures(pictures["circle"], 0.25, 100, random.Random(0))

    assert len(train) + len(held) == 12 and 0 < len(held) <= 3
    assert not {p.group for p in train} & {p.group for p in held}
    assert len({p.group for p in held}) == 1  # the pair of a drawing and its _bw copy


def test_each_training_conversation_asks_both_pope_answers_about_its_picture(tmp_path, clipart):
    cfg = _config(clipart, tmp_path / "out")
    data = prepare_pictures(cfg, tmp_path / "images")
    records = training_records(cfg, data)

    assert len(records["stage_b"]) == len(records["stage_b_text"]) == len(records["stage_a"]) == len(data.train)
    for picture, with_image, text in zip(data.train, records["stage_b"], records["stage_b_text"]):
        turns = with_image["conversations"]
        assert with_image["image"] == picture.image and turns[0]["value"].startswith("<image>\n")
        assert [t["value"] for t in text["conversations"]] == [turns[0]["value"].removeprefix("<image>\n")] + [
            t["value"] for t in turns[1:]]  # the blind LM's conversation is the same without the picture
        answers = {q["value"].removeprefix("<image>\n"): a["value"] for q, a in zip(turns[::2], turns[1::2])}
        assert answers[cfg.vqa_question] == picture.topic
        assert answers[pope_text(cfg, picture.topic)] == "yes"
        (negative,) = [q for q, a in answers.items() if a == "no"]
        assert negative != pope_text(cfg, picture.topic) and len(answers) == 3
    assert len({r["conversations"][0]["value"] for r in records["stage_b_text"]}) > 1  # rounds in random order


def test_without_student_weights_the_distillation_demo_runs_first_with_the_shortened_settings(tmp_path, monkeypatch):
    from eupe.demo import distill, vlm

    seen = {}

    def fake_run_demo(cfg):
        seen["cfg"] = cfg
        return {"exports": {"student": str(tmp_path / "student.pt")}}

    monkeypatch.setattr(distill, "run_demo", fake_run_demo)
    cfg = load_vlm_demo_config("vlm", ["student_weights=", "distill_overrides=[stage1.train.iterations=7]"])

    weights, report = vlm.student_weights(cfg, tmp_path)

    assert weights == str(tmp_path / "student.pt") and report is not None
    assert seen["cfg"].stage1.train.iterations == 7 and seen["cfg"].output_dir == str(tmp_path / "distill")
    with pytest.raises(FileNotFoundError, match="eupe demo"):
        vlm.student_weights(load_vlm_demo_config("vlm", [f"student_weights={tmp_path / 'none.pt'}"]), tmp_path)


class _ColourTower(torch.nn.Module):
    """Stand-in tower whose 4 visual tokens are the image's mean colour (or zeros: a tower that sees nothing)."""

    dtype = torch.float32

    def __init__(self, blind: bool = False) -> None:
        super().__init__()
        self.blind = blind

    def forward(self, pixels):
        colour = pixels.mean((2, 3))[:, None].expand(-1, 4, -1)
        return SimpleNamespace(last_hidden_state=torch.zeros_like(colour) if self.blind else colour)


def _colour_pictures(root: Path):
    """Three topics told apart by colour alone: 12 training and 2 held-out noisy 16 px squares each."""
    from eupe.demo.vlm import DemoPictures, Picture

    topics = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    rng = np.random.default_rng(0)
    pictures = []
    for topic, rgb in topics.items():
        for i in range(14):
            noisy = np.clip(np.array(rgb) + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / f"{topic}{i}.png")
            pictures.append(Picture(topic, "", topic, f"{topic}{i}", image=f"{topic}{i}.png"))
    data = DemoPictures(train=[p for p in pictures if p.group[-1] not in "01"],
                        heldout=[p for p in pictures if p.group[-1] in "01"], frequency={}, similar={}, skipped={})
    cfg = load_vlm_demo_config("vlm", ["probe_epochs=30", "ci_resamples=50", "eval_batch_size=8"])
    cfg.topics = {t: t for t in topics}
    return cfg, data


def test_tower_probe_reads_the_topic_a_tower_sees_and_is_at_chance_for_one_that_sees_nothing(tmp_path):
    from eupe.demo.vlm import tower_probe

    cfg, data = _colour_pictures(tmp_path)

    def processor(images, return_tensors=None):
        return {"pixel_values": torch.stack([torch.from_numpy(np.asarray(i, dtype=np.float32) / 255).permute(2, 0, 1)
                                             for i in images])}

    seeing = tower_probe(cfg, _ColourTower(), processor, data, tmp_path)
    blind = tower_probe(cfg, _ColourTower(blind=True), processor, data, tmp_path)

    assert seeing["top1"] == 1.0 and seeing["chance"] == pytest.approx(1 / 3)
    assert blind["top1"] <= 0.5 and blind["ci95"][0] <= blind["top1"] <= blind["ci95"][1]


def _colour_teacher(spec):
    """Stand-in teacher kind whose summary is the normalised mean colour of its input."""
    from eupe.teachers import finalise
    from eupe.teachers.feature_map import FeatureMapTeacher

    return finalise(FeatureMapTeacher(spec.display_name, torch.nn.AvgPool2d(4), input_size=spec.input_size))


def test_reference_probes_read_colour_topics_from_raw_pixels_and_a_teacher_of_the_distillation_config(tmp_path):
    from eupe.demo.vlm import picture_tensors, reference_probes
    from eupe.teachers import register_teacher

    cfg, data = _colour_pictures(tmp_path)
    register_teacher("colour_test", _colour_teacher, replace=True)
    distill_config = tmp_path / "distill.yaml"
    distill_config.write_text(f"images: {tmp_path}\nteachers:\n  - {{kind: colour_test, name: colour, input_size: 16}}\n"
                              "  - {kind: colour_test, name: unused, input_size: 16}\n")
    cfg.distill_config, cfg.distill_overrides = str(distill_config), []
    cfg.reference_teachers, cfg.pixel_grid = ["colour"], 4

    probes = reference_probes(cfg, data, tmp_path)

    assert list(probes) == ["raw pixels (4x4)", "teacher colour"]
    assert all(p["top1"] == 1.0 and p["ci95"][1] == 1.0 for p in probes.values())
    pixels = picture_tensors(tmp_path, data.heldout[:1])
    saved = np.asarray(Image.open(tmp_path / data.heldout[0].image), dtype=np.float32) / 255
    assert pixels.shape == (1, 3, 16, 16) and torch.allclose(pixels[0].permute(1, 2, 0), torch.from_numpy(saved))


def test_a_reference_teacher_outside_the_distillation_config_is_refused_by_name(tmp_path):
    from eupe.config import ConfigError
    from eupe.demo.vlm import reference_probes

    cfg, data = _colour_pictures(tmp_path)
    cfg.reference_teachers = ["mobilenet_v2", "dinov3"]  # the shipped distillation config has the first

    with pytest.raises(ConfigError, match=r"\['dinov3'\] not among the teachers.*reference_teachers=\[\]"):
        reference_probes(cfg, data, tmp_path)


def test_answering_yes_to_everything_wins_f1_but_not_the_required_outcome():
    from eupe.demo.vlm import SPLITS, Picture, Question, compare, required_outcome, score

    cfg = load_vlm_demo_config("vlm", ["ci_resamples=200"])
    pictures = [Picture("star", "", "star", str(i)) for i in range(60)]
    questions = [Question(p, SPLITS[i % 3], "Is there a star?", answer)
                 for i, p in enumerate(pictures) for answer in ("yes", "no")]
    questions += [Question(p, "vqa", "What is shown?", "star") for p in pictures]
    truth = [q.answer for q in questions]
    replies = {"student": ["yes"] * len(questions), "random": ["no"] * len(questions), "blind": ["no"] * len(questions)}
    models = {name: score(cfg, questions, r) for name, r in replies.items()}

    comparisons = compare(cfg, questions, replies, models)

    assert comparisons["random"]["f1"]["beyond_intervals"]  # F1 2/3 against 0
    assert not comparisons["random"]["accuracy"]["beyond_intervals"]  # 50% each
    assert required_outcome(comparisons) == {"beats_random": False, "beats_blind": False}
    replies["student"] = truth  # a student that sees: beats both on both
    models["student"] = score(cfg, questions, truth)
    assert required_outcome(compare(cfg, questions, replies, models)) == {"beats_random": True, "beats_blind": True}
