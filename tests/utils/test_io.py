from __future__ import annotations

import pytest

from eupe.utils.io import atomic_path, atomic_write_json


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and '"ok": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_written_files_are_world_readable(tmp_path):
    atomic_write_json(tmp_path / "r.json", {})
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
