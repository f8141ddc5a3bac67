"""Pictures of what a backbone sees: PCA of patch features, k-NN retrieval grids, dense-head prediction overlays."""

from .colors import class_palette, colorize_depth, colormap
from .images import save_png, side_by_side
from .overlay import depth_pictures, segmentation_overlay, segmentation_pictures
from .pca import fit_pca, foreground_masks, pca_pictures, pca_rgb
from .retrieval import class_token_features, nearest_neighbours, retrieval_grid, retrieval_picture

__all__ = [
    "class_palette",
    "class_token_features",
    "colorize_depth",
    "colormap",
    "depth_pictures",
    "fit_pca",
    "foreground_masks",
    "nearest_neighbours",
    "pca_pictures",
    "pca_rgb",
    "retrieval_grid",
    "retrieval_picture",
    "save_png",
    "segmentation_overlay",
    "segmentation_pictures",
    "side_by_side",
]
