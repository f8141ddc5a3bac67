"""What the dense probes (segmentation, depth, keypoints) share, one module per job:

* :mod:`.data` - the (image, per-pixel target) dataset base and the dataset-root check;
* :mod:`.transforms` - the normalised image tensor fed to the backbone;
* :mod:`.features` - frozen last-layer patch features of inputs of any size;
* :mod:`.predict` - head predictions at the input resolution (padding, sliding windows, resizing);
* :mod:`.head` / :mod:`.head_file` - the BatchNorm + 1x1 linear head and its ``head.pt`` files;
* :mod:`.schedule` - AdamW settings and the warm-up + one-cycle schedule;
* :mod:`.seeding` / :mod:`.loaders` / :mod:`.train` - seeded loaders and the head training loop.
"""

from .data import ImageTargetDataset, require_data_root
from .features import extract_patch_features, feature_stride, pad_to_multiple
from .head import LinearProbeHead
from .head_file import load_head, load_head_file, save_head
from .loaders import cycle, evaluation_batches, train_loader
from .predict import dense_predict, resize_like, sliding_window
from .schedule import OptimConfig, WarmupOneCycle
from .seeding import seed_everything, seed_worker
from .train import train_head, train_probe_head
from .transforms import image_to_tensor

__all__ = [
    "ImageTargetDataset",
    "LinearProbeHead",
    "OptimConfig",
    "WarmupOneCycle",
    "cycle",
    "dense_predict",
    "evaluation_batches",
    "extract_patch_features",
    "feature_stride",
    "image_to_tensor",
    "load_head",
    "load_head_file",
    "pad_to_multiple",
    "require_data_root",
    "resize_like",
    "save_head",
    "seed_everything",
    "seed_worker",
    "sliding_window",
    "train_head",
    "train_loader",
    "train_probe_head",
]
