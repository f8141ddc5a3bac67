"""Flags derived from config dataclasses: type, nargs, choices and defaults come from the fields; the flags given
become ``key=value`` overrides between ``--config`` and ``--set``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from eupe.cli.common import ConfigFlag, add_config_args, add_config_flags, prefixed, resolve_config
from eupe.utils import workers


@dataclass
class Inner:
    rate: float = 0.5
    ks: list[int] = field(default_factory=lambda: [1, 5])
    mode: Literal["fast", "exact"] = "fast"
    enabled: bool = False


@dataclass
class Outer:
    path: str = ""
    limit: int | None = None
    name: str = "plain"
    table: dict = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


FLAGS = {
    "path": ConfigFlag("input folder", flag="--data-root"),
    "limit": "use at most this many; unset: all",
    "name": ConfigFlag("a name with 100% coverage", choices=("plain", "fancy")),
    **prefixed("inner", {"rate": "the rate", "ks": "the ks", "mode": "how", "enabled": "switch it on"}),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmd")
    add_config_args(parser, example="inner.rate=0.1")
    add_config_flags(parser, Outer, FLAGS, title="settings")
    return parser


def flat_help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())


def test_flags_take_type_nargs_choices_from_the_fields():
    args = make_parser().parse_args(["--data-root", "d", "--limit", "3", "--rate", "2", "--ks", "1", "10",
                                     "--mode", "exact", "--enabled", "--name", "fancy"])
    assert (args.path, args.limit, getattr(args, "inner.rate"), getattr(args, "inner.ks")) == \
        ("d", 3, 2.0, [1, 10])
    assert getattr(args, "inner.mode") == "exact" and getattr(args, "inner.enabled") is True
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--mode", "slow"])  # Literal values are the choices
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--name", "other"])  # explicit choices
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--limit", "x"])


def test_help_prints_the_dataclass_defaults_once():
    text = flat_help(make_parser())
    for expected in ("the rate (default: 0.5)", "the ks (default: 1 5)", "how (default: fast)",
                     "--enabled, --no-enabled switch it on (default: False)", "a name with 100% coverage (default: plain)",
                     "--rate RATE", "--ks KS [KS ...]", "--mode {fast,exact}",
                     "override one setting, e.g. --set inner.rate=0.1 (repeatable; --set ~KEY removes a key: its "
                     "default applies)"):
        assert expected in text
    # None / empty defaults are explained by the help text, not printed
    assert "use at most this many; unset: all --" in text and "input folder --" in text


def test_help_explains_a_default_that_depends_on_the_machine(monkeypatch):
    monkeypatch.setattr(workers, "available_cpus", lambda: 3)

    @dataclass
    class Loader:
        num_workers: int = workers.workers_field(8)

    parser = argparse.ArgumentParser()
    add_config_flags(parser, Loader, {"num_workers": "loading processes"})
    text = " ".join(parser.format_help().split())
    assert "loading processes (default: 3, the CPUs this process may use, at most 8)" in text


def test_backbone_help_names_the_default_model_and_where_its_weights_come_from():
    from eupe.cli.common import add_backbone_args

    parser = argparse.ArgumentParser()
    add_backbone_args(parser)
    text = " ".join(parser.format_help().split())
    assert "default: eupe_vits16" in text
    assert "default: the model's released weights from the Hugging Face hub" in text and "offline" in text


def test_separated_list_flags(capsys):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Inner, {"ks": ConfigFlag("the ks", separator=",")})
    add_config_args(parser)
    assert "(default: 1,5)" in " ".join(parser.format_help().split())
    assert resolve_config(Inner, parser.parse_args(["--ks", "2, 3", "--set", "rate=1"])).ks == [2, 3]
    with pytest.raises(SystemExit):
        parser.parse_args(["--ks", "2,x"])
    assert "invalid int value: '2,x'" in capsys.readouterr().err
    with pytest.raises(TypeError, match="not a list setting"):
        add_config_flags(argparse.ArgumentParser(), Inner, {"rate": ConfigFlag("r", separator=",")})


def test_only_given_flags_override_and_set_wins(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("inner: {rate: 0.25, enabled: true}\nname: fancy\n")
    parser = make_parser()
    assert resolve_config(Outer, parser.parse_args([])) == Outer()
    cfg = resolve_config(Outer, parser.parse_args(["--config", str(yaml_file), "--ks", "7", "--no-enabled"]))
    assert (cfg.inner.rate, cfg.inner.ks, cfg.inner.enabled, cfg.name) == (0.25, [7], False, "fancy")
    cfg = resolve_config(Outer, parser.parse_args(["--config", str(yaml_file), "--rate", "3", "--data-root", "a b",
                                                   "--set", "inner.rate=4"]), ["limit=9"])
    assert (cfg.inner.rate, cfg.path, cfg.limit) == (4.0, "a b", 9)


def test_registration_rejects_keys_and_types_no_flag_can_express():
    with pytest.raises(ValueError, match=r"Outer has no setting 'inner.speed'; 'speed' is not one of \['rate'"):
        add_config_flags(argparse.ArgumentParser(), Outer, {"inner.speed": "?"})
    with pytest.raises(ValueError, match="no setting 'name.x'"):
        add_config_flags(argparse.ArgumentParser(), Outer, {"name.x": "?"})
    with pytest.raises(TypeError, match=r"--set table=\.\.\."):
        add_config_flags(argparse.ArgumentParser(), Outer, {"table": "?"})


def test_set_help_without_example():
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    assert "override one setting (repeatable; --set ~KEY removes a key" in flat_help(parser)
