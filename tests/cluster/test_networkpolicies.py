"""The NetworkPolicies for model servers (``manifests/namespaces``) and Ray (``manifests/platform``), server-side
applied on the real control plane (issue 13, items 2 and 3), and their selectors evaluated by the API server
against the pods the operator's builders and the manifests really make.

The control plane of the test tier has fake nodes and no CNI, so nothing here *enforces* a policy (no packet is
dropped): what is tested is that the objects are valid, stored as written, and select exactly the pods they are
about. Enforcement needs a CNI that implements NetworkPolicy (kindnet since kind v0.24, Calico, Cilium)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import yaml

from mlstack.orgs.builders import model_servers_policy_spec
from mlstack_operator.builders import Versions, build_deployment, build_rayservice
from mlstack_operator.contract import ModelDeployment
from mlstack_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]


def test_the_models_namespace_and_organisations_get_the_same_model_server_policy():
    """One source: the API builds each organisation's policy; the shared namespace's manifest says the same."""
    manifest = yaml.safe_load((ROOT / "manifests/namespaces/model-servers-networkpolicy.yaml").read_text())
    assert manifest["spec"] == model_servers_policy_spec()


def _selector(sel: dict) -> str:
    """A LabelSelector as kubectl's -l syntax (the API server evaluates it)."""
    parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        op, key, values = e["operator"], e["key"], e.get("values", [])
        parts.append({"DoesNotExist": f"!{key}", "Exists": key, "In": f"{key} in ({','.join(values)})",
                      "NotIn": f"{key} notin ({','.join(values)})"}[op])
    return ",".join(parts)


def _pod(name: str, labels: dict, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}


def _md(name: str, namespace: str, server: str) -> ModelDeployment:
    return ModelDeployment.model_validate({
        "apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1},
        "spec": {"model": {"name": "iris_model", "version": "1"}, "server": server}})


def _names(k8s, namespace: str, selector: str) -> set[str]:
    out = k8s.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "name")
    return {line.split("/", 1)[1] for line in out.stdout.split()}


def test_model_server_and_ray_policies_apply_and_select_the_right_pods(k8s, k8s_admin):
    k8s.kubectl("apply", "--server-side", "--validate=strict", "--field-manager=mlstack-tests-netpol",
                "--force-conflicts", "-k", "manifests/namespaces")
    # the platform kustomization also holds MLflow's PVC; the Ray policy alone is what this test is about
    ray_policy = yaml.safe_load((ROOT / "manifests/platform/ray-networkpolicy.yaml").read_text())
    k8s.kubectl("apply", "--server-side", "--validate=strict", "--field-manager=mlstack-tests-netpol",
                "-f", "-", input=json.dumps(ray_policy))

    stored = json.loads(k8s.kubectl("get", "networkpolicy", "-n", "models", "mlstack-model-servers",
                                    "-o", "json").stdout)["spec"]
    assert sorted(stored["policyTypes"]) == ["Egress", "Ingress"]
    egress_ports = sorted((p["protocol"], p["port"]) for rule in stored["egress"] for p in rule.get("ports", []))
    assert egress_ports == [("TCP", 53), ("TCP", 5000), ("UDP", 53)]
    # no rule opens egress to everything (a rule without "to" would), nor ingress from everywhere
    assert all(rule.get("to") for rule in stored["egress"]) and all(rule.get("from") for rule in stored["ingress"])

    # the pods the operator's builders make, a VM's virt-launcher pod, and another pod of the namespace
    settings = OperatorSettings()
    onnx = build_deployment(_md("np-onnx", "models", "onnx"), "1", settings)
    rs = build_rayservice(_md("np-ray", "models", "rayserve"), Versions("1"), settings)
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    onnx_labels = onnx["spec"]["template"]["metadata"]["labels"]
    assert onnx["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    pods = {"np-onnx": onnx_labels, "np-ray-head": head,
            "np-vm": {**onnx_labels, "kubevirt.io": "virt-launcher"}, "np-other": {"app": "something-else"}}
    manifest = {"apiVersion": "v1", "kind": "List",
                "items": [_pod(n, lbl, "models") for n, lbl in pods.items()]}
    k8s.kubectl("apply", "--server-side", "--field-manager=mlstack-tests-netpol", "-f", "-",
                input=json.dumps(manifest))
    try:
        selected = _names(k8s, "models", _selector(stored["podSelector"]))
        assert selected >= {"np-onnx", "np-ray-head"}
        assert not selected & {"np-vm", "np-other"}
        # ingress from the API: its pod template's labels match the rule's podSelector
        api = yaml.safe_load((ROOT / "manifests/fastapi/deployment.yaml").read_text())
        api_labels = api["spec"]["template"]["metadata"]["labels"]
        api_rule = next(f for r in stored["ingress"] for f in r["from"]
                        if f.get("namespaceSelector", {}).get("matchLabels", {}).get(
                            "kubernetes.io/metadata.name") == "mlstack")
        assert all(api_labels.get(k) == v for k, v in api_rule["podSelector"]["matchLabels"].items())
        # the namespaces the rules name carry the label the API server sets on every namespace
        for ns in ("mlstack", "mlflow"):
            labels = json.loads(k8s.kubectl("get", "namespace", ns, "-o", "json").stdout)["metadata"]["labels"]
            assert labels["kubernetes.io/metadata.name"] == ns
    finally:
        k8s.kubectl("delete", "pods", "-n", "models", *pods, "--wait=false", check=False)

    ray = json.loads(k8s.kubectl("get", "networkpolicy", "-n", "ray", "ray-ingress", "-o", "json").stdout)["spec"]
    assert ray["policyTypes"] == ["Ingress"] and ray["podSelector"] == {}
    api_ports = sorted(p["port"] for r in ray["ingress"] for f in r["from"]
                       if f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "mlstack-api"
                       for p in r["ports"])
    assert api_ports == [6379, 8000, 8265, 10001]
    # nothing in the manifests puts Ray (or Redis) behind a Service that leaves the namespace
    for path in [*ROOT.glob("manifests/**/*.yaml"), *ROOT.glob("helm-values/*.yaml")]:
        for obj in yaml.safe_load_all(path.read_text()):
            if isinstance(obj, dict) and obj.get("kind") == "Service":
                sel = json.dumps(obj["spec"].get("selector", {}))
                if "ray.io" in sel or "redis" in sel:
                    assert obj["spec"].get("type", "ClusterIP") == "ClusterIP", path
