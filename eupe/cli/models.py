"""``eupe models``: list the registered architectures and where their released weights live."""

from __future__ import annotations

import argparse

from ..models import get_model_entry, list_models


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list available models", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'eupe_vit*'")
    parser.add_argument("--pretrained", action="store_true", help="only models with released weights")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in list_models(args.pattern, pretrained=args.pretrained):
        entry = get_model_entry(name)
        source = entry.pretrained.default_source if entry.pretrained else "-"
        print(f"{name:22s} {entry.description:70s} {source}")
    return 0
