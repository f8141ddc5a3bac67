"""Dense protocols (segmentation, depth, keypoints) refuse settings outside their range before reading any data or
weights, naming every offending key: a zero batch or iteration count, an empty depth range, a zero stride or alpha
would otherwise crash minutes into a run or give a meaningless number."""

from __future__ import annotations

import pytest

from eupe.eval.depth import DepthConfig, run_depth
from eupe.eval.keypoints import KeypointsConfig, run_keypoints
from eupe.eval.segmentation import SegmentationConfig, run_segmentation


class UnusedBackbone:
    """A backbone the run must never reach."""

    def load(self):
        pytest.fail("the backbone was loaded although the settings are invalid")


@pytest.mark.parametrize("edit, keys", [
    (lambda c: setattr(c.train, "batch_size", 0), ["train.batch_size=0"]),
    (lambda c: (setattr(c.train, "iterations", -1), setattr(c.eval, "stride", 0)),
     ["train.iterations=-1", "eval.stride=0"]),
    (lambda c: setattr(c.data, "num_classes", 0), ["data.num_classes=0"]),
    (lambda c: setattr(c.optim, "lr", -1e-3), ["optim.lr=-0.001"]),
    (lambda c: setattr(c.train, "scale_range", [2.0, 0.5]), ["train.scale_range=[2.0, 0.5]"]),
])
def test_segmentation_settings_out_of_range_are_refused(tmp_path, edit, keys):
    cfg = SegmentationConfig()
    cfg.data.root = str(tmp_path)
    edit(cfg)
    with pytest.raises(ValueError, match="eval segmentation: invalid setting") as err:
        run_segmentation(UnusedBackbone(), cfg, tmp_path / "out")
    assert all(key in str(err.value) for key in keys), err.value


@pytest.mark.parametrize("edit, key", [
    (lambda c: setattr(c.head, "n_bins", 0), "head.n_bins=0"),
    (lambda c: setattr(c.head, "min_depth", 20.0), "head.max_depth=10.0 (must exceed head.min_depth=20.0)"),
    (lambda c: setattr(c.data, "depth_scale", 0.0), "data.depth_scale=0.0"),
    (lambda c: setattr(c.train, "crop_size", [32]), "train.crop_size=[32]"),
    (lambda c: setattr(c.train, "flip_prob", 1.5), "train.flip_prob=1.5"),
])
def test_depth_settings_out_of_range_are_refused(tmp_path, edit, key):
    cfg = DepthConfig()
    cfg.data.root = str(tmp_path)
    edit(cfg)
    with pytest.raises(ValueError, match="eval depth: invalid setting") as err:
        run_depth(UnusedBackbone(), cfg, tmp_path / "out")
    assert key in str(err.value)


@pytest.mark.parametrize("field, value", [("pairs_per_category", 0), ("image_size", 0), ("alpha", 0.0),
                                          ("alpha", 2.0)])
def test_keypoint_settings_out_of_range_are_refused(tmp_path, field, value):
    cfg = KeypointsConfig(root=str(tmp_path), **{field: value})
    with pytest.raises(ValueError, match=f"eval keypoints: invalid setting.*{field}={value!r}"):
        run_keypoints(UnusedBackbone(), cfg, tmp_path / "out")
