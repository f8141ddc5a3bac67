"""Arguments and helpers shared by the commands that run a backbone (extract, eval, visualize, export, bench).

Settings live in config dataclasses (:mod:`eupe.config`). A command exposes chosen fields as flags with
:func:`add_config_flags`, which takes each flag's type, choices and default from the dataclass, so that a default is
written once (in the dataclass) and ``--help`` prints it; :func:`resolve_config` turns the flags that were given into
``key=value`` overrides between the ``--config`` file and the ``--set`` overrides.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from ..config import apply_overrides, load_config, shipped_configs, to_dict
from ..extract.provenance import backbone_identity
from ..loading import load
from ..loading.sources import resolve_weights, split_key
from ..models import get_model_entry
from ..utils.cache import file_sha256
from ..utils.device import AMP_CHOICES, autocast, bf16_enabled, resolve_device
from ..utils.workers import DEFAULT_NOTE

T = TypeVar("T")

#: reStructuredText markup of docstrings: ``literal`` and :role:`target` (shown as `literal` and `target`)
_RST_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain_help(text: str) -> str:
    """``text`` without the reStructuredText markup of the docstrings it is built from: ````x```` and
    ``:func:`x```` become ```x```, as the hand-written help strings quote."""
    return _RST_ROLE.sub(r"`\1`", _RST_LITERAL.sub(r"`\1`", text))


class HelpParser(argparse.ArgumentParser):
    """The parser of ``eupe`` and (inherited by ``add_subparsers``) of every subcommand: help and usage texts,
    often built from module docstrings, are printed without reStructuredText markup (:func:`plain_help`)."""

    def format_help(self) -> str:
        return plain_help(super().format_help())

    def format_usage(self) -> str:
        return plain_help(super().format_usage())


def add_backbone_args(parser: argparse.ArgumentParser, *, default_model: str = "eupe_vits16") -> None:
    group = parser.add_argument_group("backbone")
    group.add_argument("--model", default=default_model,
                       help="registered model name (see `eupe models`; default: %(default)s)")
    group.add_argument(
        "--weights",
        default=None,
        help="checkpoint: local .pt/.pth/.safetensors, file:// or https:// URL, or hf://org/repo[/file]; "
        "'random' for an untrained model (default: the model's released weights from the Hugging Face hub, "
        "listed by `eupe models --pretrained`; offline, give a local file or 'random')",
    )
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the initialisation with --weights random (default: %(default)s)")
    group.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    group.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                       help="bf16 autocast: auto = where the hardware runs bf16 natively (CUDA, AMX, AVX512-BF16) "
                            "(default: %(default)s)")
    group.add_argument("--quantize", choices=("int8",), default=None,
                       help="dynamic int8 quantisation of the Linear layers (CPU)")
    # Architecture overrides (e.g. depth=1): for tests and custom shapes, not part of the documented interface.
    group.add_argument("--arch", action="append", default=[], help=argparse.SUPPRESS)


def add_config_args(parser: argparse.ArgumentParser, example: str | None = None) -> None:
    """``--config FILE.yaml`` and repeatable ``--set KEY=VALUE``; ``example`` is one real ``key=value`` of the
    command's config, shown in the help (tests parse every command's example through its config class)."""
    parser.add_argument("--config", default=None, help="YAML file with the settings (see the saved config.yaml)")
    shown = f", e.g. --set {example}" if example else ""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one setting{shown} (repeatable; --set ~KEY removes a key: its default "
                             "applies)")


def add_shipped_config_args(parser: argparse.ArgumentParser, group: str, example: str,
                            default: str | None = None) -> None:
    """``--config`` (a shipped config of ``group`` or a YAML path; required unless ``default``), repeatable
    ``--set KEY=VALUE`` (into ``args.overrides``) and ``--print-config``: the commands run from named configs."""
    names = ", ".join(shipped_configs(group))
    parser.add_argument("--config", default=default, required=default is None,
                        help=f"a shipped config ({names}) or a YAML path"
                             + (" (default: %(default)s)" if default else ""))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. --set {example} (repeatable; --set ~KEY removes a "
                             "key: its default applies)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def print_config(cfg: Any) -> int:
    """Prints a resolved config dataclass as YAML (what ``--print-config`` shows); returns the exit code 0."""
    import yaml

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return 0


@dataclasses.dataclass(frozen=True)
class ConfigFlag:
    """How one config field appears on the command line, where a plain help string is not enough."""

    help: str
    flag: str | None = None  # the option string; default: ``--`` + the key's last part, ``_`` -> ``-``
    choices: tuple[Any, ...] | None = None  # default: the values of the field's ``Literal`` type, if it has one
    separator: str | None = None  # a list field given as one argument, e.g. "," for ``--sizes 224,256``


FlagSpecs = Mapping[str, str | ConfigFlag]  # dotted config key -> help text or ConfigFlag


def prefixed(prefix: str, specs: FlagSpecs) -> dict[str, str | ConfigFlag]:
    """The flags of a sub-config under ``prefix``: ``{"resolution": ...}`` -> ``{"extract.resolution": ...}``
    (``""``: unchanged)."""
    return {f"{prefix}.{key}" if prefix else key: spec for key, spec in specs.items()}


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, specs: FlagSpecs, *,
                     title: str | None = None) -> None:
    """Adds one flag per entry of ``specs`` (dotted key of ``config_class`` -> help text or :class:`ConfigFlag`),
    in an argument group ``title`` if given.

    Type, ``nargs`` (lists), choices (``Literal``) and ``--x/--no-x`` (bools) come from the field's annotation, and
    the help ends with the field's default (``(default: ...)``, followed by the field's metadata note
    :data:`~eupe.utils.workers.DEFAULT_NOTE` for a default that depends on the machine; a ``None`` or empty
    default is left to the help text to explain). The flags default to ``None``, so :func:`resolve_config`
    overrides only the settings given.
    Raises ``ValueError`` for a key the class lacks and ``TypeError`` for a field no flag can express.
    """
    target = parser.add_argument_group(title) if title else parser
    defaults = config_class()
    for key, spec in specs.items():
        spec = spec if isinstance(spec, ConfigFlag) else ConfigFlag(spec)
        annotation, default, note = _config_field(config_class, defaults, key)
        kwargs = _flag_kwargs(annotation, key)
        if spec.separator is not None:
            kwargs = _separated_kwargs(kwargs, spec.separator, key)
        if spec.choices is not None:
            kwargs["choices"] = spec.choices
        flag = spec.flag or "--" + key.rpartition(".")[2].replace("_", "-")
        if "choices" not in kwargs and "action" not in kwargs:
            kwargs["metavar"] = flag.lstrip("-").replace("-", "_").upper()
        shown = _shown_default(default, spec.separator or " ") + (f", {note}" if note else "")
        text = spec.help + (f" (default: {shown})" if shown else "")
        target.add_argument(flag, dest=key, default=None, help=text.replace("%", "%%"), **kwargs)
    parser.set_defaults(config_flags=(*(parser.get_default("config_flags") or ()), *specs))


def as_overrides(values: Mapping[str, Any]) -> list[str]:
    """``key=value`` overrides (values JSON-encoded, which the config's YAML parser reads back) of the values that
    are not ``None``."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items() if value is not None]


def resolve_config(cls: type[T], args: argparse.Namespace, overrides: Sequence[str] = ()) -> T:
    """``cls`` defaults <- ``--config`` YAML <- the given flags of :func:`add_config_flags` <- ``overrides`` <-
    ``--set`` overrides."""
    flags = as_overrides({key: getattr(args, key) for key in getattr(args, "config_flags", ())})
    return load_config(cls, args.config, [*flags, *overrides, *args.set])


def _config_field(config_class: type, defaults: Any, key: str) -> tuple[Any, Any, str | None]:
    """(annotation, default, note explaining the default) of the dotted ``key`` of ``config_class``, whose default
    instance is ``defaults``."""
    cls, value, note = config_class, defaults, None
    for part in key.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            raise ValueError(f"{config_class.__name__} has no setting {key!r}"
                             + (f"; {part!r} is not one of {list(fields)}" if fields else ""))
        note = fields[part].metadata.get(DEFAULT_NOTE)
        cls, value = typing.get_type_hints(cls)[part], getattr(value, part)
    return cls, value, note


def _flag_kwargs(annotation: Any, key: str) -> dict[str, Any]:
    """``add_argument`` keywords for a field of type ``annotation`` (``X | None`` is treated as ``X``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        if len(present) == 1:
            return _flag_kwargs(present[0], key)
    elif origin is typing.Literal:
        return {"type": type(args[0]), "choices": args}
    elif annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    elif annotation in (int, float, str):
        return {"type": annotation}
    elif origin in (list, tuple) and args:
        item = _flag_kwargs(args[0], key)
        if "action" not in item:
            return {**item, "nargs": "+"}
    raise TypeError(f"no command-line flag can set {key} (type {annotation}); set it with --set {key}=...")


def _separated_kwargs(kwargs: dict[str, Any], separator: str, key: str) -> dict[str, Any]:
    """The keywords of a list flag (``nargs="+"``) turned into one argument split at ``separator``."""
    if kwargs.get("nargs") != "+":
        raise TypeError(f"{key} is not a list setting: it cannot be given {separator!r}-separated")
    item, choices = kwargs.get("type", str), kwargs.get("choices")

    def split(text: str) -> list[Any]:
        values = [item(part.strip()) for part in text.split(separator) if part.strip()]
        wrong = [v for v in values if choices is not None and v not in choices]
        if wrong:
            raise argparse.ArgumentTypeError(f"{wrong[0]!r} is not one of {', '.join(map(str, choices))}")
        return values

    split.__name__ = item.__name__  # argparse names the type in its "invalid int value" errors
    return {k: v for k, v in kwargs.items() if k not in ("nargs", "type", "choices")} | {"type": split}


def _shown_default(value: Any, separator: str = " ") -> str:
    """A default as it would be typed on the command line (list items joined by ``separator``); empty for ``None``
    and empty values."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return separator.join(map(str, value))
    return str(value)


def backbone_from_args(args: argparse.Namespace) -> nn.Module:
    """The frozen, eval-mode backbone of ``--model`` / ``--weights`` / ``--device`` (and hidden ``--arch``);
    ``--weights random`` initialises it from ``--seed`` (the global RNG is left as it was)."""
    random_init = args.weights == "random"
    with torch.random.fork_rng(devices=[]) if random_init else contextlib.nullcontext():
        if random_init:
            torch.manual_seed(args.seed)
        model = load(args.model, None if random_init else args.weights, pretrained=not random_init,
                     device=resolve_device(args.device), quantize=getattr(args, "quantize", None),
                     **apply_overrides({}, getattr(args, "arch", [])))
    return model.requires_grad_(False)


def weights_digest(model: str, weights: str | None) -> str:
    """``sha256:<hex>`` of the checkpoint file of ``--weights`` (``None``: the model's released weights), with its
    ``#<key>`` suffix if it names one state dict of the file."""
    entry = get_model_entry(model)
    spec = weights if weights is not None else (entry.pretrained.default_source if entry.pretrained else None)
    if spec is None:
        raise ValueError(f"{model} has no released weights; pass --weights PATH, or --weights random")
    path, key = split_key(spec)
    local = resolve_weights(path, default_filename=entry.pretrained.filename if entry.pretrained else None)
    return f"sha256:{file_sha256(local)}" + (f"#{key}" if key else "")


def lazy_backbone(args: argparse.Namespace) -> Callable[[], nn.Module]:
    """Loads the backbone on first call only (evaluations on feature folders never need it)."""
    return functools.cache(lambda: backbone_from_args(args))


def model_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What the backbone of the command line is, by content (:func:`~eupe.extract.provenance.backbone_identity`):
    its checkpoint's SHA-256 (or ``random`` and ``--seed``), architecture overrides, quantisation and precision.
    Stored features and heads are keyed by it, so that two models, or two checkpoints at one path, never mix."""
    random_init = args.weights == "random"
    weights = "random" if random_init else weights_digest(args.model, args.weights)
    precision = "bf16" if bf16_enabled(args.amp, resolve_device(args.device)) else "fp32"
    return backbone_identity(args.model, weights, seed=args.seed if random_init else None, arch=args.arch,
                             quantize=getattr(args, "quantize", None), precision=precision)


def autocast_for(args: argparse.Namespace, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast as chosen by ``--amp`` (:func:`eupe.utils.device.autocast`)."""
    return autocast(args.amp, device)
