"""Output folders of the commands: created and checked up front, locked against a second run, and write failures
(full disk, read-only folder) turned into one clear error naming the folder."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

LOCK_FILE = ".lock"
_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


class OutputDirError(RuntimeError):
    """An output folder that cannot be used: another run holds it, it is not writable, or the disk is full."""


@contextlib.contextmanager
def locked_output_dir(path: str | Path, holder: str) -> Iterator[Path]:
    """Creates ``path`` if needed and holds its lock file while the block runs; ``holder`` names the kind of run
    that locks such folders (``eupe extract``), for the error a second run gets.

    Raises ``FileExistsError`` when ``path`` is a file and :class:`OutputDirError` when the folder is locked by
    another process or not writable; a full disk or a denied write inside the block becomes an
    :class:`OutputDirError` naming the folder (other errors pass unchanged).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"output folder {path} is an existing file, not a folder: give a folder path")
    lock_path = path / LOCK_FILE
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path)
        lock.acquire(timeout=0)
    except Timeout:
        raise OutputDirError(f"another {holder} is writing to {path} (lock file {lock_path}): wait for it to "
                             "finish, or use another output folder") from None
    except OSError as err:
        raise write_error(path, err) or err from None
    try:
        yield path
    except Exception as err:
        if created:  # a run that failed before writing anything leaves no folder behind
            lock.release()
            with contextlib.suppress(OSError):
                if os.listdir(path) == [LOCK_FILE]:
                    lock_path.unlink()
                    path.rmdir()
        converted = write_error(path, err)
        if converted is None:
            raise
        raise converted from err
    finally:
        lock.release()


def write_error(folder: str | Path, err: BaseException) -> OutputDirError | None:
    """The clear error for a failed write into ``folder``: no space left (any writer: OSError, or a library's own
    error carrying the OS message) or a denied write under ``folder``; ``None`` for any other error (and for an
    :class:`OutputDirError`, which says it already)."""
    if isinstance(err, OutputDirError):
        return None
    text = str(err)
    if getattr(err, "errno", None) in _FULL or "No space left on device" in text or "os error 28" in text:
        return OutputDirError(f"no space left on device while writing to {folder}: free some space or use "
                              f"another output folder ({text})")
    if isinstance(err, OSError) and err.errno in _DENIED and _inside(err.filename, folder):
        return OutputDirError(f"cannot write to {folder}: {err.strerror or err} (check its permissions, or use "
                              "another output folder)")
    return None


def _inside(filename: object, folder: str | Path) -> bool:
    if not isinstance(filename, (str, os.PathLike)):
        return False
    target, base = os.path.abspath(filename), os.path.abspath(folder)
    return target == base or target.startswith(base.rstrip(os.sep) + os.sep) or base.startswith(target + os.sep)
