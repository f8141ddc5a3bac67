"""The image sources named by a run's ``data:`` section, as view sources for :class:`~eupe.distill.data.ViewStream`."""

from __future__ import annotations

from ..data.augment import Augment
from ..data.images import list_images
from .config import DataConfig
from .data import AugmentedImages, DataError


def build_view_sources(data: DataConfig) -> tuple[AugmentedImages, AugmentedImages | None]:
    """``data.source`` (and the optional ``data.second_source``) decoded and augmented at ``data.augment.size``."""
    if not data.source:
        raise DataError("data.source is empty: set it to an image folder, glob or list file "
                        "(e.g. --set data.source=/path/to/images)")
    augment = Augment(data.augment)
    primary = AugmentedImages(list_images(data.source)[0], augment)
    second = AugmentedImages(list_images(data.second_source)[0], augment) if data.second_source else None
    return primary, second
