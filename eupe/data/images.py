"""Image sources and robust decoding: list images (folder tree, glob, list file), load them as RGB, and a
Dataset whose bad files become skip markers instead of exceptions, so one corrupt file never stops a run.
"""

from __future__ import annotations

import csv
import errno
import fnmatch
import glob
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Mapping, NamedTuple, Sequence

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


class ImageListing(NamedTuple):
    """What :func:`scan_images` found: the records, the class names their labels index, and ``(path, reason)`` of
    the entries left out (broken or looping symbolic links, links to folders listed already, unreadable folders)."""

    records: list[ImageRecord]
    class_names: list[str]
    skipped: list[tuple[str, str]]


def list_images(source: str | Path | Sequence[str | Path]) -> tuple[list[ImageRecord], list[str]]:
    """Lists the images of ``source`` and the class names their labels index.

    ``source`` is one of:

    * a folder: every first-level subfolder holding images (at any depth) is a class, classes sorted by name
      and numbered from 0; images directly in the folder get ``label=None``. Records are sorted by path.
      Symbolic links are followed, but every real folder is listed once (a link back up the tree, or to a
      folder listed already, is left out), and a link from one class folder into another's is never followed,
      so no image gets another class's label.
    * a glob pattern (``data/**/*.jpg``): the matching files, sorted, unlabelled (``**`` follows links as
      folders do above).
    * a list file (``.txt``/``.csv``/``.tsv``/``.lst``): one image per line, ``path`` or ``path<TAB or ,>label``;
      relative paths are relative to the list file's folder; blank lines and ``#`` comments are skipped, and
      so is a ``path,label`` header. Integer labels are kept as given (class names ``"0".."max"``); other
      labels are class names, sorted and numbered from 0. Records keep the file's order.
    * a sequence of sources (as a Unix tool takes several paths): each listed as above, in the given order, and
      merged (:func:`merge_listings`): a folder keeps its subfolder classes and a list file its labels, classes of
      the same name from two sources are one class, and a single file or a glob's files stay unlabelled (their
      parent folder is not taken as a class). The same file from two sources is refused, as is merging the
      numbered labels of a list file with other classes.

    Entries left out (see :func:`scan_images`) are logged as warnings. Raises ``FileNotFoundError`` for a missing
    source and ``ImageSourceError`` for one without images.
    """
    listing = scan_images(source)
    for path, reason in listing.skipped:
        logger.warning("skipped %s: %s", path, reason)
    return listing.records, listing.class_names


def scan_images(source: str | Path | Sequence[str | Path]) -> ImageListing:
    """:func:`list_images`, with the entries it left out (broken or looping links, ...) returned, not logged."""
    if isinstance(source, (list, tuple)):
        if not source:
            raise ImageSourceError("The list of image sources is empty: pass at least one image, folder, glob or "
                                   "list file")
        if len(source) == 1:
            return scan_images(source[0])
        return merge_listings({str(s): scan_images(s) for s in _distinct(source)})
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return _list_folder(path)
    if path.is_file() and path.suffix.lower() in LIST_FILE_SUFFIXES:
        return ImageListing(*_list_file(path), [])
    if path.is_file():
        return ImageListing([ImageRecord(str(path))], [], [])
    if GLOB_CHARS & set(text):
        return _list_glob(os.path.expanduser(text))
    if path.is_symlink():
        raise FileNotFoundError(f"Image source {text!r} is a symbolic link that leads nowhere ({_link_problem(path)})")
    raise FileNotFoundError(f"Image source {text!r} does not exist: give a folder, a glob pattern or a list file "
                            f"({'/'.join(sorted(LIST_FILE_SUFFIXES))})")


def _distinct(sources: Sequence[str | Path]) -> list[str | Path]:
    """``sources``, refusing one given twice (its images would be listed twice)."""
    seen: set[str] = set()
    for spec in sources:
        if str(spec) in seen:
            raise ImageSourceError(f"Image source {str(spec)!r} is given twice: give each source once")
        seen.add(str(spec))
    return list(sources)


def merge_listings(listings: Mapping[str, ImageListing]) -> ImageListing:
    """One listing of several sources (source spec -> its listing), records in the given order.

    Classes are merged by name. When every labelled source has the same class list it is kept as it is (so the
    numbered labels of list files keep their numbers); otherwise the classes are the sorted union of the names and
    the labels are renumbered, which is refused for a list file's numbered labels (``3`` would stop meaning 3).
    The same file (by real path) from two sources is refused: its class would be ambiguous, and a duplicate would
    count twice in an evaluation.
    """
    labelled = {spec: listing.class_names for spec, listing in listings.items() if listing.class_names}
    distinct = {tuple(names) for names in labelled.values()}
    if len(distinct) > 1:
        numbered = [spec for spec, names in labelled.items()
                    if Path(spec).suffix.lower() in LIST_FILE_SUFFIXES and all(map(_is_int, names))]
        if numbered:
            raise ImageSourceError(f"The list file {numbered[0]} labels its images with numbers, and the other "
                                   f"sources have other classes ({', '.join(labelled)}): merging would renumber "
                                   "them; give the list file class names, or list its images on their own")
    class_names = sorted({n for names in distinct for n in names}) if len(distinct) > 1 else \
        list(next(iter(distinct), ()))
    index = {name: i for i, name in enumerate(class_names)}
    owner: dict[str, str] = {}
    records: list[ImageRecord] = []
    skipped: list[tuple[str, str]] = []
    for spec, listing in listings.items():
        for record in listing.records:
            real = os.path.realpath(record.path)
            if owner.setdefault(real, spec) != spec:
                raise ImageSourceError(f"{record.path} is listed by two sources ({owner[real]} and {spec}): its "
                                       "class would be ambiguous and it would count twice; give sources that "
                                       "do not overlap")
            label = index[record.class_name] if record.class_name is not None else None
            records.append(ImageRecord(record.path, label, record.class_name))
        skipped.extend(listing.skipped)
    return ImageListing(records, class_names, skipped)


def _link_problem(path: str | Path, err: OSError | None = None) -> str:
    """Why the symbolic link ``path`` cannot be followed."""
    if err is None:
        try:
            os.stat(path)
        except OSError as caught:
            err = caught
    if err is not None and err.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if err is not None and err.errno != errno.ENOENT:
        return f"cannot read ({err.strerror or err})"
    return "broken symbolic link (its target does not exist)"


def _entry_kind(entry: os.DirEntry, skipped: list[tuple[str, str]]) -> str | None:
    """``"dir"`` or ``"file"`` (links followed); ``None`` for anything else, a broken or looping link being
    added to ``skipped``."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
    except OSError as err:  # a looping link
        skipped.append((entry.path, _link_problem(entry.path, err)))
        return None
    if entry.is_symlink():
        skipped.append((entry.path, _link_problem(entry.path)))
    return None


def _folder_id(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _walk_files(top: str, seen: dict[tuple[int, int], str], skipped: list[tuple[str, str]],
                foreign: Mapping[str, str] | None = None) -> list[str]:
    """The non-hidden files under folder ``top`` (already in ``seen``), links followed, each real folder entered
    once; what is left out goes to ``skipped``.

    ``seen`` maps (device, inode) of the folders listed so far to their path; a link to one of them is left out,
    as is a link into a folder of ``foreign`` (real path -> class name). Real subfolders are claimed before any
    link is followed, so a link to a folder of the tree never takes that folder's place.
    """
    found: list[str] = []
    real, linked = [top], []
    while real or linked:
        if real:
            folder = real.pop()
        else:
            folder = linked.pop(0)
            if not _claim(folder, seen, skipped, foreign):
                continue
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            skipped.append((folder, f"cannot list folder ({err.strerror or err})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            kind = _entry_kind(entry, skipped)
            if kind == "file":
                found.append(entry.path)
            elif kind == "dir" and entry.is_symlink():
                linked.append(entry.path)
            elif kind == "dir" and _claim(entry.path, seen, skipped):
                real.append(entry.path)
    return found


def _claim(folder: str, seen: dict[tuple[int, int], str], skipped: list[tuple[str, str]],
           foreign: Mapping[str, str] | None = None) -> bool:
    """Registers ``folder`` in ``seen``; ``False`` (with the reason in ``skipped``) when it was listed already, cannot
    be read, or lies inside a folder of ``foreign`` (real path -> class name)."""
    real = os.path.realpath(folder) if foreign else ""
    for root, name in (foreign or {}).items():
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            skipped.append((folder, f"symbolic link into the folder of class {name!r}: its images keep that class"))
            return False
    try:
        key = _folder_id(folder)
    except OSError as err:
        skipped.append((folder, _link_problem(folder, err)))
        return False
    if key in seen:
        skipped.append((folder, f"same folder as {seen[key]}, listed already (a symbolic link loop or a second "
                                "link to it)"))
        return False
    seen[key] = folder
    return True


def _list_folder(folder: Path) -> ImageListing:
    skipped: list[tuple[str, str]] = []
    seen = {_folder_id(folder): str(folder)}
    root_images, folders = [], {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        kind = _entry_kind(entry, skipped)
        if kind == "file" and is_image_file(entry.name):
            root_images.append(entry.path)
        elif kind == "dir":
            folders[entry.name] = entry
    real_dirs: dict[str, str] = {}  # real path -> class name, real folders first (a link never claims one)
    for name, entry in sorted(folders.items(), key=lambda item: item[1].is_symlink()):
        real_dirs.setdefault(os.path.realpath(entry.path), name)

    def others(name: str) -> dict[str, str]:
        return {real: other for real, other in real_dirs.items() if other != name}

    # a class folder that is a link into another class's folder is left out, as links inside class folders are
    class_dirs = [(name, entry.path) for name, entry in folders.items()
                  if _claim(entry.path, seen, skipped, others(name) if entry.is_symlink() else None)]
    per_class = {name: sorted(f for f in _walk_files(path, seen, skipped, others(name)) if is_image_file(f))
                 for name, path in class_dirs}
    class_names = sorted(name for name, files in per_class.items() if files)
    records = [ImageRecord(p) for p in root_images]
    for label, name in enumerate(class_names):
        records.extend(ImageRecord(p, label, name) for p in per_class[name])
    if not records:
        raise ImageSourceError(f"Folder {str(folder)!r} holds no images (looked for "
                               f"{', '.join(sorted(IMAGE_EXTENSIONS))} in it and its subfolders)"
                               + _skipped_note(skipped))
    return ImageListing(records, class_names, skipped)


def _list_glob(pattern: str) -> ImageListing:
    """The files a glob pattern matches, sorted; ``**`` is matched on a loop-safe walk (:func:`_walk_files`) of the
    folder before the first wildcard, as :func:`glob.glob` would match it on a tree without links."""
    skipped: list[tuple[str, str]] = []
    if "**" in pattern:
        parts = pattern.split(os.sep)
        fixed = next(i for i, part in enumerate(parts) if GLOB_CHARS & set(part))
        base = os.sep.join(parts[:fixed]) or ("/" if pattern.startswith(os.sep) else "")
        files = []
        if os.path.isdir(base or "."):
            walked = _walk_files(base or ".", {_folder_id(base or "."): base or "."}, skipped)
            files = [f[2:] if not base and f.startswith("./") else f for f in walked]
        matches = sorted(f for f in files if _glob_match(f.split(os.sep)[fixed:], parts[fixed:]))
    else:
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not matches:
        raise ImageSourceError(f"The glob pattern {pattern!r} matches no files: check the pattern and quote it "
                               "in the shell so that the shell does not expand it" + _skipped_note(skipped))
    return ImageListing([ImageRecord(p) for p in matches], [], skipped)


def _glob_match(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """Whether path components ``parts`` match glob components ``pattern`` (``**``: any number of folders, none
    hidden; wildcards never match a leading dot), as :func:`glob.glob` matches them."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_glob_match(parts[i:], rest) for i in range(len(parts) + 1)
                   if not any(p.startswith(".") for p in parts[:i]))
    return bool(parts) and (head.startswith(".") or not parts[0].startswith(".")) and \
        fnmatch.fnmatchcase(parts[0], head) and _glob_match(parts[1:], rest)


def _skipped_note(skipped: Sequence[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    path, reason = skipped[0]
    return f"; left out {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'}, e.g. {path}: {reason}"


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
        with _open_quietly(source) as image:
            _note_large(image, where)
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


_OPEN_LOCK = threading.Lock()  # warnings.catch_warnings changes process-wide state: one thread at a time


def _open_quietly(source: str | IO[bytes]) -> Image.Image:
    """``Image.open`` without PIL's ``DecompressionBombWarning`` (:func:`_note_large` says it in eupe's words).

    The filter holds only while the header is read (decoding happens later, outside the lock), so PIL's warning is
    not silenced for the rest of the process."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source)


def _note_large(image: Image.Image, where: str) -> None:
    """Logs one message for an image over PIL's decompression-bomb limit that is still decoded (up to twice the
    limit; larger ones are refused by PIL and skipped)."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.size[0] * image.size[1]
    if limit and pixels > limit:
        logger.warning("large image %s: %dx%d pixels, over PIL's decompression-bomb limit of %d pixels; decoding "
                       "it anyway (PIL.Image.MAX_IMAGE_PIXELS sets the limit)", where, *image.size, limit)


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
