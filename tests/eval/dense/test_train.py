"""The head training loop: it fits, it stops on a non-finite loss, and a probe head depends on its seed only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from eupe.eval.dense.head import LinearProbeHead
from eupe.eval.dense.schedule import OptimConfig
from eupe.eval.dense.train import train_head, train_probe_head
from tests.helpers import tiny_vit


def test_train_head_fits_a_linear_target():
    torch.manual_seed(0)
    head = LinearProbeHead(4, 1)
    weight = torch.randn(4)

    def batches():
        while True:
            x = torch.randn(8, 4, 3, 3)
            yield x, torch.einsum("bchw,c->bhw", x, weight)[:, None]

    def loss_fn(h, batch):
        return F.mse_loss(h(batch[0]), batch[1])

    cfg = OptimConfig(lr=0.05, weight_decay=0.0, warmup_iters=3, warmup_ratio=0.1)
    stream = batches()
    test_batch = next(stream)
    before = loss_fn(head.eval(), test_batch).item()
    stats = train_head(head, stream, loss_fn, cfg, iterations=60)
    assert not head.training
    after = loss_fn(head, test_batch).item()
    assert after < 0.1 * before
    assert math.isfinite(stats["final_loss"]) and stats["final_lr"] < cfg.lr


def test_train_head_stops_on_non_finite_loss():
    head = LinearProbeHead(2, 1)
    batches = iter(lambda: torch.zeros(1), None)
    with pytest.raises(RuntimeError, match="lower the LR"):
        train_head(head, batches, lambda h, b: h.conv.weight.sum() * float("nan"), OptimConfig(), iterations=2)


def test_train_probe_head_is_reproducible_from_its_seed():
    backbone = tiny_vit().eval().requires_grad_(False)
    data = [(torch.randn(3, 32, 32), torch.randn(1, 32, 32)) for _ in range(4)]

    def train(seed):
        torch.manual_seed(1000 + seed)  # whatever the global state before, the seed alone decides
        head, _ = train_probe_head(backbone, lambda: LinearProbeHead(64, 1), data, F.mse_loss,
                                   OptimConfig(warmup_iters=1), iterations=2, batch_size=2, num_workers=0, seed=seed,
                                   device=torch.device("cpu"))
        return head.conv.weight.detach().clone()

    torch.testing.assert_close(train(3), train(3))
    assert not torch.equal(train(3), train(4))
