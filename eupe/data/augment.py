"""The stage-2/3 training augmentation, without torchvision: one crop per image, in [0, 1], not normalised.

Random resized crop -> horizontal flip -> colour jitter -> grayscale -> Gaussian blur -> solarisation, with the
DINO/DINOv3 global-crop defaults (the paper names the operations but not their parameters). Teachers and the
student normalise the crop themselves, so the same tensor feeds both. Every random draw comes from the
``torch.Generator`` passed in, so a crop is reproducible from the generator's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .transforms import to_unit_tensor

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's "L" conversion


@dataclass
class AugmentConfig:
    """Probabilities and strengths; a probability of 0 turns an operation off.

    DINO blurs its two global crops with p 1.0 and 0.1 and solarises only the second (p 0.2); with one crop per
    image the default blur probability sits between the two (set 1.0 or 0.1 to match either crop).
    """

    size: int = 256
    scale: list[float] = field(default_factory=lambda: [0.32, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    solarize_p: float = 0.2
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("scale", "ratio", "blur_sigma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"AugmentConfig.{name} must be [low, high] with 0 < low <= high, got {[lo, hi]}")
        if self.scale[1] > 1 or self.size < 1 or self.hue > 0.5 or min(self.brightness, self.contrast,
                                                                         self.saturation, self.hue) < 0:
            raise ValueError("AugmentConfig: scale <= 1, size >= 1, 0 <= hue <= 0.5 and non-negative jitter "
                             f"strengths are required, got {self}")


class Augment:
    """Callable: PIL image or ``[3, H, W]`` tensor (uint8 or float in [0, 1]) -> ``[3, size, size]`` float crop."""

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg or AugmentConfig()

    def __call__(self, image: Image.Image | Tensor, generator: torch.Generator | None = None) -> Tensor:
        cfg, g = self.cfg, generator
        x = resized_crop(image, crop_box(_size_of(image), cfg.scale, cfg.ratio, g), cfg.size)
        if _coin(cfg.flip_p, g):
            x = x.flip(-1)
        if _coin(cfg.jitter_p, g):
            x = color_jitter(x, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, g)
        if _coin(cfg.grayscale_p, g):
            x = grayscale(x).expand(3, -1, -1).contiguous()
        if _coin(cfg.blur_p, g):
            x = gaussian_blur(x, _uniform(*cfg.blur_sigma, g))
        if _coin(cfg.solarize_p, g):
            x = solarize(x, cfg.solarize_threshold)
        return x


def _uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _coin(p: float, g: torch.Generator | None) -> bool:
    return p > 0 and torch.rand((), generator=g).item() < p


def _size_of(image: Image.Image | Tensor) -> tuple[int, int]:
    """(height, width)."""
    return (image.height, image.width) if isinstance(image, Image.Image) else tuple(image.shape[-2:])


def crop_box(size: tuple[int, int], scale, ratio, g: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop covering ``scale`` of the area with aspect ratio in ``ratio``.

    Ten rejection-sampling tries (aspect ratio drawn log-uniformly), then a centre crop clamped to ``ratio``.
    """
    height, width = size
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], g)
        aspect = math.exp(_uniform(*log_ratio, g))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=g))
            left = int(torch.randint(0, width - w + 1, (), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Image.Image | Tensor, box: tuple[int, int, int, int], size: int) -> Tensor:
    """Crops ``box`` and resizes it to ``size`` x ``size`` (bicubic, antialiased), as a float tensor in [0, 1]."""
    top, left, h, w = box
    if isinstance(image, Image.Image):
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return to_unit_tensor(rgb.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h)))
    x = to_unit_tensor(image[..., top : top + h, left : left + w])
    x = F.interpolate(x[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True)[0]
    return x.clamp_(0, 1)


def grayscale(x: Tensor) -> Tensor:
    """``[3, H, W]`` -> ``[1, H, W]`` luma."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(dim=0, keepdim=True)


def _blend(a: Tensor, b: Tensor, factor: float) -> Tensor:
    return (factor * a + (1 - factor) * b).clamp_(0, 1)


def adjust_brightness(x: Tensor, factor: float) -> Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: Tensor, factor: float) -> Tensor:
    return _blend(x, grayscale(x).mean().expand_as(x), factor)


def adjust_saturation(x: Tensor, factor: float) -> Tensor:
    return _blend(x, grayscale(x).expand_as(x), factor)


def adjust_hue(x: Tensor, shift: float) -> Tensor:
    """Rotates the hue by ``shift`` turns (in [-0.5, 0.5]) in HSV space."""
    h, s, v = rgb_to_hsv(x)
    return hsv_to_rgb(torch.remainder(h + shift, 1.0), s, v)


def rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``[3, H, W]`` RGB in [0, 1] -> hue (turns), saturation, value, each ``[H, W]``."""
    r, g, b = x.unbind(0)
    maxc, _ = x.max(dim=0)
    minc, _ = x.min(dim=0)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(delta > 0, torch.remainder(hue / 6, 1.0), torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return hue, sat, maxc


def hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    k = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device).view(3, 1, 1)
    k = torch.remainder(k + h[None] * 6, 6)
    return v[None] - v[None] * s[None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def color_jitter(x: Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                 g: torch.Generator | None = None) -> Tensor:
    """The four adjustments in random order, each factor drawn uniformly (``1 +- strength``, hue ``+- hue``)."""
    ops = []
    if brightness > 0:
        ops.append((adjust_brightness, _uniform(max(0.0, 1 - brightness), 1 + brightness, g)))
    if contrast > 0:
        ops.append((adjust_contrast, _uniform(max(0.0, 1 - contrast), 1 + contrast, g)))
    if saturation > 0:
        ops.append((adjust_saturation, _uniform(max(0.0, 1 - saturation), 1 + saturation, g)))
    if hue > 0:
        ops.append((adjust_hue, _uniform(-hue, hue, g)))
    for i in torch.randperm(len(ops), generator=g).tolist():
        op, factor = ops[i]
        x = op(x, factor)
    return x


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with radius ``ceil(3 sigma)`` and reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0].clamp_(0, 1)


def solarize(x: Tensor, threshold: float = 0.5) -> Tensor:
    """Inverts the pixels at or above ``threshold``."""
    return torch.where(x >= threshold, 1 - x, x)
