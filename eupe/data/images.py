"""Image sources and robust decoding: list images (folder tree, glob, list file), load them as RGB, and a
Dataset whose bad files become skip markers instead of exceptions, so one corrupt file never stops a run.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: File name endings (lower case) treated as images when scanning folder trees.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)
LIST_FILE_SUFFIXES = frozenset({".txt", ".csv", ".tsv", ".lst"})
GLOB_CHARS = frozenset("*?[")  # characters that make a source string a glob pattern


class ImageSourceError(ValueError):
    """An image source (folder, glob or list file) that holds no usable images or is malformed."""


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)  # args kept as (path, reason) so the error pickles across workers
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot decode image {self.path}: {self.reason}"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source: its path, and its class index and name when the source gives one."""

    path: str
    label: int | None = None
    class_name: str | None = None


# ---------------------------------------------------------------------------------------------- listing


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(source: str | Path | Sequence[str | Path]) -> tuple[list[ImageRecord], list[str]]:
    """Lists the images of ``source`` and the class names their labels index.

    ``source`` is one of:

    * a folder: every first-level subfolder holding images (at any depth) is a class, classes sorted by name
      and numbered from 0; images directly in the folder get ``label=None``. Records are sorted by path.
    * a glob pattern (``data/**/*.jpg``): the matching files, sorted, unlabelled.
    * a list file (``.txt``/``.csv``/``.tsv``/``.lst``): one image per line, ``path`` or ``path<TAB or ,>label``;
      relative paths are relative to the list file's folder; blank lines and ``#`` comments are skipped, and
      so is a ``path,label`` header. Integer labels are kept as given (class names ``"0".."max"``); other
      labels are class names, sorted and numbered from 0. Records keep the file's order.
    * a sequence of paths: those files, in the given order, unlabelled.

    Raises ``FileNotFoundError`` for a missing source and ``ImageSourceError`` for one without images.
    """
    if isinstance(source, (list, tuple)):
        records = [ImageRecord(str(p)) for p in source]
        if not records:
            raise ImageSourceError("The list of image paths is empty: pass at least one image")
        return records, []
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return _list_folder(path)
    if path.is_file() and path.suffix.lower() in LIST_FILE_SUFFIXES:
        return _list_file(path)
    if path.is_file():
        return [ImageRecord(str(path))], []
    if GLOB_CHARS & set(text):
        matches = sorted(p for p in glob.glob(os.path.expanduser(text), recursive=True) if os.path.isfile(p))
        if not matches:
            raise ImageSourceError(f"The glob pattern {text!r} matches no files: check the pattern and quote it "
                                   "in the shell so that the shell does not expand it")
        return [ImageRecord(p) for p in matches], []
    raise FileNotFoundError(f"Image source {text!r} does not exist: give a folder, a glob pattern or a list file "
                            f"({'/'.join(sorted(LIST_FILE_SUFFIXES))})")


def _walk_images(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in files if not f.startswith(".") and is_image_file(f))
    return sorted(found)


def _list_folder(folder: Path) -> tuple[list[ImageRecord], list[str]]:
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    root_images = [e.path for e in entries if e.is_file() and not e.name.startswith(".") and is_image_file(e.name)]
    per_class = {e.name: _walk_images(Path(e.path)) for e in entries if e.is_dir() and not e.name.startswith(".")}
    class_names = sorted(name for name, files in per_class.items() if files)
    records = [ImageRecord(p) for p in root_images]
    for label, name in enumerate(class_names):
        records.extend(ImageRecord(p, label, name) for p in per_class[name])
    if not records:
        raise ImageSourceError(f"Folder {str(folder)!r} holds no images (looked for "
                               f"{', '.join(sorted(IMAGE_EXTENSIONS))} in it and its subfolders)")
    return records, class_names


def _list_file(list_path: Path) -> tuple[list[ImageRecord], list[str]]:
    rows: list[tuple[str, str | None]] = []
    with open(list_path, newline="", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = next(csv.reader([line], delimiter="\t" if "\t" in line else ","))
            fields = [x.strip() for x in fields]
            if len(fields) > 2:
                raise ImageSourceError(f"{list_path}:{lineno}: expected 'path' or 'path<TAB or ,>label', got {line!r}")
            if not rows and len(fields) == 2 and fields[0].lower() in ("path", "file", "filename", "image"):
                continue  # header
            rows.append((fields[0], fields[1] if len(fields) == 2 and fields[1] else None))
    if not rows:
        raise ImageSourceError(f"List file {str(list_path)!r} names no images (one path per line, optionally "
                               "followed by a tab or comma and a label)")
    labels = [label for _, label in rows if label is not None]
    class_names: list[str] = []
    index: dict[str, int] = {}
    if labels and all(_is_int(x) for x in labels):
        class_names = [str(i) for i in range(max(int(x) for x in labels) + 1)]
        index = {x: int(x) for x in labels}
    elif labels:
        class_names = sorted(set(labels))
        index = {name: i for i, name in enumerate(class_names)}
    base = list_path.parent
    records = []
    for raw, label in rows:
        p = Path(raw).expanduser()
        p = p if p.is_absolute() else base / p
        idx = index[label] if label is not None else None
        records.append(ImageRecord(str(p), idx, class_names[idx] if idx is not None else None))
    return records, class_names


def _is_int(text: str) -> bool:
    try:
        return int(text) >= 0
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------- decoding


def load_image(path: str | Path) -> Image.Image:
    """Decodes ``path`` fully into an RGB PIL image, whatever the file's mode.

    EXIF orientation is applied; CMYK, YCbCr, grayscale, palette, 1-bit and 16/32-bit integer or float images
    are converted (16-bit values scaled to 8 bits, not clipped); images with transparency are composited on
    white. Raises ``ImageDecodeError`` for missing, empty, truncated, corrupt and non-image files.
    """
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise ImageDecodeError(path, f"cannot read file ({err.strerror or err})") from None
    if size == 0:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    return decode_image(path, path)


def decode_image(source: str | IO[bytes], where: str) -> Image.Image:
    """Decodes ``source`` (a path or a binary file object) as ``load_image`` does; ``where`` names it in errors.

    Raises ``ImageDecodeError`` for unrecognised, too large (decompression bomb), truncated and corrupt data.
    """
    try:
        with Image.open(source) as image:
            image.load()  # decode everything now, so truncation is detected here
            return to_rgb(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise ImageDecodeError(where, "not an image file (unrecognised format)") from None
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(where, f"image too large ({err})") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, KeyError) as err:
        reason = str(err) or type(err).__name__
        if "truncated" in reason.lower() or isinstance(err, EOFError):
            reason = f"truncated file ({reason})"
        raise ImageDecodeError(where, f"corrupt image: {reason}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB (see ``load_image``); an RGB image is returned as it is, not copied."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_high_depth_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit integer and float grayscale -> uint8, scaling by the value range the mode implies."""
    values = array.astype(np.float64)
    if mode == "F":
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
    elif mode.startswith("I;16") or (values.size and values.max() > 255):
        scale = 255.0 / 65535.0  # 16-bit data (Pillow opens 16-bit PNGs as "I;16" or "I")
    else:
        scale = 1.0
    return np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- dataset


class ImageFolderDataset(torch.utils.data.Dataset):
    """``records`` decoded with ``load_image`` and passed through ``transform``.

    Item ``i`` is ``(tensor, i)``, or ``(None, i, reason)`` when the file cannot be decoded or transformed;
    batch with ``collate_skipping_failures`` to drop and report those.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        path = self.records[index].path
        try:
            return self.transform(load_image(path)), index
        except ImageDecodeError as err:
            return None, index, err.reason
        except Exception as err:  # a transform failing on one odd image must not stop the run either
            return None, index, f"transform failed: {type(err).__name__}: {err}"


class Batch(NamedTuple):
    """A collated batch: the decoded images, their dataset indices, and ``(index, reason)`` of dropped items."""

    images: torch.Tensor | None
    indices: torch.Tensor
    failures: list[tuple[int, str]]


def collate_skipping_failures(items: Sequence[tuple[Any, ...]]) -> Batch:
    """Stacks the successful items of an ``ImageFolderDataset`` batch; failed ones go to ``Batch.failures``.

    ``images`` is ``None`` when every item of the batch failed.
    """
    good = [item for item in items if item[0] is not None]
    failures = [(int(item[1]), str(item[2])) for item in items if item[0] is None]
    for index, reason in failures:
        logger.debug("skipping item %d: %s", index, reason)
    images = torch.stack([item[0] for item in good]) if good else None
    indices = torch.tensor([int(item[1]) for item in good], dtype=torch.long)
    return Batch(images, indices, failures)
