"""The reference kNN transform: short side to 256 (bicubic), centre crop 224, ImageNet normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.constants import IMAGENET_MEAN, IMAGENET_STD
from eupe.extract.transforms import ResizeCenterCrop, make_eval_transform


def test_resize_center_crop_matches_manual_pipeline():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8))
    out = make_eval_transform(32, "crop")(img)
    assert isinstance(make_eval_transform(32, "crop"), ResizeCenterCrop)
    # independent: resize 60x90 -> short side round(32*256/224)=37 -> 37x56 (w=round(90*37/60)=56), crop 32
    resized = np.asarray(img.resize((56, 37), Image.BICUBIC)).astype(np.float32) / 255
    top, left = (37 - 32) // 2, (56 - 32) // 2
    crop = resized[top : top + 32, left : left + 32]
    expected = (crop - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    torch.testing.assert_close(out, torch.from_numpy(expected).permute(2, 0, 1), atol=1e-5, rtol=0)
    assert make_eval_transform(224)(img).shape == (3, 224, 224)
    assert make_eval_transform(24, "square")(img).shape == (3, 24, 24)
    with pytest.raises(ValueError, match="resize mode"):
        make_eval_transform(32, "stretch")


def test_an_extreme_aspect_ratio_resamples_only_the_crop_to_the_same_pixels():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 900, 3), dtype=np.uint8))
    resized = image.resize((1920, 64), Image.BICUBIC)  # short side 64; 900 * 64 / 30 = 1920
    left = (1920 - 56) // 2
    exact = np.asarray(resized.crop((left, 4, left + 56, 60)), dtype=float)
    bounded = np.asarray(ResizeCenterCrop(64, 56)._resampled_crop(image), dtype=float)
    assert np.abs(bounded - exact).mean() < 2.0  # equal up to PIL's rounding of the two passes
