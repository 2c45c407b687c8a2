"""The layering holds (the import-linter contracts in pyproject.toml): no module imports a layer above it, the API
imports only the operator's contract, the operator nothing of the API. In tests/, no module imports a test module or a
conftest (shared helpers live in tests/utils/)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import mlstack
import mlstack_operator

REPO = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_import_contracts_are_kept():
    exe = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken." in proc.stdout, proc.stdout[-3000:]


def layer_modules(layers: list[str]) -> set[str]:
    return {m.strip() for layer in layers for m in layer.split("|")}


def test_every_module_has_a_layer():
    """A new top-level module joins a layer (else the layers contract says nothing about it)."""
    contracts = {c["name"]: c for c in CONFIG["contracts"]}
    for pkg in (mlstack, mlstack_operator):
        (layers,) = [c["layers"] for c in contracts.values() if c.get("containers") == [pkg.__name__]]
        present = {m.name for m in pkgutil.iter_modules(pkg.__path__)} - {"data"}
        assert present == layer_modules(layers), f"{pkg.__name__}: modules without a layer or layers without a module"


def test_the_api_may_import_only_the_operators_contract():
    """Every operator module but the contract (the CRD's models, the status state machine) is forbidden to mlstack."""
    (forbidden,) = [c["forbidden_modules"] for c in CONFIG["contracts"] if c.get("source_modules") == ["mlstack"]]
    operator = {f"mlstack_operator.{m.name}" for m in pkgutil.iter_modules(mlstack_operator.__path__)}
    assert set(forbidden) == operator - {"mlstack_operator.contract", "mlstack_operator.status"}


def test_no_test_module_imports_a_test_module_or_a_conftest():
    """Helpers live in tests/utils/ (tests/k8s/ for the control-plane harness): a module under tests/ imports no
    ``test_*`` module and no ``conftest`` (pytest loads those itself; fixtures are shared by a conftest or a plugin
    in tests/conftest.py's ``pytest_plugins``)."""
    tests = REPO / "tests"

    def is_test_or_conftest(module: str) -> bool:
        last = module.rsplit(".", 1)[-1]
        is_file = (REPO / (module.replace(".", "/") + ".py")).is_file()
        return (last == "conftest" or last.startswith("test_")) and is_file

    offences = []
    for path in sorted(tests.rglob("*.py")):
        package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package of the file, level - 1 packages up
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}".rstrip(".")
                modules = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            offences += [f"{where} imports {m}" for m in modules if is_test_or_conftest(m)]
    assert offences == [], "move what they share to tests/utils/:\n" + "\n".join(offences)
