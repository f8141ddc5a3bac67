"""One shape for every protocol: ``run_<protocol>(backbone: EvalBackbone, config, output_dir) -> dict``, with the
backbone loaded only once the inputs are checked."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import pytest
import torch

from eupe.config import load_config
from eupe.eval import EvalBackbone
from eupe.eval.depth import DepthConfig, run_depth
from eupe.eval.keypoints import KeypointsConfig, run_keypoints
from eupe.eval.knn import KnnRunConfig, run_knn
from eupe.eval.linear import LinearRunConfig, run_linear
from eupe.eval.segmentation import SegmentationConfig, run_segmentation
from eupe.eval.zeroshot import ZeroShotRunConfig, run_zeroshot
from eupe.extract import FeatureBackbone
from tests.helpers import tiny_vit

PROTOCOLS = {run_knn: KnnRunConfig, run_linear: LinearRunConfig, run_zeroshot: ZeroShotRunConfig,
             run_segmentation: SegmentationConfig, run_depth: DepthConfig, run_keypoints: KeypointsConfig}


@pytest.mark.parametrize("run", list(PROTOCOLS), ids=lambda f: f.__name__)
def test_every_protocol_has_the_same_signature(run):
    params = list(inspect.signature(run).parameters.values())
    assert [p.name for p in params] == ["backbone", "config", "output_dir"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
    hints = typing.get_type_hints(run)
    assert hints["backbone"] is EvalBackbone and hints["config"] is PROTOCOLS[run]
    assert hints["output_dir"] == str | Path and hints["return"] == dict[str, Any]


def test_of_wraps_a_loaded_module():
    model = tiny_vit()
    backbone = EvalBackbone.of(model, name="tiny")
    assert isinstance(backbone, FeatureBackbone)  # usable wherever features are extracted
    assert backbone.load() is model and backbone.device == torch.device("cpu")
    assert (backbone.name, backbone.autocast) == ("tiny", None)
    identity = backbone.identity()
    assert identity["model"] == "tiny" and identity["weights"].startswith("sha256:")
    assert EvalBackbone.of(tiny_vit(), name="tiny").identity() != identity  # other weights, other identity
    assert EvalBackbone.of(model, device="meta").device == torch.device("meta")


def _never_loaded() -> EvalBackbone:
    def load():
        raise AssertionError("the backbone was loaded before the inputs were checked")

    return EvalBackbone(load, torch.device("cpu"), load, name="unused")


@pytest.mark.parametrize(("run", "key"), [(run_segmentation, "data.root"), (run_depth, "data.root"),
                                          (run_keypoints, "root")], ids=lambda x: getattr(x, "__name__", x))
def test_dense_protocols_check_the_dataset_root_before_loading(tmp_path, run, key):
    config_class = PROTOCOLS[run]
    with pytest.raises(ValueError, match=f"pass --data-root or set {key}=PATH"):
        run(_never_loaded(), config_class(), tmp_path)
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        run(_never_loaded(), load_config(config_class, None, [f"{key}={tmp_path / 'nope'}"]), tmp_path)
