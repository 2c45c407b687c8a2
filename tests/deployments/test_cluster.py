"""Cluster mode on a real control plane: the API (MLSTACK_MODE=cluster, as its ServiceAccount ``mlstack/mlstack-api``
through a kubeconfig holding only its token) maps ``/deployments`` to ModelDeployment custom resources, and the
shared operator (its own ServiceAccount, every namespace) reconciles them: the real controllers, scheduler and fake
nodes make the pods Ready, and the status the operator writes comes back through the API.

Auth is off here (an anonymous admin; the API's own RBAC still applies): these tests are about the mapping,
tests/auth/test_kube.py covers cluster auth. Each module run has its own namespaces.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.k8s.controlplane import Kube
from tests.utils.deployments import ROWS, Api, wait_phase
from tests.utils.kube_api import cluster_api_env, unique
from tests.utils.procs import free_port, http_ok, start, wait_until

pytestmark = pytest.mark.slow
MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"
DEADLINE = 90.0


@pytest.fixture(scope="module")
def namespaces(k8s_admin: Kube) -> Iterator[tuple[str, str]]:
    """(the API's default namespace for this module, a second one), fresh per run; deleted after."""
    names = unique("deploy"), unique("edge")
    for ns in names:
        k8s_admin.ensure_namespace(ns)
    yield names
    for ns in names:
        k8s_admin.delete(f"/api/v1/namespaces/{ns}")


@pytest.fixture(scope="module")
def ns(namespaces) -> str:
    return namespaces[0]


@pytest.fixture(scope="module")
def cluster_api(api_factory, stack_env, api_kubeconfig, namespaces, workdir, mlstack_operator) -> Api:
    # the shared operator watches every namespace: it is requested here so that it always runs (a status this
    # module sees is the operator's, never a race with whether some other module started it)
    env = cluster_api_env(stack_env, api_kubeconfig, workdir / "deploy-state-cluster", MLSTACK_AUTH_MODE="off",
                          MLSTACK_DEPLOYMENTS_NAMESPACE=namespaces[0],
                          MLSTACK_DEPLOYMENTS_WATCH_SECONDS="0.3")
    return api_factory("cluster", env)


@pytest.fixture
def client(cluster_api) -> Iterator[httpx.Client]:
    with cluster_api.client() as c:
        yield c


def test_crud_maps_to_custom_resources(client, k8s_admin: Kube, namespaces, model, mlstack_operator):
    ns, edge = namespaces
    body = {"name": "iris", "spec": {"model": {"name": model.name, "alias": "champion"}, "replicas": 2,
                                     "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}}
    r = client.post("/deployments", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["metadata"]["uid"] and out["metadata"]["generation"] == 1 and out["metadata"]["namespace"] == ns
    assert out["status"]["phase"] == "Pending"  # what the API server returned: the operator has not run yet

    cr = k8s_admin.get(MDS.format(ns=ns) + "/iris")
    assert cr["metadata"]["uid"] == out["metadata"]["uid"]
    assert cr["spec"]["model"] == {"name": model.name, "alias": "champion"}
    assert cr["spec"]["replicas"] == 2 and cr["spec"]["autoscaling"]["maxReplicas"] == 4
    assert cr["spec"]["runtime"] == "pod" and cr["spec"]["server"] == "onnx"  # the CRD's defaults

    r = client.post("/deployments", json=body)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]

    vm = {"name": "iris-vm", "namespace": edge, "spec": {
        "model": {"name": model.name, "version": model.version}, "runtime": "vm",
        "vm": {"image": "quay.io/containerdisks/fedora:40", "cores": 2}}}
    assert client.post("/deployments", json=vm).status_code == 201  # a cluster may have KubeVirt

    bad = {"name": "bad", "spec": {"model": {"name": model.name}, "runtime": "vm"}}
    r = client.post("/deployments", json=bad)
    assert r.status_code == 422
    assert "exactly one of model.version and model.alias" in r.text
    assert k8s_admin.get(MDS.format(ns=ns) + "/bad") is None

    assert [d["metadata"]["name"] for d in client.get("/deployments").json()] == ["iris"]
    assert [d["metadata"]["name"] for d in client.get("/deployments", params={"namespace": edge}).json()] == [
        "iris-vm"]
    got = client.get("/deployments/iris").json()
    assert got["spec"]["autoscaling"]["minReplicas"] == 2 and got["metadata"]["namespace"] == ns

    # the status the operator writes comes through: resolved alias, the Service URL, and the two replicas the
    # real HPA controller scales the Deployment to (minReplicas; the operator leaves the count to the HPA)
    def ready_two():
        st = client.get("/deployments/iris").json()["status"]
        return st if st["phase"] == "Ready" and st.get("readyReplicas") == 2 else None

    try:
        st = wait_until(ready_two, DEADLINE, interval=0.2, what="iris Ready with 2 replicas")
    except TimeoutError:
        raise AssertionError(f"{client.get('/deployments/iris').json()}\n{mlstack_operator.log()[-4000:]}") from None
    assert st["resolvedVersion"] == model.version
    assert st["url"] == f"http://iris.{ns}.svc.cluster.local:8080"
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    assert st["observedGeneration"] == 1

    assert client.delete("/deployments/iris").status_code == 204
    wait_until(lambda: k8s_admin.get(MDS.format(ns=ns) + "/iris") is None, DEADLINE, what="iris deleted")
    r = client.delete("/deployments/iris")
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert client.get("/deployments/iris").status_code == 404
    # the real garbage collector takes the operator's children with it
    wait_until(lambda: not k8s_admin.items(f"/apis/apps/v1/namespaces/{ns}/deployments"), DEADLINE,
               what="children garbage-collected")
    assert client.delete("/deployments/iris-vm", params={"namespace": edge}).status_code == 204


def test_invalid_spec_never_reaches_the_cluster(client, k8s_admin: Kube, ns, model):
    r = client.post("/deployments", json={"name": "x" * 43, "spec": {
        "model": {"name": model.name, "version": "1", "alias": "champion"}, "replicas": 1.5}})
    assert r.status_code == 422
    locs = {tuple(d["loc"]) for d in r.json()["detail"]}  # the API's own validation (pydantic), field by field
    assert ("body", "name") in locs and any("replicas" in loc for loc in locs)
    assert all(o["metadata"]["name"] != "x" * 43 for o in k8s_admin.items(MDS.format(ns=ns)))


def test_inference_goes_to_a_ready_deployment(client, k8s_admin: Kube, ns, model, workdir, mlflow_uri,
                                              mlstack_operator):
    r = client.post("/inference", json={"input_data": ROWS[0], "model_version": model.version, "retries": 0})
    assert r.status_code == 503
    assert f"no Ready ModelDeployment serves {model.name} v{model.version}" in r.json()["detail"]

    assert client.post("/deployments", json={"name": "iris-live", "spec": {
        "model": {"name": model.name, "version": model.version}}}).status_code == 201
    st = wait_phase(client, "iris-live", {"Ready"}, timeout=DEADLINE)["status"]  # the operator's, for real
    cluster_url = f"http://iris-live.{ns}.svc.cluster.local:8080"
    assert st["url"] == cluster_url

    def ready_alert():
        alerts = client.get("/alerts", params={"limit": 1000}).json()
        return [a for a in alerts if a["type"] == "deployment.phase" and a["deployment"] == "iris-live"
                and a["namespace"] == ns and a["data"]["phase"] == "Ready"]

    [alert] = wait_until(ready_alert, 30, interval=0.2, what="deployment.phase alert")
    assert alert["model"] == model.name and alert["version"] == model.version
    assert alert["data"]["mode"] == "cluster" and cluster_url in alert["message"]

    # The fake nodes run no containers and there is no pod network: the Service URL the operator wrote cannot
    # be reached from here. A real `mlstack serve` stands in for the pods, and the test (cluster-admin) points
    # status.url at it through the status subresource. The operator rewrites status only when what it computes
    # changes (its own last write is the reference), so a Ready deployment's url stays as patched.
    port = free_port()
    server = start([sys.executable, "-m", "mlstack", "serve", "--model", f"models:/{model.name}/{model.version}",
                    "--host", "127.0.0.1", "--port", str(port), "--name", model.name],
                   workdir / "deployments" / f"serve-{port}.log",
                   ready=lambda: http_ok(f"http://127.0.0.1:{port}/v2/health/ready"), timeout=120,
                   env={"MLSTACK_MLFLOW_TRACKING_URI": mlflow_uri,
                        "MLSTACK_MODEL_CACHE_DIR": str(workdir / "deploy-serve-cache")},
                   what="mlstack serve")
    try:
        k8s_admin.patch(MDS.format(ns=ns) + "/iris-live/status", {"status": {"url": f"http://127.0.0.1:{port}"}})

        def infer():  # the API reuses its list of Ready deployments for endpoint_cache_seconds
            r = client.post("/inference", json={"input_data": ROWS, "model_version": model.version, "retries": 0})
            return r if r.status_code == 200 else None

        r = wait_until(infer, 30, interval=0.2, what="inference through the patched URL")
        assert r.json()["predictions"] == [0, 2] and r.json()["model_version"] == model.version
        st = client.get("/deployments/iris-live").json()["status"]
        assert st["phase"] == "Ready" and st["url"] == f"http://127.0.0.1:{port}"

        # by deployment name: straight to its status.url; an unknown one is a 404 naming it
        r = client.post("/inference", json={"deployment": f"{ns}/iris-live", "input_data": ROWS, "retries": 0})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == [0, 2] and r.json()["model_name"] == model.name
        assert r.json()["model_version"] == model.version
        r = client.post("/inference", json={"deployment": f"{ns}/no-such", "input_data": ROWS})
        assert r.status_code == 404 and r.json()["detail"] == f"ModelDeployment {ns}/no-such not found"

        # status.resolvedVersion changing (what the operator writes when a followed alias moved) becomes one
        # deployment.rolled alert from the API's status watch
        k8s_admin.patch(MDS.format(ns=ns) + "/iris-live/status", {"status": {"resolvedVersion": "999"}})

        def rolled_alert():
            alerts = client.get("/alerts", params={"limit": 1000}).json()
            return [a for a in alerts if a["type"] == "deployment.rolled" and a["deployment"] == "iris-live"
                    and a["namespace"] == ns]

        [rolled] = wait_until(rolled_alert, 30, interval=0.2, what="deployment.rolled alert")
        assert rolled["data"]["from"] == model.version and rolled["data"]["to"] == "999"
        assert rolled["data"]["mode"] == "cluster" and rolled["version"] == "999"
    finally:
        server.stop()
        client.delete("/deployments/iris-live")


def test_canary_children_are_wired_for_an_exact_split_and_promote_abort_change_the_resource(
        client, k8s_admin: Kube, ns, mlflow_uri, mlstack_operator):
    """What the operator builds for a canary (fake nodes: the pods never run, so the forwarding itself is measured
    in tests/serving/test_canary.py and tests/deployments/test_local_canary.py), and promote/abort through the API
    as changes of the custom resource that the operator turns into rolled/pruned children."""
    from tests.utils.deployments import register_onnx

    name = f"canary_{unique('m').replace('-', '_')}"
    v1, v2 = register_onnx(mlflow_uri, name), register_onnx(mlflow_uri, name)
    deps, svcs = f"/apis/apps/v1/namespaces/{ns}/deployments", f"/api/v1/namespaces/{ns}/services"
    hpas = f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers"
    small = {"cpu": "50m", "memory": "64Mi"}
    for dep in ("cnr", "cna"):
        assert client.post("/deployments", json={"name": dep, "spec": {
            "model": {"name": name, "version": v1}, "canary": {"version": v2, "trafficPercent": 10},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 6}, "resources": small}}).status_code == 201
    for dep in ("cnr", "cna"):
        st = wait_phase(client, dep, {"Ready"}, timeout=DEADLINE)["status"]
        assert st["resolvedVersion"] == v1 and st["canaryVersion"] == v2

    def command(dep: str) -> list[str]:
        return k8s_admin.get(f"{deps}/{dep}")["spec"]["template"]["spec"]["containers"][0]["command"]

    stable = command("cnr")
    assert stable[stable.index("--model") + 1] == f"models:/{name}/{v1}"
    assert stable[stable.index("--canary-url") + 1] == f"http://cnr-canary.{ns}.svc.cluster.local:8080"
    assert stable[stable.index("--canary-percent") + 1] == "10"
    canary = command("cnr-canary")
    assert canary[canary.index("--model") + 1] == f"models:/{name}/{v2}" and "--canary-url" not in canary
    # the main Service reaches only stable pods; the canary's Service only the canary's (what stable forwards to)
    assert k8s_admin.get(f"{svcs}/cnr")["spec"]["selector"] == {"mlstack.io/deployment": "cnr",
                                                                "mlstack.io/track": "stable"}
    assert k8s_admin.get(f"{svcs}/cnr-canary")["spec"]["selector"] == {"mlstack.io/deployment": "cnr",
                                                                       "mlstack.io/track": "canary"}
    # each track scales on its own HPA (minReplicas 2 = 1 stable + 1 canary; the share never depends on them)
    hpa, canary_hpa = k8s_admin.get(f"{hpas}/cnr")["spec"], k8s_admin.get(f"{hpas}/cnr-canary")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"], hpa["scaleTargetRef"]["name"]) == (1, 5, "cnr")
    assert (canary_hpa["minReplicas"], canary_hpa["maxReplicas"], canary_hpa["scaleTargetRef"]["name"]) == (
        1, 1, "cnr-canary")
    pods = k8s_admin.items(f"/api/v1/namespaces/{ns}/pods", labelSelector="mlstack.io/deployment=cnr")
    assert sorted(p["metadata"]["labels"]["mlstack.io/track"] for p in pods) == ["canary", "stable"]

    # promote: one call; the resource is pinned to the canary's version without a canary, the operator rolls the
    # stable Deployment to it and prunes the canary's Deployment, Service and HPA
    r = client.post("/deployments/cnr/canary/promote", params={"namespace": ns})
    assert r.status_code == 200, r.text
    cr = k8s_admin.get(MDS.format(ns=ns) + "/cnr")
    assert cr["spec"]["model"] == {"name": name, "version": v2} and "canary" not in cr["spec"]
    assert cr["metadata"]["generation"] == 2
    for path in (f"{deps}/cnr-canary", f"{svcs}/cnr-canary", f"{hpas}/cnr-canary"):
        wait_until(lambda p=path: k8s_admin.get(p) is None, DEADLINE, what=f"{path} pruned")
    wait_until(lambda: command("cnr")[command("cnr").index("--model") + 1] == f"models:/{name}/{v2}", DEADLINE,
               what="stable rolled to the canary's version")
    assert "--canary-url" not in command("cnr")
    st = wait_until(lambda: (s := client.get("/deployments/cnr").json()["status"])["resolvedVersion"] == v2
                    and not s.get("canaryVersion") and s, DEADLINE, what="status after the promotion")
    assert st["observedGeneration"] == 2
    r = client.post("/deployments/cnr/canary/promote")
    assert r.status_code == 409 and "has no canary" in r.json()["detail"]

    # abort: the canary goes, the stable version stays
    r = client.post("/deployments/cna/canary/abort")
    assert r.status_code == 200, r.text
    cr = k8s_admin.get(MDS.format(ns=ns) + "/cna")
    assert cr["spec"]["model"] == {"name": name, "version": v1} and "canary" not in cr["spec"]
    for path in (f"{deps}/cna-canary", f"{svcs}/cna-canary", f"{hpas}/cna-canary"):
        wait_until(lambda p=path: k8s_admin.get(p) is None, DEADLINE, what=f"{path} pruned")
    wait_until(lambda: "--canary-url" not in command("cna"), DEADLINE, what="stable stops forwarding")
    assert k8s_admin.get(f"{svcs}/cna")["spec"]["selector"]["mlstack.io/track"] == "stable"
    assert client.post("/deployments/cna/canary/abort").status_code == 409
    assert client.post("/deployments/nope/canary/abort").status_code == 404
    for dep in ("cnr", "cna"):
        assert client.delete(f"/deployments/{dep}").status_code == 204


def test_quality_reports_latency_from_the_payload_stream(client, ns, model, redis_url):
    """Cluster mode: the API has no monitor of its own (`mlstack monitor` drains the pods into the payload stream,
    tests/monitoring/test_monitor_cluster.py); /quality reads the latency window from that stream itself."""
    import json

    import redis

    assert client.post("/deployments", json={"name": "iris-q", "spec": {
        "model": {"name": model.name, "version": model.version}}}).status_code == 201
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    stream = f"mlstack:monitoring:payloads:{ns}/iris-q"
    try:
        for i, ms in enumerate((1.0, 2.0, 3.0, 40.0)):  # what the monitor writes for each drained record
            track = "shadow" if ms == 40.0 else "stable"  # a shadow's copy is not the live version's latency
            r.xadd(stream, {"r": json.dumps({"id": f"q{i}", "ts": 0, "model": model.name, "version": model.version,
                                             "track": track, "latency_ms": ms, "inputs": [ROWS[0]],
                                             "outputs": [0]})})
        q = client.get("/deployments/iris-q/quality")
        assert q.status_code == 200, q.text
        lat = q.json()["latency"]
        assert lat["samples"] == 3 and lat["p50_ms"] == 2.0 and 2.9 < lat["p99_ms"] <= 3.0, lat
        assert q.json()["payloads"]["stream"] == stream
    finally:
        r.delete(stream)
        r.close()
        client.delete("/deployments/iris-q")
