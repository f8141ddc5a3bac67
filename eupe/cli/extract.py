"""``eupe extract``: images (folder tree, glob or list file) -> features on disk (sharded, resumable).

Also holds the extraction flags that the classification evaluations share.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..extract import ExtractConfig, extract_features
from ..extract.store import DTYPES, FORMATS
from ..extract.transforms import RESIZE_MODES
from .common import (
    add_backbone_args,
    add_config_args,
    autocast_for,
    backbone_from_args,
    flag_overrides,
    model_id,
    resolve_config,
    resolve_device,
)


def add_extract_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("extraction")
    g.add_argument("--resolution", type=int, default=None, help="input size (default 224)")
    g.add_argument("--resize-mode", choices=RESIZE_MODES, default=None,
                   help="crop: short side to resolution*256/224 + centre crop (default); square: plain resize")
    g.add_argument("--layers", type=int, nargs="+", default=None,
                   help="block indices to store (negative: from the end); default: the final output")
    g.add_argument("--storage-tokens", action="store_true", default=None, help="also store the storage tokens")
    g.add_argument("--patch-tokens", action="store_true", default=None, help="also store all patch tokens")
    g.add_argument("--patch-mean", action="store_true", default=None, help="also store the mean patch token")
    g.add_argument("--format", choices=FORMATS, default=None, help="shard format (default safetensors)")
    g.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="stored precision (default float32)")
    g.add_argument("--shard-size", type=int, default=None, help="images per shard (default 1024)")
    g.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default 64)")
    g.add_argument("--num-workers", type=int, default=None, help="decoding worker processes (default 4)")


EXTRACT_FLAGS = tuple(f.name for f in fields(ExtractConfig))  # one --flag per field (add_extract_args)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="extract features of images to disk",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="image folder (class = first-level subfolder), glob pattern, or list file")
    parser.add_argument("--output-dir", required=True, help="feature folder to create or resume")
    parser.add_argument("--overwrite", action="store_true", help="replace features of other settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_backbone_args(parser)
    add_extract_args(parser)
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = resolve_config(ExtractConfig, args, flag_overrides(args, EXTRACT_FLAGS))
    config.validate()
    device = resolve_device(args.device)
    store = extract_features(backbone_from_args(args), args.source, args.output_dir, config, device=device,
                             autocast=autocast_for(args, device), model_id=model_id(args), overwrite=args.overwrite,
                             progress=not args.no_progress)
    print(f"extract: {len(store)} images -> {store.root} ({', '.join(store.keys)}), "
          f"{len(store.skipped)} skipped (see {store.root / 'skipped.csv'})")
    return 0
