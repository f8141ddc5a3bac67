from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import eupe


def _photo(mode: str = "RGB", size=(300, 200)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def test_matches_manual_resize_and_imagenet_normalisation():
    image = _photo()
    out = eupe.make_transform(256)(image)
    resized = np.asarray(image.resize((256, 256), Image.BILINEAR), dtype=np.float32) / 255
    expected = (resized - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert out.shape == (3, 256, 256) and out.dtype == torch.float32
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_non_rgb_and_array_inputs():
    transform = eupe.make_transform(64)
    assert transform(_photo("L")).shape == (3, 64, 64)
    assert transform(_photo("RGBA")).shape == (3, 64, 64)
    array = np.asarray(_photo())
    torch.testing.assert_close(transform(array), transform(Image.fromarray(array)))


def test_tensor_input_close_to_pil_path():
    image = _photo(size=(128, 128))
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    transform = eupe.make_transform(64)
    diff = (transform(tensor) - transform(image)).abs().mean()
    assert diff < 0.05


def test_resize_short_side_keeps_aspect_and_rounds_to_a_multiple():
    from PIL import Image

    from eupe.data.transforms import resize_short_side

    image = Image.new("RGB", (300, 200))
    assert resize_short_side(image, 100).size == (150, 100)
    assert resize_short_side(image.transpose(Image.Transpose.ROTATE_90), 100).size == (100, 150)
    # patch 16: 224 x 336 (21 x 14 tokens); the short side rounds to 224, the long side to the nearest multiple
    assert resize_short_side(Image.new("RGB", (310, 200)), 224, multiple=16).size == (352, 224)
    assert resize_short_side(Image.new("RGB", (1000, 10)), 8, multiple=16).size == (800, 16)
