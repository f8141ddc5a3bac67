"""Arguments and helpers shared by the commands that run a backbone (extract, eval, visualize, export, bench)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
from typing import Callable, TypeVar

import torch
from torch import nn

from ..config import load_config, parse_overrides
from ..loading import load
from ..utils.device import AMP_CHOICES, autocast, resolve_device

T = TypeVar("T")


def add_backbone_args(parser: argparse.ArgumentParser, *, default_model: str = "eupe_vits16") -> None:
    group = parser.add_argument_group("backbone")
    group.add_argument("--model", default=default_model, help="registered model name (see `eupe models`)")
    group.add_argument(
        "--weights",
        default=None,
        help="checkpoint: local .pt/.pth/.safetensors, file:// or https:// URL, or hf://org/repo[/file]; "
        "'random' for an untrained model (default: the released weights)",
    )
    group.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    group.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                       help="bf16 autocast: auto = on CUDA only (default: %(default)s)")
    group.add_argument("--quantize", choices=("int8",), default=None,
                       help="dynamic int8 quantisation of the Linear layers (CPU)")
    # Architecture overrides (e.g. depth=1): for tests and custom shapes, not part of the documented interface.
    group.add_argument("--arch", action="append", default=[], help=argparse.SUPPRESS)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML file with the settings (see the saved config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set knn.temperature=0.1 (repeatable)")


def flag_overrides(args: argparse.Namespace, names: tuple[str, ...], prefix: str = "") -> list[str]:
    """``key=value`` overrides for the flags among ``names`` that were given on the command line."""
    return [f"{prefix}{n}={json.dumps(getattr(args, n))}" for n in names if getattr(args, n, None) is not None]


def resolve_config(cls: type[T], args: argparse.Namespace, overrides: list[str]) -> T:
    """``cls`` defaults <- ``--config`` YAML <- explicit flags (``overrides``) <- ``--set`` overrides."""
    return load_config(cls, args.config, [*overrides, *args.set])


def backbone_from_args(args: argparse.Namespace) -> nn.Module:
    """The frozen, eval-mode backbone of ``--model`` / ``--weights`` / ``--device`` (and hidden ``--arch``)."""
    random_init = args.weights == "random"
    model = load(args.model, None if random_init else args.weights, pretrained=not random_init,
                 device=resolve_device(args.device), quantize=getattr(args, "quantize", None),
                 **parse_overrides(getattr(args, "arch", [])))
    return model.requires_grad_(False)


def lazy_backbone(args: argparse.Namespace) -> Callable[[], nn.Module]:
    """Loads the backbone on first call only (evaluations on feature folders never need it)."""
    return functools.cache(lambda: backbone_from_args(args))


def model_id(args: argparse.Namespace) -> str:
    """Identifies the backbone in feature manifests, so that features of two models are never mixed."""
    return json.dumps({"model": args.model, "weights": args.weights or "released", "arch": sorted(args.arch)})


def autocast_for(args: argparse.Namespace, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast as chosen by ``--amp`` (:func:`eupe.utils.device.autocast`)."""
    return autocast(args.amp, device)
