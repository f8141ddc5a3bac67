"""state_dict() of every released architecture has exactly the reference keys, shapes and dtypes, in order."""

from __future__ import annotations

import json

import pytest
import torch

from eupe.models import create_model
from tests.helpers import REFERENCE_DIR

LAYOUT = json.loads((REFERENCE_DIR / "state_dict_layout.json").read_text())


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_layout_matches_reference(name):
    with torch.device("meta"):
        model = create_model(name)
    got = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert got == LAYOUT[name]


def test_all_six_released_models_are_covered():
    assert sorted(LAYOUT) == sorted(
        ["eupe_vitt16", "eupe_vits16", "eupe_vitb16", "eupe_convnext_tiny", "eupe_convnext_small", "eupe_convnext_base"]
    )
