from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eupe.teachers.feature_map import FeatureMapTeacher


def _conv_teacher(autocast: bool) -> FeatureMapTeacher:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1))
    return FeatureMapTeacher("conv", net, input_size=32, autocast=autocast)


def test_bf16_autocast_where_the_hardware_is_fast(monkeypatch):
    x = torch.rand(2, 3, 32, 32)
    fp32 = _conv_teacher(autocast=True)(x)  # conftest: no fast bf16 here
    seen = []
    monkeypatch.setattr("eupe.teachers.base.fast_bf16", lambda device: seen.append(device.type) or True)
    fast = _conv_teacher(autocast=True)(x)
    assert seen == ["cpu"]
    assert fast.patches.dtype == fast.summary.dtype == torch.float32  # outputs stay fp32 for the loss
    assert not torch.equal(fast.patches, fp32.patches), "bf16 autocast did not run"
    assert F.cosine_similarity(fast.patches, fp32.patches, dim=1).min() > 0.99
    # autocast=False keeps fp32 even on fast hardware.
    torch.testing.assert_close(_conv_teacher(autocast=False)(x).patches, fp32.patches)
