from __future__ import annotations

import pytest
import torch

import eupe.models.base
from eupe.models import ConvNeXt
from tests.helpers import tiny_vit


@pytest.mark.parametrize("make, units", [
    pytest.param(lambda: tiny_vit(), "blocks", id="vit"),
    pytest.param(lambda: ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), "stages", id="convnext"),
])
def test_gradient_checkpointing_gives_same_gradients(monkeypatch, make, units):
    torch.manual_seed(0)
    model = make().train()
    x = torch.randn(2, 3, 64, 64)
    calls = []

    def counting_checkpoint(fn, *args, **kwargs):
        calls.append(fn)
        return torch.utils.checkpoint.checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(eupe.models.base, "checkpoint", counting_checkpoint)

    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        model.forward_features(x)["x_norm_patchtokens"].square().mean().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = grads(False)
    assert calls == []
    checkpointed = grads(True)
    assert calls == list(getattr(model, units))  # each block (ViT) / stage (ConvNeXt) checkpointed once
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)
