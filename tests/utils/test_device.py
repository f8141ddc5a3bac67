from __future__ import annotations

import torch

from eupe.utils.device import fast_bf16


def test_fast_bf16_answers_for_each_device_type(monkeypatch):
    assert fast_bf16("meta") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert fast_bf16(torch.device("cpu")) is torch.backends.mkldnn.is_available()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert fast_bf16("cpu") is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fast_bf16("cuda") is False
