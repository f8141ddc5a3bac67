"""The user's cache folder (``$EUPE_CACHE``, default ``~/.cache/eupe``) and the file digests kept in it.

Stored results are keyed by the SHA-256 of the checkpoint they came from; :func:`file_sha256` hashes a large file
once and then answers from ``sha256.json`` until the file changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from .io import atomic_write_json

logger = logging.getLogger(__name__)

#: Digests of files, keyed by real path and checked against (size, mtime, inode, ctime).
DIGEST_CACHE = "sha256.json"
RACY_WINDOW_NS = 2_000_000_000  # files modified less than 2 s ago are not cached (coarse timestamp ticks)
_CHUNK = 1 << 22


def cache_dir() -> Path:
    """The folder of downloads and digests: ``$EUPE_CACHE``, or ``~/.cache/eupe``."""
    return Path(os.environ.get("EUPE_CACHE", Path.home() / ".cache" / "eupe"))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, cached (``$EUPE_CACHE/sha256.json``) until the file's size, modification time,
    inode or change time moves, so a large checkpoint is hashed once, not at every run."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    cache_file = cache_dir() / DIGEST_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(str(path))
    if isinstance(entry, dict) and entry.get("stat") == stamp:
        return str(entry["sha256"])
    logger.info("hashing %s (%.1f MB) to key stored results by its content", path, st.st_size / 2**20)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if time.time_ns() - st.st_mtime_ns < RACY_WINDOW_NS:
        # A file written just now could be rewritten within the same timestamp tick with the same size: its stat
        # would then match a stale entry (git's "racy" case). Hash such files again next time instead.
        return digest.hexdigest()
    cache[str(path)] = {"stat": stamp, "sha256": digest.hexdigest()}
    try:
        atomic_write_json(cache_file, cache)
    except OSError as err:  # the cache only saves time: an unwritable one means hashing again next time
        logger.debug("cannot write the digest cache %s: %s", cache_file, err)
    return digest.hexdigest()
