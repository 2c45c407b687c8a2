"""Validation helpers: kubernetes-validate (core kinds, strict), the shared upstream checker, the CRD."""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MLSTACK_SHARED_DIR", REPO.parent / "shared"))
VALIDATE_UPSTREAM = SHARED / "tools" / "validate-upstream"
CRD_PATH = REPO / "manifests" / "crds" / "modeldeployment.yaml"


def k8s_validate(obj: Mapping[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(dict(obj), kubernetes_validate.latest_version(), strict=True)


def upstream_validate(objs: list[dict[str, Any]], tmp_path: Path) -> None:
    """Validate with ../shared/tools/validate-upstream; skip loudly where /work/shared is absent."""
    if not VALIDATE_UPSTREAM.exists():
        pytest.skip(f"upstream schemas not available: {VALIDATE_UPSTREAM} is missing (set MLSTACK_SHARED_DIR)")
    path = tmp_path / "objs.yaml"
    path.write_text(yaml.safe_dump_all(objs))
    proc = subprocess.run([sys.executable, str(VALIDATE_UPSTREAM), str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 invalid, 0 not covered" in proc.stdout, proc.stdout


def _strict(node: Any, key: str = "") -> Any:
    """additionalProperties: false wherever properties are listed (kubectl's strict field validation), except in
    ``metadata``, whose schema may only constrain name/generateName (the API server validates the rest)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and not node.get(
                "x-kubernetes-preserve-unknown-fields") and key != "metadata":
            node.setdefault("additionalProperties", False)
        for k, v in node.items():
            _strict(v, k if k != "properties" else key)
    elif isinstance(node, list):
        for v in node:
            _strict(v)
    return node


@functools.cache
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@functools.cache
def crd_schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _default(schema: Mapping[str, Any], value: Any) -> Any:
    """Apply structural-schema defaults the way the API server does before validation."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = dict(value)
    for key, sub in (schema.get("properties") or {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _default(sub, out[key])
    return out


def _cel_nodes(schema: Mapping[str, Any], value: Any, path: str = "") -> Iterator[tuple[str, dict, Any]]:
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path or "<root>", rule, value
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                yield from _cel_nodes(sub, value[key], f"{path}.{key}" if path else key)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from _cel_nodes(schema["items"], item, f"{path}[{i}]")


def crd_errors(obj: Mapping[str, Any]) -> list[str]:
    """What the API server would say about ``obj``: defaults, the structural schema, then CEL rules."""
    celpy = pytest.importorskip("celpy", reason="cel-python is needed to evaluate the CRD's CEL rules "
                                                "(pip install cel-python; it belongs in the test extra)")

    schema = crd_schema()
    value = _default(schema, copy.deepcopy(dict(obj)))
    validator = jsonschema.Draft4Validator(_strict(copy.deepcopy(schema)))
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(value)]
    if errors:
        return errors  # the API server stops before CEL on schema errors
    env = celpy.Environment()
    for path, rule, node in _cel_nodes(schema, value):
        result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(node)})
        if not bool(result):
            errors.append(f"{path}: {rule.get('message', rule['rule'])}")
    return errors
