"""torch.hub.load(REPO_DIR, 'eupe_*', source='local', weights=...) as in the model card."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import eupe
from tests.helpers import REPO_ROOT


@pytest.mark.parametrize("name", ["eupe_vitt16", "eupe_convnext_tiny"])
def test_hub_load_local_weights(tmp_path, name):
    reference = eupe.create_model(name)
    path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), path)
    model = torch.hub.load(str(REPO_ROOT), name, source="local", weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference.eval()(x))


def test_hubconf_exposes_exactly_the_six_entry_points():
    spec = importlib.util.spec_from_file_location("hubconf", REPO_ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    names = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert names == set(eupe.list_models(pretrained=True))
    assert "torch" in hubconf.dependencies
