"""The stage-2 augmentation: determinism under a seed, value ranges, and each operation against a reference."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from eupe.config import ConfigError, load_config
from eupe.data.augment import (
    Augment,
    AugmentConfig,
    adjust_hue,
    crop_box,
    gaussian_blur,
    grayscale,
    hsv_to_rgb,
    resized_crop,
    rgb_to_hsv,
    solarize,
)


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:90, 0:120]
    base = np.stack([xx / 120, yy / 90, 0.5 + 0 * xx], -1) * 200 + rng.integers(0, 55, (90, 120, 3))
    return Image.fromarray(base.astype(np.uint8))


def test_same_seed_same_crop_different_seed_different_crop(photo):
    augment = Augment(AugmentConfig(size=32))
    a = augment(photo, torch.Generator().manual_seed(7))
    b = augment(photo, torch.Generator().manual_seed(7))
    c = augment(photo, torch.Generator().manual_seed(8))
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_outputs_stay_in_unit_range_for_pil_and_tensor_inputs(photo):
    augment = Augment(AugmentConfig(size=24, jitter_p=1.0, blur_p=1.0, solarize_p=0.5, grayscale_p=0.5))
    tensor = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        for image in (photo, tensor, tensor.float() / 255):
            out = augment(image, g)
            assert out.shape == (3, 24, 24) and 0 <= out.min() and out.max() <= 1


def test_everything_off_is_a_plain_resized_crop(photo):
    cfg = AugmentConfig(size=40, scale=[1.0, 1.0], ratio=[4 / 3, 4 / 3], flip_p=0, jitter_p=0, grayscale_p=0,
                        blur_p=0, solarize_p=0)
    out = Augment(cfg)(photo, torch.Generator().manual_seed(0))
    ref = np.asarray(photo.resize((40, 40), Image.BICUBIC), dtype=np.float32) / 255
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), ref, atol=1e-6)


def test_crop_box_respects_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, h, w = crop_box((200, 300), (0.32, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 200 and 0 <= left and left + w <= 300
        assert 0.3 <= h * w / 60000 <= 1.0 and 0.7 <= w / h <= 1.4
    assert crop_box((10, 1000), (0.9, 1.0), (1.0, 1.0), g) == (0, 495, 10, 10)  # impossible -> centre crop


def test_tensor_crop_matches_manual_interpolation():
    x = torch.rand(3, 20, 30)
    out = resized_crop(x, (2, 5, 10, 12), 8)
    ref = torch.nn.functional.interpolate(x[None, :, 2:12, 5:17], size=(8, 8), mode="bicubic", antialias=True)
    torch.testing.assert_close(out, ref[0].clamp(0, 1))


def test_hsv_round_trip_and_reference():
    x = torch.rand(3, 4, 5)
    h, s, v = rgb_to_hsv(x)
    for i in range(4):
        for j in range(5):
            np.testing.assert_allclose(colorsys.rgb_to_hsv(*x[:, i, j].tolist()), [h[i, j], s[i, j], v[i, j]],
                                       atol=1e-5)
    torch.testing.assert_close(hsv_to_rgb(h, s, v), x)
    shifted = adjust_hue(x, 0.25)
    ref = colorsys.hsv_to_rgb((h[0, 0].item() + 0.25) % 1, s[0, 0].item(), v[0, 0].item())
    np.testing.assert_allclose(shifted[:, 0, 0].numpy(), ref, atol=1e-5)


def test_blur_grayscale_solarize_against_references(photo):
    x = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)
    blurred = gaussian_blur(x, 1.5)
    ref = np.asarray(photo.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32) / 255
    inner = (slice(None), slice(8, -8), slice(8, -8))  # PIL pads differently at the border
    assert np.abs(blurred[inner].numpy() - ref.transpose(2, 0, 1)[inner]).mean() < 0.01
    assert blurred.std() < x.std()
    gray_ref = np.asarray(photo.convert("L"), dtype=np.float32) / 255
    assert np.abs(grayscale(x)[0].numpy() - gray_ref).max() < 1 / 255 + 1e-6
    torch.testing.assert_close(solarize(torch.tensor([0.2, 0.5, 0.9])), torch.tensor([0.2, 0.5, 0.1]))


def test_config_from_yaml_overrides_and_validation():
    cfg = load_config(AugmentConfig, None, ["size=128", "blur_p=0.1", "scale=[0.5,1.0]"])
    assert (cfg.size, cfg.blur_p, cfg.scale) == (128, 0.1, [0.5, 1.0])
    with pytest.raises(ConfigError):
        load_config(AugmentConfig, None, ["blur_prob=0.1"])
    with pytest.raises(ValueError, match="flip_p"):
        AugmentConfig(flip_p=1.5)
