from __future__ import annotations

import torch
from safetensors.torch import load_file

import eupe
from eupe.export import checkpoint_to_safetensors, export_model, load_for_export
from eupe.models import Projectors


def _checkpoint_with_projectors(tmp_path):
    model = eupe.create_model("eupe_vitt16", depth=1)
    heads = Projectors.build(192, 32, {"dinov3": 48, "siglip": 24})
    state = dict(model.state_dict())
    state.update({f"projectors.{k}": v for k, v in heads.state_dict().items()})
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state}, path)
    return path, state


def test_checkpoint_conversion_keeps_every_tensor(tmp_path):
    source, state = _checkpoint_with_projectors(tmp_path)
    out = tmp_path / "ckpt.safetensors"
    report = checkpoint_to_safetensors(source, out)
    assert report.passed
    converted = load_file(str(out))
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], v) for k, v in state.items())


def test_model_export_carries_projectors_and_reloads(tmp_path):
    source, state = _checkpoint_with_projectors(tmp_path)
    model = load_for_export("eupe_vitt16", str(source), depth=1)
    out = tmp_path / "model.safetensors"
    export_model(model, "safetensors", out, model_name="eupe_vitt16")
    assert any(k.startswith("projectors.siglip.patch.3") for k in load_file(str(out)))
    again = eupe.load("eupe_vitt16", out, depth=1)
    assert {k for k in again.state_dict() if k.startswith("projectors.")} == {k for k in state if k.startswith("projectors.")}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
