from __future__ import annotations

import pytest
import torch

import eupe
from eupe.models import get_model_entry


def test_list_models_and_filters():
    released = eupe.list_models(pretrained=True)
    assert released == sorted(["eupe_vitt16", "eupe_vits16", "eupe_vitb16", "eupe_convnext_tiny",
                               "eupe_convnext_small", "eupe_convnext_base"])
    assert eupe.list_models("eupe_vit*") == ["eupe_vitb16", "eupe_vits16", "eupe_vitt16"]
    assert {"vitl16", "vith16plus", "eupe_proxy_vitg16"} <= set(eupe.list_models())


@pytest.mark.parametrize("name,millions", [("eupe_vitt16", 5.5), ("eupe_vits16", 21.6), ("eupe_vitb16", 85.7),
                                           ("eupe_convnext_tiny", 27.8), ("eupe_convnext_small", 49.5),
                                           ("eupe_convnext_base", 87.6), ("vitl16", 303.2), ("vith16plus", 840.6),
                                           ("eupe_proxy_vitg16", 1889.9)])
def test_parameter_counts(name, millions):
    with torch.device("meta"):
        model = eupe.create_model(name)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError, match="Unknown model 'eupe_vitx16'.*eupe_vit"):
        get_model_entry("eupe_vitx16")


def test_released_weights_point_to_hugging_face():
    assert get_model_entry("eupe_vits16").pretrained.default_source == "hf://facebook/EUPE-ViT-S/EUPE-ViT-S.pt"
    assert get_model_entry("eupe_convnext_base").pretrained.default_source == \
        "hf://facebook/EUPE-ConvNeXt-B/EUPE-ConvNeXt-B.pt"
