"""Readers for the six VLM benchmarks of the EUPE paper, from local folders in the layouts their files ship in,
with lmms-eval's prompts, and :func:`score`, which applies the matching lmms-eval metric (:mod:`.metrics`).

Every reader returns :class:`BenchmarkItem` s whose images decode only when asked (:meth:`LazyImage.load`). Layouts
(lmms-eval's ``dataset_path`` on the hub in brackets; a hub snapshot of those, or of its ``refs/convert/parquet``
branch, works as downloaded):

=============== ======================================================================================
textvqa         ``TextVQA_0.5.1_val.json`` + ``train_images/`` (the original release), or
                ``validation-*.parquet`` (lmms-lab/textvqa)
pope            ``coco_pope_{random,popular,adversarial}.json`` (the POPE repository's JSON lines, also
                under ``coco/`` or ``output/coco/``) + COCO ``val2014/``, or the parquet files of
                lmms-lab/POPE: ``test-*.parquet`` (``default``, split in the ``category`` column) or
                ``{random,popular,adversarial}`` files (``Full``)
gqa             ``testdev_balanced_questions.json`` + ``images/`` (the original release), or
                ``testdev_balanced_instructions/`` + ``testdev_balanced_images/`` parquet (lmms-lab/GQA)
scienceqa_img   ``ScienceQA-IMG/test-*.parquet`` (lmms-lab/ScienceQA, config ScienceQA-IMG)
realworldqa     ``test-*.parquet`` (lmms-lab/RealWorldQA)
mme             ``test-*.parquet`` (lmms-lab/MME)
=============== ======================================================================================

Parquet needs ``pyarrow``. ``prompt`` is the user text without the image: put the image token before it, as
LLaVA does (``"<image>\\n" + prompt``). ``question_id`` is the benchmark's own id and is not unique everywhere
(MME's names the image, shared by its two questions; POPE's repeat across splits): match predictions to items by
position.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from PIL import Image

from ..data.images import ImageDecodeError, decode_image, load_image
from ..utils.optional import require
from .metrics import (
    gqa_score,
    mean,
    mme_scores,
    pope_scores_by_split,
    realworldqa_score,
    scienceqa_score,
    vqa_accuracy,
)

# lmms-eval's default post-prompts (``lmms_eval_specific_kwargs.default.post_prompt`` of each task's yaml).
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."  # textvqa, pope, gqa, mme
OPTION_LETTER = "\nAnswer with the option's letter from the given choices directly."  # scienceqa_img
MME_YES_NO = " Please answer yes or no."  # removed from MME questions before SHORT_ANSWER is appended
POPE_SPLITS = ("adversarial", "popular", "random")
# Original TextVQA release: the question file and image folder of each split.
TEXTVQA_FILES = {"validation": ("TextVQA_0.5.1_val.json", "train_images"),
                 "train": ("TextVQA_0.5.1_train.json", "train_images"),
                 "test": ("TextVQA_0.5.1_test.json", "test_images")}


class BenchmarkLayoutError(FileNotFoundError):
    """A benchmark folder that holds none of the layouts its reader knows; the message names them."""


@dataclass(frozen=True)
class LazyImage:
    """An image decoded on :meth:`load`: a file, or (``row_group`` set) a cell of a parquet file's image column."""

    path: str
    row_group: int | None = None
    row: int = 0
    column: str = "image"

    def load(self) -> Image.Image:
        """The image as RGB; raises ``ImageDecodeError`` when it is missing or does not decode."""
        if self.row_group is None:
            return load_image(self.path)
        where = f"{self.path} (row group {self.row_group}, row {self.row})"
        cell = _image_cells(self.path, self.row_group, self.column)[self.row]
        data = cell.get("bytes") if isinstance(cell, dict) else cell  # hub Image feature: {"bytes", "path"}
        if not data:
            raise ImageDecodeError(where, "no image bytes in the parquet cell")
        return decode_image(io.BytesIO(data), where)


@dataclass(frozen=True)
class BenchmarkItem:
    """One question: its id, image, prompt (lmms-eval's), reference ``answers`` (one, or TextVQA's ten; empty
    where the split has none) and ``extra`` fields (``split`` for POPE, ``category`` for MME, ...)."""

    question_id: str | int
    image: LazyImage
    prompt: str
    answers: tuple[str, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- parquet


def _parquet() -> Any:
    return require("pyarrow.parquet", "Reading benchmark parquet files", install="pip install pyarrow")


@functools.lru_cache(maxsize=4)
def _image_cells(path: str, row_group: int, column: str) -> list[Any]:
    """The image column of one row group (cached: items are usually read in order, row group by row group)."""
    return _parquet().ParquetFile(path).read_row_group(row_group, columns=[column]).column(0).to_pylist()


def _split_files(folder: Path, split: str) -> list[Path]:
    """The parquet files of ``split`` under ``folder``: ``<split>-00000-of-00002.parquet`` or ``<split>.parquet``
    (hub uploads) or ``<split>/0000.parquet`` (the hub's converted branch), at any depth."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.rglob("*.parquet"))
            if p.name.startswith(f"{split}-") or p.stem == split or p.parent.name == split]


def _parquet_rows(files: Sequence[Path], image_column: str | None = "image"
                  ) -> Iterator[tuple[dict[str, Any], LazyImage | None]]:
    """Each row's other columns, and its image left in the file (None for a table without images)."""
    pq = _parquet()
    for path in files:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        if image_column is not None and image_column not in names:
            raise BenchmarkLayoutError(f"{path} has no {image_column!r} column (columns: {names})")
        columns = [n for n in names if n != image_column]
        for group in range(parquet.num_row_groups):
            for row, values in enumerate(parquet.read_row_group(group, columns=columns).to_pylist()):
                yield values, LazyImage(str(path), group, row, image_column) if image_column else None


def _layout_error(name: str, root: Path, expected: str) -> BenchmarkLayoutError:
    found = sorted(p.name for p in root.iterdir())[:8] if root.is_dir() else None
    seen = f"it holds {found}" if found is not None else "it does not exist or is not a folder"
    return BenchmarkLayoutError(f"{root} is not a {name} folder ({seen}): expected {expected}")


def _parquet_split(name: str, root: Path, split: str, expected: str,
                   image_column: str | None = "image") -> list[tuple[dict[str, Any], Any]]:
    """The rows of ``split``'s parquet files under ``root`` with their lazy images; a layout error when none."""
    files = _split_files(root, split)
    if not files:
        raise _layout_error(name, root, expected)
    return list(_parquet_rows(files, image_column))


# ---------------------------------------------------------------------------------------------- readers


def read_textvqa(root: str | Path, split: str = "validation") -> list[BenchmarkItem]:
    """TextVQA (lmms-eval ``textvqa_val``): prompt = the question capitalised (``str.capitalize``, which also
    lower-cases the rest) + SHORT_ANSWER; ``answers`` = the ten human answers; ``extra``: image id, OCR tokens."""
    root = Path(root)
    if split not in TEXTVQA_FILES:
        raise ValueError(f"TextVQA split must be one of {sorted(TEXTVQA_FILES)}, got {split!r}")
    question_file, image_dir = TEXTVQA_FILES[split]
    if (root / question_file).is_file() and (root / image_dir).is_dir():
        data = _read_json(root / question_file)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise BenchmarkLayoutError(f"{root / question_file} is not a TextVQA question file: expected an object "
                                       'with a "data" list of questions')
        rows = [(q, LazyImage(str(root / image_dir / f"{q['image_id']}.jpg"))) for q in data["data"]]
    else:
        rows = _parquet_split("TextVQA", root, split, f"{question_file} with {image_dir}/ (the original release) or "
                              f"{split}-*.parquet files (lmms-lab/textvqa)")
    return [BenchmarkItem(q["question_id"], image, q["question"].capitalize() + SHORT_ANSWER,
                          tuple(q.get("answers") or ()), {"image_id": q.get("image_id"),
                                                          "ocr_tokens": q.get("ocr_tokens")})
            for q, image in rows]


def read_pope(root: str | Path, image_root: str | Path | None = None) -> list[BenchmarkItem]:
    """POPE, all three splits (lmms-eval ``pope``/``pope_full``): prompt = question + SHORT_ANSWER, ``answers`` =
    ("yes",) or ("no",), ``extra["split"]`` = random/popular/adversarial. ``image_root`` (COCO val2014) defaults to
    ``root/val2014`` for the JSON files."""
    root = Path(root)
    for folder in (root, root / "coco", root / "output" / "coco"):
        files = [folder / f"coco_pope_{s}.json" for s in POPE_SPLITS if (folder / f"coco_pope_{s}.json").is_file()]
        if files:
            return _read_pope_json(files, Path(image_root) if image_root else root / "val2014")
    with_split = [(p, s) for s in POPE_SPLITS for p in _split_files(root, s)]
    if not with_split:  # the default config: one test split, the split named per row
        with_split = [(p, None) for p in _split_files(root, "test")]
    if not with_split:
        raise _layout_error("POPE", root, "coco_pope_{random,popular,adversarial}.json with COCO val2014/ (the POPE "
                            "repository), or lmms-lab/POPE parquet files (test-*.parquet, or random/popular/"
                            "adversarial files)")
    items = []
    for path, split in with_split:
        for row, image in _parquet_rows([path]):
            items.append(BenchmarkItem(row["question_id"], image, row["question"].strip() + SHORT_ANSWER,
                                       (row["answer"],), {"split": split or row["category"],
                                                          "image_source": row.get("image_source")}))
    return items


def _read_pope_json(files: Sequence[Path], image_root: Path) -> list[BenchmarkItem]:
    if not image_root.is_dir():
        raise BenchmarkLayoutError(f"POPE's images folder {image_root} does not exist: pass image_root= the COCO "
                                   "val2014 folder (COCO_val2014_*.jpg)")
    items = []
    for path in files:
        split = path.stem.removeprefix("coco_pope_")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    q = json.loads(line)
                except json.JSONDecodeError as err:
                    raise BenchmarkLayoutError(f"{path} line {number} is not a JSON record ({err}); POPE's files "
                                               "hold one JSON object per line") from None
                items.append(BenchmarkItem(q["question_id"], LazyImage(str(image_root / q["image"])),
                                           q["text"].strip() + SHORT_ANSWER, (q["label"],), {"split": split}))
    return items


def read_gqa(root: str | Path) -> list[BenchmarkItem]:
    """GQA testdev-balanced (lmms-eval ``gqa``): prompt = question + SHORT_ANSWER, ``answers`` = (answer,);
    ``extra``: image id and the full-sentence answer."""
    root = Path(root)
    questions = root / "testdev_balanced_questions.json"
    if questions.is_file() and (root / "images").is_dir():
        rows = [(dict(q, id=qid), LazyImage(str(root / "images" / f"{q['imageId']}.jpg")))
                for qid, q in _read_json(questions).items()]
    else:
        expected = ("testdev_balanced_questions.json with images/ (the original release), or "
                    "testdev_balanced_instructions/ and testdev_balanced_images/ testdev-*.parquet (lmms-lab/GQA)")
        if not ((root / "testdev_balanced_instructions").is_dir() and (root / "testdev_balanced_images").is_dir()):
            raise _layout_error("GQA", root, expected)
        images = {row["id"]: image for row, image in
                  _parquet_split("GQA", root / "testdev_balanced_images", "testdev", expected)}
        questions_rows = [row for row, _ in _parquet_split("GQA", root / "testdev_balanced_instructions", "testdev",
                                                           expected, image_column=None)]
        missing = sorted({q["imageId"] for q in questions_rows} - images.keys())
        if missing:
            raise BenchmarkLayoutError(f"{len(missing)} GQA images named by the questions are not in "
                                       f"testdev_balanced_images/ (first: {missing[0]!r})")
        rows = [(q, images[q["imageId"]]) for q in questions_rows]
    return [BenchmarkItem(q["id"], image, q["question"] + SHORT_ANSWER, (q["answer"],),
                          {"image_id": q["imageId"], "full_answer": q.get("fullAnswer")}) for q, image in rows]


def read_scienceqa_img(root: str | Path, split: str = "test") -> list[BenchmarkItem]:
    """ScienceQA-IMG (lmms-eval ``scienceqa_img``): prompt = "Context: <hint>\\n" (when there is one) + question +
    "\\nA. ...\\nB. ..." + OPTION_LETTER; ``answers`` = (letter,); ``extra``: choices, subject."""
    root = Path(root)
    folder = root / "ScienceQA-IMG" if (root / "ScienceQA-IMG").is_dir() else root
    if "ScienceQA-FULL" in (folder.name, *(p.name for p in folder.glob("*"))):
        raise BenchmarkLayoutError(f"{folder} holds ScienceQA-FULL, whose questions are not all about an image: "
                                   "give the folder of the ScienceQA-IMG config (or the one above it)")
    rows = _parquet_split("ScienceQA-IMG", folder, split, f"ScienceQA-IMG/{split}-*.parquet (lmms-lab/ScienceQA)")
    items = []
    for index, (q, image) in enumerate(rows):
        letters = [chr(ord("A") + i) for i in range(len(q["choices"]))]
        options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, q["choices"]))
        context = f"Context: {q['hint']}\n" if q.get("hint") else ""
        items.append(BenchmarkItem(index, image, f"{context}{q['question']}\n{options}{OPTION_LETTER}",
                                   (letters[q["answer"]],), {"choices": tuple(q["choices"]),
                                                             "subject": q.get("subject")}))
    return items


def read_realworldqa(root: str | Path) -> list[BenchmarkItem]:
    """RealWorldQA (lmms-eval ``realworldqa``): prompt = the question as shipped (it carries its options and
    instruction; lmms-eval's default post-prompt is empty), ``answers`` = (answer,), ids = row numbers."""
    root = Path(root)
    rows = _parquet_split("RealWorldQA", root, "test", "test-*.parquet (lmms-lab/RealWorldQA)")
    return [BenchmarkItem(index, image, q["question"].strip(), (q["answer"],), {}) for index, (q, image)
            in enumerate(rows)]


def read_mme(root: str | Path) -> list[BenchmarkItem]:
    """MME (lmms-eval ``mme``): prompt = the question without " Please answer yes or no." + SHORT_ANSWER,
    ``answers`` = ("Yes",) or ("No",), ``question_id`` = the image, ``extra["category"]`` = the subtask."""
    root = Path(root)
    rows = _parquet_split("MME", root, "test", "test-*.parquet (lmms-lab/MME)")
    return [BenchmarkItem(q["question_id"], image, q["question"].strip().replace(MME_YES_NO, "") + SHORT_ANSWER,
                          (q["answer"],), {"category": q["category"]}) for q, image in rows]


READERS: dict[str, Callable[..., list[BenchmarkItem]]] = {
    "textvqa": read_textvqa, "scienceqa_img": read_scienceqa_img, "realworldqa": read_realworldqa,
    "pope": read_pope, "gqa": read_gqa, "mme": read_mme,
}


def load_benchmark(name: str, root: str | Path, **options: Any) -> list[BenchmarkItem]:
    """The items of benchmark ``name`` (a key of :data:`READERS`) from ``root``; ``options`` go to its reader."""
    if name not in READERS:
        raise ValueError(f"unknown benchmark {name!r}: expected one of {sorted(READERS)}")
    try:
        return READERS[name](root, **options)
    except KeyError as err:  # a record without a field the released files have
        raise BenchmarkLayoutError(f"{name} under {root}: a record has no {err.args[0]!r} field; is this the "
                                   f"benchmark's released file?") from None


def _read_json(path: Path) -> Any:
    """The JSON document in ``path``; a file that is not JSON is a layout error naming it and the place."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchmarkLayoutError(f"{path} is not valid JSON ({err})") from None


# ---------------------------------------------------------------------------------------------- scoring

# Per-question scores of the benchmarks whose metric is their mean (also the input of metrics.bootstrap_ci).
_QUESTION_SCORES: dict[str, Callable[[str, BenchmarkItem], float]] = {
    "textvqa": lambda p, item: vqa_accuracy(p, item.answers),
    "scienceqa_img": lambda p, item: scienceqa_score(p, item.answers[0]),
    "realworldqa": lambda p, item: realworldqa_score(p, item.answers[0]),
    "gqa": lambda p, item: gqa_score(p, item.answers[0]),
}


def question_scores(name: str, items: Sequence[BenchmarkItem], predictions: Sequence[str]) -> list[float]:
    """Each question's score (0..1) for the accuracy benchmarks (textvqa, scienceqa_img, realworldqa, gqa)."""
    if name not in _QUESTION_SCORES:
        raise ValueError(f"{name!r} has no per-question score; those that do: {sorted(_QUESTION_SCORES)}")
    _check_lengths(items, predictions)
    return [_QUESTION_SCORES[name](p, item) for p, item in zip(predictions, items)]


def score(name: str, items: Sequence[BenchmarkItem], predictions: Sequence[str]) -> dict[str, float]:
    """lmms-eval's metrics for replies ``predictions`` (one per item, in order), on lmms-eval's scales.

    Accuracy benchmarks give ``{"accuracy"}``; POPE gives ``"<split>/<metric>"`` for each split, ``"all"`` (every
    question pooled: lmms-eval's ``pope``) and ``"mean"`` (the average of the splits' values) for accuracy,
    precision, recall, f1 and yes_ratio; MME gives ``"perception"``, ``"cognition"`` and each subtask's score.
    """
    if name in _QUESTION_SCORES:
        return {"accuracy": mean(question_scores(name, items, predictions))}
    _check_lengths(items, predictions)
    if name == "pope":
        by_split = pope_scores_by_split(predictions, [item.answers[0] for item in items],
                                        [item.extra["split"] for item in items])
        metrics = ("accuracy", "precision", "recall", "f1", "yes_ratio")
        result = {f"{group}/{m}": getattr(s, m) for group, s in by_split.items() for m in metrics}
        splits = [s for group, s in by_split.items() if group != "all"]
        result.update({f"mean/{m}": mean(getattr(s, m) for s in splits) for m in metrics})
        return result
    if name == "mme":
        mme = mme_scores(predictions, [item.answers[0] for item in items], [str(item.question_id) for item in items],
                         [item.extra["category"] for item in items])
        return {"perception": mme.perception, "cognition": mme.cognition,
                **{category: s.score for category, s in mme.subtasks.items()}}
    raise ValueError(f"unknown benchmark {name!r}: expected one of {sorted(READERS)}")


def _check_lengths(items: Sequence[BenchmarkItem], predictions: Sequence[str]) -> None:
    if len(items) != len(predictions):
        raise ValueError(f"got {len(predictions)} predictions for {len(items)} items: give one per item, in order")
