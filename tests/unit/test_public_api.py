"""``engine``'s public names: what type checkers see is what a program gets at run time."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import engine


def _checked_names() -> set[str]:
    """The names ``engine/__init__.py`` imports for type checkers (its TYPE_CHECKING block)."""
    tree = ast.parse(Path(engine.__file__).read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    )
    return {
        alias.name
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_type_checkers_runtime_and_all_name_the_same_things() -> None:
    exported = set(engine._EXPORTS)
    assert _checked_names() == exported
    assert set(engine.__all__) == exported | {"__version__"}


@pytest.mark.parametrize("name", sorted(engine._EXPORTS))
def test_each_name_is_the_defining_module_s_own(name: str) -> None:
    defining = importlib.import_module(engine._EXPORTS[name])
    assert getattr(engine, name) is getattr(defining, name)


def test_a_name_that_is_not_exported_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Engin"):
        engine.Engin  # noqa: B018
