"""One config system for the whole project: dataclasses, filled from a YAML file and ``key=value`` overrides.

Every command's settings are a (possibly nested) dataclass. ``load_config(MyConfig, "run.yaml", ["a.b=3"])``
reads the YAML, applies dotted overrides (values parsed as YAML scalars, so ``3``, ``1e-4``, ``true``, ``[1,2]``
work; ``list.0.key=v`` edits one item of a list; a mapping value merges into the mapping; ``~a.b`` removes key ``b``
of ``a``, so a field goes back to its default and a mapping can be emptied), rejects unknown keys with the list of
valid ones, and checks types of scalar fields.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from .utils.io import atomic_write_text

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or override that does not fit the config's dataclass."""


class _Remove:
    """The value of a ``~key`` override: :func:`merge` deletes the key."""

    def __repr__(self) -> str:
        return "<removed>"


REMOVE = _Remove()


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x", "~d.e"]`` -> ``{"a": {"b": 1}, "c": "x", "d": {"e": REMOVE}}``."""
    tree: dict[str, Any] = {}
    for item in overrides:
        removal = item.startswith("~")
        key, sep, raw = item.partition("=")
        key = key.removeprefix("~")
        if removal and sep:
            raise ConfigError(f"Override {item!r}: ~KEY removes a key and takes no value (write ~{key})")
        if not key or not (sep or removal):
            raise ConfigError(f"Override {item!r} is not of the form key=value (for example train.lr=1e-4), "
                              "or ~key to remove a key")
        node = tree
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {item!r} conflicts with another override of {part!r}")
        if removal:
            node[leaf] = REMOVE
            continue
        try:
            node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"Override {item!r}: the value is not valid YAML ({_yaml_problem(err)}); quote a "
                              "string, or write lists as [1, 2]") from None
    return tree


def merge(base: Mapping[str, Any], update: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins. Integer keys address list items (``teachers.0.weights=...``);
    :data:`REMOVE` deletes a key (``where``: the dotted path of ``base``, for messages)."""
    out = dict(base)
    for key, value in update.items():
        current = out.get(key)
        if value is REMOVE:
            if key not in out:
                raise ConfigError(f"~{where}{key}: the config sets no key {key!r} there (it sets "
                                  f"{sorted(map(str, out))}); check the name")
            del out[key]
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = merge(current, value, f"{where}{key}.")
        elif isinstance(value, Mapping) and isinstance(current, list) and all(str(k).isdigit() for k in value):
            items = list(current)
            for index, item in value.items():
                if int(index) >= len(items):
                    raise ConfigError(f"{where}{key}.{index}: the list {key!r} has only {len(items)} item(s)")
                if item is REMOVE:
                    raise ConfigError(f"~{where}{key}.{index}: a list item cannot be removed by index; give the "
                                      f"whole list instead (--set {where}{key}=[...])")
                old = items[int(index)]
                items[int(index)] = (merge(old, item, f"{where}{key}.{index}.")
                                     if isinstance(old, Mapping) and isinstance(item, Mapping) else item)
            out[key] = items
        else:
            out[key] = value
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` with the ``key=value`` / ``~key`` ``overrides`` applied (:func:`parse_overrides`, :func:`merge`);
    a ``~key`` under something that is not a mapping of ``data`` is refused, naming it."""
    merged = merge(data, parse_overrides(overrides))
    _refuse_unapplied_removals(merged)
    return merged


def _refuse_unapplied_removals(tree: Any, where: str = "") -> None:
    """A :data:`REMOVE` left in a merged tree stands where ``data`` had no mapping to remove a key from."""
    items = tree.items() if isinstance(tree, Mapping) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if value is REMOVE:
            raise ConfigError(f"~{where}{key}: the config has no mapping at {where.rstrip('.') or 'the top'} to "
                              "remove it from; check the name")
        _refuse_unapplied_removals(value, f"{where}{key}.")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {annotation.__name__}, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or annotation is tuple else items
    if origin in (dict, typing.Mapping) or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(annotation))}")
        return value
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if annotation in (int, str, bool, float) and not (isinstance(value, annotation) and
                                                      not (annotation is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Builds dataclass ``cls`` from ``data``; unknown keys are an error naming the valid ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def shipped_configs(group: str) -> list[str]:
    """Names of the configs the package ships in ``group`` (``eupe/configs/<group>/<name>.yaml``)."""
    folder = importlib.resources.files("eupe") / "configs" / group
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")) \
        if folder.is_dir() else []


def resolve_config(group: str, name_or_path: str | Path) -> Path:
    """A shipped config name of ``group`` (``stage2``) or a YAML path -> the file to read.

    A path-like argument (a ``Path``, or a string holding a path separator or ending in ``.yaml``/``.yml``) is a
    file; a bare name is always the shipped config, never a file of the current folder. That is what timm and
    big_vision users expect of a name (``vit_base_patch16_224``, a named config), and it keeps a command meaning
    the same in every folder: a stray ``stage2`` or ``stage2.yaml`` where the command runs must not replace the
    paper's settings. When such a file exists, the shipped config is still used and a warning says how to read
    the file instead (``./stage2.yaml``). Shipped configs are package data (read through
    ``importlib.resources``), so they work from an installed wheel.
    """
    text = str(name_or_path)
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or any(s in text for s in separators):
        path = Path(name_or_path)
        if not path.is_file():
            named = path.stem in shipped_configs(group) and path.parent == Path()
            raise ConfigError(f"Config file {path} does not exist"
                              + (f"; for the shipped {group} config, pass its name {path.stem}" if named else ""))
        return path
    shipped = importlib.resources.files("eupe") / "configs" / group / f"{text}.yaml"
    local = next((p for p in (Path(text), Path(f"{text}.yaml")) if p.is_file()), None)
    if not shipped.is_file():
        hint = f"; to read the file {local} of this folder, pass ./{local}" if local else ""
        raise ConfigError(f"No {group} config named {text!r}; shipped {group} configs: "
                          f"{shipped_configs(group)}, or pass a .yaml path{hint}")
    if local:
        logger.warning("config %r: using the shipped %s config %s.yaml, not the file %s of the current folder "
                       "(pass ./%s to read that file instead)", text, group, text, local, local)
    return Path(str(shipped))


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                defaults: Mapping[str, Any] | None = None) -> T:
    """``defaults`` <- YAML file at ``path`` <- ``overrides``, validated into dataclass ``cls``."""
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"Config file {path} is not valid YAML: {_yaml_problem(err)}") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"Config file {path} must hold a mapping at the top level")
        data = merge(data, loaded)
    data = apply_overrides(data, overrides)
    return from_dict(cls, data, where=str(path) if path else "config")


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where (``expected ',' or ']' at line 2, column 1``)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (tuples become lists), for YAML/JSON."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    """Writes the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
