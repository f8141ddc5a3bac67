"""Retrieval grids, colours, overlays and the `eupe visualize` command on tiny images and heads."""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.cli import visualize
from eupe.eval.dense import LinearProbeHead, save_head
from eupe.eval.depth import DepthHead
from eupe.eval.depth.protocol import DepthHeadConfig
from eupe.eval.segmentation.protocol import SegEvalConfig
from eupe.utils.optional import MissingDependencyError
from eupe.viz import class_palette, nearest_neighbours, segmentation_overlay

retrieval_module = importlib.import_module("eupe.viz.retrieval")


def test_nearest_neighbours_by_cosine_and_exclusion():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    g = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]), dim=-1)
    scores, idx = nearest_neighbours(q, g, k=2)
    assert idx.tolist() == [[0, 2], [1, 2]]
    assert scores[0, 0] == pytest.approx(1 / np.sqrt(1.01))
    exclude = torch.tensor([[True, False, False, False], [False, True, False, False]])
    assert nearest_neighbours(q, g, k=2, exclude=exclude)[1].tolist() == [[2, 1], [2, 0]]
    with pytest.raises(ValueError, match="no image to retrieve"):
        nearest_neighbours(q[:1], g[:1], k=1, exclude=torch.tensor([[True]]))


def test_class_palette():
    palette = class_palette(150)
    assert palette.shape == (150, 3) and len({tuple(c) for c in palette}) == 150


def test_segmentation_overlay_blends_class_colours():
    image = Image.new("RGB", (3, 2), (100, 100, 100))
    classes = np.array([[0, 1, 1], [0, 0, 1]])
    palette = np.array([[0, 0, 0], [200, 0, 0]], dtype=np.uint8)
    out = np.asarray(segmentation_overlay(image, classes, alpha=0.5, palette=palette))
    assert out[0, 0].tolist() == [50, 50, 50] and out[0, 1].tolist() == [150, 50, 50]
    with pytest.raises(ValueError, match="does not match"):
        segmentation_overlay(image, classes[:1], palette=palette)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 3"):
        segmentation_overlay(image, classes, alpha=3, palette=palette)


def test_cli_refuses_an_opacity_outside_0_1_before_any_work(capsys):
    with pytest.raises(SystemExit):
        _cli(["visualize", "segmentation", "a.png", "--head", "h.pt", "--alpha", "3", "--output-dir", "o"])
    assert "an opacity from 0 (image only) to 1 (classes only), got 3" in capsys.readouterr().err


def _cli(argv):
    parser = argparse.ArgumentParser()
    visualize.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / cls / f"{cls}{i}.jpg")
    return folder


BACKBONE = ["--model", "eupe_vitt16", "--weights", "random", "--arch", "depth=1"]


@dataclass
class DrawnFigure:
    """What a person reads on a figure of `eupe visualize`: its title, panel picture sizes, legend entries and
    colour-bar labels."""

    title: str
    sizes: list[tuple[int, int]]
    legend: list[str]
    colour_bars: list[str]


@pytest.fixture
def drawn(monkeypatch) -> list[DrawnFigure]:
    """The figures that `eupe visualize` renders, recorded before rendering."""
    figures = []
    charts = importlib.import_module("eupe.viz.charts")

    def record(fig):
        images = [image for ax in fig.axes for image in ax.get_images()]
        bars = [image.colorbar for image in images if image.colorbar is not None]
        figures.append(DrawnFigure(
            fig.get_suptitle(), [image.get_array().shape[:2] for image in images],
            [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()],
            [bar.ax.get_ylabel() or bar.ax.get_xlabel() for bar in bars]))
        return charts.figure_image(fig)

    for module in ("eupe.viz.pca", "eupe.viz.overlay"):
        monkeypatch.setattr(importlib.import_module(module), "figure_image", record)
    return figures


def test_cli_pca_and_retrieval(photos, tmp_path, capsys, monkeypatch, drawn):
    assert _cli(["visualize", "pca", str(photos), "--output-dir", str(tmp_path / "pca"), "--size", "32",
                 "--foreground-threshold", "0.3", *BACKBONE]) == 0
    written = sorted(p.name for p in (tmp_path / "pca").iterdir() if not p.name.startswith("."))
    assert written == ["000_a0_pca.png", "001_a1_pca.png", "002_b0_pca.png", "003_b1_pca.png"]
    assert drawn[0].sizes == [(32, 32), (32, 32)]  # 48x40 -> 38x32 -> 32x32, the PCA beside the image
    assert drawn[0].title == "PCA of patch features: eupe_vitt16, random weights (seed 0)\na0.jpg, run at 32x32 px"
    assert Image.open(tmp_path / "pca" / written[0]).mode == "RGB"
    drawn = []  # (queries, neighbours) handed to the grid: the queries are in the gallery too
    grid_fn = retrieval_module.retrieval_grid
    monkeypatch.setattr(retrieval_module, "retrieval_grid",
                        lambda queries, neighbours, *a, **kw: drawn.append((queries, neighbours)) or grid_fn(
                            queries, neighbours, *a, **kw))
    assert _cli(["visualize", "retrieval", str(photos / "a"), "--gallery", str(photos), "-k", "2",
                 "--size", "32", "--output-dir", str(tmp_path / "ret"), *BACKBONE]) == 0
    grid = Image.open(tmp_path / "ret" / "retrieval.png")
    assert grid.size == (3 * (128 + 6 + 4), 2 * (128 + 6 + 16 + 4))
    ((queries, neighbours),) = drawn
    assert sorted(Path(q).name for q in queries) == ["a0.jpg", "a1.jpg"]
    for query, row in zip(queries, neighbours):
        assert len(row) == 2
        assert all(Path(path).resolve() != Path(query).resolve() for path, _, _ in row)  # never its own file
    assert "retrieval.png" in capsys.readouterr().out


def test_cli_pca_takes_several_paths(photos, tmp_path):
    assert _cli(["visualize", "pca", str(photos / "a" / "a1.jpg"), str(photos / "b"), "--output-dir",
                 str(tmp_path / "pca"), "--size", "32", *BACKBONE]) == 0
    written = sorted(p.name for p in (tmp_path / "pca").iterdir() if not p.name.startswith("."))
    assert written == ["000_a1_pca.png", "001_b0_pca.png", "002_b1_pca.png"]


def test_cli_refuses_a_size_below_one_token(photos, tmp_path):
    with pytest.raises(ValueError, match=r"--size 8 is smaller than one token of eupe_vitt16 \(16 pixels\)"):
        _cli(["visualize", "pca", str(photos / "b"), "--output-dir", str(tmp_path / "pca"), "--size", "8", *BACKBONE])
    assert not (tmp_path / "pca").exists()


def test_retrieval_grid_shows_full_query_names(photos, tmp_path):
    from PIL import ImageDraw

    long_name = tmp_path / ("a_query_photo_with_a_rather_long_descriptive_file_name_" + "x" * 30 + ".jpg")
    Image.open(photos / "a" / "a0.jpg").save(long_name)
    neighbours = [[(str(photos / "b" / "b0.jpg"), 0.5, "b")]]
    short = retrieval_module.retrieval_grid([str(photos / "a" / "a1.jpg")], neighbours)
    grid = retrieval_module.retrieval_grid([str(long_name)], neighbours)
    lines = retrieval_module.wrap_text(ImageDraw.Draw(grid), "query: " + long_name.name, 128 + 6 - 4)
    assert "".join(lines) == "query: " + long_name.name and len(lines) > 1  # every character, over lines
    assert all(ImageDraw.Draw(grid).textlength(line) <= 130 for line in lines)
    assert grid.height == short.height + 16 * (len(lines) - 1)  # the caption grows instead of cutting the name


def test_cli_segmentation_and_depth_overlays(photos, tmp_path, drawn):
    torch.manual_seed(0)
    seg = LinearProbeHead(192, 5)
    # head files in the layout run_segmentation / run_depth write (their meta are these config dataclasses)
    save_head(tmp_path / "seg.pt", seg, task="segmentation", meta={
        "in_dim": 192, "num_classes": 5, "model": "eupe_vitt16", "eval": asdict(SegEvalConfig(img_size=32, crop_size=32,
                                                                                      stride=21))})
    depth = DepthHead(192, n_bins=8)
    save_head(tmp_path / "depth.pt", depth, task="depth",
              meta={"in_dim": 192, "model": "eupe_vitt16", "head": asdict(DepthHeadConfig(n_bins=8))})
    assert _cli(["visualize", "segmentation", str(photos / "a" / "a0.jpg"), "--head", str(tmp_path / "seg.pt"),
                 "--output-dir", str(tmp_path / "out"), *BACKBONE]) == 0
    assert (tmp_path / "out" / "000_a0_segmentation.png").is_file()
    (segmentation,) = drawn
    assert segmentation.sizes == [(32, 38), (32, 38)]
    assert segmentation.title.startswith("Segmentation head: eupe_vitt16, random weights (seed 0)\na0.jpg")
    named = [entry.rsplit(" (", 1)[0] for entry in segmentation.legend]  # "class 3 (40%)" -> "class 3"
    assert named and len(set(named)) == len(named) and set(named) <= {f"class {i}" for i in range(5)}
    assert _cli(["visualize", "depth", str(photos / "b"), "--head", str(tmp_path / "depth.pt"), "--size", "24",
                 "--output-dir", str(tmp_path / "out"), *BACKBONE]) == 0
    assert (tmp_path / "out" / "001_b1_depth.png").is_file()
    depth = drawn[-1]
    assert depth.sizes == [(24, 29), (24, 29)] and depth.colour_bars == ["depth (m)"]
    assert depth.title.startswith("Depth head: eupe_vitt16, random weights (seed 0)\nb1.jpg, run at 29x24 px")
    with pytest.raises(ValueError, match="holds a 'depth' head"):
        _cli(["visualize", "segmentation", str(photos / "a"), "--head", str(tmp_path / "depth.pt"),
              "--output-dir", str(tmp_path / "bad"), *BACKBONE])


def test_picture_titles_name_the_weights():
    def label(*argv):
        parser = argparse.ArgumentParser()
        visualize.register(parser.add_subparsers())
        return visualize.backbone_label(parser.parse_args(["visualize", "pca", "x.png", "--output-dir", "o", *argv]))

    assert label("--model", "eupe_vitt16", "--weights", "random", "--seed", "3") == \
        "eupe_vitt16, random weights (seed 3)"
    assert label("--weights", "runs/demo/stage3/student.pt", "--quantize", "int8") == \
        "eupe_vits16, weights student.pt, int8"  # a file by its name, not the folders it lies in
    assert label("--weights", "hf://facebook/EUPE-ViT-S") == "eupe_vits16, weights hf://facebook/EUPE-ViT-S"
    assert label().startswith("eupe_vits16, released weights hf://")


def test_cli_pictures_need_matplotlib_before_any_model_is_loaded(photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setattr(visualize, "backbone_from_args", lambda args: pytest.fail("model loaded"))
    with pytest.raises(MissingDependencyError, match=r"eupe visualize depth .*pip install 'eupe\[plot\]'"):
        _cli(["visualize", "depth", str(photos), "--head", "h.pt", "--output-dir", str(tmp_path / "o"), *BACKBONE])
