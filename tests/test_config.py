from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from eupe.config import REMOVE, ConfigError, load_config, parse_overrides, save_config


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Run:
    name: str = "run"
    steps: int = 10
    teachers: list[str] = field(default_factory=list)
    optim: Optim = field(default_factory=Optim)
    size: int | None = None


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.01\n")
    cfg = load_config(Run, path, ["optim.lr=1e-4", "teachers=[a, b]", "size=256", "optim.betas=[0.9, 0.95]"])
    assert cfg == Run(steps=20, teachers=["a", "b"], optim=Optim(lr=1e-4, betas=(0.9, 0.95)), size=256)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(Run, tmp_path / "saved.yaml") == cfg


def test_unknown_keys_and_bad_types_are_clear(tmp_path):
    with pytest.raises(ConfigError, match=r"config.optim: unknown key\(s\) \['x'\]; valid keys are \['betas', 'lr'\]"):
        load_config(Run, None, ["optim.lr=1", "optim.x=1"])
    with pytest.raises(ConfigError, match=r"config.steps: expected int, got 'many'"):
        load_config(Run, None, ["steps=many"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, tmp_path / "missing.yaml")


@dataclass
class Teacher:
    name: str = ""
    weights: str | None = None


@dataclass
class WithList:
    teachers: list[Teacher] = field(default_factory=list)


def test_list_items_are_addressed_by_index(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("teachers:\n  - {name: a}\n  - {name: b}\n")
    cfg = load_config(WithList, path, ["teachers.1.weights=w.pt"])
    assert cfg.teachers == [Teacher("a"), Teacher("b", "w.pt")]
    with pytest.raises(ConfigError, match="only 2 item"):
        load_config(WithList, path, ["teachers.2.weights=w.pt"])


def test_a_tilde_override_removes_a_key_so_its_default_applies(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.01\n  betas: [0.5, 0.6]\n")
    cfg = load_config(Run, path, ["~optim.betas", "~steps"])
    assert cfg == Run(optim=Optim(lr=0.01))  # betas and steps back to their defaults
    assert load_config(Run, path, ["~optim"]).optim == Optim()
    assert parse_overrides(["~a.b"]) == {"a": {"b": REMOVE}}


def test_a_tilde_override_of_a_key_the_config_does_not_set_names_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match=r"~optim.betas: the config sets no key 'betas' there \(it sets \['lr'\]\)"):
        load_config(Run, path, ["~optim.betas"])
    with pytest.raises(ConfigError, match=r"~optimiser\.lr: the config has no mapping at optimiser to remove it"):
        load_config(Run, path, ["~optimiser.lr"])
    with pytest.raises(ConfigError, match=r"takes no value \(write ~optim.lr\)"):
        load_config(Run, path, ["~optim.lr=3"])


def test_a_list_item_key_can_be_removed(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("teachers:\n  - {name: a, weights: w.pt}\n")
    assert load_config(WithList, path, ["~teachers.0.weights"]).teachers == [Teacher("a")]
    with pytest.raises(ConfigError, match=r"~teachers\.0: a list item cannot be removed by index"):
        load_config(WithList, path, ["~teachers.0"])
    path.write_text("teachers: [a]\n")
    with pytest.raises(ConfigError, match=r"~teachers\.0\.weights: the config has no mapping at teachers\.0"):
        load_config(WithList, path, ["~teachers.0.weights"])
