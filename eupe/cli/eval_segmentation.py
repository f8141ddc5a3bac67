"""``eupe eval segmentation``: ADE20K linear probe (BatchNorm + 1x1 linear head on frozen patch tokens), mIoU.

Defaults are the paper's (40k its, batch 16, AdamW LR 1e-3, WD 1e-3, 512 crops, sliding windows 512/341); every
setting can be changed with ``--config run.yaml`` and ``--set key=value`` (e.g. ``--set train.crop_size=256``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import (add_backbone_args, add_config_args, autocast_for, backbone_from_args, flag_overrides,
                     resolve_config, resolve_device)


def add_probe_args(parser: argparse.ArgumentParser, *, trained: bool = True) -> None:
    """Backbone, ``--config``/``--set``, ``--data-root``, ``--output-dir`` and, for trained probes, the
    training flags shared by the dense evaluations."""
    add_backbone_args(parser)
    add_config_args(parser)
    parser.add_argument("--data-root", dest="root", default=None, help="dataset root folder")
    parser.add_argument("--output-dir", required=True, help="folder for config.yaml, results (and the head)")
    if trained:
        group = parser.add_argument_group("training")
        group.add_argument("--num-workers", type=int, default=None, help="data loading processes")
        group.add_argument("--iterations", type=int, default=None, help="training iterations")
        group.add_argument("--batch-size", type=int, default=None, help="training batch size")
        group.add_argument("--lr", type=float, default=None, help="peak learning rate")


def probe_overrides(args: argparse.Namespace) -> list[str]:
    """Config overrides from the flags of :func:`add_probe_args` (trained probes' config layout)."""
    return [*flag_overrides(args, ("root", "num_workers"), "data."),
            *flag_overrides(args, ("iterations", "batch_size"), "train."),
            *flag_overrides(args, ("lr",), "optim.")]


def run_protocol(args: argparse.Namespace, cfg: Any, protocol: Callable[..., Any], root: str) -> int:
    """Checks the dataset ``root`` exists (before any weights are fetched), loads the frozen backbone and runs
    ``protocol(backbone, cfg, output_dir, device=, autocast=, model_name=)``."""
    if not root:
        raise ValueError("no dataset root: pass --data-root DIR (or set it in --config / --set)")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    device = resolve_device(args.device)
    protocol(backbone_from_args(args), cfg, args.output_dir, device=device, autocast=autocast_for(args, device),
             model_name=args.model)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("segmentation", help="ADE20K linear segmentation (mIoU)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_probe_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.segmentation import SegmentationConfig, run_segmentation

    cfg = resolve_config(SegmentationConfig, args, probe_overrides(args))
    return run_protocol(args, cfg, run_segmentation, cfg.data.root)
