"""The end-to-end CPU demo (``eupe demo``): all three EUPE stages on real (small) teachers and real images, then k-NN.

Teachers: EfficientNet-Lite2 and MobileNetV2 (ImageNet classifiers, global teachers) and HED's VGG16 trunk
(edge detector, dense teacher), registered by :mod:`eupe.demo.teachers`. They stand in for the paper's PE-core-G,
PE-lang-G and DINOv3-H+ because no ViT teacher weights are installable offline; the shipped ``stage1`` distillation
config shows the real teachers for GPU runs.

Data: the config's ``images`` folder (the shipped config: OpenClipart), one class per top-level folder. The
folders with at least ``min_class_images`` images are split, disjointly, into distillation classes (label-free
training images) and held-out classes (k-NN evaluation only), alternating by size so both sides mix large and
small classes.

Pipeline: stage 1 distils the three teachers into a small proxy ViT (teacher features precomputed once with the
feature cache); stage 2 distils the frozen proxy into ``eupe_vitt16`` at a fixed small resolution; stage 3
continues from the stage-2 student with independent random scales for student and proxy. Finally k-NN top-1
(class token / teacher summary, cosine, majority vote, k = 10, bank/query split per held-out class) is measured
for each teacher, the proxy, the student, the same student with random weights and raw pixels, printed, and
written as JSON and a PNG chart.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import load_config, resolve_config, to_dict
from ..data.augment import Augment
from ..data.images import ImageDecodeError, ImageRecord, list_images, load_image
from ..data.transforms import normalize_imagenet, resize_short_side
from ..distill.config import DistillConfig, validate
from ..distill.data import DataError, InMemoryImages
from ..distill.trainer import Distiller, RunResult
from ..eval.knn import KnnConfig, knn_classify
from ..eval.stats import ConfidenceInterval, bootstrap_ci
from ..loading import load
from ..models import create_model
from ..teachers import Teacher, TeacherSpec, build_teachers
from ..utils.io import atomic_write_json
from ..utils.optional import available, install_hint
from ..utils.outputs import locked_output_dir
from ..viz.charts import bar_chart
from . import teachers as _stand_in_teachers  # noqa: F401  (registers the demo's teacher kinds)

logger = logging.getLogger(__name__)

PROXY_ROW = "proxy (stage 1)"
RANDOM_ROW = "same student, random init"
PIXELS_ROW = "raw pixels (16x16)"


@dataclass
class DemoConfig:
    images: str = ""  # a folder with one subfolder of images per class
    images_install: str = ""  # how to get ``images`` when it is missing (shown in the error)
    min_class_images: int = 15
    eval_classes: int = 10  # held-out classes, never seen in distillation
    distill_images: int = 1000
    max_per_distill_class: int = 250
    eval_images_per_class: int = 40
    load_size: int = 144  # images are decoded once and kept with this short side
    eval_size: int = 112  # square input of the teachers and raw pixels in the k-NN evaluation
    student_eval_size: int = 0  # input of the proxy and students (0: eval_size); their training scale
    knn_k: int = 10
    seed: int = 0
    output_dir: str = "runs/demo"
    decode_threads: int = 2
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default (use 1 on a shared, oversubscribed CPU)
    proxy_model: str = "eupe_vits16"
    proxy_arch: dict[str, Any] = field(default_factory=dict)
    teachers: list[TeacherSpec] = field(default_factory=list)
    stage1: DistillConfig = field(default_factory=DistillConfig)
    stage2: DistillConfig = field(default_factory=DistillConfig)
    stage3: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class DemoData:
    distill: list[Tensor]
    eval_images: list[Tensor]
    eval_labels: Tensor
    eval_class_names: list[str]
    distill_class_names: list[str]
    data_id: str
    skipped: int


def load_demo_config(name_or_path: str | Path = "distill", overrides: Sequence[str] = ()) -> DemoConfig:
    """A shipped demo config (``eupe/configs/demo/<name>.yaml``) or a YAML file, with ``key=value`` overrides."""
    path = resolve_config("demo", name_or_path)
    cfg = load_config(DemoConfig, path, overrides)
    if not cfg.images:
        raise ValueError(f"{path}: set images=FOLDER (one subfolder of images per class)")
    for stage in (cfg.stage1, cfg.stage2, cfg.stage3):
        validate(stage)
    if not cfg.teachers:
        raise ValueError(f"{path}: the demo needs teachers (efficientnet_lite2, mobilenet_v2, hed)")
    return cfg


# ---------------------------------------------------------------------------------------------- data


def split_classes(records: Sequence[ImageRecord], cfg: DemoConfig) -> tuple[list[str], list[str]]:
    """(distillation classes, held-out classes): eligible folders sorted by size, alternately assigned."""
    counts: dict[str, int] = {}
    for r in records:
        if r.class_name is not None:
            counts[r.class_name] = counts.get(r.class_name, 0) + 1
    eligible = sorted((c for c, n in counts.items() if n >= cfg.min_class_images), key=lambda c: (-counts[c], c))
    if len(eligible) < cfg.eval_classes + 2:
        hint = f" ({cfg.images_install})" if cfg.images_install else ""
        raise DataError(f"{cfg.images} has {len(eligible)} folders with >= {cfg.min_class_images} images; the "
                        f"demo needs {cfg.eval_classes + 2}{hint}")
    held = eligible[1::2][: cfg.eval_classes]
    return [c for c in eligible if c not in held], held


def _sample(records: list[ImageRecord], n: int, g: torch.Generator) -> list[ImageRecord]:
    order = torch.randperm(len(records), generator=g)[:n].tolist()
    return [records[i] for i in sorted(order)]


def _decode(record: ImageRecord, size: int) -> Tensor | None:
    try:
        image = load_image(record.path)
    except ImageDecodeError as err:
        logger.warning("demo: skipping %s", err)
        return None
    image = resize_short_side(image, size)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()


def prepare_data(cfg: DemoConfig) -> DemoData:
    """Lists, splits, samples and decodes (once, in threads) the distillation and evaluation images."""
    if not Path(cfg.images).is_dir():
        hint = f"{cfg.images_install}, or " if cfg.images_install else ""
        raise FileNotFoundError(f"Demo images {cfg.images} not found: {hint}set images=FOLDER with one subfolder "
                                "per class")
    records, _ = list_images(cfg.images)
    distill_classes, held = split_classes(records, cfg)
    by_class: dict[str, list[ImageRecord]] = {}
    for r in records:
        by_class.setdefault(r.class_name or "", []).append(r)
    g = torch.Generator().manual_seed(cfg.seed)
    pool = [r for c in distill_classes for r in _sample(by_class[c], cfg.max_per_distill_class, g)]
    distill = _sample(pool, cfg.distill_images, g)
    g_eval = torch.Generator().manual_seed(cfg.seed)  # separate: the evaluation set must not depend on the above
    evaluation = [(r, i) for i, c in enumerate(held) for r in _sample(by_class[c], cfg.eval_images_per_class, g_eval)]
    with ThreadPoolExecutor(max(1, cfg.decode_threads)) as ex:
        d_imgs = list(ex.map(lambda r: _decode(r, cfg.load_size), distill))
        e_imgs = list(ex.map(lambda p: _decode(p[0], cfg.load_size), evaluation))
    skipped = sum(x is None for x in d_imgs + e_imgs)
    keep = [(x, lab) for x, (_, lab) in zip(e_imgs, evaluation) if x is not None]
    digest = hashlib.sha256("\n".join(r.path for r in distill).encode() + str(cfg.load_size).encode()).hexdigest()
    return DemoData([x for x in d_imgs if x is not None], [x for x, _ in keep], torch.tensor([lab for _, lab in keep]),
                    held, distill_classes, digest[:16], skipped)


# ---------------------------------------------------------------------------------------------- evaluation


def eval_batch(images: Sequence[Tensor], size: int) -> Tensor:
    """Square resize to ``size`` (the released transform's recipe, without normalisation): ``[N, 3, S, S]``."""
    return torch.stack([F.interpolate(x[None].float() / 255, size=(size, size), mode="bicubic",
                                      align_corners=False, antialias=True)[0].clamp(0, 1) for x in images])


@torch.inference_mode()
def embed(fn: Callable[[Tensor], Tensor], images: Tensor, batch: int = 64) -> Tensor:
    return torch.cat([fn(images[i : i + batch]).float() for i in range(0, len(images), batch)])


def teacher_features(teacher: Teacher) -> Callable[[Tensor], Tensor]:
    return lambda x: teacher(x).summary


def backbone_features(backbone: nn.Module) -> Callable[[Tensor], Tensor]:
    backbone.eval()
    return lambda x: backbone.forward_features(normalize_imagenet(x))["x_norm_clstoken"]


def knn_bank(labels: Tensor, seed: int) -> Tensor:
    """Boolean mask of the k-NN bank: a seeded half of each class; the other half are the queries."""
    g = torch.Generator().manual_seed(seed)
    bank = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        bank[idx[torch.randperm(len(idx), generator=g)[: len(idx) // 2]]] = True
    return bank


def knn_top1(features: Tensor, labels: Tensor, k: int, seed: int) -> ConfidenceInterval:
    """Top-1 (%) of a cosine majority-vote k-NN with the :func:`knn_bank` split, with its 95% bootstrap interval
    over the queries."""
    bank = knn_bank(labels, seed)
    feats = F.normalize(features.float(), dim=1)  # L2 ranking on unit vectors = cosine ranking
    cfg = KnnConfig(protocol="paper", paper_ks=[k], topk=[1])
    pred = knn_classify(feats[bank], labels[bank], feats[~bank], int(labels.max()) + 1, cfg)["paper"][k][:, 0]
    correct = ((pred == labels[~bank]).float() * 100).tolist()
    return bootstrap_ci(correct, seed=seed)


# ---------------------------------------------------------------------------------------------- pipeline


def stage_config(base: DistillConfig, out: Path, **fields: Any) -> DistillConfig:
    cfg = copy.deepcopy(base)
    cfg.output.dir = str(out)
    for name, value in fields.items():
        section, attr = name.split("__")
        setattr(getattr(cfg, section), attr, value)
    return cfg


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Runs data preparation, stages 1-3 and the k-NN table; returns (and writes) the results. The output folder is
    locked while it runs: a second demo into it is refused instead of mixing two runs' stages and results."""
    with locked_output_dir(cfg.output_dir, "eupe demo") as out:
        return _run_demo(cfg, out)


def _run_demo(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    times: dict[str, float] = {}
    cpu_times: dict[str, float] = {}  # process CPU seconds: comparable across loaded and idle machines
    clock, cpu = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal clock, cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        times[name], cpu_times[name] = round(now - clock, 1), round(now_cpu - cpu, 1)
        clock, cpu = now, now_cpu
        logger.info("demo: %s took %.1fs (%.1f CPU s)", name, times[name], cpu_times[name])

    data = prepare_data(cfg)
    lap("decode images")
    teachers = build_teachers(cfg.teachers)
    lap("build teachers")

    r1, r3 = run_stages(cfg, data, teachers, out, lap)

    intervals = evaluate(cfg, data, teachers, r1, r3)
    lap("k-NN evaluation")
    results = {name: round(ci.estimate, 2) for name, ci in intervals.items()}
    report = {"knn_top1": results,
              "knn_top1_ci95": {name: [round(ci.low, 2), round(ci.high, 2)] for name, ci in intervals.items()},
              "times_s": times, "total_s": round(sum(times.values()), 1),
              "cpu_times_s": cpu_times, "total_cpu_s": round(sum(cpu_times.values()), 1),
              "eval_classes": data.eval_class_names, "distill_classes": data.distill_class_names,
              "n_distill_images": len(data.distill), "n_eval_images": len(data.eval_images),
              "n_knn_queries": int((~knn_bank(data.eval_labels, cfg.seed)).sum()),
              "skipped_images": data.skipped, "exports": {"proxy": str(r1.export_path), "student": str(r3.export_path),
                                                          "student_norms": str(r3.norms_path)},
              "config": to_dict(cfg)}
    atomic_write_json(out / "results.json", report)
    if available("matplotlib"):
        bar_chart(results, out / "knn.png", xlabel="k-NN top-1 (%), 95% bootstrap interval over queries", x_max=100,
                  intervals={name: (ci.low, ci.high) for name, ci in intervals.items()},
                  title=f"k-NN top-1 on {len(data.eval_class_names)} held-out classes (k={cfg.knn_k}, cosine, "
                        f"majority vote)\n{cfg.images}")
    else:
        logger.info("knn.png not drawn: %s", install_hint("matplotlib"))
    return report


def run_stages(cfg: DemoConfig, data: DemoData, teachers: dict[str, Teacher], out: Path,
               lap: Callable[[str], None] = lambda name: None,
               teacher_cache: Path | None = None) -> tuple[RunResult, RunResult]:
    """Stages 1-3 into ``out/stage{1,2,3}``: the teachers into the proxy, the proxy into the student, then the
    multi-resolution stage; returns the proxy's and the final student's runs. ``teacher_cache``: stage 1's
    teacher-feature cache folder (default: inside ``out/stage1``), shared by runs that differ only in training."""
    def source(stage: DistillConfig) -> InMemoryImages:
        return InMemoryImages(data.distill, Augment(stage.data.augment))

    proxy_arch = {**cfg.proxy_arch}
    s1 = stage_config(cfg.stage1, out / "stage1", student__model=cfg.proxy_model, student__arch=proxy_arch)
    s1.teachers = list(cfg.teachers)
    if teacher_cache is not None:
        s1.cache.dir = str(teacher_cache)
    r1 = Distiller(s1, teachers=list(teachers.values()), primary=source(s1), data_id=data.data_id).run()
    lap("stage 1 (teachers -> proxy)")

    proxy_spec = TeacherSpec(kind="eupe", name="proxy", model=cfg.proxy_model, weights=str(r1.export_path),
                             input_size=cfg.stage1.data.student_scales[-1], model_kwargs=proxy_arch)
    s2 = stage_config(cfg.stage2, out / "stage2")
    s2.teachers = [proxy_spec]
    r2 = Distiller(s2, primary=source(s2), data_id=data.data_id).run()
    lap("stage 2 (proxy -> student)")

    s3 = stage_config(cfg.stage3, out / "stage3", student__init=str(r2.export_path))
    s3.teachers = [proxy_spec]
    r3 = Distiller(s3, primary=source(s3), data_id=data.data_id).run()
    lap("stage 3 (multi-resolution)")
    return r1, r3


def evaluate(cfg: DemoConfig, data: DemoData, teachers: dict[str, Teacher], proxy: RunResult | None,
             student: RunResult | None) -> dict[str, ConfidenceInterval]:
    """k-NN top-1 with its interval for each teacher, the proxy, the student, the random-init student and raw
    pixels; ``proxy``/``student`` None leaves out those rows, teachers ``{}`` the teachers' rows."""
    images = eval_batch(data.eval_images, cfg.eval_size)
    small = eval_batch(data.eval_images, cfg.student_eval_size) if cfg.student_eval_size else images
    labels = data.eval_labels
    # name -> (feature function, the image batch it sees: teachers and pixels at eval_size, our models at theirs)
    extractors: dict[str, tuple[Callable[[Tensor], Tensor], Tensor]] = {
        f"teacher {name}": (teacher_features(t), images) for name, t in teachers.items()}
    s_cfg = cfg.stage3.student
    if proxy is not None:
        extractors[PROXY_ROW] = (backbone_features(
            load(cfg.proxy_model, weights=str(proxy.export_path), **cfg.proxy_arch)), small)
    if student is not None:
        extractors[student_row(cfg)] = (backbone_features(
            load(s_cfg.model, weights=str(student.export_path), **s_cfg.arch)), small)
    if teachers:  # the baselines come with the teachers: a run's rows that do not depend on its training
        torch.manual_seed(cfg.seed)
        extractors[RANDOM_ROW] = (backbone_features(create_model(s_cfg.model, **s_cfg.arch)), small)
        extractors[PIXELS_ROW] = (lambda x: F.interpolate(x, size=(16, 16), mode="area").flatten(1), images)
    return {name: knn_top1(embed(fn, batch), labels, cfg.knn_k, cfg.seed) for name, (fn, batch) in extractors.items()}


def student_row(cfg: DemoConfig) -> str:
    return f"student {cfg.stage3.student.model} (stage 3)"


def format_table(results: dict[str, float], intervals: dict[str, list[float]] | None = None) -> str:
    """The k-NN table as text, with each row's 95% interval when given."""
    width = max(len(n) for n in results)
    lines = [f"{'model':{width}s}  k-NN top-1 (%)  95% interval", "-" * (width + 30)]
    for name, value in results.items():
        low, high = (intervals or {}).get(name, (math.nan, math.nan))
        interval = f"[{low:5.1f}, {high:5.1f}]" if math.isfinite(low) else ""
        lines.append(f"{name:{width}s}  {value:14.2f}  {interval}")
    return "\n".join(lines)
