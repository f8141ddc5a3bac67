"""The image processor of an EUPE vision tower: LLaVA-1.5's pad-to-square, then the EUPE model card's transform.

LLaVA-1.5 pads every image to a square with the normalisation mean as background colour (``expand2square``) so
that no content is cropped; EUPE then wants a square ``image_size`` input, ``[0, 1]`` RGB, ImageNet mean/std.
The resize is bilinear, the filter of ``eupe.make_transform`` (the transform the encoder is evaluated with),
where LLaVA's CLIP processor uses bicubic.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoImageProcessor
from transformers.image_utils import PILImageResampling
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .tower import EupeVisionConfig


class EupeImageProcessor(LlavaImageProcessorPil):
    """PIL / NumPy / tensor images -> ``pixel_values`` ``[B, 3, S, S]`` for :class:`~eupe.vlm.EupeVisionModel`.

    Steps (LLaVA's image pipeline with EUPE's settings): RGB; pad to a square, image centred, background
    ``int(255 * image_mean)`` per channel (``do_pad``); resize to ``size`` (bilinear); scale to ``[0, 1]``;
    normalise with ``image_mean`` / ``image_std``. ``crop_size`` equals ``size`` and no crop is made: it is there
    because ``LlavaProcessor`` counts image tokens from ``crop_size``.
    """

    resample = PILImageResampling.BILINEAR
    image_mean = list(IMAGENET_MEAN)
    image_std = list(IMAGENET_STD)
    size = {"height": 384, "width": 384}
    crop_size = {"height": 384, "width": 384}
    default_to_square = True
    do_pad = True
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("size") is not None and kwargs.get("crop_size") is None:
            kwargs["crop_size"] = kwargs["size"]
        super().__init__(**kwargs)

    @classmethod
    def for_tower(cls, config: EupeVisionConfig) -> EupeImageProcessor:
        """The processor matching a tower: its ``image_size`` and the encoder's mean/std."""
        side = config.image_size
        return cls(size={"height": side, "width": side}, image_mean=list(config.image_mean),
                   image_std=list(config.image_std))


AutoImageProcessor.register(EupeVisionConfig, image_processor_classes={"pil": EupeImageProcessor}, exist_ok=True)
