"""Checkpoint digests: cached for settled files, recomputed for files written just now (a same-size rewrite within
one timestamp tick must never return the old digest)."""

from __future__ import annotations

import hashlib
import json
import os
import time

from eupe.utils.cache import file_sha256


def test_digest_is_cached_for_settled_files_only(tmp_path, monkeypatch):
    monkeypatch.setenv("EUPE_CACHE", str(tmp_path / "cache"))
    fresh, settled = tmp_path / "fresh.pt", tmp_path / "settled.pt"
    fresh.write_bytes(b"a" * 64)
    settled.write_bytes(b"b" * 64)
    old = time.time() - 60
    os.utime(settled, (old, old))
    assert file_sha256(fresh) == hashlib.sha256(b"a" * 64).hexdigest()
    assert file_sha256(settled) == hashlib.sha256(b"b" * 64).hexdigest()
    cached = json.loads((tmp_path / "cache" / "sha256.json").read_text())
    assert str(settled.resolve()) in cached and str(fresh.resolve()) not in cached
    fresh.write_bytes(b"c" * 64)  # same size, possibly the same mtime tick
    assert file_sha256(fresh) == hashlib.sha256(b"c" * 64).hexdigest()
