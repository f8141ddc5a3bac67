"""``eupe extract``: images (folder trees, globs, list files, image files) -> features on disk (sharded,
resumable).

Several sources are merged: a folder keeps its subfolder classes, a list file its labels, classes of the same name
are one class, and single files and glob matches are unlabelled. The same file from two sources is refused.

Also holds the extraction flags that the classification evaluations share.
"""

from __future__ import annotations

import argparse
import logging

from ..extract import ExtractConfig, extract_features, split_folders
from ..extract.store import DTYPES, FORMATS
from ..extract.transforms import RESIZE_MODES
from .common import (
    ConfigFlag,
    add_backbone_args,
    add_config_args,
    add_config_flags,
    autocast_for,
    backbone_from_args,
    model_identity,
    resolve_config,
    resolve_device,
)

logger = logging.getLogger(__name__)

#: One flag per :class:`~eupe.extract.ExtractConfig` field (a test checks that none is missing).
EXTRACT_FLAGS = {
    "resolution": "input size",
    "resize_mode": ConfigFlag("crop: short side to resolution*256/224 + centre crop; square: plain resize",
                              choices=RESIZE_MODES),
    "layers": "block indices to store (negative: from the end); unset: the final output",
    "storage_tokens": "also store the storage tokens",
    "patch_tokens": "also store all patch tokens",
    "patch_mean": "also store the mean patch token",
    "format": ConfigFlag("shard format", choices=FORMATS),
    "dtype": ConfigFlag("stored precision", choices=tuple(DTYPES)),
    "shard_size": "images per shard",
    "batch_size": "images per forward pass",
    "num_workers": "decoding worker processes",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="extract features of images to disk",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="image folder (class = first-level subfolder), glob pattern, list file or image file; "
                             "several are merged (classes by name; single files unlabelled)")
    parser.add_argument("--output-dir", required=True, help="feature folder to create or resume")
    parser.add_argument("--overwrite", action="store_true", help="replace features of other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_backbone_args(parser)
    add_config_flags(parser, ExtractConfig, EXTRACT_FLAGS, title="extraction")
    add_config_args(parser, example="shard_size=4096")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = resolve_config(ExtractConfig, args)
    config.validate()
    device = resolve_device(args.device)
    for source in args.sources:
        splits = split_folders(source)
        if splits:
            logger.warning("%s holds the split folders %s: they become the classes; to extract one split, give "
                           "%s/%s", source, ", ".join(splits), source, splits[0])
    store = extract_features(backbone_from_args(args), args.sources, args.output_dir, config, device=device,
                             autocast=autocast_for(args, device), identity=model_identity(args),
                             overwrite=args.overwrite, progress=not args.no_progress)
    print(f"extract: {len(store)} images -> {store.root} ({', '.join(store.keys)}), "
          f"{len(store.skipped)} skipped (see {store.root / 'skipped.csv'})")
    return 0
