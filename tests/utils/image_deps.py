"""What an image installs against what its command imports, without Docker.

Each image's Dockerfile installs the mlstack wheel with one extra of pyproject.toml (``"${whl}[serve]"``), never a
hand-listed package. ``image_requirements`` reads that install line and resolves it through pyproject.toml (the base
dependencies and the extra's packages); ``closure`` adds every distribution those bring in, by the installed
packages' own metadata; ``imported_modules`` reads the third-party modules a process imported
from its ``-X importtime`` log (``PYTHONPROFILEIMPORTTIME=1``); ``undeclared`` is what it imported that the image
would not hold.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# imported only when installed (each importer has an ImportError fallback): here because the test venv has them
OPTIONAL = {
    "grpc_tools", "grpc_reflection",  # grpc's __init__ tries them
    "pyarrow",  # pandas.compat
    "psutil",  # opentelemetry.sdk.resources (mlflow-tracing)
    "python_multipart",  # starlette.formparsers
    "brotli", "_brotli",  # aiohttp's decompression
    "rich",  # sklearn's progress-bar callback (sklearn.utils._optional_dependencies)
    "_distutils_hack",  # setuptools' site hook, not an import of ours
}


def declared(*extras: str) -> list[Requirement]:
    """pyproject.toml's base dependencies and those of ``extras`` (each extra lists its packages in full:
    ``tests/test_extras.py``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(line) for line in project["dependencies"]]
    for extra in sorted(extras):
        lines = project["optional-dependencies"].get(extra)
        assert lines is not None, f"pyproject.toml has no extra {extra!r}"
        reqs += [Requirement(line) for line in lines]
    return reqs


def image_requirements(dockerfile: Path, stage: str) -> list[Requirement]:
    """What ``stage`` of ``dockerfile`` installs: the wheel with one extra (``"${whl}[EXTRA]"``), resolved."""
    text = dockerfile.read_text()
    body = text[text.index(f"AS {stage}\n"):]
    body = body.split("\nFROM ", 1)[0]
    installs = re.findall(r'pip install (?:-c \S+ )?"\$\{whl\}\[([\w,-]+)\]"', body)
    assert len(installs) == 1, f"{dockerfile} {stage}: one pip install of the wheel with an extra expected"
    return declared(*installs[0].split(","))


def closure(reqs: list[Requirement]) -> set[str]:
    """Every distribution ``reqs`` bring in, by the installed packages' own metadata (markers evaluated)."""
    seen: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in reqs]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen and not extras:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            r = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if r.marker is None or any(r.marker.evaluate(env) for env in envs):
                todo.append((r.name, frozenset(r.extras)))
    return seen


def imported_modules(log: str, optional: frozenset[str] = frozenset()) -> set[str]:
    """Third-party top-level modules in a ``-X importtime`` log (each with a distribution that provides it), less
    ``OPTIONAL`` and ``optional`` and what they imported (the log nests each import under its importer)."""
    entries = [(len(m.group(1)), m.group(2).split(".")[0]) for m in
               re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|( +)([\w.]+)$", log, re.M)]
    skip = OPTIONAL | optional
    tops: set[str] = set()
    importers: list[tuple[int, bool]] = []  # (depth, under an optional module): the log lists importers last
    for depth, top in reversed(entries):
        while importers and importers[-1][0] >= depth:
            importers.pop()
        dropped = top in skip or bool(importers and importers[-1][1])
        importers.append((depth, dropped))
        if not dropped:
            tops.add(top)
    provided = metadata.packages_distributions()
    return {t for t in tops - set(sys.stdlib_module_names) - {"mlstack", "mlstack_operator"} if t in provided}


def undeclared(used: set[str], reqs: list[Requirement]) -> dict[str, list[str]]:
    """The modules of ``used`` that no distribution in ``closure(reqs)`` provides, with the distributions that do."""
    installed = closure(reqs)
    provided = metadata.packages_distributions()
    return {m: provided[m] for m in used if not {canonicalize_name(d) for d in provided[m]} & installed}
