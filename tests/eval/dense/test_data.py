"""The dataset-root check every dense protocol runs before it loads the backbone."""

from __future__ import annotations

import pytest

from eupe.eval.dense.data import require_data_root


def test_require_data_root(tmp_path):
    require_data_root(str(tmp_path), "the X folder")
    with pytest.raises(ValueError, match=r"pass --data-root or set root=PATH \(the X folder\)"):
        require_data_root("", "the X folder", key="root")
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        require_data_root(str(tmp_path / "nope"), "the X folder")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        require_data_root(str(tmp_path / "file"), "the X folder")
