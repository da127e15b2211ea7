"""The examples in convcli's docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import convcli

# __main__ runs the command line when imported
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(convcli.__path__, prefix="convcli.")
    if not info.name.endswith(".__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert failures == 0


def test_there_are_examples_to_run() -> None:
    """The parametrized test above is not vacuous: some docstring holds an example."""
    finder = doctest.DocTestFinder()
    examples = sum(
        len(test.examples)
        for name in MODULES
        for test in finder.find(importlib.import_module(name))
    )
    assert examples > 0
