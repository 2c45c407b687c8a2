"""The dashboard's API types follow the API: frontend/openapi.json is the app's current OpenAPI document, and
frontend/src/lib/api-schema.d.ts is what openapi-typescript makes of it (frontend/src/lib/types.ts derives from it)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
REGENERATE = "cd frontend && npm run openapi  (= ../.venv/bin/python scripts/openapi.py && npm run openapi:types)"


def _generator():
    spec = importlib.util.spec_from_file_location("frontend_openapi", FRONTEND / "scripts" / "openapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_openapi_json_is_the_apps_current_document():
    committed = (FRONTEND / "openapi.json").read_text(encoding="utf-8")
    current = _generator().document()
    if committed != current:
        old, new = json.loads(committed), json.loads(current)
        changed = sorted(set(old["paths"]) ^ set(new["paths"])
                         | {p for p in set(old["paths"]) & set(new["paths"]) if old["paths"][p] != new["paths"][p]})
        schemas = sorted(k for k in set(old["components"]["schemas"]) | set(new["components"]["schemas"])
                         if old["components"]["schemas"].get(k) != new["components"]["schemas"].get(k))
        pytest.fail(f"frontend/openapi.json is stale (paths changed: {changed or 'none'}; schemas changed: "
                    f"{schemas or 'none'}); regenerate: {REGENERATE}")


def test_the_models_routes_are_described_with_their_response_models():
    doc = json.loads((FRONTEND / "openapi.json").read_text(encoding="utf-8"))

    def answer(path: str, method: str) -> dict:
        return doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]

    model = {"$ref": "#/components/schemas/RegisteredModelView"}
    assert answer("/models", "get") == {"type": "array", "items": model, "title": "Response List Models Models Get"}
    assert answer("/models/{name}", "get") == model
    assert answer("/models/{name}", "patch") == model
    assert answer("/models/{name}/aliases/{alias}", "put") == model
    assert answer("/models/{name}/versions/{version}", "patch") == {"$ref": "#/components/schemas/ModelVersionView"}
    view = doc["components"]["schemas"]["RegisteredModelView"]
    assert set(view["required"]) == {"name", "description", "tags", "aliases", "created_at", "versions"}


def test_generated_typescript_matches_the_committed_document():
    if not (FRONTEND / "node_modules" / ".bin" / "openapi-typescript").exists() or shutil.which("npm") is None:
        pytest.skip("frontend/node_modules is not installed (cd frontend && npm ci); `npm run build` checks it too")
    run = subprocess.run(["npm", "run", "--silent", "openapi:check"], cwd=FRONTEND, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, (f"frontend/src/lib/api-schema.d.ts is stale against frontend/openapi.json; "
                                 f"regenerate: cd frontend && npm run openapi:types\n{run.stdout}{run.stderr}")


def test_committed_patterns_ts_is_the_vocabularys():
    committed = (FRONTEND / "src" / "lib" / "patterns.ts").read_text(encoding="utf-8")
    assert committed == _generator().patterns(), f"frontend/src/lib/patterns.ts is stale; regenerate: {REGENERATE}"


def test_every_name_the_api_checks_follows_the_vocabulary():
    """Each pattern in the API's document is one of the vocabulary's (``mlstack_operator.contract``), with that
    kind's longest length, or one of the few rules that name something else (alert types and ids, condition
    reasons). A new hand-written pattern for a model, version, alias
    or Kubernetes name fails here."""
    from mlstack_operator import contract as c

    vocabulary = {c.MODEL_NAME_PATTERN: c.MODEL_NAME_MAX, c.VERSION_PATTERN: c.VERSION_MAX,
                  c.ALIAS_PATTERN: c.ALIAS_MAX, c.DNS_LABEL_PATTERN: c.DNS_LABEL_MAX,
                  c.OBJECT_NAME_PATTERN: c.OBJECT_NAME_MAX, c.CPU_PATTERN: c.QUANTITY_MAX,
                  c.MEMORY_PATTERN: c.QUANTITY_MAX, c.DEPLOYMENT_REF_PATTERN: c.DEPLOYMENT_REF_MAX}
    others = {r"^\d{1,20}(-\d{1,20})?$", r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$",
              r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"}
    doc = json.loads((FRONTEND / "openapi.json").read_text(encoding="utf-8"))
    wrong = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            pattern = node.get("pattern")
            if isinstance(pattern, str) and pattern not in others:
                if pattern not in vocabulary:
                    wrong.append(f"{where}: pattern {pattern!r} is not the vocabulary's")
                elif not 0 < node.get("maxLength", 0) <= vocabulary[pattern]:
                    wrong.append(f"{where}: maxLength {node.get('maxLength')} (at most {vocabulary[pattern]})")
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    walk(doc, "")
    assert wrong == []
