"""Axial rotary position embedding (RoPE) as used by DINOv3-family ViTs.

Coordinates of the patch grid are normalised to [-1, 1] (separately per axis by default) and turned into
sin/cos tables of one head's width. The tables depend only on the grid size, so in eval mode they are cached
per (H, W, device); the cache is invalidated whenever the ``periods`` buffer changes (e.g. on load), as told by
its version counter.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

NormalizeCoords = Literal["min", "max", "separate"]


class RopePositionEmbedding(nn.Module):
    """Produces ``(sin, cos)`` tables of shape ``[H*W, head_dim]`` for a patch grid of ``H x W``.

    ``shift_coords``, ``jitter_coords`` and ``rescale_coords`` are training-time coordinate augmentations; they
    are inactive in eval mode, which is what makes the tables cacheable.
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        num_heads: int,
        base: float | None = 100.0,
        min_period: float | None = None,
        max_period: float | None = None,
        normalize_coords: NormalizeCoords = "separate",
        shift_coords: float | None = None,
        jitter_coords: float | None = None,
        rescale_coords: float | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % (4 * num_heads) != 0:
            raise ValueError(f"RoPE needs embed_dim divisible by 4*num_heads, got {embed_dim} and {num_heads} heads")
        both_periods = min_period is not None and max_period is not None
        if (base is None) == (not both_periods):
            raise ValueError("RoPE needs either `base` or both `min_period` and `max_period`.")
        if normalize_coords not in ("min", "max", "separate"):
            raise ValueError(f"Unknown normalize_coords {normalize_coords!r}; use 'min', 'max' or 'separate'.")
        self.head_dim = embed_dim // num_heads
        self.base = base
        self.min_period = min_period
        self.max_period = max_period
        self.normalize_coords = normalize_coords
        self.shift_coords = shift_coords
        self.jitter_coords = jitter_coords
        self.rescale_coords = rescale_coords
        # Persistent: it is part of the released checkpoints' key layout.
        self.register_buffer("periods", torch.empty(self.head_dim // 4, dtype=torch.float32), persistent=True)
        self._cache: dict[tuple, tuple[tuple[int, int], tuple[Tensor, Tensor]]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        n = self.head_dim // 4
        if self.base is not None:
            periods = self.base ** (2 * torch.arange(n, dtype=torch.float32) / (self.head_dim // 2))
        else:
            ratio = self.max_period / self.min_period
            periods = ratio ** torch.linspace(0, 1, n, dtype=torch.float32) / ratio * self.max_period
        with torch.no_grad():
            self.periods.copy_(periods.to(self.periods.device, self.periods.dtype))

    def _augments_coords(self) -> bool:
        return self.training and any(
            v is not None for v in (self.shift_coords, self.jitter_coords, self.rescale_coords)
        )

    def _coords(self, H: int, W: int, device: torch.device) -> Tensor:
        dd = {"device": device, "dtype": torch.float32}
        if self.normalize_coords == "max":
            denom_h = denom_w = max(H, W)
        elif self.normalize_coords == "min":
            denom_h = denom_w = min(H, W)
        else:
            denom_h, denom_w = H, W
        coords_h = torch.arange(0.5, H, **dd) / denom_h
        coords_w = torch.arange(0.5, W, **dd) / denom_w
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0  # [HW, 2] in [-1, 1]
        if self.training:
            if self.shift_coords is not None:
                coords = coords + torch.empty(2, **dd).uniform_(-self.shift_coords, self.shift_coords)[None, :]
            if self.jitter_coords is not None:
                log_j = math.log(self.jitter_coords)
                coords = coords * torch.empty(2, **dd).uniform_(-log_j, log_j).exp()[None, :]
            if self.rescale_coords is not None:
                log_r = math.log(self.rescale_coords)
                coords = coords * torch.empty(1, **dd).uniform_(-log_r, log_r).exp()
        return coords

    def _compute(self, H: int, W: int) -> tuple[Tensor, Tensor]:
        periods = self.periods.float()
        coords = self._coords(H, W, periods.device)
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]  # [HW, 2, D/4]
        angles = angles.flatten(1, 2).tile(2)  # [HW, D]
        return torch.sin(angles), torch.cos(angles)

    def forward(self, *, H: int, W: int) -> tuple[Tensor, Tensor]:
        """Returns fp32 ``(sin, cos)``, each ``[H*W, head_dim]`` (the reference module's interface)."""
        return self._compute(H, W)

    def tables(self, H: int, W: int, num_prefix: int) -> tuple[Tensor, Tensor]:
        """Returns ``(signed_sin, cos)`` for a sequence of ``num_prefix`` tokens followed by the ``H x W`` grid.

        Cached in eval mode; see :func:`rope_tables_with_prefix` for the layout.
        """
        if self._augments_coords() or is_tracing():
            return rope_tables_with_prefix(*self._compute(H, W), num_prefix)
        periods = self.periods
        if periods.is_inference():
            # Inference tensors carry no version counter, so a change could not be noticed: compute, don't cache.
            return rope_tables_with_prefix(*self._compute(H, W), num_prefix)
        key = (H, W, num_prefix, periods.device)
        # The buffer's version counter (bumped by any in-place change, including load_state_dict's copy_) and its
        # storage address identify the periods the tables were built from, without a device sync per forward.
        version = (periods._version, periods.data_ptr())
        cached = self._cache.get(key)
        if cached is None or cached[0] != version:
            if len(self._cache) >= 64:  # bounded: many distinct sizes (multi-resolution eval) must not leak
                self._cache.clear()
            # Built as normal tensors even inside inference_mode, so a later autograd pass can use them too.
            with torch.inference_mode(False), torch.no_grad():
                tables = rope_tables_with_prefix(*self._compute(H, W), num_prefix)
            cached = self._cache[key] = (version, tables)
        return cached[1]

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}, normalize_coords={self.normalize_coords!r}"


def is_tracing() -> bool:
    """True while compiling or exporting: the tables must then be computed from (symbolic) H, W in the graph."""
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export())


def rope_tables_with_prefix(sin: Tensor, cos: Tensor, num_prefix: int) -> tuple[Tensor, Tensor]:
    """Extends tables to the full sequence and folds ``rotate_half``'s sign into ``sin``.

    Prefix tokens (class and storage tokens) get the identity rotation (sin 0, cos 1), so the whole sequence is
    rotated without slicing and concatenating. With ``x_rolled = roll(x, D/2)`` the rotation is
    ``x * cos + x_rolled * signed_sin``, equal to the usual ``x * cos + rotate_half(x) * sin``.
    """
    half = sin.shape[-1] // 2
    signed_sin = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
    if num_prefix:
        signed_sin = torch.cat([signed_sin.new_zeros(num_prefix, sin.shape[-1]), signed_sin], dim=0)
        cos = torch.cat([cos.new_ones(num_prefix, cos.shape[-1]), cos], dim=0)
    return signed_sin, cos


def apply_rope(x: Tensor, signed_sin: Tensor, cos: Tensor, rotated_bias: Tensor | None = None) -> Tensor:
    """Rotates ``x`` (``[..., N, D]``) with tables from :func:`rope_tables_with_prefix`, computed in fp32.

    Eager: ``x * cos`` plus the swapped halves of ``x`` times ``signed_sin``, accumulated in place into the two
    halves of the result (two passes over ``x``, no temporary). Traced/exported graphs get the equivalent
    out-of-place form, since in-place slice updates become slow scatter ops in ONNX. ``rotated_bias`` (an
    already rotated bias, broadcastable to ``x``) is added in the first pass: rotating ``x + b`` without a pass
    for the sum.
    """
    dtype = x.dtype
    x = x.float()
    half = x.shape[-1] // 2
    if is_tracing():
        rolled = torch.cat([x[..., half:], x[..., :half]], dim=-1)
        out = x * cos + rolled * signed_sin
        return (out if rotated_bias is None else out + rotated_bias).to(dtype)
    out = x * cos if rotated_bias is None else torch.addcmul(rotated_bias, x, cos)
    out[..., :half].addcmul_(x[..., half:], signed_sin[..., :half])
    out[..., half:].addcmul_(x[..., :half], signed_sin[..., half:])
    return out.to(dtype)
