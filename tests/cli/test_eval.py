"""``eupe eval PROTOCOL`` parsers: defaults come from the config dataclasses and ``--help`` shows them, every
command's ``--set`` example is a real key of its config, and the established flag names stay."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from eupe.cli.common import resolve_config
from eupe.cli.eval import PROTOCOLS
from eupe.config import load_config, to_dict


def protocol_parsers() -> dict[str, argparse.ArgumentParser]:
    subparsers = argparse.ArgumentParser(prog="eupe eval").add_subparsers()
    for name in PROTOCOLS:
        importlib.import_module(f"eupe.cli.eval_{name}").register(subparsers)
    return dict(subparsers.choices)


PARSERS = protocol_parsers()


def config_class(parser: argparse.ArgumentParser) -> type:
    return parser.get_default("func").keywords["config_class"]


def flat_help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())


def set_example(parser: argparse.ArgumentParser) -> str:
    (action,) = [a for a in parser._actions if "--set" in a.option_strings]
    return re.fullmatch(r"override one setting, e\.g\. --set (\S+) \(repeatable; .*\)", action.help).group(1)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_set_example_is_a_real_setting_of_the_command(name):
    parser = PARSERS[name]
    cls, example = config_class(parser), set_example(parser)
    assert to_dict(load_config(cls, None, [example])) != to_dict(cls()), f"{example} changes nothing"


def test_set_examples_differ_between_commands():
    examples = [set_example(p) for p in PARSERS.values()]
    assert len(set(examples)) == len(examples)


HELP_DEFAULTS = {
    "knn": ["weighted-vote temperature (default: 0.07)", "k of the weighted vote (default: 10 20 100 200)",
            "k of the majority vote (default: 10)", "--protocol {paper,reference,both}", "(default: both)",
            "--tie-break {nearest,lowest_label}", "stored features to use (default: cls)", "input size (default: 224)",
            "--patch-mean, --no-patch-mean"],
    "linear": ["training epochs (default: 10)", "part of train for choosing the head (default: 0.1)",
               "'+'-joined stored keys to try (default: cls cls+patch_mean)", "(DINOv2's grid) (default: 1e-05 2e-05",
               "images per forward pass (default: 64)"],
    "zeroshot": ["unset: the only/first one", "the CPUs this process may use, at most 4)"],
    "segmentation": ["training iterations (default: 40000)", "peak learning rate (default: 0.001)",
                     "training batch size (default: 16)", "the CPUs this process may use, at most 8)"],
    "depth": ["training iterations (default: 38400)", "peak learning rate (default: 0.0003)"],
    "keypoints": ["pairs per category (default: 100)", "side of the resized images (default: 512)"],
}


@pytest.mark.parametrize("name", PROTOCOLS)
def test_help_shows_the_dataclass_defaults(name):
    text = flat_help(PARSERS[name])
    for expected in HELP_DEFAULTS[name]:
        assert expected in text


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_config_flag_with_a_default_prints_it(name):
    parser = PARSERS[name]
    defaults = to_dict(config_class(parser)())
    for action in parser._actions:
        if action.dest not in parser.get_default("config_flags"):
            continue
        value = defaults
        for part in action.dest.split("."):
            value = value[part]
        assert action.default is None  # so that only the flags given override the config
        assert ("(default: " in action.help) == (value not in (None, "", [])), action.dest


OLD_FLAGS = {
    "knn": ["--data", "--train", "--val", "--output-dir", "--feature-key", "--protocol", "--paper-ks", "--reference-ks",
            "--temperature", "--tie-break", "--query-chunk", "--train-chunk"],
    "linear": ["--data", "--train", "--val", "--output-dir", "--feature-sets", "--learning-rates", "--epochs",
               "--holdout-fraction"],
    "zeroshot": ["--data", "--class-embeddings", "--class-names", "--head", "--teacher", "--output-dir"],
    "segmentation": ["--data-root", "--output-dir", "--num-workers", "--iterations", "--batch-size", "--lr"],
    "depth": ["--data-root", "--output-dir", "--num-workers", "--iterations", "--batch-size", "--lr"],
    "keypoints": ["--data-root", "--output-dir", "--pairs-per-category", "--image-size"],
}
COMMON_FLAGS = ["--model", "--weights", "--device", "--amp", "--quantize", "--arch", "--config", "--set"]
EXTRACT_FLAGS = ["--resolution", "--resize-mode", "--layers", "--storage-tokens", "--patch-tokens", "--patch-mean",
                 "--format", "--dtype", "--shard-size", "--batch-size", "--num-workers"]


@pytest.mark.parametrize("name", PROTOCOLS)
def test_established_flag_names_still_parse(name):
    options = set(PARSERS[name]._option_string_actions)
    expected = OLD_FLAGS[name] + COMMON_FLAGS + (EXTRACT_FLAGS if name in ("knn", "linear", "zeroshot") else [])
    assert set(expected) <= options


def test_flags_become_overrides_of_the_protocols_config(tmp_path):
    parser = PARSERS["knn"]
    args = parser.parse_args(["--output-dir", str(tmp_path), "--paper-ks", "3", "5", "--protocol", "paper",
                              "--patch-mean", "--batch-size", "8", "--set", "knn.temperature=0.2"])
    cfg = resolve_config(config_class(parser), args)
    assert (cfg.knn.paper_ks, cfg.knn.protocol, cfg.knn.temperature) == ([3, 5], "paper", 0.2)
    assert (cfg.extract.patch_mean, cfg.extract.batch_size, cfg.extract.resolution) == (True, 8, 224)
