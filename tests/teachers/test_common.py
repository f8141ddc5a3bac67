"""Grid reshaping, optional-dependency errors and import-path resolution."""

from __future__ import annotations

import pytest
import torch

from eupe.teachers.common import (
    MissingTeacherDependency,
    TeacherError,
    import_optional,
    package_dir,
    resolve_callable,
    tokens_to_grid,
)


def test_tokens_to_grid_drops_prefix_and_keeps_row_major_order():
    b, d, h, w = 2, 5, 3, 4
    patches = torch.randn(b, h, w, d)
    tokens = torch.cat([torch.randn(b, 5, d), patches.reshape(b, h * w, d)], dim=1)  # cls + 4 registers
    grid = tokens_to_grid(tokens, "t", (h, w))
    assert grid.shape == (b, d, h, w)
    torch.testing.assert_close(grid, patches.permute(0, 3, 1, 2))


def test_tokens_to_grid_infers_square_grid_and_passes_maps_through():
    tokens = torch.randn(1, 1 + 49, 8)
    assert tokens_to_grid(tokens, "t").shape == (1, 8, 7, 7)
    fmap = torch.randn(1, 8, 3, 5)
    assert tokens_to_grid(fmap, "t") is fmap


@pytest.mark.parametrize("shape, grid", [((2, 10), None), ((2, 3, 8), (2, 2)), ((2, 1, 2, 3, 4), None)])
def test_tokens_to_grid_error_names_teacher_and_shape(shape, grid):
    with pytest.raises(TeacherError, match=r"'my_teacher'.*" + str(shape).replace("(", r"\(").replace(")", r"\)")):
        tokens_to_grid(torch.zeros(shape), "my_teacher", grid)


def test_missing_dependency_says_what_to_install():
    with pytest.raises(MissingTeacherDependency, match="pip install no-such-pkg"):
        import_optional("no_such_module_xyz", "pip install no-such-pkg", teacher="t")
    with pytest.raises(MissingTeacherDependency, match="pip install --no-deps x"):
        package_dir("no_such_module_xyz", "pip install --no-deps x", teacher="t")


def test_resolve_callable():
    from eupe.demo.teachers.mobilenet_v2 import MobileNetV2

    assert resolve_callable("eupe.demo.teachers.mobilenet_v2:MobileNetV2", teacher="t") is MobileNetV2
    for bad in ("eupe.demo.teachers.mobilenet_v2", "no_such_mod:x", "eupe.demo.teachers.mobilenet_v2:Nope"):
        with pytest.raises(TeacherError, match="'t'"):
            resolve_callable(bad, teacher="t")
