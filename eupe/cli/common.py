"""Arguments and helpers shared by the commands that run a backbone (extract, eval, visualize, export, bench)."""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch import nn

from ..loading import load


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
    group.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                       help="bf16 autocast: auto = on CUDA only")


def resolve_device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def backbone_from_args(args: argparse.Namespace) -> nn.Module:
    """The frozen, eval-mode backbone described by ``--model`` / ``--weights`` / ``--device``."""
    random_init = args.weights == "random"
    model = load(args.model, None if random_init else args.weights, pretrained=not random_init,
                 device=resolve_device(args.device))
    return model.requires_grad_(False)


def autocast_for(args: argparse.Namespace, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast as chosen by ``--amp`` (``auto``: on CUDA only)."""
    enabled = args.amp == "bf16" or (args.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
