"""Indexed training image sources: image files (folder, glob, list file) and WebDataset-style tar shards.

A source has a length and loads item ``index`` as an RGB PIL image, raising :class:`ImageDecodeError` for one
that cannot be decoded (the training stream, :class:`eupe.distill.data.ViewStream`, skips and counts those).

* :class:`FileSource`: anything :func:`eupe.data.images.list_images` accepts, decoded with ``load_image``.
* :class:`TarShardSource`: uncompressed ``.tar`` shards read by offset (random access, no ``webdataset``
  dependency). Files are grouped into samples by key, the part of the name before the first dot, as WebDataset
  does; a sample's first file whose last suffix is jpg/jpeg/png/webp is its image, decoded with ``decode_bytes``.
* :func:`open_source` picks one from a spec: a ``.tar`` file, a glob or brace range of them
  (``shards/*.tar``, ``shards/train-{000..099}.tar``), a folder holding only ``.tar`` files, or else image files.
"""

from __future__ import annotations

import glob
import io
import os
import re
import tarfile
from pathlib import Path
from typing import NamedTuple, Protocol, Sequence

from PIL import Image

from .images import GLOB_CHARS, ImageDecodeError, ImageSourceError, decode_image, list_images, load_image

TAR_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


class ImageSource(Protocol):
    """An indexed set of images; ``load`` raises :class:`ImageDecodeError` for an undecodable one."""

    name: str

    def __len__(self) -> int: ...

    def describe(self, index: int) -> str: ...

    def load(self, index: int) -> Image.Image: ...


class FileSource:
    """Image files listed by ``list_images`` (folder tree, glob, list file or a sequence of paths)."""

    def __init__(self, spec: str | Path | Sequence[str | Path]) -> None:
        records, _ = list_images(spec)
        self.name = str(spec) if isinstance(spec, (str, Path)) else f"{len(records)} files"
        self.paths = [r.path for r in records]

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return self.paths[index]

    def load(self, index: int) -> Image.Image:
        return load_image(self.paths[index])


class TarMember(NamedTuple):
    """Where one sample's image lies: shard number, sample key, byte offset and size of its data."""

    shard: int
    key: str
    offset: int
    size: int


class TarShardSource:
    """The image samples of uncompressed tar shards, in shard order, then in order within each shard."""

    def __init__(self, shards: Sequence[str | Path]) -> None:
        self.shards = [str(s) for s in shards]
        self.name = self.shards[0] if len(self.shards) == 1 else f"{len(self.shards)} tar shards"
        self.members = [m for i, shard in enumerate(self.shards) for m in _index_shard(i, shard)]
        if not self.members:
            raise ImageSourceError(f"Tar shards {self.name} hold no images (looked for samples with a "
                                   f"{'/'.join(TAR_IMAGE_EXTENSIONS)} file)")
        self._handles: dict[int, io.BufferedReader] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.members)

    def describe(self, index: int) -> str:
        member = self.members[index]
        return f"{self.shards[member.shard]}:{member.key}"

    def load(self, index: int) -> Image.Image:
        member = self.members[index]
        where = self.describe(index)
        try:
            handle = self._handle(member.shard)
            handle.seek(member.offset)
            data = handle.read(member.size)
        except OSError as err:
            raise ImageDecodeError(where, f"cannot read shard ({err})") from None
        return decode_bytes(data, where)

    def _handle(self, shard: int) -> io.BufferedReader:
        if self._pid != os.getpid():  # forked (e.g. a DataLoader worker): never share file offsets with the parent
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = open(self.shards[shard], "rb")
        return self._handles[shard]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}  # open files do not pickle; reopened on first use


def _index_shard(shard_index: int, path: str) -> list[TarMember]:
    found: dict[str, TarMember] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                folder, _, base = info.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                key = f"{folder}/{stem}" if folder else stem
                if dot and ext.rpartition(".")[2].lower() in TAR_IMAGE_EXTENSIONS and key not in found:
                    found[key] = TarMember(shard_index, key, info.offset_data, info.size)
    except tarfile.ReadError as err:
        raise ImageSourceError(f"{path} is not an uncompressed tar shard ({err}); shards must be plain .tar "
                               f"files (WebDataset layout)") from err
    return list(found.values())


def decode_bytes(data: bytes, where: str) -> Image.Image:
    """Image bytes (from a shard) -> RGB PIL image, with the conversions of ``images.load_image``."""
    if not data:
        raise ImageDecodeError(where, "empty file (0 bytes)")
    try:
        return decode_image(io.BytesIO(data), where)
    except ImageDecodeError:
        raise
    except Exception as err:  # PIL raises many types for corrupt data: one bad shard member must not stop a run
        raise ImageDecodeError(where, f"corrupt image: {str(err) or type(err).__name__}") from None


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion: ``a-{0..2}.tar`` -> ``a-0.tar a-1.tar a-2.tar``; ``{x,y}`` -> ``x y``.

    Numeric ranges keep the zero padding of their bounds (``{000..099}``); several braces expand left to right.
    """
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = _RANGE.fullmatch(body)
    if numeric:
        bounds = numeric.group(1), numeric.group(2)
        lo, hi = int(bounds[0]), int(bounds[1])
        padded = any(len(b) > 1 and b.lstrip("-").startswith("0") for b in bounds)
        width = max(len(b) for b in bounds) if padded else 0
        step = 1 if hi >= lo else -1
        choices = [f"{i:0{width}d}" for i in range(lo, hi + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        choices = [match.group(0)]  # not a brace expression: keep it literally
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [head + choice + rest for choice in choices for rest in expand_braces(tail)]


def _shard_paths(spec: str) -> list[str]:
    """The ``.tar`` files a spec names (a path, a glob, a brace range), in order; raises if any is missing."""
    if os.path.isfile(os.path.expanduser(spec)):
        return [os.path.expanduser(spec)]
    paths: list[str] = []
    missing: list[str] = []
    for pattern in expand_braces(os.path.expanduser(spec)):
        if GLOB_CHARS & set(pattern):
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if matches:
                paths += matches
            else:
                missing.append(pattern)
        elif os.path.isfile(pattern):
            paths.append(pattern)
        else:
            missing.append(pattern)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise FileNotFoundError(f"Tar shards {spec!r} not found ({shown}): give an existing .tar file, a glob "
                                f"of them (shards/*.tar) or a brace range (shards/train-{{000..099}}.tar)")
    return list(dict.fromkeys(paths))


def _is_tar_file(entry: os.DirEntry) -> bool:
    """Whether a folder entry is a ``.tar`` file (links followed; a broken or looping link is not)."""
    try:
        return entry.name.endswith(".tar") and entry.is_file()
    except OSError:
        return False


def open_source(spec: str | Path | Sequence[str | Path]) -> ImageSource:
    """Tar shards for a ``.tar`` file, a glob/brace range of them, a sequence of ``.tar`` paths or a folder holding
    only ``.tar`` files; else the image files of a folder, glob, list file or sequence of paths.

    Raises ``FileNotFoundError`` for a missing path or shard and ``ImageSourceError`` for a source without images.
    """
    if isinstance(spec, (list, tuple)):
        paths = [str(p) for p in spec]
        return TarShardSource(paths) if paths and all(p.endswith(".tar") for p in paths) else FileSource(paths)
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        entries = [e for e in sorted(os.scandir(path), key=lambda e: e.name) if not e.name.startswith(".")]
        if entries and all(_is_tar_file(e) for e in entries):
            return TarShardSource([e.path for e in entries])
    elif text.endswith(".tar"):
        return TarShardSource(_shard_paths(text))
    elif not path.exists() and not GLOB_CHARS & set(text):
        raise FileNotFoundError(f"Image source {text!r} does not exist: give an image folder, a glob, a list file "
                                f"or tar shards (a .tar file, a glob or a brace range of them)")
    return FileSource(spec)
