"""``eupe models``: list the registered architectures, their exact parameter counts and where released weights live."""

from __future__ import annotations

import argparse

import torch

from ..models import create_model, get_model_entry, list_models


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list available models", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'eupe_vit*' (default: all)")
    parser.add_argument("--pretrained", action="store_true", help="only models with released weights")
    parser.set_defaults(func=run)


def parameter_count(name: str) -> int:
    """Exact number of parameters of model ``name`` (built on the meta device: no memory, no initialisation)."""
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name).parameters())


def format_count(count: int) -> str:
    """``5_557_056`` -> ``5.56M``; ``1_890_000_000`` -> ``1.89B``."""
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.2f}M"


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern, pretrained=args.pretrained)
    if not names:
        which = "released model" if args.pretrained else "model"
        raise ValueError(f"no {which} matches {args.pattern!r}; `eupe models` lists them all (patterns are "
                         "shell-style, e.g. 'eupe_vit*')")
    print(f"{'model':22s} {'parameters':>10s}  {'description':72s} released weights")
    for name in names:
        entry = get_model_entry(name)
        source = entry.pretrained.default_source if entry.pretrained else "-"
        print(f"{name:22s} {format_count(parameter_count(name)):>10s}  {entry.description:72s} {source}")
    print("parameters: exact counts of the backbone (adapter heads excluded); the model card rounds them "
          "(ViT-T 6M, ViT-S 21M, ViT-B 86M, ConvNeXt-T/S/B 29M/50M/89M).")
    return 0
