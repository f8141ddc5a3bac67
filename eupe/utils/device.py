"""What the hardware does fast."""

from __future__ import annotations

import torch


def fast_bf16(device: torch.device | str) -> bool:
    """True where bf16 matrix products run natively: CUDA GPUs with bf16, and CPUs with AMX tiles (Intel Sapphire
    Rapids and later), where oneDNN runs bf16 convolutions and matmuls several times faster than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, so looked up defensively
        return bool(amx and amx() and torch.backends.mkldnn.is_available())
    return False
