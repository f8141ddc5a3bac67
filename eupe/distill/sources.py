"""The image sources named by a run's ``data:`` section, as view sources for :class:`~eupe.distill.data.ViewStream`."""

from __future__ import annotations

from ..data.augment import Augment
from ..data.images import ImageSourceError
from ..data.sources import ImageSource, open_source
from .config import DataConfig
from .data import AugmentedImages, DataError

SOURCE_KINDS = "an image folder, glob or list file, or tar shards (shards/*.tar, shards/train-{000..099}.tar)"


def build_view_sources(data: DataConfig) -> tuple[AugmentedImages, AugmentedImages | None]:
    """``data.source`` (and the optional ``data.second_source``) decoded and augmented at ``data.augment.size``."""
    if not data.source:
        raise DataError(f"data.source is empty: set it to {SOURCE_KINDS} (e.g. --set data.source=/path/to/images)")
    augment = Augment(data.augment)
    primary = AugmentedImages(open_named_source("data.source", data.source), augment)
    second = (AugmentedImages(open_named_source("data.second_source", data.second_source), augment)
              if data.second_source else None)
    return primary, second


def open_named_source(key: str, spec: str) -> ImageSource:
    """``open_source(spec)``, its errors as one :class:`DataError` naming the config key."""
    try:
        return open_source(spec)
    except FileNotFoundError as err:
        raise DataError(f"{key}: {err}") from err
    except ImageSourceError as err:
        raise DataError(f"{key} is empty or unusable: {err}") from err
