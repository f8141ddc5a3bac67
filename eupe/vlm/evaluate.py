"""Evaluate a saved EUPE VLM folder on one of the paper's six benchmarks, as lmms-eval does, resumably.

:func:`run_vlm_eval` reads a benchmark (:mod:`.benchmarks`), renders each prompt with the folder's chat template (one
user turn: the image, then lmms-eval's prompt), generates replies in batches (left padding, greedy, lmms-eval's
``max_new_tokens`` and stop strings for the task), scores them with lmms-eval's metric and adds a percentile
bootstrap interval for the headline metric. :func:`chat_prompt` and :func:`generate_replies` are the generation core,
shared with the lmms-eval plugin (:mod:`.lmms_eval_model`).

What ``output_dir`` holds:

* ``predictions.jsonl``: one line per question, in benchmark order: ``index`` (the position: benchmark ids are not
  unique everywhere), ``question_id``, ``prompt`` (as rendered for the model), ``reply``, ``answers``, ``score``
  (1/0 for POPE and MME: whether the reply counts as the right yes/no). Each batch is appended as whole lines and
  synced, so an interrupted run loses at most the batch it was writing.
* ``fingerprint.json``: what the predictions depend on: the model folder (path, and size and modification time of
  each file), the benchmark (name, data root, reader options, a hash of its questions), the generation settings and
  the precision (bf16 autocast or fp32). A rerun into the same folder skips the questions already answered when it
  matches, and refuses, naming what differs, when it does not. Batch size, limit, seed and the device (at the same
  precision) may change between runs.
* ``results.json`` (strict JSON: a non-finite number is written as null) and ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import torch
from PIL import Image
from tqdm import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin

from ..config import ConfigError, to_dict
from ..eval.results import write_run_outputs
from ..utils.device import autocast, bf16_enabled, resolve_device
from ..utils.io import atomic_write_json, atomic_write_text
from . import check_vlm_folder  # through the package: without transformers 5 a clear error saying what to install
from .benchmarks import READERS, BenchmarkItem, load_benchmark, question_scores, score
from .metrics import ConfidenceInterval, bootstrap_ci, mme_parse, pope_scores

logger = logging.getLogger(__name__)

PREDICTIONS, FINGERPRINT = "predictions.jsonl", "fingerprint.json"
#: lmms-eval's ``max_new_tokens`` when a task's yaml sets none (its llava and llava_hf models).
LMMS_EVAL_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class BenchmarkDefaults:
    """lmms-eval's generation settings for a benchmark's task (its yaml's ``generation_kwargs``) and the metric a
    results table leads with (``percent``: a fraction in [0, 1], shown x100)."""

    max_new_tokens: int
    headline: str
    until: tuple[str, ...] = ()
    percent: bool = True


#: Per benchmark. TextVQA's yaml sets only ``until``; POPE's headline is LLaVA-1.5's: the F1 averaged over the
#: three splits (``"all/f1"``, lmms-eval's pooled ``pope``, is in the results too); MME's is the perception score.
BENCHMARK_DEFAULTS: dict[str, BenchmarkDefaults] = {
    "textvqa": BenchmarkDefaults(LMMS_EVAL_MAX_NEW_TOKENS, "accuracy", until=("ASSISTANT:",)),
    "pope": BenchmarkDefaults(128, "mean/f1"),
    "gqa": BenchmarkDefaults(16, "accuracy"),
    "scienceqa_img": BenchmarkDefaults(16, "accuracy"),
    "realworldqa": BenchmarkDefaults(16, "accuracy"),
    "mme": BenchmarkDefaults(16, "perception", percent=False),
}


@dataclass
class VLMEvalConfig:
    """Settings of :func:`run_vlm_eval` (YAML + ``key=value`` overrides through :func:`eupe.config.load_config`).

    * ``model``: a VLM folder written by :func:`eupe.vlm.build_vlm` (or trained from one).
    * ``benchmark`` / ``data_root`` / ``options``: what :func:`eupe.vlm.benchmarks.load_benchmark` reads;
      ``options`` go to the reader (``split`` for textvqa and scienceqa_img, ``image_root`` for pope).
    * ``max_new_tokens``: ``None`` takes lmms-eval's for the benchmark (:data:`BENCHMARK_DEFAULTS`).
    * ``limit``: evaluate the first ``limit`` questions only (smoke runs; a later run without it resumes).
    * ``device``: ``""`` is CUDA when available, else CPU. ``amp``: the project's precision policy
      (:func:`eupe.utils.device.bf16_enabled`: ``auto`` is bf16 autocast on CUDA, fp32 elsewhere); weights load
      in fp32.
    * ``seed``: of the bootstrap resampling; ``ci_resamples``: its number of resamples.
    """

    model: str = ""
    benchmark: str = "pope"
    data_root: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int | None = None
    batch_size: int = 8
    limit: int | None = None
    device: str = ""
    amp: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 0
    ci_resamples: int = 1000

    def validate(self) -> None:
        """Raises :class:`~eupe.config.ConfigError` for settings that cannot run, before anything is loaded."""
        if not self.model:
            raise ConfigError("model= is required: the VLM folder to evaluate (written by eupe.vlm.build_vlm)")
        if not self.data_root:
            raise ConfigError(f"data_root= is required: the folder holding the {self.benchmark} files")
        if self.benchmark not in READERS:
            raise ConfigError(f"unknown benchmark {self.benchmark!r}: expected one of {sorted(READERS)}")
        accepted = sorted(set(inspect.signature(READERS[self.benchmark]).parameters) - {"root"})
        unknown = sorted(set(self.options) - set(accepted))
        if unknown:
            raise ConfigError(f"options {unknown} are not read by the {self.benchmark} reader; it takes "
                              f"{accepted or 'no options'}")
        for name in ("batch_size", "ci_resamples", "max_new_tokens", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")

    @property
    def generation(self) -> BenchmarkDefaults:
        """The benchmark's defaults with ``max_new_tokens`` as configured."""
        defaults = BENCHMARK_DEFAULTS[self.benchmark]
        return dataclasses.replace(defaults, max_new_tokens=self.max_new_tokens or defaults.max_new_tokens)


class ResumeError(ValueError):
    """``output_dir`` holds predictions written with other settings; the message names them."""


# ---------------------------------------------------------------------------------------------- generation core


def load_vlm(folder: str | os.PathLike, *,
             device: str | torch.device | None = None) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The model (fp32, eval mode, on ``device``) and processor (left padding, for batched generation) of a VLM
    folder, after :func:`~eupe.vlm.check_vlm_folder` has found its parts consistent."""
    folder = _require_folder(folder)
    check_vlm_folder(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    model = model.to(resolve_device(device)).eval()
    processor = AutoProcessor.from_pretrained(folder)
    processor.tokenizer.padding_side = "left"
    return model, processor


def _require_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        where = "does not exist" if not folder.exists() else "has no config.json"
        raise FileNotFoundError(f"VLM folder {folder} {where}: give a folder written by eupe.vlm.build_vlm "
                                "(or saved by a training run started from one)")
    return folder


def chat_prompt(processor: ProcessorMixin, text: str, num_images: int = 1) -> str:
    """``text`` as one user turn after ``num_images`` images, rendered by the processor's chat template with the
    assistant's generation prompt: what the model is asked."""
    content = [{"type": "image"}] * num_images + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


@torch.inference_mode()
def generate_replies(model: PreTrainedModel, processor: ProcessorMixin, prompts: Sequence[str],
                     images: Sequence[Sequence[Image.Image]], *, max_new_tokens: int, until: Sequence[str] = (),
                     amp: str = "auto", **generate_kwargs: Any) -> list[str]:
    """Replies to one batch of rendered prompts (:func:`chat_prompt`), ``images[i]`` being prompt ``i``'s.

    Greedy unless ``generate_kwargs`` (passed to ``model.generate``) say otherwise, under the autocast of ``amp``
    (:func:`eupe.utils.device.autocast`). Generation stops at the end token, after ``max_new_tokens`` or at the
    first of the ``until`` strings, which is cut off the reply.
    """
    if len(prompts) != len(images):
        raise ValueError(f"generate_replies got {len(prompts)} prompts and {len(images)} image lists")
    flat = [image for group in images for image in group]
    tokenizer = processor.tokenizer
    inputs = processor(images=flat or None, text=list(prompts), padding=True, return_tensors="pt").to(model.device)
    settings = {"do_sample": False, "num_beams": 1, **generate_kwargs}
    if until:
        settings.update(stop_strings=list(until), tokenizer=tokenizer)
    with autocast(amp, model.device):
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                **settings)
    replies = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    for stop in until:
        replies = [reply.split(stop, 1)[0] for reply in replies]
    return replies


# ---------------------------------------------------------------------------------------------- evaluation


def run_vlm_eval(config: VLMEvalConfig, output_dir: str | os.PathLike) -> dict[str, Any]:
    """Evaluates ``config.model`` on ``config.benchmark``, resuming the predictions already in ``output_dir``, and
    writes ``results.json``, ``predictions.jsonl``, ``fingerprint.json`` and ``config.yaml`` there.

    Returns the results: ``metrics`` (lmms-eval's, :func:`~eupe.vlm.benchmarks.score`), ``headline`` (the main
    metric with its bootstrap interval), ``questions`` scored of ``benchmark_questions``, ``complete`` (all of
    them), ``generation`` settings and the ``fingerprint``.
    """
    config.validate()
    output_dir = Path(output_dir)
    if _require_folder(config.model).resolve() == output_dir.resolve():
        raise ValueError(f"output_dir is the model folder {config.model}: give the evaluation a folder of its own")
    items = load_benchmark(config.benchmark, config.data_root, **config.options)
    if not items:
        raise ValueError(f"{config.data_root} holds no {config.benchmark} questions")
    selected = items[:config.limit] if config.limit else items
    _check_scorable(config, selected)
    generation = config.generation
    device = resolve_device(config.device or None)
    fingerprint = _fingerprint(config, items, generation, device)
    done = _resume(output_dir, fingerprint, len(items))
    todo = [i for i in range(len(selected)) if i not in done]
    if done:
        logger.info("%s: %d of the %d questions already answered in %s", config.benchmark,
                    len(selected) - len(todo), len(selected), output_dir / PREDICTIONS)
    if todo:
        done.update(_generate(config, selected, todo, generation, device, output_dir))
    replies = [done[i]["reply"] for i in range(len(selected))]

    metrics = score(config.benchmark, selected, replies)
    interval = headline_interval(config.benchmark, selected, replies, seed=config.seed,
                                 resamples=config.ci_resamples)
    results = _finite({
        "benchmark": config.benchmark,
        "model": config.model,
        "headline": {"metric": generation.headline, "value": interval.estimate, "low": interval.low,
                     "high": interval.high, "confidence": interval.confidence, "resamples": interval.resamples},
        "metrics": metrics,
        "questions": len(selected),
        "benchmark_questions": len(items),
        "complete": len(selected) == len(items),
        "generation": {"max_new_tokens": generation.max_new_tokens, "until": list(generation.until)},
        "fingerprint": fingerprint,
    })
    write_run_outputs(output_dir, config=config, results=results, summary=_summary(results))
    return results


def headline_interval(name: str, items: Sequence[BenchmarkItem], replies: Sequence[str], *, seed: int = 0,
                      resamples: int = 1000) -> ConfidenceInterval:
    """Bootstrap 95% interval of the benchmark's headline metric (:data:`BENCHMARK_DEFAULTS`) over questions.

    Accuracies resample per-question scores. POPE's F1 is not a mean over questions: questions are resampled and
    rescored. MME scores an image by its pair of questions, so images are resampled (one drawn twice counts as two
    images).
    """
    metric = BENCHMARK_DEFAULTS[name].headline
    if metric == "accuracy":
        return bootstrap_ci(question_scores(name, items, replies), resamples=resamples, seed=seed)
    units: dict[Any, list[tuple[BenchmarkItem, str]]] = {}
    for index, (item, reply) in enumerate(zip(items, replies, strict=True)):
        key = (item.extra["category"], item.question_id) if name == "mme" else index
        units.setdefault(key, []).append((item, reply))

    def statistic(drawn: Sequence[list[tuple[BenchmarkItem, str]]]) -> float:
        pairs = [(dataclasses.replace(item, question_id=str(k)) if name == "mme" else item, reply)
                 for k, unit in enumerate(drawn) for item, reply in unit]
        return score(name, [item for item, _ in pairs], [reply for _, reply in pairs])[metric]

    return bootstrap_ci(list(units.values()), statistic, resamples=resamples, seed=seed)


def question_score(name: str, item: BenchmarkItem, reply: str) -> float:
    """One reply's score: its accuracy (:func:`~eupe.vlm.benchmarks.question_scores`), or for POPE and MME 1.0
    when lmms-eval counts the reply as the right yes/no."""
    if name == "pope":
        return pope_scores([reply], [item.answers[0]]).accuracy
    if name == "mme":
        return float(mme_parse(reply) == mme_parse(item.answers[0]))
    return question_scores(name, [item], [reply])[0]


def _check_scorable(config: VLMEvalConfig, items: Sequence[BenchmarkItem]) -> None:
    """Scores empty replies once, so that questions the metric cannot score (no answers, an MME image cut from its
    second question by ``limit``) fail before any generation rather than after it."""
    try:
        score(config.benchmark, items, [""] * len(items))
    except ValueError as err:
        limit = f" (the first {config.limit}: limit={config.limit})" if config.limit else ""
        raise ValueError(f"the {len(items)} {config.benchmark} questions{limit} of {config.data_root} cannot be "
                         f"scored: {err}") from err


def _generate(config: VLMEvalConfig, items: Sequence[BenchmarkItem], todo: Sequence[int],
              generation: BenchmarkDefaults, device: torch.device, output_dir: Path) -> dict[int, dict[str, Any]]:
    """Replies to ``items[i]`` for ``i`` in ``todo``, batch by batch, each batch appended to the predictions."""
    model, processor = load_vlm(config.model, device=device)
    records: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="question", desc=config.benchmark,
               disable=None)
    with bar, open(output_dir / PREDICTIONS, "a", encoding="utf-8") as out:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start:start + config.batch_size]
            prompts = [chat_prompt(processor, items[i].prompt) for i in batch]
            replies = generate_replies(model, processor, prompts, [[items[i].image.load()] for i in batch],
                                       max_new_tokens=generation.max_new_tokens, until=generation.until,
                                       amp=config.amp)
            for i, prompt, reply in zip(batch, prompts, replies):
                item = items[i]
                records[i] = {"index": i, "question_id": item.question_id, "prompt": prompt, "reply": reply,
                              "answers": list(item.answers), "score": question_score(config.benchmark, item, reply)}
                out.write(json.dumps(records[i], allow_nan=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(batch))
    return records


# ---------------------------------------------------------------------------------------------- resuming


def _fingerprint(config: VLMEvalConfig, items: Sequence[BenchmarkItem], generation: BenchmarkDefaults,
                 device: torch.device) -> dict[str, Any]:
    """What the predictions depend on (see the module docstring), as plain JSON data."""
    folder = Path(config.model)
    files = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()}
    questions = json.dumps([[item.question_id, item.prompt, list(item.answers)] for item in items], default=str)
    return {
        "model": str(folder.resolve()),
        "model_files": files,
        "benchmark": config.benchmark,
        "data_root": str(Path(config.data_root).resolve()),
        "options": to_dict(config)["options"],
        "questions": hashlib.sha256(questions.encode()).hexdigest(),
        "max_new_tokens": generation.max_new_tokens,
        "until": list(generation.until),
        "precision": "bf16" if bf16_enabled(config.amp, device) else "fp32",
    }


def _resume(output_dir: Path, fingerprint: dict[str, Any], count: int) -> dict[int, dict[str, Any]]:
    """The predictions already in ``output_dir`` by question index, after checking they were made with
    ``fingerprint``; records ``fingerprint`` for the predictions to come."""
    path, stored_path = output_dir / PREDICTIONS, output_dir / FINGERPRINT
    records, torn = _read_predictions(path, count)
    if records:
        if not stored_path.is_file():
            raise ResumeError(f"{path} holds predictions but {stored_path} is missing, so their settings "
                              "are unknown: use another output_dir, or delete predictions.jsonl to start over")
        differences = _differences(json.loads(stored_path.read_text(encoding="utf-8")), fingerprint)
        if differences:
            raise ResumeError(f"{output_dir} holds predictions of {len(records)} questions made with other "
                              "settings:\n- "
                              + "\n- ".join(differences)
                              + "\nUse another output_dir, or delete predictions.jsonl to start over.")
    if torn:  # drop the line an interrupted run was writing, so that new lines start on a line of their own
        atomic_write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in records.values()))
    atomic_write_json(stored_path, fingerprint)
    return records


def _read_predictions(path: Path, count: int) -> tuple[dict[int, dict[str, Any]], bool]:
    """The records of ``path`` by index, and whether its last line was cut short by an interrupted write (that
    line is left out); a bad line elsewhere is an error."""
    if not path.is_file():
        return {}, False
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    records: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line) if line.endswith("\n") else None
        except json.JSONDecodeError:
            record = None
        index = record.get("index") if isinstance(record, dict) else None
        if not (isinstance(index, int) and 0 <= index < count):
            if number < len(lines):
                raise ResumeError(f"{path} line {number} is not a prediction of this benchmark: delete the file "
                                  "to start over")
            return records, True
        records.setdefault(index, record)
    return records, False


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints."""
    lines = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if key == "model_files" and isinstance(before, dict) and isinstance(after, dict):
            changed = sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
            lines.append(f"model_files: {', '.join(changed)} changed (size or modification time) since the "
                         "predictions were written")
        elif key == "questions":
            lines.append("questions: the benchmark's questions differ from those the predictions answer")
        else:
            lines.append(f"{key}: {before!r} then, {after!r} now")
    return lines


# ---------------------------------------------------------------------------------------------- reporting


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (strict JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _cell(value: float | None, percent: bool) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if percent else f"{value:.1f}"


def _summary(results: Mapping[str, Any]) -> str:
    headline, percent = results["headline"], BENCHMARK_DEFAULTS[results["benchmark"]].percent
    questions = (f"{results['questions']}" if results["complete"]
                 else f"the first {results['questions']} of {results['benchmark_questions']}")
    return (f"{results['benchmark']} {headline['metric']}: {_cell(headline['value'], percent)} "
            f"[{_cell(headline['low'], percent)}, {_cell(headline['high'], percent)}] on {questions} questions "
            f"- {results['model']}")


def format_results_table(results: Iterable[Mapping[str, Any]]) -> str:
    """A Markdown table of several runs' results (``results.json`` contents): a row per model, a column per
    benchmark with its headline metric and 95% interval (x100 for fractions). Runs on part of a benchmark
    (``limit``) are footnoted."""
    cells: dict[str, dict[str, str]] = {}
    notes = []
    for result in results:
        model, name = result["model"], result["benchmark"]
        if name in cells.setdefault(model, {}):
            raise ValueError(f"two results of {model} on {name}: give one per model and benchmark")
        headline, percent = result["headline"], BENCHMARK_DEFAULTS[name].percent
        cell = (f"{_cell(headline['value'], percent)} [{_cell(headline['low'], percent)}, "
                f"{_cell(headline['high'], percent)}]")
        if not result["complete"]:
            notes.append(f"{model} on {name}: the first {result['questions']} of {result['benchmark_questions']} "
                         "questions")
            cell += f"<sup>{len(notes)}</sup>"
        cells[model][name] = cell
    names = [name for name in BENCHMARK_DEFAULTS if any(name in row for row in cells.values())]
    header = ["model"] + [f"{name} {BENCHMARK_DEFAULTS[name].headline}" for name in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([model] + [row.get(name, "") for name in names]) + " |" for model, row in cells.items()]
    if notes:
        lines += [""] + [f"<sup>{i}</sup> {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"
