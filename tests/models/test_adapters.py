from __future__ import annotations

import pytest
import torch

from eupe.models import Projectors


def test_projectors_round_trip_through_state_dict():
    heads = Projectors.build(in_dim=16, hidden_dim=32, teacher_dims={"proxy": 48, "dino": 24})
    tensors = {f"projectors.{k}": v for k, v in heads.state_dict().items()}
    rebuilt = Projectors.from_state_dict(tensors)
    x = torch.randn(3, 16)
    for teacher in ("proxy", "dino"):
        for kind in ("cls", "patch"):
            torch.testing.assert_close(rebuilt[teacher][kind](x), heads[teacher][kind](x))
    assert rebuilt["proxy"]["cls"].out_dim == 48


def test_projectors_missing_or_foreign_layout_errors():
    with pytest.raises(ValueError, match="no adapter heads"):
        Projectors.from_state_dict({"blocks.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="layout"):
        Projectors.from_state_dict({"projectors.t.head.weight": torch.zeros(1)})


def test_summary_and_patch_widths_may_differ():
    heads = Projectors.build(in_dim=16, hidden_dim=32, teacher_dims={"cnn": (1280, 512), "vit": 64})
    rebuilt = Projectors.from_state_dict({f"projectors.{k}": v for k, v in heads.state_dict().items()})
    assert (rebuilt["cnn"]["cls"].out_dim, rebuilt["cnn"]["patch"].out_dim) == (1280, 512)
    assert (rebuilt["vit"]["cls"].out_dim, rebuilt["vit"]["patch"].out_dim) == (64, 64)
