from __future__ import annotations

import pytest
import torch

from eupe.export import ExportError, export_model
from eupe.models import ConvNeXt
from tests.export.conftest import trained_like


def test_torchscript_round_trip_at_three_sizes(tmp_path, vit):
    path = tmp_path / "vit.pt"
    result = export_model(vit, "torchscript", path, size=(32, 48), storage_tokens=True)
    assert result.paths == [path] and len(result.report.checks) == 3 and result.report.passed
    loaded = torch.jit.load(str(path))
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        cls, patches, storage = loaded(x)
        ref = vit.forward_features(x)
    torch.testing.assert_close(patches, ref["x_norm_patchtokens"], atol=1e-5, rtol=1e-5)
    assert storage.shape == (1, 4, 64)


def test_torch_export_program_round_trip(tmp_path):
    model = trained_like(ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)))
    path = tmp_path / "convnext.pt2"
    result = export_model(model, "pt2", path, size=(64, 96))
    assert len(result.report.checks) == 3 and result.report.passed
    program = torch.export.load(str(path)).module()
    x = torch.randn(3, 3, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(program(x)[0], model(x), atol=1e-5, rtol=1e-5)


def test_program_rejects_sizes_off_the_stride(tmp_path):
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    with pytest.raises(ExportError, match="multiple of 32"):
        export_model(model, "pt2", tmp_path / "c.pt2", size=(48, 64))
