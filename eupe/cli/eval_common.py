"""Parsers and the runner shared by the ``eupe eval`` protocols.

Every protocol is ``run_<protocol>(backbone, config, output_dir)``, so every command is the same: resolve the
protocol's config dataclass (defaults <- ``--config`` <- flags <- ``--set``), build the lazily loaded backbone of
the backbone flags and call the protocol. The flags are derived from the config fields (:func:`add_config_flags`).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Mapping
from typing import Any

from ..eval import EvalBackbone
from ..utils.outputs import locked_output_dir
from .common import (
    ConfigFlag,
    FlagSpecs,
    add_backbone_args,
    add_config_args,
    add_config_flags,
    as_overrides,
    autocast_for,
    lazy_backbone,
    model_identity,
    prefixed,
    resolve_config,
    resolve_device,
)
from .extract import EXTRACT_FLAGS

RunProtocol = Callable[[EvalBackbone, Any, str], dict[str, Any]]

#: ``--data`` or ``--train``/``--val`` of the classification evaluations.
SPLIT_FLAGS = {
    "data": "root holding train/<class>/* and val/<class>/*",
    "train": "train feature folder or image source (instead of --data)",
    "val": "val feature folder or image source (instead of --data)",
}
#: The training flags of the trained dense probes (segmentation, depth).
TRAINING_FLAGS = {
    "data.num_workers": "data loading processes",
    "train.iterations": "training iterations",
    "train.batch_size": "training batch size",
    "optim.lr": "peak learning rate",
}


def add_eval_command(subparsers: argparse._SubParsersAction, name: str, config_class: type, protocol: RunProtocol, *,
                    help_text: str, description: str, example: str, output_help: str,
                    flags: Mapping[str, FlagSpecs], records_backbone: bool = False) -> None:
    """Registers ``eupe eval <name>``: ``--output-dir``, the config flags ``flags`` (group title -> fields of
    ``config_class``, :func:`add_config_flags`), the backbone flags and ``--config``/``--set`` (``example``: a
    ``key=value`` of ``config_class``). The command runs ``protocol`` through :func:`run_eval`."""
    parser = subparsers.add_parser(name, help=help_text, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True, help=output_help)
    for title, specs in flags.items():
        add_config_flags(parser, config_class, specs, title=title)
    add_backbone_args(parser)
    add_config_args(parser, example)
    parser.set_defaults(func=functools.partial(run_eval, config_class=config_class, protocol=protocol,
                                               records_backbone=records_backbone))


def add_feature_eval_command(subparsers: argparse._SubParsersAction, name: str, config_class: type,
                            protocol: RunProtocol, *, flags: Mapping[str, FlagSpecs], **kwargs: Any) -> None:
    """:func:`add_eval_command` for the evaluations on (extracted) features: adds the extraction flags (the
    config's ``extract.*``) and records ``--model``/``--weights`` in the config's ``model``/``weights``."""
    add_eval_command(subparsers, name, config_class, protocol, records_backbone=True,
                    flags={**flags, "extraction": prefixed("extract", EXTRACT_FLAGS)}, **kwargs)


def add_probe_command(subparsers: argparse._SubParsersAction, name: str, config_class: type, protocol: RunProtocol,
                     *, root_key: str = "data.root", flags: Mapping[str, FlagSpecs], **kwargs: Any) -> None:
    """:func:`add_eval_command` for the dense probes: adds ``--data-root`` for the config's ``root_key``."""
    inputs = {root_key: ConfigFlag("dataset root folder", flag="--data-root")}
    add_eval_command(subparsers, name, config_class, protocol, flags={"inputs": inputs, **flags},
                    output_help="folder for config.yaml, results (and the head)", **kwargs)


def eval_backbone(args: argparse.Namespace) -> EvalBackbone:
    """The backbone of the command line, loaded (and its identity hashed) only when the protocol needs it."""
    device = resolve_device(args.device)
    return EvalBackbone(lazy_backbone(args), device, functools.cache(lambda: model_identity(args)),
                        autocast_for(args, device), args.model)


def run_eval(args: argparse.Namespace, *, config_class: type, protocol: RunProtocol, records_backbone: bool) -> int:
    """Resolves ``config_class`` (with ``model``/``weights`` from the backbone flags if ``records_backbone``) and
    runs ``protocol(backbone, config, output_dir)`` holding the lock of ``--output-dir`` (a second run into it is
    refused)."""
    recorded = as_overrides({"model": args.model, "weights": args.weights}) if records_backbone else []
    config = resolve_config(config_class, args, recorded)
    with locked_output_dir(args.output_dir, "eupe eval"):
        protocol(eval_backbone(args), config, args.output_dir)
    return 0
