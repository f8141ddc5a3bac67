"""Which checkpoint a restarted run resumes from: the newest readable one; none readable is an error, not a
silent fresh start."""

import pytest
import torch

from eupe.distill.checkpoint import CheckpointError, load_latest


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    torch.save({"step": 2}, tmp_path / "ckpt-00000002.pt")
    (tmp_path / "ckpt-00000004.pt").write_bytes(b"junk")
    path, payload = load_latest(tmp_path)
    assert path.name == "ckpt-00000002.pt" and payload["step"] == 2


def test_no_checkpoint_means_a_fresh_start_and_only_damaged_ones_are_refused(tmp_path):
    assert load_latest(tmp_path) is None
    (tmp_path / "ckpt-00000002.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"none can be read \(ckpt-00000002.pt\).*start afresh"):
        load_latest(tmp_path)
