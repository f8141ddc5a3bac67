import pytest
import torch

from eupe.distill.normalization import TeacherNormalizer
from eupe.teachers import TeacherOutput


def test_statistics_are_per_coordinate_and_per_token_type():
    norm = TeacherNormalizer({"t": (3, 2)}, eps=0.0)
    outs = [TeacherOutput(torch.randn(4, 3) * torch.tensor([1.0, 5.0, 0.1]) + 7, torch.randn(4, 2, 3, 3) * 2 - 1)
            for _ in range(3)]
    for o in outs:
        norm.update("t", o)
    norm.finalize()
    summaries = torch.cat([o.summary for o in outs])
    patches = torch.cat([o.patches.permute(0, 2, 3, 1).reshape(-1, 2) for o in outs])
    stats = norm.stats["t"]
    assert torch.allclose(stats["cls"].mean, summaries.mean(0), atol=1e-5)
    assert torch.allclose(stats["cls"].std, summaries.std(0), atol=1e-5)
    assert torch.allclose(stats["patch"].mean, patches.mean(0), atol=1e-5)
    assert torch.allclose(stats["patch"].std, patches.std(0), atol=1e-5)
    y = norm("t", outs[0])
    assert torch.allclose(y.summary, (outs[0].summary - summaries.mean(0)) / summaries.std(0), atol=1e-5)
    assert torch.allclose(y.patches[:, 1], (outs[0].patches[:, 1] - patches[:, 1].mean()) / patches[:, 1].std(),
                          atol=1e-5)


def test_statistics_are_frozen_buffers_that_round_trip_and_export():
    norm = TeacherNormalizer({"a": (2, 2)})
    with pytest.raises(RuntimeError, match="not measured"):
        norm("a", TeacherOutput(torch.zeros(1, 2), torch.zeros(1, 2, 1, 1)))
    norm.update("a", TeacherOutput(torch.randn(8, 2), torch.randn(8, 2, 2, 2)))
    norm.finalize()
    fresh = TeacherNormalizer({"a": (2, 2)})
    fresh.load_state_dict(norm.state_dict())
    assert fresh.is_final and torch.equal(fresh.stats["a"]["cls"].mean, norm.stats["a"]["cls"].mean)
    assert set(norm.export()) == {"a.cls.mean", "a.cls.std", "a.patch.mean", "a.patch.std"}
    assert list(norm.parameters()) == []
    constant = TeacherNormalizer({"c": (1, 1)}, eps=1e-6)
    constant.update("c", TeacherOutput(torch.ones(4, 1), torch.ones(4, 1, 1, 1)))
    constant.finalize()
    assert torch.isfinite(constant("c", TeacherOutput(torch.ones(1, 1), torch.ones(1, 1, 1, 1))).summary).all()
