"""pyproject.toml's extras list their packages in full: none names mlstack itself (``mlstack[serve]``), which a
resolver that does not take it for this project would fetch from PyPI, where the name is another project's. So
each extra that holds another repeats its lines: ``api`` holds ``serve`` and ``operator``, ``test`` holds ``api``,
requirement for requirement (the same specifiers and extras)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
EXTRAS = {name: {str(Requirement(line)) for line in lines}
          for name, lines in PROJECT["optional-dependencies"].items()}


def test_no_extra_names_the_project_itself():
    named = {extra: line for extra, lines in EXTRAS.items() for line in lines
             if canonicalize_name(Requirement(line).name) == canonicalize_name(PROJECT["name"])}
    assert not named, f"spell these out instead: {named}"


def test_api_holds_serve_and_operator_and_test_holds_api():
    assert EXTRAS["serve"] <= EXTRAS["api"], EXTRAS["serve"] - EXTRAS["api"]
    assert EXTRAS["operator"] <= EXTRAS["api"], EXTRAS["operator"] - EXTRAS["api"]
    assert EXTRAS["api"] <= EXTRAS["test"], EXTRAS["api"] - EXTRAS["test"]
