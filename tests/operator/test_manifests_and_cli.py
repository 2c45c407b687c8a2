"""manifests/crds, manifests/operator and the examples meet the real API server; `mlstack operator render` prints
children the real server accepts (strict field validation, KubeRay's real CRD, KubeVirt's where ../shared has it)
and fails clearly on bad specs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlstack_operator.cli import main, render_documents
from tests.k8s.controlplane import Cluster, Kube
from tests.utils.operator_schemas import REPO

MANIFESTS = REPO / "manifests"
EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))
VM_CRD = "virtualmachines.kubevirt.io"


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def server_dry_run(k8s: Cluster, objs: list[dict[str, Any]]) -> subprocess.CompletedProcess:
    """``kubectl apply --server-side --dry-run=server --validate=strict`` of ``objs``: the real server's verdict."""
    return k8s.kubectl("apply", "--server-side", "--dry-run=server", "--validate=strict", "--force-conflicts",
                       "--field-manager=mlstack-tests-render", "-f", "-", input=yaml.safe_dump_all(objs), check=False)


def assert_accepted(k8s: Cluster, objs: list[dict[str, Any]]) -> None:
    out = server_dry_run(k8s, objs)
    assert out.returncode == 0, out.stderr
    assert not [ln for ln in out.stderr.splitlines() if ln.startswith("Warning:")], out.stderr
    assert out.stdout.count("(server dry run)") == len(objs), out.stdout


def test_the_operator_runs_standalone_without_peering():
    """One replica, Recreate, kopf --standalone: a replacement takes over at once (kopf peering kept a killed
    instance's record for up to 60 s); so no peering CRD, object or grant anywhere (test_apply.py converges a
    fresh cluster for real)."""
    (dep,) = docs(MANIFESTS / "operator" / "deployment.yaml")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert "--standalone" in dep["spec"]["template"]["spec"]["containers"][0]["command"]
    for folder in ("crds", "operator"):
        assert "kopf.dev" not in "".join(p.read_text() for p in (MANIFESTS / folder).glob("*.yaml"))
        k = docs(MANIFESTS / folder / "kustomization.yaml")[0]
        for res in k["resources"]:
            assert (MANIFESTS / folder / res).exists(), f"{folder}: {res} missing"


def test_examples_cover_every_runtime_and_the_kustomization_lists_them():
    assert {p.name for p in EXAMPLES} >= {"iris-onnx.yaml", "iris-rayserve.yaml", "iris-vm.yaml"}
    runtimes = set()
    for path in EXAMPLES:
        for obj in docs(path):
            if obj["kind"] == "Kustomization":
                assert sorted(obj["resources"]) == sorted(p.name for p in EXAMPLES if p.name != path.name)
                continue
            runtimes.add((obj["spec"].get("runtime", "pod"), obj["spec"].get("server", "onnx")))
    assert runtimes >= {("pod", "onnx"), ("pod", "rayserve"), ("vm", "onnx")}


def test_examples_accepted_by_the_real_crd(k8s, k8s_admin: Kube):
    """The CRD's structural schema, defaults and CEL rules, evaluated by the API server itself."""
    k8s_admin.ensure_namespace("models")
    assert_accepted(k8s, [o for p in EXAMPLES for o in docs(p) if o["kind"] == "ModelDeployment"])


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
    assert granted[("mlstack.io", "modeldeployments/status")] == {"patch"}  # the audit-log test measures the rest
    assert "create" not in granted[("mlstack.io", "modeldeployments")]
    assert granted[("", "events")] == {"create"}


def rendered_children() -> list[dict[str, Any]]:
    return [o for p in EXAMPLES if p.name != "kustomization.yaml" for o in render_documents(p.read_text())]


def test_rendered_children_accepted_by_the_real_server(k8s, k8s_admin: Kube):
    """Deployments, Services, HPAs and RayServices (KubeRay's real CRD) of every example, strict."""
    k8s_admin.ensure_namespace("models")
    objs = [o for o in rendered_children() if o["kind"] != "VirtualMachine"]
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "RayService"}
    assert_accepted(k8s, objs)


def test_rendered_virtual_machine_accepted_by_kubevirts_crd(k8s, k8s_admin: Kube):
    if k8s_admin.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{VM_CRD}") is None:
        pytest.skip(f"{VM_CRD} is not installed (its CRD comes from ../shared/schemas, only on the team's "
                    "machines): the rendered VirtualMachine was not checked")
    k8s_admin.ensure_namespace("models")
    vms = [o for o in rendered_children() if o["kind"] == "VirtualMachine"]
    assert vms
    assert_accepted(k8s, vms)


def test_strict_dry_run_refuses_an_unknown_field(k8s, k8s_admin: Kube):
    """The control for the two tests above."""
    k8s_admin.ensure_namespace("models")
    ray = next(o for o in rendered_children() if o["kind"] == "RayService")
    ray["spec"]["rayClusterConfig"]["headGroupSpec"]["bogusField"] = 1
    out = server_dry_run(k8s, [ray])
    assert out.returncode != 0 and "bogusField" in out.stderr, out.stderr


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


@pytest.mark.parametrize("command", [["mlstack", "operator"], ["mlstack-operator"]])
def test_console_commands_render(command):
    """The operator's own entry point, and ``mlstack operator`` which hands over to it (the API's CLI imports
    nothing of the operator)."""
    exe = Path(sys.executable).parent / command[0]
    if not exe.exists():
        pytest.skip(f"the {command[0]} console script is not installed in this environment")
    proc = subprocess.run([str(exe), *command[1:], "render", str(MANIFESTS / "examples" / "iris-vm.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [o["kind"] for o in yaml.safe_load_all(proc.stdout)] == ["VirtualMachine", "Service"]
