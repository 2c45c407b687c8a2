"""Cluster mode: the API (MLSTACK_MODE=cluster) against the Kubernetes API emulator through a kubeconfig.

No operator runs here: ``/deployments`` must map to ModelDeployment custom resources, and
``/inference`` must go to the ``status.url`` of a Ready one (its status is patched in the emulator,
as the operator would, to point at a real ``mlstack serve``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deployments.conftest import ROWS, Api
from tests.utils.procs import free_port, http_ok, start, wait_until

REPO = Path(__file__).resolve().parents[2]
NS = "models"
MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"


@pytest.fixture(scope="module")
def emulator(workdir) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "tests.operator.emulator", "--port", str(port)],
                 workdir / "deployments" / f"emulator-{port}.log", ready=lambda: http_ok(url + "/version"),
                 timeout=60, cwd=REPO, what="API emulator")
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def kubeconfig(emulator, workdir) -> Path:
    path = workdir / "deployments" / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": emulator}}],
        "users": [{"name": "emu", "user": {}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}],
    }))
    return path


@pytest.fixture(scope="module")
def cluster_api(api_factory, kubeconfig, workdir) -> Api:
    # auth off: these tests are about the ModelDeployment mapping (tests/auth/test_kube.py covers cluster auth)
    return api_factory("cluster", {"MLSTACK_MODE": "cluster", "KUBECONFIG": str(kubeconfig), "MLSTACK_AUTH_MODE": "off",
                                   "MLSTACK_STATE_DIR": str(workdir / "deploy-state-cluster"),
                                   "MLSTACK_DEPLOYMENTS_WATCH_SECONDS": "0.3"})


@pytest.fixture
def client(cluster_api) -> Iterator[httpx.Client]:
    with cluster_api.client() as c:
        yield c


@pytest.fixture
def kube(emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator, timeout=10) as c:
        yield c


def test_crud_maps_to_custom_resources(client, kube, model):
    body = {"name": "iris", "spec": {"model": {"name": model.name, "alias": "champion"}, "replicas": 2,
                                     "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}}
    r = client.post("/deployments", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["metadata"]["uid"] and out["metadata"]["generation"] == 1
    assert out["status"]["phase"] == "Pending"

    cr = kube.get(MDS.format(ns=NS) + "/iris").json()
    assert cr["spec"]["model"] == {"name": model.name, "alias": "champion"}
    assert cr["spec"]["replicas"] == 2 and cr["spec"]["autoscaling"]["maxReplicas"] == 4
    assert cr["spec"]["runtime"] == "pod" and cr["spec"]["server"] == "onnx"

    r = client.post("/deployments", json=body)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]

    vm = {"name": "iris-vm", "namespace": "edge", "spec": {
        "model": {"name": model.name, "version": model.version}, "runtime": "vm",
        "vm": {"image": "quay.io/containerdisks/fedora:40", "cores": 2}}}
    assert client.post("/deployments", json=vm).status_code == 201  # a cluster may have KubeVirt

    bad = {"name": "bad", "spec": {"model": {"name": model.name}, "runtime": "vm"}}
    r = client.post("/deployments", json=bad)
    assert r.status_code == 422
    assert "exactly one of model.version and model.alias" in r.text
    assert kube.get(MDS.format(ns=NS) + "/bad").status_code == 404

    assert [d["metadata"]["name"] for d in client.get("/deployments").json()] == ["iris"]
    assert [d["metadata"]["name"] for d in client.get("/deployments", params={"namespace": "edge"}).json()] == [
        "iris-vm"]
    got = client.get("/deployments/iris").json()
    assert got["spec"]["autoscaling"]["minReplicas"] == 2 and got["metadata"]["namespace"] == NS

    # status written by the operator comes through
    kube.patch(MDS.format(ns=NS) + "/iris/status", json={"status": {
        "phase": "Queued", "queuePosition": 2, "observedGeneration": 1,
        "conditions": [{"type": "Admitted", "status": "False", "reason": "WaitingForQuota",
                        "message": "needs 1 cpu", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
               headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
    st = client.get("/deployments/iris").json()["status"]
    assert st["phase"] == "Queued" and st["queuePosition"] == 2
    assert st["conditions"][0]["reason"] == "WaitingForQuota"

    assert client.delete("/deployments/iris").status_code == 204
    assert kube.get(MDS.format(ns=NS) + "/iris").status_code == 404
    r = client.delete("/deployments/iris")
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert client.get("/deployments/iris").status_code == 404
    assert client.delete("/deployments/iris-vm", params={"namespace": "edge"}).status_code == 204


def test_invalid_spec_never_reaches_the_cluster(client, kube, model):
    r = client.post("/deployments", json={"name": "x" * 43, "spec": {
        "model": {"name": model.name, "version": "1", "alias": "champion"}, "replicas": 1.5}})
    assert r.status_code == 422
    locs = {tuple(d["loc"]) for d in r.json()["detail"]}
    assert ("body", "name") in locs and any("replicas" in loc for loc in locs)
    assert kube.get(MDS.format(ns=NS)).json()["items"] == []


def test_inference_goes_to_a_ready_deployment(client, kube, model, workdir, mlflow_uri):
    r = client.post("/inference", json={"input_data": ROWS[0], "model_version": model.version, "retries": 0})
    assert r.status_code == 503
    assert f"no Ready ModelDeployment serves {model.name} v{model.version}" in r.json()["detail"]

    assert client.post("/deployments", json={"name": "iris-live", "spec": {
        "model": {"name": model.name, "version": model.version}}}).status_code == 201
    port = free_port()
    server = start([sys.executable, "-m", "mlstack", "serve", "--model", f"models:/{model.name}/{model.version}",
                    "--host", "127.0.0.1", "--port", str(port), "--name", model.name],
                   workdir / "deployments" / f"serve-{port}.log",
                   ready=lambda: http_ok(f"http://127.0.0.1:{port}/v2/health/ready"), timeout=120,
                   env={"MLSTACK_MLFLOW_TRACKING_URI": mlflow_uri,
                        "MLSTACK_MODEL_CACHE_DIR": str(workdir / "deploy-serve-cache")},
                   what="mlstack serve")
    try:
        kube.patch(MDS.format(ns=NS) + "/iris-live/status", json={"status": {
            "phase": "Ready", "url": f"http://127.0.0.1:{port}", "resolvedVersion": model.version,
            "replicas": 1, "readyReplicas": 1}}, headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        r = client.post("/inference", json={"input_data": ROWS, "model_version": model.version})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == [0, 2] and r.json()["model_version"] == model.version

        def ready_alert():
            alerts = client.get("/alerts", params={"limit": 1000}).json()
            return [a for a in alerts if a["type"] == "deployment.phase" and a["deployment"] == "iris-live"
                    and a["data"]["phase"] == "Ready"]

        [alert] = wait_until(ready_alert, 30, interval=0.2, what="deployment.phase alert")
        assert alert["namespace"] == NS and alert["model"] == model.name and alert["version"] == model.version
        assert alert["data"]["mode"] == "cluster" and f"127.0.0.1:{port}" in alert["message"]
    finally:
        server.stop()
        client.delete("/deployments/iris-live")
