"""The layering holds (the import-linter contracts in pyproject.toml): no module imports a layer above it, the API
imports only the operator's contract, the operator nothing of the API."""

from __future__ import annotations

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
