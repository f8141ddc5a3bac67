"""Fixtures shared by the evaluation tests."""

from __future__ import annotations

from typing import Callable

import pytest

import eupe.cli.eval as cli_eval
import eupe.cli.main as cli_main


@pytest.fixture
def eval_cli(monkeypatch) -> Callable[..., Callable[[list[str]], int]]:
    """``eval_cli(protocol, commands=("eval",))``: ``eupe``'s ``main`` with only ``commands`` and, under
    ``eupe eval``, only ``protocol`` registered."""

    def main_with(protocol: str, commands: tuple[str, ...] = ("eval",)) -> Callable[[list[str]], int]:
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", commands)
        monkeypatch.setattr(cli_eval, "PROTOCOLS", (protocol,))
        return cli_main.main

    return main_with
