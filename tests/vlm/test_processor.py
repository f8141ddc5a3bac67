"""EupeImageProcessor: LLaVA's pad-to-square with the mean colour, then EUPE's resize and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers", reason="eupe.vlm needs transformers (the vlm extra)")

from transformers import AutoImageProcessor  # noqa: E402

import eupe  # noqa: E402
from eupe.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from eupe.vlm import EupeImageProcessor, EupeVisionConfig  # noqa: E402

MEAN = np.array(IMAGENET_MEAN).reshape(3, 1, 1)
STD = np.array(IMAGENET_STD).reshape(3, 1, 1)
PAD_RGB = (123, 116, 103)  # int(255 * mean): LLaVA's expand2square background


def _normalised(rgb: tuple[int, int, int]) -> np.ndarray:
    return (np.array(rgb).reshape(3, 1, 1) / 255 - MEAN) / STD


@pytest.mark.parametrize("shape", [(10, 20), (20, 10)])  # wide (pad rows) and tall (pad columns)
def test_pads_with_the_mean_colour_centred(shape):
    """A solid image, padded to a square at the size it already has (so no resampling): exact values."""
    height, width = shape
    image = Image.new("RGB", (width, height), (255, 0, 40))
    processor = EupeImageProcessor(size={"height": 20, "width": 20})
    pixels = processor(image, return_tensors="np")["pixel_values"][0]
    assert pixels.shape == (3, 20, 20) and pixels.dtype == np.float32
    content = np.zeros((20, 20), dtype=bool)
    top, left = (20 - height) // 2, (20 - width) // 2
    content[top:top + height, left:left + width] = True
    expected = np.where(content, _normalised((255, 0, 40)), _normalised(PAD_RGB))
    np.testing.assert_allclose(pixels, expected, atol=1e-6, rtol=0)


def test_matches_the_model_card_transform_of_the_padded_image():
    """pad -> bilinear resize -> [0, 1] -> ImageNet normalisation, against a hand-made square and eupe's transform."""
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    square = np.empty((50, 50, 3), dtype=np.uint8)
    square[:] = PAD_RGB
    square[10:40] = array
    expected = eupe.make_transform(resize_size=32)(Image.fromarray(square))
    processor = EupeImageProcessor.for_tower(EupeVisionConfig(eupe_model="eupe_vitt16", image_size=32))
    for image in (Image.fromarray(array), array, torch.from_numpy(array).permute(2, 0, 1)):
        pixels = processor(image, return_tensors="pt")["pixel_values"]
        assert pixels.shape == (1, 3, 32, 32)
        torch.testing.assert_close(pixels[0], expected, atol=1e-6, rtol=0)


def test_for_tower_and_save_load(tmp_path):
    tower = EupeVisionConfig(eupe_model="eupe_convnext_tiny", image_size=256)
    processor = EupeImageProcessor.for_tower(tower)
    assert (processor.size.height, processor.size.width) == (256, 256)
    assert (processor.crop_size.height, processor.crop_size.width) == (256, 256)
    assert list(processor.image_mean) == tower.image_mean and list(processor.image_std) == tower.image_std
    processor.save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is EupeImageProcessor
    assert reloaded.to_dict() == processor.to_dict()
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 70, 3), dtype=np.uint8))
    np.testing.assert_array_equal(reloaded(image, return_tensors="np")["pixel_values"],
                                  processor(image, return_tensors="np")["pixel_values"])
