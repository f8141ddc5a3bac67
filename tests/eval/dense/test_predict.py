"""Head predictions at the input resolution: padding to the stride, sliding windows, resizing to a target."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eupe.eval.dense.features import extract_patch_features, pad_to_multiple
from eupe.eval.dense.head import LinearProbeHead
from eupe.eval.dense.predict import dense_predict, resize_like, sliding_window
from tests.helpers import tiny_vit


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


def test_resize_like_takes_the_targets_spatial_size():
    assert resize_like(torch.zeros(1, 4, 3, 5), torch.zeros(1, 30, 50)).shape == (1, 4, 30, 50)
