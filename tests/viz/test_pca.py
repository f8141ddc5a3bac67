"""PCA pictures: components against numpy's SVD, foreground masking, rendering with a tiny backbone."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.viz import fit_pca, foreground_masks, pca_pictures, pca_rgb
from tests.helpers import tiny_vit

pca_module = importlib.import_module("eupe.viz.pca")


def test_fit_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) * np.array([5, 3, 2, 0.5, 0.2, 0.1])
    mean, comps = fit_pca(torch.from_numpy(x), 3)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(mean.numpy(), x.mean(0))
    np.testing.assert_allclose(np.abs(comps.numpy()), np.abs(vt[:3]), atol=1e-10)
    assert (comps.gather(1, comps.abs().argmax(1, keepdim=True)) > 0).all()  # deterministic signs
    with pytest.raises(ValueError):
        fit_pca(torch.zeros(1, 3))


def _gradient_map(h=6, w=8, d=5, seed=0):
    """Tokens whose dominant variation is the column, then the row: PC1 ~ x, PC2 ~ y."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    feats = torch.randn(d, h, w, generator=g, dtype=torch.float64) * 0.01
    feats[0] += 10 * xs
    feats[1] += 3 * ys
    return feats


def test_pca_rgb_channels_follow_the_main_directions():
    (picture,) = pca_rgb([_gradient_map()])
    assert picture.shape == (6, 8, 3) and picture.dtype == np.uint8
    red_by_column = picture[..., 0].astype(float).mean(0)
    green_by_row = picture[..., 1].astype(float).mean(1)
    assert abs(np.corrcoef(red_by_column, np.arange(8))[0, 1]) > 0.99
    assert abs(np.corrcoef(green_by_row, np.arange(6))[0, 1]) > 0.99
    assert picture.min() == 0 and picture.max() == 255


def test_pca_is_fitted_jointly_over_images():
    a, b = _gradient_map(), _gradient_map(seed=1) + 5.0
    pa, pb = pca_rgb([a, b])
    # independent computation: one PCA over both images' tokens, 1st-99th percentile scaling to 0..255
    tokens = np.concatenate([a.flatten(1).T.numpy(), b.flatten(1).T.numpy()])
    centred = tokens - tokens.mean(0)
    proj = centred @ np.linalg.svd(centred, full_matrices=False)[2][:3].T
    lo, hi = np.quantile(proj, 0.01, axis=0), np.quantile(proj, 0.99, axis=0)
    expected = np.round(np.clip((proj - lo) / (hi - lo), 0, 1) * 255)
    got = np.concatenate([pa.reshape(-1, 3), pb.reshape(-1, 3)]).astype(float)
    for c in range(3):  # up to the component's sign: scaling maps -v to 255 - value
        assert min(np.abs(got[:, c] - expected[:, c]).max(), np.abs(got[:, c] - (255 - expected[:, c])).max()) <= 1


def test_foreground_threshold_blacks_out_the_background():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 8, 8, generator=g, dtype=torch.float64) * 0.05
    feats[:, 2:6, 2:6] += torch.randn(8, 1, 1, generator=g, dtype=torch.float64) * 5  # central object
    feats[3, 2:6, 2:6] += torch.linspace(0, 1, 4, dtype=torch.float64)  # with internal structure
    (mask,) = foreground_masks([feats], 0.5)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True
    assert torch.equal(mask.view(8, 8), expected)  # the object, whatever the sign of the first component
    (picture,) = pca_rgb([feats], foreground_threshold=0.5)
    assert (picture[~expected.numpy()] == 0).all() and picture[expected.numpy()].any(axis=-1).mean() > 0.5


def test_pca_pictures_with_a_tiny_backbone(monkeypatch):
    shown = []  # the panels' picture sizes of each figure
    render = pca_module.figure_image
    monkeypatch.setattr(pca_module, "figure_image", lambda fig: shown.append(
        [ax.get_images()[0].get_array().shape[:2] for ax in fig.axes if ax.get_images()]) or render(fig))
    images = [Image.new("RGB", (70, 50), (200, 30, 30)), Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))]
    pictures = pca_pictures(tiny_vit().eval().requires_grad_(False), images, size=32)
    # 70x50 -> short side 32 -> 45x32 -> multiples of 16: 48x32; the PCA picture at the same size beside it
    assert shown == [[(32, 48), (32, 48)], [(32, 32), (32, 32)]]
    assert all(isinstance(p, Image.Image) and p.mode == "RGB" for p in pictures)
