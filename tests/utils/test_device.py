from __future__ import annotations

import torch

from eupe.utils.device import fast_bf16


def test_fast_bf16_answers_for_each_device_type(monkeypatch):
    assert fast_bf16("meta") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert fast_bf16(torch.device("cpu")) is torch.backends.mkldnn.is_available()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert fast_bf16("cpu") is torch.backends.mkldnn.is_available()  # AVX512-BF16 without AMX (AMD Zen 4)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert fast_bf16("cpu") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fast_bf16("cuda") is False


def test_resolve_device_defaults_and_refuses_missing_cuda(monkeypatch):
    import pytest

    from eupe.utils.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="no usable CUDA device; use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")


def test_one_precision_policy_for_every_command():
    import pytest

    import eupe.utils.device as device
    from eupe.utils.device import autocast, bf16_enabled

    assert bf16_enabled("bf16", "cpu") and not bf16_enabled("fp32", "cuda")
    assert bf16_enabled("auto", "cpu") is device.fast_bf16("cpu")  # auto follows what the hardware runs natively
    with autocast("bf16", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="not one of"):
        bf16_enabled("fp16", "cpu")
