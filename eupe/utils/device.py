"""Device and precision choices, made in one place for every command and trainer."""

from __future__ import annotations

import contextlib

import torch

AMP_CHOICES = ("auto", "bf16", "fp32")


def fast_bf16(device: torch.device | str) -> bool:
    """True where bf16 matrix products run natively, several times faster than fp32: CUDA GPUs with bf16, and
    CPUs with AMX tiles (Intel Sapphire Rapids and later) or AVX512-BF16 (e.g. AMD Zen 4), which oneDNN uses for
    bf16 matmuls and convolutions. Plain AVX2/AVX512 CPUs emulate bf16 and run it no faster than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # torch's own CPU feature checks (private, so looked up defensively)
        checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
        return torch.backends.mkldnn.is_available() and any(bool(check and check()) for check in checks)
    return False


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` as a device (``None``: CUDA when available, else CPU); a CUDA request without CUDA is an error."""
    if name is None or name == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device name (cpu, cuda, cuda:1, ...): {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but this machine has no usable CUDA device; use --device cpu")
    return device


def bf16_enabled(amp: str, device: torch.device | str) -> bool:
    """Whether a run with precision ``amp`` uses bf16 autocast on ``device``.

    ``auto``: bf16 where the hardware runs it natively (:func:`fast_bf16`), fp32 elsewhere; ``bf16``: always;
    ``fp32``: never.
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"precision {amp!r} is not one of {list(AMP_CHOICES)}")
    return amp == "bf16" or (amp == "auto" and fast_bf16(device))


def autocast(amp: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The bf16 autocast context of :func:`bf16_enabled` (a disabled autocast when it answers no)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_enabled(amp, device))
