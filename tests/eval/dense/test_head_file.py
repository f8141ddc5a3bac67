"""Head files: round trip, and clear errors for another task's head or a missing file."""

from __future__ import annotations

import pytest
import torch

from eupe.eval.dense.head import LinearProbeHead
from eupe.eval.dense.head_file import load_head, load_head_file, save_head


def test_head_file_round_trip(tmp_path):
    head = LinearProbeHead(6, 3)
    torch.nn.init.normal_(head.conv.weight)
    save_head(tmp_path / "head.pt", head, task="segmentation", meta={"in_dim": 6})
    state, meta = load_head_file(tmp_path / "head.pt", "segmentation")
    assert meta == {"in_dim": 6}
    torch.testing.assert_close(state["conv.weight"], head.conv.weight.detach())
    with pytest.raises(ValueError, match="holds a 'segmentation' head"):
        load_head_file(tmp_path / "head.pt", "depth")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_head_file(tmp_path / "missing.pt", "depth")


def test_load_head_rebuilds_from_meta_in_eval_mode(tmp_path):
    head = LinearProbeHead(6, 3)
    torch.nn.init.normal_(head.conv.weight)
    save_head(tmp_path / "head.pt", head, task="depth", meta={"in_dim": 6, "out": 3})
    loaded, meta = load_head(tmp_path / "head.pt", "depth", lambda m: LinearProbeHead(m["in_dim"], m["out"]))
    assert not loaded.training and meta["out"] == 3
    torch.testing.assert_close(loaded.conv.weight, head.conv.weight)
