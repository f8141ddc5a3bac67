"""Pictures of what a backbone sees: PCA of patch features, k-NN retrieval grids, dense-head predictions (titled,
with a class legend or a colour bar in metres)."""

from .charts import Panel, figure_image, panel_figure
from .colors import class_palette
from .images import save_png
from .overlay import (
    class_names_for,
    depth_figure,
    depth_pictures,
    segmentation_figure,
    segmentation_overlay,
    segmentation_pictures,
)
from .pca import fit_pca, foreground_masks, pca_figure, pca_pictures, pca_rgb
from .retrieval import class_token_features, nearest_neighbours, retrieval_grid, retrieval_picture

__all__ = [
    "Panel",
    "class_names_for",
    "class_palette",
    "class_token_features",
    "depth_figure",
    "depth_pictures",
    "figure_image",
    "fit_pca",
    "foreground_masks",
    "nearest_neighbours",
    "panel_figure",
    "pca_figure",
    "pca_pictures",
    "pca_rgb",
    "retrieval_grid",
    "retrieval_picture",
    "save_png",
    "segmentation_figure",
    "segmentation_overlay",
    "segmentation_pictures",
]
