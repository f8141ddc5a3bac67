"""Panel figures of `eupe visualize`: titles naming the model, class legends, depth colour bars in metres; checked on
the matplotlib figures before they are rendered (structure, not pixels)."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
from PIL import Image

from eupe.utils.optional import MissingDependencyError
from eupe.viz import (
    Panel,
    class_names_for,
    class_palette,
    depth_figure,
    panel_figure,
    pca_figure,
    pca_pictures,
    segmentation_figure,
)
from tests.helpers import tiny_vit

charts = importlib.import_module("eupe.viz.charts")


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def colour_bars(fig) -> list:
    return [image.colorbar for ax in fig.axes for image in ax.get_images() if image.colorbar is not None]


def picture_axes(fig) -> list:
    """The axes that show a panel's picture (colour-bar axes hold no image)."""
    return [ax for ax in fig.axes if ax.get_images()]


def test_pca_figure_shows_the_image_and_its_components_under_the_title():
    image = Image.new("RGB", (48, 32), "white")
    pca = np.zeros((2, 3, 3), np.uint8)
    fig = pca_figure(image, pca, title="PCA of patch features: eupe_vitt16, weights EUPE-ViT-T.pt\na.png",
                     foreground_threshold=0.5)
    assert "eupe_vitt16" in fig.get_suptitle() and "EUPE-ViT-T.pt" in fig.get_suptitle()
    shown = [ax.get_images()[0].get_array().shape for ax in picture_axes(fig)]
    assert shown == [(32, 48, 3), (32, 48, 3)]  # the token grid shown at the image size
    assert "component 1 > 0.5" in picture_axes(fig)[1].get_title()


def test_pca_pictures_are_titled_with_the_model_the_file_and_the_size(monkeypatch):
    drawn = []
    render = charts.figure_image
    monkeypatch.setattr(importlib.import_module("eupe.viz.pca"), "figure_image",
                        lambda fig: drawn.append(fig.get_suptitle()) or render(fig))
    images = [Image.new("RGB", (70, 50), (200, 30, 30)), Image.new("RGB", (40, 40), (20, 30, 200))]
    pictures = pca_pictures(tiny_vit().eval().requires_grad_(False), images, size=32,
                            names=["photos/red.png", "photos/blue.png"], model_label="eupe_vitt16, random weights")
    assert all(isinstance(p, Image.Image) for p in pictures)
    assert drawn[0].splitlines() == ["PCA of patch features: eupe_vitt16, random weights",
                                     "red.png, run at 48x32 px"]
    assert "blue.png, run at 32x32 px" in drawn[1]
    unnamed = []
    monkeypatch.setattr(importlib.import_module("eupe.viz.pca"), "figure_image",
                        lambda fig: unnamed.append(fig.get_suptitle()) or render(fig))
    pca_pictures(tiny_vit().eval(), images[:1], size=32)
    assert unnamed[0].startswith("PCA of patch features: VisionTransformer\nimage 0")  # no label: the class name


def test_segmentation_legend_names_the_classes_present_largest_first():
    image = Image.new("RGB", (6, 4), "gray")
    classes = np.zeros((4, 6), int)  # ADE20K: 0 wall, 2 sky, 5 ceiling; 1 (building) is absent
    classes[:, 4:] = 2
    classes[0, :2] = 5
    palette = class_palette(150)
    fig = segmentation_figure(image, classes, class_names_for(150), palette, title="Segmentation head: m")
    assert legend_texts(fig) == ["wall (58%)", "sky (33%)", "ceiling (8%)"]
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    colours = [tuple(np.round(np.asarray(h.get_facecolor()[:3]) * 255).astype(int)) for h in legend.legend_handles]
    assert colours == [tuple(palette[c]) for c in (0, 2, 5)]  # each name beside its overlay colour
    assert legend.get_title().get_text() == "classes (share of pixels)"


def test_segmentation_legend_is_bounded_and_says_how_many_classes_it_leaves_out():
    classes = np.arange(20).repeat(3).reshape(6, 10) % 20
    fig = segmentation_figure(Image.new("RGB", (10, 6)), classes, class_names_for(20), class_palette(20), title="t")
    texts = legend_texts(fig)
    assert len(texts) == 12 and texts[0].startswith("class ")
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legend.get_title().get_text().startswith("12 largest of 20 classes")


def test_depth_figure_has_a_colour_bar_in_metres_near_bright():
    depth = np.linspace(0.5, 8.0, 40 * 60).reshape(40, 60)
    fig = depth_figure(Image.new("RGB", (60, 40)), depth, title="Depth head: eupe_vitt16")
    (bar,) = colour_bars(fig)
    assert bar.orientation == "vertical" and bar.ax.get_ylabel() == "depth (m)"
    low, high = bar.mappable.get_clim()
    assert low == pytest.approx(np.percentile(depth, 2)) and high == pytest.approx(np.percentile(depth, 98))
    assert bar.extend == "both"  # the 2nd-98th percentile range clips both ends
    near, far = (np.asarray(bar.cmap(bar.norm(v))[:3]) for v in (low, high))
    assert near.sum() > far.sum()  # near = bright


def test_wide_pictures_are_stacked_with_the_colour_bar_below():
    depth = np.ones((20, 100)) + np.arange(100) / 10
    fig = depth_figure(Image.new("RGB", (100, 20)), depth, title="t")
    top, bottom = (ax.get_position() for ax in picture_axes(fig))
    assert top.y0 > bottom.y1 and top.x0 == pytest.approx(bottom.x0)  # one above the other, aligned
    (bar,) = colour_bars(fig)
    assert bar.orientation == "horizontal" and bar.ax.get_position().y1 < bottom.y0  # below its panel


def test_panel_figure_places_text_clear_of_the_pictures():
    legend = [(f"class {i} (5%)", (255, 0, 0)) for i in range(12)]
    for size in ((30, 40), (300, 40), (40, 400)):  # square-ish, very wide, very tall
        fig = panel_figure([Panel(np.zeros((*size, 3), np.uint8), "input\nsecond line"),
                            Panel(np.zeros((*size, 3), np.uint8), "classes", legend=legend, legend_title="t")],
                           title="A long title line naming a model and its weights file\nfile.png")
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        pictures = [ax.get_window_extent(renderer) for ax in picture_axes(fig)]
        texts = [fig._suptitle.get_window_extent(renderer)] + [ax.title.get_window_extent(renderer)
                                                                 for ax in picture_axes(fig)]
        texts += [ax.get_legend().get_window_extent(renderer) for ax in fig.axes if ax.get_legend()]
        assert not any(p.overlaps(t) for p in pictures for t in texts), size
        assert not pictures[0].overlaps(pictures[1]), size


def test_pictures_need_matplotlib_and_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'eupe\[plot\]'"):
        depth_figure(Image.new("RGB", (4, 4)), np.ones((4, 4)), title="t")
