"""Outputs equal the reference implementation's for the same weights (miniature models built by the reference).

On CPU by default; ``EUPE_TEST_DEVICE=cuda`` runs the same checks on a GPU in fp32 with TF32 off
(``benchmarks/gpu_check.py`` does).
"""

from __future__ import annotations

import os

import pytest
import torch

from eupe.models import ConvNeXt, VisionTransformer
from tests.helpers import load_reference

TOL = 1e-4
FIXTURES = [("vit_small_config.pt", VisionTransformer), ("convnext_small_config.pt", ConvNeXt)]
DEVICE = torch.device(os.environ.get("EUPE_TEST_DEVICE", "cpu"))


def _max_abs_diff(a, b) -> float:
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        return max((_max_abs_diff(x, y) for x, y in zip(a, b)), default=0.0)
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.cpu() - b).abs().max().item() if a.numel() else 0.0


@pytest.fixture(scope="module", params=FIXTURES, ids=[f[0].split("_")[0] for f in FIXTURES])
def reference(request):
    filename, cls = request.param
    data = load_reference(filename)
    model = cls(**data["architecture"]).eval()
    model.load_state_dict(data["state_dict"], strict=True)
    if DEVICE.type == "cuda":  # the reference outputs are fp32: no TF32 in matmuls or convolutions
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cases = [{**case, "input": case["input"].to(DEVICE)} for case in data["cases"]]
    return model.to(DEVICE), cases


def test_cases_cover_square_nonsquare_and_non_multiple_sizes(reference):
    sizes = {tuple(case["input"].shape[-2:]) for case in reference[1]}
    assert (64, 64) in sizes and (96, 128) in sizes and (80, 90) in sizes


@torch.inference_mode()
def test_forward_features(reference):
    model, cases = reference
    for case in cases:
        out = model.forward_features(case["input"])
        for key, expected in case["forward_features"].items():
            if expected is None:
                assert out[key] is None
            else:
                assert _max_abs_diff(out[key], expected) < TOL, key


@torch.inference_mode()
def test_get_intermediate_layers(reference):
    model, cases = reference
    for case in cases:
        x = case["input"]
        got = model.get_intermediate_layers(x, n=[0, 2], reshape=True, return_class_token=True)
        assert _max_abs_diff(got, case["get_intermediate_layers(n=[0,2],reshape=True,return_class_token=True)"]) < TOL
        got = model.get_intermediate_layers(x, n=1, return_class_token=True)
        assert _max_abs_diff(got, case["get_intermediate_layers(n=1,return_class_token=True)"]) < TOL


@torch.inference_mode()
def test_forward_returns_class_token(reference):
    model, cases = reference
    for case in cases:
        assert _max_abs_diff(model(case["input"]), case["forward"]) < TOL


@torch.inference_mode()
def test_list_of_images_matches_separate_calls(reference):
    model, cases = reference
    inputs = [case["input"] for case in cases]  # three different sizes in one call
    outs = model.forward_features(inputs)
    assert isinstance(outs, list) and len(outs) == len(cases)
    for out, case in zip(outs, cases):
        assert _max_abs_diff(out["x_norm_clstoken"], case["forward_features"]["x_norm_clstoken"]) < TOL
    classes = model(inputs)
    assert _max_abs_diff(classes, [case["forward"] for case in cases]) < TOL
