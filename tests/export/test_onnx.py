from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest
import torch

import eupe
from eupe.export import ExportError, MissingDependencyError, VerificationError, export_model, export_ready
from eupe.export.verify import parity_check
from tests.export.conftest import trained_like
from tests.helpers import tiny_vit

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx extra (pip install onnx onnxruntime)")
ort = pytest.importorskip("onnxruntime", reason="ONNX parity checks need onnxruntime")

from eupe.export.onnx import OnnxRunner, export_onnx, int8_path_for, quantize_onnx_int8, verify_int8  # noqa: E402

# Depth-reduced variants of all six released architectures; ViT-S keeps its real width (384, 6 heads).
ARCHITECTURES = [
    ("eupe_vitt16", dict(depth=1)),
    ("eupe_vits16", dict(depth=1)),
    ("eupe_vitb16", dict(depth=1, embed_dim=256, num_heads=4)),
    ("eupe_convnext_tiny", dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))),
    ("eupe_convnext_small", dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))),
    ("eupe_convnext_base", dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))),
]


@pytest.mark.parametrize("name,overrides", ARCHITECTURES, ids=[a[0] for a in ARCHITECTURES])
def test_onnx_parity_dynamic_sizes(tmp_path, name, overrides):
    model = trained_like(eupe.create_model(name, **overrides))
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model, path, size=(64, 96), exporter="torchscript", model_name=name)
    # Three sizes, one of them non-square, all within 1e-4 of eager (export_onnx raises otherwise).
    assert len(report.checks) == 3 and report.passed
    assert max(c.value for c in report.checks) <= 1e-4
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version >= 17
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["eupe_model"] == name and meta["stride"] == ("16" if "vit" in name else "32")
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in (dims[0], dims[2], dims[3])), "batch, height and width must be dynamic"


def test_onnx_storage_tokens_and_independent_batch(tmp_path, vit):
    path = tmp_path / "vit.onnx"
    export_onnx(vit, path, size=(32, 48), exporter="torchscript", storage_tokens=True)
    runner = OnnxRunner(path)
    assert runner.output_names == ["class_token", "patch_tokens", "storage_tokens"]
    x = torch.randn(3, 3, 80, 32)
    cls, patches, storage = runner(x)
    ref = vit.forward_features(x)
    assert patches.shape == (3, 10, 64) and storage.shape == (3, 4, 64)
    np.testing.assert_allclose(storage, ref["x_storage_tokens"].detach().numpy(), atol=1e-4)
    # Batch items do not interact: row 1 alone equals row 1 of the batch.
    np.testing.assert_allclose(runner(x[1:2])[0], cls[1:2], atol=1e-5)


def test_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    model = trained_like(tiny_vit(depth=1))
    report = export_onnx(model, tmp_path / "dynamo.onnx", size=(32, 48), exporter="dynamo")
    assert len(report.checks) == 3 and report.passed


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_onnxruntime_optimised_export_fuses_and_matches_the_unfolded_model(tmp_path, exporter):
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    model = trained_like(tiny_vit(depth=2))
    with torch.no_grad():
        for block in model.blocks:
            block.ls1.gamma.uniform_(0.5, 2.0)  # folded into proj at export; the check compares to this model
    path = tmp_path / "vit.ort.onnx"
    report = export_onnx(model, path, size=(32, 48), exporter=exporter, optimize=True)
    assert len(report.checks) == 3 and report.passed, str(report)
    graph = onnx.load(str(path))
    ops = Counter(node.op_type for node in graph.graph.node)
    assert ops["MultiHeadAttention"] == 2 and ops["BiasGelu"] == 2
    assert ops["Softmax"] == ops["Erf"] == 0  # nothing left of the unfused attention and GELU
    assert {p.key: p.value for p in graph.metadata_props}["runtime"].startswith("onnxruntime")


def test_onnxruntime_optimised_convnext(tmp_path):
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    model = trained_like(eupe.create_model("eupe_convnext_tiny", depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)))
    report = export_onnx(model, tmp_path / "convnext.ort.onnx", size=(64, 96), optimize=True)
    assert len(report.checks) == 3 and report.passed, str(report)


def test_parity_check_catches_a_wrong_export(vit):
    wrong = trained_like(export_ready(vit))
    report = parity_check(export_ready(vit), wrong, [(32, 32)])
    assert not report.passed
    with pytest.raises(VerificationError, match="does not match eager"):
        report.raise_if_failed("wrong export")


def test_int8_keeps_class_token_on_real_photos(tmp_path, vit):
    pytest.importorskip("skimage", reason="the int8 quality check uses scikit-image's photos")
    path = tmp_path / "vit.onnx"
    export_onnx(vit, path, size=(64, 64), exporter="torchscript")
    int8 = quantize_onnx_int8(path, int8_path_for(path))
    assert int8.name == "vit.int8.onnx" and int8.stat().st_size < path.stat().st_size
    report = verify_int8(vit, int8, size=64)
    assert report.passed, str(report)
    # The check is not vacuous: the photos give different class tokens.
    runner = OnnxRunner(int8)
    from eupe.export.verify import sample_images

    cls = torch.as_tensor(runner(sample_images(64))[0])
    assert torch.nn.functional.cosine_similarity(cls[0], cls[1], dim=0) < 0.99


def test_bad_requests_give_clear_errors(tmp_path, vit):
    with pytest.raises(ExportError, match="not a multiple of 16"):
        export_model(vit, "onnx", tmp_path / "x.onnx", size=(250, 250))
    with pytest.raises(ExportError, match="opset 17 or newer"):
        export_model(vit, "onnx", tmp_path / "x.onnx", opset=13)
    with pytest.raises(ExportError, match="Unknown format"):
        export_model(vit, "tflite", tmp_path / "x.tflite")
    with pytest.raises(ExportError, match="--optimize applies to --format onnx only"):
        export_model(vit, "torchscript", tmp_path / "x.pt", optimize=True)
    with pytest.raises(ExportError, match="--int8 applies to --format onnx only"):
        export_model(vit, "torchscript", tmp_path / "x.pt", int8=True)


def test_missing_dependency_says_what_to_install(tmp_path, vit, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail like an absent package
    with pytest.raises(MissingDependencyError, match=r"pip install 'eupe\[onnx\]'"):
        export_model(vit, "onnx", tmp_path / "x.onnx", size=(32, 32))
    assert not (tmp_path / "x.onnx").exists()
