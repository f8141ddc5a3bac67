from __future__ import annotations

import pytest

from eupe.export import export_model
from eupe.utils.optional import available
from tests.export.conftest import trained_like
from tests.helpers import tiny_vit

pytestmark = pytest.mark.skipif(
    not (available("executorch.exir") and available("executorch.runtime")),
    reason="ExecuTorch is not installed (pip install 'eupe[executorch]')",
)


def test_executorch_xnnpack_matches_eager(tmp_path):
    model = trained_like(tiny_vit(depth=1))
    path = tmp_path / "vit.pte"
    result = export_model(model, "executorch", path, size=(32, 48))
    assert path.stat().st_size > 0
    assert len(result.report.checks) == 1 and result.report.passed, str(result.report)
