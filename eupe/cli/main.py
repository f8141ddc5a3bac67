"""Entry point of the ``eupe`` console script.

Each subcommand lives in its own module under ``eupe.cli`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (a callable taking the parsed namespace and returning an exit code).

Expected errors (a bad setting or file, a missing package, a full disk, a read-only folder...) end in one line,
``eupe <command>: error: ...``, and exit code 2; anything else is a bug and keeps its traceback. ``--debug`` (or
``-v``, or the environment variable ``EUPE_DEBUG=1``) shows the traceback of expected errors too.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import linecache
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from .. import __version__
from ..utils.optional import MissingDependencyError
from .common import HelpParser

COMMAND_MODULES = ("models", "extract", "eval", "visualize", "distill", "demo", "vlm", "export", "bench")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# OSErrors about the user's files and disks, whatever raised them, with what to do about each
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
OS_ADVICE = {
    errno.ENOENT: "check the path",
    errno.EEXIST: "remove it or choose another path",
    errno.EACCES: "check its permissions or choose a writable location",
    errno.EPERM: "check its permissions or choose a writable location",
    errno.EROFS: "it is on a read-only file system: choose a writable location",
    errno.ENOSPC: "free some space or choose another location",
    errno.EDQUOT: "free some space (disk quota) or choose another location",
    errno.EISDIR: "it is a folder: give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
}
# Built-in exception types that eupe code raises on purpose for bad input (`raise ValueError(...)` in eupe/)
RAISED_ON_PURPOSE = (ValueError, KeyError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = HelpParser(prog="eupe", description="EUPE: efficient universal perception encoders.")
    parser.add_argument("-v", "--verbose", "--debug", dest="verbose", action="store_true",
                        help="log debug messages and show tracebacks of errors (or set EUPE_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"eupe {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"eupe.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    command = " ".join(filter(None, (args.command, getattr(args, "protocol", None), getattr(args, "kind", None),
                                     getattr(args, "vlm_command", None))))
    debug = args.verbose or os.environ.get("EUPE_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"eupe {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not is_user_error(err):
            raise
        print(f"eupe {command}: error: {describe(err)}", file=sys.stderr)
        return 2


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` reports bad input or a problem of the environment (one line) rather than a bug (traceback):
    an exception class of eupe's own, a missing package, an OSError about the user's files or disks, or a
    ValueError/KeyError/RuntimeError raised by a ``raise`` statement in eupe's code."""
    if isinstance(err, MissingDependencyError) or type(err).__module__.split(".")[0] == "eupe":
        return True
    if isinstance(err, OSError):
        return isinstance(err, USER_OS_ERRORS) or err.errno in OS_ADVICE
    return isinstance(err, RAISED_ON_PURPOSE) and _raised_by_eupe(err)


def _raised_by_eupe(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is a ``raise`` statement in the eupe package."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    return (Path(filename).resolve().is_relative_to(PACKAGE_DIR)
            and linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise"))


def describe(err: BaseException) -> str:
    """The one-line message of a user error: its own text, or for an operating-system error the file, what went
    wrong and what to do."""
    if isinstance(err, OSError) and err.errno is not None and err.strerror:
        files = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        advice = OS_ADVICE.get(err.errno)
        if files:
            return f"{files}: {err.strerror}" + (f" ({advice})" if advice else "")
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])  # str(KeyError) would quote the message
    return str(err)


if __name__ == "__main__":
    sys.exit(main())
