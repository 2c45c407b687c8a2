"""The operator image (operator/Dockerfile) installs the mlstack wheel with the ``operator`` extra only. Without
Docker here, this checks that extra (read off the Dockerfile's install line, resolved through pyproject.toml) against
what the operator really imports, under ``PYTHONPROFILEIMPORTTIME``: one process imports every module of
mlstack_operator, runs every import statement of its source (the lazy ones in functions too: kopf's CLI, the MLflow
client, the kubernetes client), resolves a registered model's alias through the operator's resolver against the
session's real MLflow server, renders an example (``mlstack-operator render``) and prints ``mlstack-operator --help``;
another runs ``mlstack-operator run`` until its watches start (on an API server that is not there: they retry). Every
third-party distribution they imported must be declared for the image or required by what is."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import yaml

from tests.k8s.fixtures import MODEL
from tests.utils.image_deps import ROOT, closure, image_requirements, imported_modules, undeclared
from tests.utils.procs import BIN, free_port, start

OPERATOR = ROOT / "operator" / "mlstack_operator"
EXAMPLE = ROOT / "manifests" / "examples" / "iris-canary-autoscaling.yaml"
# imported by the MLflow client and the kubernetes client only when installed (the test venv has the API's packages)
CLIENTS_OPTIONAL = frozenset({
    "pandas", "numpy",  # mlflow.data.dataset_registry (under contextlib.suppress(ImportError))
    "scipy",  # mlflow.models.utils (try: from scipy.sparse import ...)
    "kubernetes_validate",  # kubernetes.dynamic.client (try: import kubernetes_validate)
    "blinker",  # oauthlib.signals (the kubernetes client's requests-oauthlib)
    "uvloop",  # kopf._kits.loops (kopf run)
})

SCRIPT = """
import asyncio, importlib, pkgutil, sys
import mlstack_operator
for m in pkgutil.walk_packages(mlstack_operator.__path__, "mlstack_operator."):
    importlib.import_module(m.name)
exec(sys.argv[3])  # every import statement of the operator's source
from mlstack_operator.cli import main
from mlstack_operator.resolver import ModelResolver
print("resolved", asyncio.run(ModelResolver(sys.argv[1]).alias(sys.argv[2], "champion")))
assert main(["render", sys.argv[4]]) == 0
try:
    main(["--help"])
except SystemExit as e:
    assert not e.code, e
"""


def operator_import_statements() -> str:
    """Every third-party import statement in mlstack_operator's source, at any depth, as top-level code."""
    lines = []
    for path in sorted(OPERATOR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                lines += [ast.unparse(ast.Import([a])) for a in node.names if not a.name.startswith("mlstack")]
            elif (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__"
                  and not node.module.startswith("mlstack")):
                lines.append(ast.unparse(node))
    return "\n".join(sorted(set(lines)))


def nowhere_kubeconfig(path):
    """A kubeconfig of an API server that is not there."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "nobody", "user": {"token": "not-a-token"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}]}))
    return path


def test_the_operator_image_holds_everything_the_operator_imports(registered_model, tmp_path):
    statements = operator_import_statements()
    assert "from mlflow import MlflowClient" in statements and "from kopf import cli as kopf_cli" in statements
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, registered_model, MODEL, statements, str(EXAMPLE)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert re.search(r"^resolved \d+$", out.stdout, re.M), out.stdout[-2000:]
    assert "kind: Deployment" in out.stdout and "usage: mlstack-operator" in out.stdout

    log = tmp_path / "operator.log"
    watching = "watch /apis/mlstack.io/v1alpha1/modeldeployments"
    run = start([str(BIN / "mlstack-operator"), "run", "--standalone", "-A"], log,
                ready=lambda: watching in log.read_text(), timeout=120, what="mlstack-operator run", cwd=tmp_path,
                env={"PYTHONPROFILEIMPORTTIME": "1", "KUBECONFIG": str(nowhere_kubeconfig(tmp_path / "kubeconfig")),
                     "MLSTACK_OPERATOR_MLFLOW_TRACKING_URI": registered_model})
    run.stop()

    used = imported_modules(out.stderr, CLIENTS_OPTIONAL) | imported_modules(log.read_text(), CLIENTS_OPTIONAL)
    assert {"kopf", "kubernetes", "mlflow", "pydantic", "yaml"} <= used, sorted(used)  # the log was read as intended
    missing = undeclared(used, image_requirements(ROOT / "operator" / "Dockerfile", "build"))
    assert not missing, f"the operator imports {missing}: add them to pyproject.toml's operator extra"


def test_the_operator_image_holds_nothing_of_the_apis_or_the_model_servers():
    installed = closure(image_requirements(ROOT / "operator" / "Dockerfile", "build"))
    assert {"kopf", "kubernetes", "mlflow-skinny"} <= installed, sorted(installed)
    assert not installed & {"ray", "mlflow", "redis", "onnxruntime", "scikit-learn", "grpcio"}, sorted(installed)
