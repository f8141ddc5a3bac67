"""The safety helpers have one implementation each, in the core layers, so every command gets the same checks:
a fix to one (what counts as non-finite, which files are stale temporaries, how digests are cached) reaches all."""

from __future__ import annotations

import ast
from pathlib import Path

import eupe

PACKAGE = Path(eupe.__file__).parent
# helper -> the module that holds its only definition
HELPERS = {
    "file_sha256": "utils/cache.py",
    "cache_dir": "utils/cache.py",
    "remove_stale_temporaries": "utils/io.py",
    "non_finite_keys": "loading/checkpoint.py",
}


def test_each_safety_helper_is_defined_once_in_the_core():
    defined: dict[str, list[str]] = {name: [] for name in HELPERS}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in defined:
                defined[node.name].append(path.relative_to(PACKAGE).as_posix())
    assert defined == {name: [module] for name, module in HELPERS.items()}
