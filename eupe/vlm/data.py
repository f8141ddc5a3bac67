"""LLaVA-1.5 training data: the released JSON files, read without crashing on bad records or images, and collators
that tokenize, mask labels and expand image tokens as LLaVA does, ready for ``LlavaForConditionalGeneration``.

Files, as they ship:

* ``blip_laion_cc_sbu_558k.json`` (LLaVA-Pretrain, stage a): a JSON list of ``{"id", "image": "<path relative to
  the image root>", "conversations": [{"from": "human", "value": "...<image>"}, {"from": "gpt", "value":
  "<caption>"}]}``;
* ``llava_v1_5_mix665k.json`` (stage b): the same schema, several human/gpt rounds, some records text-only (no
  ``image`` key).

What LLaVA does and what this module does (``llava/train/train.py``):

* The ``<image>`` of a human turn is moved to the start of the turn (``"<image>\\n" + text``), as LLaVA's
  ``preprocess_multimodal`` does. A leading turn that is not from the human is dropped, as in ``preprocess_v1``.
* A record whose ``<image>`` count differs from its number of images is skipped and counted. That includes an image
  without any ``<image>`` in the text: LLaVA loads such an image but, finding no placeholder, feeds nothing of it
  to the LLM (its ``prepare_inputs_labels_for_multimodal`` appends an empty slice of the features), so the record
  trains as text only; here it is reported instead, because it almost always means a broken record.
* Missing and undecodable images are skipped and counted; the dataset then serves the next record in their place
  (as LLaVA-NeXT does), so batches keep their size and a run never stops on one bad file. Training from a tower
  cache (:mod:`eupe.vlm.tower_cache`), the dataset serves each image's cached features instead, and the images the
  cache found unusable are skipped and counted the same way.
* ``mode="plain"`` (stage a, LLaVA's ``preprocess_plain``): the text is ``<image>`` + caption + end token, the
  human prompt is dropped, the loss is on the caption and its end token. LLaVA ends the caption with ``"\\n"``
  (``conv_llava_plain``'s separator); here the tokenizer's EOS ends it, one unambiguous token for any LLM.
* ``mode="conversation"`` (stage b): the LLM's own chat template, or :data:`VICUNA_V1_CHAT_TEMPLATE` (LLaVA-1.5's
  ``conv_vicuna_v1``); the loss is on each assistant reply and the template's end-of-turn token after it;
  everything else is -100.
* Image tokens are never cut. A sample longer than ``max_length`` loses whole later rounds, or, when the rounds
  that carry its images are too long on their own, the tail of its text; either is counted. LLaVA instead cuts at
  ``model_max_length`` wherever it falls.

Every skip and cut goes to a :class:`DataReport`, which collects them from all DataLoader worker processes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from ..data.images import ImageDecodeError, load_image

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of tokens without loss (the default ignore_index of the LLM's cross-entropy)
DEFAULT_IMAGE_TOKEN = "<image>"
MAX_CONSECUTIVE_BAD_IMAGES = 32  # past this many unreadable images in a row the image root is wrong, not the data

Mode = Literal["plain", "conversation"]
MODES: tuple[str, ...] = ("plain", "conversation")
ImageProcessor = Callable[[list[Image.Image]], Any]  # list of RGB images -> pixel_values [n, 3, H, W]

#: LLaVA-1.5's ``conv_vicuna_v1`` (``llava/conversation.py``) as a chat template, for LLMs without one (Vicuna):
#: ``<s>SYSTEM USER: <prompt> ASSISTANT: <reply></s>USER: ...``; the generation prompt is ``ASSISTANT:``.
VICUNA_V1_CHAT_TEMPLATE = (
    "{{ bos_token }}A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. {% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {{ message['content'] }} "
    "{% else %}ASSISTANT: {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Kinds and reasons of the report.
SKIPPED, TRUNCATED = "skipped", "truncated"
MALFORMED = "malformed record"
BAD_ROLES = "turns do not alternate human/gpt, from a human turn to a gpt one"
IMAGE_IN_REPLY = "image token in a gpt reply"
TOKEN_WITHOUT_IMAGE = "image token in the text but no image"
IMAGE_WITHOUT_TOKEN = "image but no image token in the text"
COUNT_MISMATCH = "image token count differs from the number of images"
MISSING_IMAGE = "missing image file"
BAD_IMAGE = "undecodable image"
NOT_A_PAIR = "plain mode needs one image and one reply"
NO_ROOM = "image tokens do not fit in max_length"
NO_LABELS = "no reply tokens left within max_length"
DROPPED_ROUNDS = "later rounds dropped"
CUT_TAIL = "text tail cut"

_ROLES = {"human": "user", "gpt": "assistant"}


class DataFormatError(ValueError):
    """A LLaVA data file, or a tokenizer / template, that cannot be used as given; the message says what to fix."""


# ---------------------------------------------------------------------------------------------- report


class ReportEvent(NamedTuple):
    """One skipped or truncated sample: ``kind`` is "skipped" or "truncated", ``reason`` one of this module's
    reason strings, ``detail`` the specifics (which file, what was kept)."""

    kind: str
    sample_id: str
    reason: str
    detail: str


class DataReport:
    """What was skipped or cut, and why, from every process that reads the data.

    Events are appended as JSON lines to ``path`` (a new temporary file by default), so DataLoader workers, which
    run copies of the dataset and the collator, report into the same place; the file can also be kept with a run's
    logs (an existing file is appended to, so a resumed run keeps its history). A sample reported twice for one
    reason (a second epoch) counts once.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            fd, name = tempfile.mkstemp(prefix="eupe-vlm-data-report-", suffix=".jsonl")
            os.close(fd)
            path = name
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def record(self, kind: str, sample_id: str, reason: str, detail: str = "") -> None:
        """Appends one event (one short ``write``, so lines from concurrent processes do not interleave)."""
        line = json.dumps({"kind": kind, "id": str(sample_id), "reason": reason, "detail": detail})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        logger.debug("%s %s: %s (%s)", kind, sample_id, reason, detail)

    def events(self) -> list[ReportEvent]:
        """Every distinct event so far, in the order first recorded."""
        seen: dict[tuple[str, str, str], ReportEvent] = {}
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):  # a line still being written by another process
                    break
                e = json.loads(line)
                seen.setdefault((e["kind"], e["id"], e["reason"]), ReportEvent(e["kind"], e["id"], e["reason"],
                                                                               e["detail"]))
        return list(seen.values())

    def counts(self) -> dict[str, dict[str, int]]:
        """``{kind: {reason: number of samples}}``."""
        result: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for event in self.events():
            result[event.kind][event.reason] += 1
        return {kind: dict(reasons) for kind, reasons in result.items()}

    def summary(self, examples: int = 3) -> str:
        """A printable account: per kind and reason, how many samples and the first ``examples`` of them."""
        events = self.events()
        if not events:
            return "VLM data: nothing skipped or truncated"
        by_reason: dict[tuple[str, str], list[ReportEvent]] = defaultdict(list)
        for event in events:
            by_reason[(event.kind, event.reason)].append(event)
        totals = {kind: sum(len(v) for (k, _), v in by_reason.items() if k == kind) for kind in (SKIPPED, TRUNCATED)}
        lines = [f"VLM data: {totals[SKIPPED]} samples skipped, {totals[TRUNCATED]} truncated (report: {self.path})"]
        for (kind, reason), group in by_reason.items():
            shown = "; ".join(f"{e.sample_id}: {e.detail}" if e.detail else e.sample_id for e in group[:examples])
            more = f"; ... {len(group) - examples} more" if len(group) > examples else ""
            lines.append(f"  {kind} - {reason}: {len(group)} ({shown}{more})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# ---------------------------------------------------------------------------------------------- reading


def read_llava_json(path: str | Path) -> list[dict[str, Any]]:
    """The records of a LLaVA data file (a JSON list of ``{"id", "image"?, "conversations"}``)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"LLaVA data file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path} is not valid JSON ({err}); LLaVA's data files are one JSON list "
                              "(blip_laion_cc_sbu_558k.json, llava_v1_5_mix665k.json)") from None
    if not isinstance(data, list):
        raise DataFormatError(f"{path} holds a JSON {type(data).__name__}, but LLaVA's data files are a JSON list of "
                              'records {"id", "image", "conversations": [{"from", "value"}, ...]}')
    return data


@dataclass(frozen=True)
class Sample:
    """One training sample: chat messages (``role`` "user"/"assistant", ``content`` with each image token at the
    start of its turn) and its decoded RGB images, one per image token, in order (or, read through a tower cache,
    each image's cached tower features ``[tokens, channels]``)."""

    id: str
    messages: tuple[dict[str, str], ...]
    images: tuple[Image.Image | torch.Tensor, ...]


class UnreadableImage(NamedTuple):
    """Why an image cannot be used: ``reason`` is :data:`MISSING_IMAGE` or :data:`BAD_IMAGE`, ``detail`` what the
    report shows (the path, and for an undecodable file why)."""

    reason: str
    detail: str


def read_image(path: str | Path) -> Image.Image | UnreadableImage:
    """The decoded RGB image at ``path``, or why it cannot be used (missing file, or a file that does not decode)."""
    try:
        return load_image(path)
    except ImageDecodeError as err:
        if not os.path.exists(err.path):
            return UnreadableImage(MISSING_IMAGE, err.path)
        return UnreadableImage(BAD_IMAGE, f"{err.path}: {err.reason}")


class _Record(NamedTuple):
    id: str
    messages: tuple[dict[str, str], ...]
    image_paths: tuple[str, ...]


class _Rejected(NamedTuple):
    reason: str
    detail: str


def _parse_record(record: Any, index: int, image_token: str) -> _Record | _Rejected:
    """A raw JSON record checked and normalised, or why it cannot be used."""
    if not isinstance(record, Mapping):
        return _Rejected(MALFORMED, f"record {index} is a {type(record).__name__}, not an object")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns or not all(
            isinstance(t, Mapping) and isinstance(t.get("value"), str) for t in turns):
        return _Rejected(MALFORMED, "'conversations' must be a non-empty list of {\"from\", \"value\": str}")
    image = record.get("image")
    if image is None:
        image_paths: tuple[str, ...] = ()
    elif isinstance(image, str) and image:
        image_paths = (image,)
    elif isinstance(image, list) and image and all(isinstance(p, str) and p for p in image):
        image_paths = tuple(image)
    else:
        return _Rejected(MALFORMED, f"'image' must be a path or a list of paths, got {image!r}")
    if turns[0].get("from") != "human":
        turns = turns[1:]  # LLaVA drops a leading turn that is not from the human
    roles = [t.get("from") for t in turns]
    if not turns or roles != ["human", "gpt"] * (len(turns) // 2):
        return _Rejected(BAD_ROLES, f"roles {roles}")
    if any(image_token in t["value"] for t in turns if t["from"] == "gpt"):
        return _Rejected(IMAGE_IN_REPLY, "")
    placeholders = sum(t["value"].count(image_token) for t in turns)
    if placeholders != len(image_paths):
        if not image_paths:
            return _Rejected(TOKEN_WITHOUT_IMAGE, f"{placeholders} x {image_token} and no 'image' key")
        if not placeholders:
            return _Rejected(IMAGE_WITHOUT_TOKEN, f"image {image_paths[0]!r} and no {image_token} in the text")
        return _Rejected(COUNT_MISMATCH, f"{placeholders} x {image_token} for {len(image_paths)} images")
    messages = []
    for turn in turns:
        content = turn["value"]
        count = content.count(image_token)
        if count:  # LLaVA's preprocess_multimodal: the image token opens its turn, on a line of its own
            content = ((image_token + "\n") * count + content.replace(image_token, "").strip()).strip()
        messages.append({"role": _ROLES[turn["from"]], "content": content})
    return _Record(str(record.get("id", index)), tuple(messages), image_paths)


class LlavaDataset(torch.utils.data.Dataset):
    """LLaVA records (a data file's path, or the records themselves) over ``image_root``; item ``i`` is a
    :class:`Sample` with its images decoded on access.

    Records that cannot be used are left out at construction and reported; an image that is missing or does not
    decode is reported when met, and the next record is served in its place. With ``features`` (a
    :class:`~eupe.vlm.tower_cache.TowerCache`'s ``read``), each image path is served as its cached tower features
    instead of being decoded.
    """

    def __init__(self, records: str | Path | Sequence[Mapping[str, Any]], image_root: str | Path, *,
                 image_token: str = DEFAULT_IMAGE_TOKEN, report: DataReport | None = None,
                 features: Callable[[str], torch.Tensor | UnreadableImage] | None = None) -> None:
        raw = read_llava_json(records) if isinstance(records, (str, Path)) else records
        self.image_root = Path(image_root)
        self.report = report if report is not None else DataReport()
        self.features = features
        self._records: list[_Record] = []
        for index, record in enumerate(raw):
            parsed = _parse_record(record, index, image_token)
            if isinstance(parsed, _Rejected):
                sample_id = record.get("id", index) if isinstance(record, Mapping) else index
                self.report.record(SKIPPED, str(sample_id), parsed.reason, parsed.detail)
            else:
                self._records.append(parsed)
        if not self._records:
            raise DataFormatError(f"none of the {len(raw)} records is usable:\n{self.report.summary()}")

    def __len__(self) -> int:
        return len(self._records)

    def image_paths(self) -> list[str]:
        """Every distinct image path of the usable records (relative to ``image_root``), sorted."""
        return sorted({path for record in self._records for path in record.image_paths})

    def __getitem__(self, index: int) -> Sample:
        first_problem = None
        for attempt in range(MAX_CONSECUTIVE_BAD_IMAGES):
            record = self._records[(index + attempt) % len(self._records)]
            images, problem = self._read_images(record.image_paths)
            if problem is None:
                return Sample(record.id, record.messages, images)
            self.report.record(SKIPPED, record.id, problem.reason, problem.detail)
            first_problem = first_problem or problem
        raise FileNotFoundError(f"{MAX_CONSECUTIVE_BAD_IMAGES} records in a row from index {index} have unreadable "
                                f"images (first: {first_problem.reason} {first_problem.detail}); is "
                                f"image_root={str(self.image_root)!r} the folder the records' 'image' paths are "
                                "relative to?")

    def _read_images(self, paths: Sequence[str]) -> tuple[tuple[Image.Image | torch.Tensor, ...],
                                                           UnreadableImage | None]:
        """The images (or cached features) of ``paths`` in order, or the first one's problem (the rest unread)."""
        images = []
        for path in paths:
            image = self.features(path) if self.features is not None else read_image(self.image_root / path)
            if isinstance(image, UnreadableImage):
                return (), image
            images.append(image)
        return tuple(images), None


# ---------------------------------------------------------------------------------------------- collating


class _Encoded(NamedTuple):
    input_ids: list[int]
    labels: list[int]
    images: tuple[Image.Image, ...]


class LlavaCollator:
    """Batches :class:`Sample` s into ``input_ids``, ``attention_mask``, ``labels`` and ``pixel_values`` for
    ``LlavaForConditionalGeneration.forward`` (padding on the right, for training).

    Each image token in the text becomes ``num_image_tokens`` copies of its id (the LLM's placeholders for the
    projected patch tokens), all labelled -100. ``pixel_values`` holds the batch's images in order, one row per
    image, and is left out when the batch has none: LLaVA's forward fills the placeholders with the images in
    order, so text-only samples need no image at all (unlike LLaVA's own code, which feeds them a blank one).
    With DDP, a text-only batch leaves the vision tower and projector without gradients on that rank: set
    ``ddp_find_unused_parameters=True`` or group batches by modality, as LLaVA's ``group_by_modality_length``.

    ``image_processor`` maps a list of PIL images to a ``[n, 3, H, W]`` tensor (a mapping with
    ``"pixel_values"``, as transformers' image processors return, works too). Samples read through a tower cache
    carry features instead of images: ``pixel_values`` then holds them stacked, ``[n, tokens, channels]``, for the
    cache's stand-in tower (:class:`~eupe.vlm.tower_cache.CachedFeatureTower`). In ``"conversation"`` mode the
    ``chat_template`` given here, else the tokenizer's, renders the messages; it must render each conversation as
    a prefix of its continuations (every common template does). Samples that cannot be fitted are dropped and
    reported, as are truncations.

    ``supervised_logits=True`` adds ``logits_to_keep`` (a boolean ``[batch, length]`` mask of the positions whose
    next token is labelled) and ``shift_labels`` (those next tokens): the model then runs its LM head, vocabulary
    wide, only where the loss reads it, and computes the same loss (``transformers.Trainer`` counts the tokens of
    ``shift_labels``). Where most tokens are prompt, image or padding this saves most of the head's cost.
    """

    def __init__(self, tokenizer: Any, image_processor: ImageProcessor, *, num_image_tokens: int,
                 max_length: int = 2048, mode: Mode = "conversation", image_token: str = DEFAULT_IMAGE_TOKEN,
                 chat_template: str | None = None, report: DataReport | None = None,
                 supervised_logits: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if num_image_tokens < 1 or max_length <= num_image_tokens:
            raise ValueError(f"max_length ({max_length}) must exceed num_image_tokens ({num_image_tokens}), "
                             "which must be at least 1")
        if not getattr(tokenizer, "is_fast", False):
            raise DataFormatError(f"{type(tokenizer).__name__} is not a fast tokenizer; label masking needs character "
                                  "offsets: load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
        image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if tokenizer(image_token, add_special_tokens=False)["input_ids"] != [image_token_id] or (
                image_token_id == tokenizer.unk_token_id):
            raise DataFormatError(f"the tokenizer does not read {image_token!r} as one token: add it with "
                                  f"tokenizer.add_tokens([{image_token!r}], special_tokens=True) and resize the "
                                  "LLM's embeddings to len(tokenizer)")
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        if mode == "conversation" and not self.chat_template:
            raise DataFormatError(f"{type(tokenizer).__name__} {getattr(tokenizer, 'name_or_path', '')!r} has no chat "
                                  "template, which mode='conversation' renders the messages with: pass "
                                  "chat_template=<a Jinja template string> to LlavaCollator")
        if mode == "plain" and tokenizer.eos_token is None:
            raise DataFormatError("mode='plain' ends each caption with the tokenizer's EOS token, and this tokenizer "
                                  "has none: set tokenizer.eos_token")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise DataFormatError("the tokenizer has neither a pad nor an EOS token to pad with: "
                                  "set tokenizer.pad_token")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.mode = mode
        self.image_token = image_token
        self.image_token_id = image_token_id
        self.pad_token_id = pad_id
        self.report = report if report is not None else DataReport()
        self.supervised_logits = supervised_logits

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        encoded = [e for e in (self._encode(s) for s in samples) if e is not None]
        if not encoded:
            raise DataFormatError(f"every sample of this batch was dropped (max_length={self.max_length}, "
                                  f"num_image_tokens={self.num_image_tokens}):\n{self.report.summary()}")
        length = max(len(e.input_ids) for e in encoded)
        input_ids = torch.full((len(encoded), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(encoded), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for row, e in enumerate(encoded):
            input_ids[row, :len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[row, :len(e.labels)] = torch.tensor(e.labels, dtype=torch.long)
            attention_mask[row, :len(e.input_ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.supervised_logits:
            batch.update(supervised_logits_inputs(labels))
        images = [image for e in encoded for image in e.images]
        if images and all(isinstance(image, torch.Tensor) for image in images):  # cached tower features
            batch["pixel_values"] = torch.stack(images)
        elif images:
            batch["pixel_values"] = pixel_values(self.image_processor, images)
        return batch

    def _encode(self, sample: Sample) -> _Encoded | None:
        """One sample's expanded ``input_ids`` and ``labels`` within ``max_length``, or None (reported) when it
        cannot be fitted."""
        if self.mode == "plain":
            if len(sample.messages) != 2 or not sample.images:
                self.report.record(SKIPPED, sample.id, NOT_A_PAIR,
                                   f"{len(sample.messages)} turns, {len(sample.images)} images")
                return None
            start = self.image_token * len(sample.images)
            text = start + sample.messages[1]["content"] + self.tokenizer.eos_token
            spans, round_ends, add_special = [(len(start), len(text))], [len(text)], True
        else:
            text, spans, round_ends = self._render(sample.messages)
            add_special = False  # chat templates write their own BOS
        enc = self.tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        labels = [t if end > begin and any(a <= begin < b for a, b in spans) else IGNORE_INDEX
                  for t, (begin, end) in zip(ids, offsets)]
        image_positions = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(image_positions) != len(sample.images):
            raise DataFormatError(f"sample {sample.id}: {len(image_positions)} image tokens after tokenizing, for "
                                  f"{len(sample.images)} images; does the chat template add {self.image_token!r}?")
        keep = self._fit(sample.id, ids, offsets, image_positions, round_ends)
        if keep is None:
            return None
        if all(label == IGNORE_INDEX for label in labels[:keep]):
            self.report.record(SKIPPED, sample.id, NO_LABELS, f"max_length={self.max_length}")
            return None
        input_ids, out_labels = [], []
        for token, label in zip(ids[:keep], labels[:keep]):
            copies = self.num_image_tokens if token == self.image_token_id else 1
            input_ids += [token] * copies
            out_labels += [label] * copies
        return _Encoded(input_ids, out_labels, sample.images)

    def _render(self, messages: Sequence[dict[str, str]]) -> tuple[str, list[tuple[int, int]], list[int]]:
        """The conversation's text, the character spans of the assistant replies (with their end-of-turn token,
        without trailing whitespace), and where each round ends."""
        def render(msgs: Sequence[dict[str, str]], prompt: bool) -> str:
            return self.tokenizer.apply_chat_template(list(msgs), chat_template=self.chat_template, tokenize=False,
                                                      add_generation_prompt=prompt)

        text = render(messages, False)
        spans, round_ends = [], []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before, through = render(messages[:i], True), render(messages[:i + 1], False)
            if not (through.startswith(before) and text.startswith(through)):
                raise DataFormatError("the chat template does not render a conversation as a prefix of its "
                                      "continuations, so replies cannot be located for the labels: pass a template "
                                      "that does (e.g. ChatML) as chat_template=")
            spans.append((len(before), len(through.rstrip())))
            round_ends.append(len(through))
        return text, spans, round_ends

    def _fit(self, sample_id: str, ids: Sequence[int], offsets: Sequence[tuple[int, int]],
             image_positions: Sequence[int], round_ends: Sequence[int]) -> int | None:
        """How many text tokens to keep so that the expanded sample fits ``max_length`` with all its images:
        whole rounds if possible, else a cut tail. None (reported) when even the images do not fit."""
        def expanded(n: int) -> int:
            return n + (self.num_image_tokens - 1) * sum(p < n for p in image_positions)

        if expanded(len(ids)) <= self.max_length:
            return len(ids)
        needed = image_positions[-1] + 1 if image_positions else 0
        # Tokens of the first r rounds: those before the first token that starts at or after the round's end.
        round_lengths = [next((i for i, (b, e) in enumerate(offsets) if b >= end and e > b), len(ids))
                         for end in round_ends]
        fitting = [r for r, n in enumerate(round_lengths) if needed <= n and expanded(n) <= self.max_length]
        if fitting:
            keep = round_lengths[fitting[-1]]
            self.report.record(TRUNCATED, sample_id, DROPPED_ROUNDS,
                               f"kept {fitting[-1] + 1} of {len(round_lengths)} rounds, {keep} of {len(ids)} tokens")
            return keep
        keep = self.max_length - (self.num_image_tokens - 1) * len(image_positions)
        if keep < needed:
            self.report.record(SKIPPED, sample_id, NO_ROOM,
                               f"{len(image_positions)} images x {self.num_image_tokens} tokens after "
                               f"{needed - len(image_positions)} text tokens exceed max_length={self.max_length}")
            return None
        self.report.record(TRUNCATED, sample_id, CUT_TAIL, f"kept {keep} of {len(ids)} tokens")
        return keep


def supervised_logits_inputs(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``logits_to_keep`` (where the next token of ``labels`` is supervised, ``[batch, length]`` booleans) and
    ``shift_labels`` (those tokens): inputs with which a transformers causal LM computes its head and loss only
    at those positions (:class:`LlavaCollator`'s ``supervised_logits``)."""
    next_labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = next_labels != IGNORE_INDEX
    return {"logits_to_keep": keep, "shift_labels": next_labels[keep]}


def pixel_values(image_processor: ImageProcessor, images: Sequence[Image.Image]) -> torch.Tensor:
    """``image_processor`` applied to ``images``: their ``pixel_values`` ``[n, 3, H, W]``, checked."""
    out = image_processor(list(images))
    if isinstance(out, Mapping):
        out = out["pixel_values"]
    values = torch.as_tensor(np.stack(out) if isinstance(out, (list, tuple)) else out)
    if values.ndim != 4 or values.shape[0] != len(images):
        raise DataFormatError(f"image_processor returned shape {tuple(values.shape)} for {len(images)} "
                              "images; it must return pixel_values of shape [n_images, 3, H, W]")
    return values


def pixel_batches(image_processor: ImageProcessor, paths: Sequence[str | os.PathLike],
                  batch_size: int) -> Iterator[torch.Tensor]:
    """:func:`pixel_values` of the image files ``paths``, ``batch_size`` at a time (decoded with ``load_image``:
    an undecodable file is an ``ImageDecodeError`` naming it)."""
    for start in range(0, len(paths), batch_size):
        yield pixel_values(image_processor, [load_image(path) for path in paths[start:start + batch_size]])
