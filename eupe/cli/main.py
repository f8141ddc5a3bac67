"""Entry point of the ``eupe`` console script.

Each subcommand lives in its own module under ``eupe.cli`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from .. import __version__
from ..utils.optional import MissingDependencyError

COMMAND_MODULES = ("models", "extract", "eval", "visualize", "distill", "demo", "vlm", "export", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eupe", description="EUPE: efficient universal perception encoders.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"eupe {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"eupe.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, RuntimeError, MissingDependencyError) as err:
        # Expected user errors: one clear line, no traceback (use -v for one).
        if args.verbose:
            raise
        command = " ".join(filter(None, (args.command, getattr(args, "protocol", None), getattr(args, "kind", None),
                                         getattr(args, "vlm_command", None))))
        print(f"eupe {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
