"""Crash-safe file writing: write to a temporary file beside the target, fsync, then rename over it.

:func:`atomic_folder` does the same for a whole folder. A process killed mid-write leaves its temporary file or
folder (``.<name>.<random>.tmp``) behind; :func:`remove_stale_temporaries` deletes those of a folder that no other
process writes to (one whose lock is held).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

# The names atomic_path gives its temporary files: "." + target name + "." + mkstemp's 8 random characters + ".tmp"
TEMPORARY_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path in the target's folder; on success it replaces ``path`` in one rename.

    A crash at any point leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yields a temporary folder beside ``path`` to fill; on success its files are synced and it becomes ``path``
    in one rename (``path`` must not exist), so the folder exists whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; results are meant to be shared
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_path`. A failed write raises the operating system's error (e.g.
    ``OSError`` ENOSPC for a full disk), not the "unexpected pos" ``RuntimeError`` torch raises after it."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a Python file: torch then sees the OSError of a write
        try:
            torch.save(obj, f)
        except RuntimeError as err:
            if isinstance(err.__context__, OSError):  # torch's zip writer complains about its position after it
                raise err.__context__ from None
            raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Deletes the temporary files and folders :func:`atomic_path` and :func:`atomic_folder` left in ``folder``
    (not its subfolders) when a process was killed mid-write; returns them. Only call it while holding the
    folder's lock: another process's temporary file is not stale."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if TEMPORARY_RE.match(p.name)]
    for path in stale:
        kind = "folder" if path.is_dir() and not path.is_symlink() else "file"
        if kind == "folder":
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        logger.info("Removed %s, the partial %s of an interrupted write", path, kind)
    return stale
