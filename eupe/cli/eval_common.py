"""Arguments and runners shared by the ``eupe eval`` protocols: the feature-based classification evaluations (knn,
linear, zeroshot) and the dense probes on a dataset root (segmentation, depth, keypoints)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from ..extract import FeatureBackbone
from .common import (
    add_backbone_args,
    add_config_args,
    autocast_for,
    backbone_from_args,
    flag_overrides,
    lazy_backbone,
    model_id,
    resolve_config,
    resolve_device,
)
from .extract import EXTRACT_FLAGS, add_extract_args

C = TypeVar("C")


def add_split_args(parser: argparse.ArgumentParser) -> None:
    """``--data`` (an ImageNet-style root) or ``--train`` and ``--val`` (feature folders or image sources)."""
    parser.add_argument("--data", default=None, help="root holding train/<class>/* and val/<class>/*")
    parser.add_argument("--train", default=None, help="train feature folder or image source (instead of --data)")
    parser.add_argument("--val", default=None, help="val feature folder or image source (instead of --data)")


def finish_feature_eval_parser(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]) -> None:
    """Adds the backbone, extraction and ``--config``/``--set`` flags of the evaluations on (extracted) features and
    makes ``run`` the command's function."""
    add_backbone_args(parser)
    add_extract_args(parser)
    add_config_args(parser)
    parser.set_defaults(func=run)


def feature_backbone(args: argparse.Namespace) -> FeatureBackbone:
    """The backbone of the command line, loaded only if some input must be extracted."""
    device = resolve_device(args.device)
    return FeatureBackbone(lazy_backbone(args), device, model_id(args), autocast_for(args, device))


def run_feature_eval(args: argparse.Namespace, config_class: type[C], protocol: Callable[..., Any],
                     overrides: list[str]) -> int:
    """Resolves ``config_class`` from the input flags (``--data``, and ``--train``/``--val`` where the command has
    them), the protocol's flag ``overrides``, the backbone and extraction flags; runs
    ``protocol(config, output_dir, backbone=)``."""
    config = resolve_config(config_class, args, [
        *flag_overrides(args, ("data", "train", "val")),
        *overrides,
        *flag_overrides(args, ("model", "weights")),
        *flag_overrides(args, EXTRACT_FLAGS, "extract."),
    ])
    protocol(config, args.output_dir, backbone=feature_backbone(args))
    return 0


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


def add_probe_command(subparsers: argparse._SubParsersAction, name: str, help_text: str, description: str,
                      run: Callable[[argparse.Namespace], int], *, trained: bool = True) -> argparse.ArgumentParser:
    """Registers the dense protocol ``name`` with the flags of :func:`add_probe_args`; returns its parser."""
    parser = subparsers.add_parser(name, help=help_text, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_probe_args(parser, trained=trained)
    parser.set_defaults(func=run)
    return parser


def probe_overrides(args: argparse.Namespace) -> list[str]:
    """Config overrides from the flags of :func:`add_probe_args` (trained probes' config layout)."""
    return [*flag_overrides(args, ("root", "num_workers"), "data."),
            *flag_overrides(args, ("iterations", "batch_size"), "train."),
            *flag_overrides(args, ("lr",), "optim.")]


def run_trained_probe(args: argparse.Namespace, config_class: type[C], protocol: Callable[..., Any]) -> int:
    """Resolves a trained probe's ``config_class`` (its dataset root at ``data.root``) and runs it."""
    config: Any = resolve_config(config_class, args, probe_overrides(args))
    return run_protocol(args, config, protocol, config.data.root)


def run_protocol(args: argparse.Namespace, cfg: Any, protocol: Callable[..., Any], root: str) -> int:
    """Checks the dataset ``root`` exists (before any weights are fetched), loads the frozen backbone and runs
    ``protocol(backbone, cfg, output_dir, device=, autocast=, model_name=)``."""
    from ..eval.dense import require_data_root

    require_data_root(root, key=None, must_exist=True)
    device = resolve_device(args.device)
    protocol(backbone_from_args(args), cfg, args.output_dir, device=device, autocast=autocast_for(args, device),
             model_name=args.model)
    return 0
