"""The backbone's image tensor: ImageNet-normalised, never resized."""

from __future__ import annotations

import numpy as np
from PIL import Image

from eupe.constants import IMAGENET_MEAN, IMAGENET_STD
from eupe.eval.dense.transforms import image_to_tensor


def test_image_to_tensor_normalises_without_resizing():
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = image_to_tensor(Image.fromarray(array))
    expected = (array[1, 2] / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert x.shape == (3, 5, 7)
    np.testing.assert_allclose(x[:, 1, 2].numpy(), expected, rtol=1e-5)
