"""Shared dense-probe machinery: features, head, schedule, sliding windows, head files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eupe.constants import IMAGENET_MEAN, IMAGENET_STD
from eupe.eval.dense import (
    LinearProbeHead,
    OptimConfig,
    WarmupOneCycle,
    dense_predict,
    extract_patch_features,
    image_to_tensor,
    load_head_file,
    pad_to_multiple,
    save_head,
    sliding_window,
    train_head,
)
from eupe.models import ConvNeXt
from tests.helpers import tiny_vit


def test_extract_patch_features_is_last_layer_after_norm():
    model = tiny_vit().eval().requires_grad_(False)  # frozen, as the protocols use it
    x = torch.randn(2, 3, 48, 32)
    feats = extract_patch_features(model, x)
    assert feats.shape == (2, 64, 3, 2) and not feats.is_inference() and feats.dtype == torch.float32
    tokens = model.forward_features(x)["x_norm_patchtokens"]
    torch.testing.assert_close(feats.flatten(2).transpose(1, 2), tokens)


def test_convnext_features_have_stride_32():
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)).eval()
    assert extract_patch_features(model, torch.randn(1, 3, 64, 96)).shape == (1, 64, 2, 3)


def test_image_to_tensor_normalises_without_resizing():
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = image_to_tensor(Image.fromarray(array))
    expected = (array[1, 2] / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert x.shape == (3, 5, 7)
    np.testing.assert_allclose(x[:, 1, 2].numpy(), expected, rtol=1e-5)


def test_dense_predict_covers_inputs_not_multiple_of_patch():
    model, head = tiny_vit().eval(), LinearProbeHead(64, 3).eval()
    x = torch.randn(1, 3, 40, 50)
    out = dense_predict(model, head, x)
    padded, size = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (48, 64) and size == (40, 50)
    assert out.shape == (1, 3, 40, 50)
    full = F.interpolate(head(extract_patch_features(model, padded)), size=(48, 64), mode="bilinear")
    torch.testing.assert_close(out, full[..., :40, :50])


def test_sliding_window_averages_overlaps():
    image = torch.arange(2 * 1 * 7 * 9, dtype=torch.float32).view(2, 1, 7, 9)
    calls = []

    def predict(crop):
        calls.append(tuple(crop.shape[-2:]))
        return torch.cat([crop * 2, torch.ones_like(crop)], dim=1)

    out = sliding_window(predict, image, crop=4, stride=3, channels=2)
    torch.testing.assert_close(out[:, :1], image * 2)  # every pixel's average of identical values
    torch.testing.assert_close(out[:, 1:], torch.ones_like(image))
    # rows: ceil((7-4)/3)+1 = 2 windows, cols: ceil((9-4)/3)+1 = 3 windows, all 4x4
    assert calls == [(4, 4)] * 6
    assert sliding_window(predict, image, crop=16, stride=8, channels=2).shape == (2, 2, 7, 9)


def test_warmup_one_cycle_shape():
    cfg = OptimConfig(lr=1.0, warmup_iters=10, warmup_ratio=0.1, final_div_factor=100.0, momentum=[0.85, 0.95])
    s = WarmupOneCycle(cfg, total_iters=110)
    assert s.lr(0) == pytest.approx(0.1)
    assert s.lr(5) == pytest.approx(0.55)
    assert s.lr(10) == pytest.approx(1.0)
    assert s.lr(60) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way down the cosine
    assert s.lr(110) == pytest.approx(0.01)
    assert s.beta1(0) == pytest.approx(0.95) and s.beta1(10) == pytest.approx(0.85)
    assert s.beta1(110) == pytest.approx(0.95)
    no_floor = WarmupOneCycle(OptimConfig(lr=1.0, warmup_iters=0, final_div_factor=math.inf), total_iters=4)
    assert no_floor.lr(0) == pytest.approx(1.0) and no_floor.lr(4) == pytest.approx(0.0)
    assert no_floor.beta1(3) is None


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
