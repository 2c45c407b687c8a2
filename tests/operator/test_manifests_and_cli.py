"""manifests/ validate; `mlstack operator render` prints valid children and fails clearly on bad specs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlstack_operator.cli import main, render_documents
from tests.operator.schemas import REPO, crd_errors, k8s_validate, upstream_validate

MANIFESTS = REPO / "manifests"
EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_manifests_validate():
    peering_crd = None  # in crds/ (applied first), its object in operator/: never one apply of both
    for path in sorted((MANIFESTS / "crds").glob("*.yaml")) + sorted((MANIFESTS / "operator").glob("*.yaml")):
        for obj in docs(path):
            if obj["kind"] == "Kustomization":
                for res in obj["resources"]:
                    assert (path.parent / res).exists(), f"{path}: {res} missing"
            elif obj["kind"] == "ClusterKopfPeering":
                assert peering_crd is not None and obj["apiVersion"] == "kopf.dev/v1"
            else:
                k8s_validate(obj)
                if obj["kind"] == "CustomResourceDefinition" and obj["spec"]["group"] == "kopf.dev":
                    peering_crd = obj


def test_examples_validate_against_the_crd():
    assert {p.name for p in EXAMPLES} >= {"iris-onnx.yaml", "iris-rayserve.yaml", "iris-vm.yaml"}
    runtimes = set()
    for path in EXAMPLES:
        for obj in docs(path):
            if obj["kind"] == "Kustomization":
                assert sorted(obj["resources"]) == sorted(p.name for p in EXAMPLES if p.name != path.name)
                continue
            assert crd_errors(obj) == [], path
            runtimes.add((obj["spec"].get("runtime", "pod"), obj["spec"].get("server", "onnx")))
    assert runtimes >= {("pod", "onnx"), ("pod", "rayserve"), ("vm", "onnx")}


def test_operator_deployment_is_hardened():
    (dep,) = [d for d in docs(MANIFESTS / "operator" / "deployment.yaml")]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert any(a.startswith("--liveness=") for a in c["command"])
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert not c["image"].endswith(":latest")


def test_rbac_is_least_privilege():
    role = next(d for d in docs(MANIFESTS / "operator" / "rbac.yaml") if d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    granted = {(g, r): set(rule["verbs"])
               for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted[("mlstack.io", "modeldeployments/status")] == {"get", "patch"}
    assert "create" not in granted[("mlstack.io", "modeldeployments")]
    assert granted[("", "events")] == {"create"}


def test_render_examples_are_valid(tmp_path):
    objs = [o for p in EXAMPLES if p.name != "kustomization.yaml" for o in render_documents(p.read_text())]
    for o in objs:
        if o["kind"] in ("Deployment", "Service", "HorizontalPodAutoscaler"):
            k8s_validate(o)
    upstream_validate(objs, tmp_path)


def test_render_cli(tmp_path, capsys):
    assert main(["render", str(MANIFESTS / "examples" / "iris-onnx.yaml"), "--version", "iris_model=7"]) == 0
    out = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [o["kind"] for o in out] == ["Deployment", "Service"]
    assert "models:/iris_model/7" in out[0]["spec"]["template"]["spec"]["containers"][0]["command"]


@pytest.mark.parametrize("text,needle", [
    ("apiVersion: mlstack.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\nspec: {model: {name: m}}\n",
     "exactly one of model.version and model.alias"),
    ("apiVersion: mlstack.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\n"
     "spec: {model: {name: m, version: '1'}, runtime: vm}\n", "spec.vm is required"),
    ("a: [unclosed", "not YAML"),
    ("", "no ModelDeployment"),
])
def test_render_bad_input_exits_2(tmp_path, capsys, text, needle):
    f = tmp_path / "md.yaml"
    f.write_text(text)
    assert main(["render", str(f)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_render_missing_file(capsys):
    assert main(["render", "/nonexistent/md.yaml"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_mlstack_console_command_dispatches():
    exe = Path(sys.executable).parent / "mlstack"
    if not exe.exists():
        pytest.skip("the mlstack console script is not installed in this environment")
    proc = subprocess.run([str(exe), "operator", "render", str(MANIFESTS / "examples" / "iris-vm.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [o["kind"] for o in yaml.safe_load_all(proc.stdout)] == ["VirtualMachine", "Service"]
