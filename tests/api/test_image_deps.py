"""The API image (fastapi/Dockerfile, target ``api``; also the Ray image: training, Ray Serve, the monitor) installs
the mlstack wheel with the ``api`` extra. Every third-party module that any module of mlstack imports, at any depth
(lazy imports in functions included), must be declared for it or required by what is. A static check: the API's
runtime paths are too many to drive (the model server's and the operator's images are checked on real runs:
tests/serving/test_image_deps.py, tests/operator/test_image_deps.py)."""

from __future__ import annotations

import ast
import sys
from importlib import metadata

from tests.utils.image_deps import ROOT, image_requirements, undeclared


def mlstack_imports() -> set[str]:
    """The top-level names of every absolute import statement in fastapi/mlstack."""
    names = set()
    for path in sorted((ROOT / "fastapi" / "mlstack").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"mlstack", "mlstack_operator"}


def test_the_api_image_holds_everything_mlstack_imports():
    used = mlstack_imports()
    assert {"ray", "fastapi", "redis", "kubernetes", "psutil"} <= used, sorted(used)  # read as intended
    provided = metadata.packages_distributions()
    assert used <= set(provided), f"imported, installed nowhere: {sorted(used - set(provided))}"
    missing = undeclared(used, image_requirements(ROOT / "fastapi" / "Dockerfile", "build"))
    assert not missing, f"mlstack imports {missing}: add them to pyproject.toml's api extra"
