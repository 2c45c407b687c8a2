"""End to end: the real kopf operator (a subprocess) against the emulated API server and a real MLflow.

The emulator has no controllers and no garbage collector (tests/operator/emulator.py): child
readiness is simulated by patching the child's status, deletion is checked via ownerReferences.
Every wait polls with a deadline.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.utils.procs import Proc, free_port, http_ok, start, wait_until

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MODEL = "e2e_iris"
MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"
DEPS = "/apis/apps/v1/namespaces/{ns}/deployments"
DEADLINE = 45.0


class Api:
    """A tiny synchronous client for the emulator (what kubectl would do)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def get(self, path: str) -> dict[str, Any] | None:
        r = self.http.get(path)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        return self.http.get(path, params=params).raise_for_status().json()["items"]

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.http.post(path, json=obj).raise_for_status().json()

    def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        r = self.http.patch(path, json=patch, headers={"Content-Type": "application/merge-patch+json"})
        return r.raise_for_status().json()

    def delete(self, path: str) -> None:
        self.http.delete(path).raise_for_status()


def md(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("model", {"name": MODEL, "alias": "champion"})
    return {"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def register(tracking_uri: str, name: str) -> None:
    """Log a tiny sklearn model and register it as a new version of ``name``."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    model = LogisticRegression(max_iter=200).fit([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]], [0, 1, 0, 1])
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model", registered_model_name=name,
                                 serialization_format="cloudpickle")


@pytest.fixture(scope="module")
def registry(mlflow_uri: str) -> str:
    """A registered model (version 1, alias champion) in the session's MLflow."""
    from mlflow import MlflowClient

    register(mlflow_uri, MODEL)
    MlflowClient(mlflow_uri).set_registered_model_alias(MODEL, "champion", "1")
    return mlflow_uri


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "tests.operator.emulator", "--port", str(port)],
                 tmp_path_factory.mktemp("emu") / "emulator.log", ready=lambda: http_ok(url + "/version"),
                 timeout=60, cwd=REPO, what="API emulator")
    yield url
    proc.stop()


class Operator:
    def __init__(self, emulator: str, registry: str, logdir: Path) -> None:
        self.emulator, self.registry, self.logdir = emulator, registry, logdir
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> None:
        port = free_port()
        self.starts += 1
        env = {
            "MLSTACK_OPERATOR_KUBE_SERVER": self.emulator,
            "MLSTACK_OPERATOR_KUBE_INSECURE": "true",
            "MLSTACK_OPERATOR_REGISTRY_URI": self.registry,
            "MLSTACK_OPERATOR_FAILED_RETRY_SECONDS": "3",
            "MLSTACK_OPERATOR_RESOLVE_CACHE_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = start([sys.executable, "-m", "mlstack_operator.cli", "run", "--standalone",
                           f"--liveness=http://127.0.0.1:{port}/healthz"],
                          self.logdir / f"operator-{self.starts}.log",
                          ready=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=90, env=env,
                          cwd=REPO, what="operator")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def log(self) -> str:
        return self.proc.log_tail(200_000) if self.proc else ""


@pytest.fixture(scope="module")
def operator(emulator, registry, tmp_path_factory) -> Iterator[Operator]:
    op = Operator(emulator, registry, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="module")
def api(emulator) -> Api:
    return Api(emulator)


def wait_status(api: Api, ns: str, name: str, op: Operator, check, what: str) -> dict[str, Any]:
    def probe():
        obj = api.get(MDS.format(ns=ns) + f"/{name}")
        status = (obj or {}).get("status") or {}
        return status if check(status) else None

    try:
        return wait_until(probe, DEADLINE, interval=0.1, what=what)
    except TimeoutError:
        obj = api.get(MDS.format(ns=ns) + f"/{name}")
        raise AssertionError(f"{what}: last status {(obj or {}).get('status')}\n{op.log()[-4000:]}") from None


def mark_ready(api: Api, ns: str, name: str) -> None:
    dep = api.get(DEPS.format(ns=ns) + f"/{name}")
    assert dep is not None
    n = dep["spec"].get("replicas", 1)
    api.patch(DEPS.format(ns=ns) + f"/{name}/status", {"status": {
        "observedGeneration": dep["metadata"]["generation"], "replicas": n, "readyReplicas": n,
        "updatedReplicas": n, "availableReplicas": n}})


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def test_apply_children_ready_url(api, operator):
    ns = "e2e-ready"
    created = api.create(MDS.format(ns=ns), md("iris", ns, replicas=2))
    uid = created["metadata"]["uid"]
    wait_until(lambda: api.get(DEPS.format(ns=ns) + "/iris") and api.get(f"/api/v1/namespaces/{ns}/services/iris"),
               DEADLINE, what="Deployment and Service")
    for path in (DEPS.format(ns=ns) + "/iris", f"/api/v1/namespaces/{ns}/services/iris"):
        (owner,) = api.get(path)["metadata"]["ownerReferences"]
        assert owner["uid"] == uid and owner["controller"] and owner["kind"] == "ModelDeployment"
    status = wait_status(api, ns, "iris", operator, lambda s: s.get("phase") == "Deploying", "Deploying")
    assert status["resolvedVersion"] == "1" and conds(status)["ModelResolved"]["status"] == "True"
    assert conds(status)["Admitted"]["status"] == "True"

    mark_ready(api, ns, "iris")
    status = wait_status(api, ns, "iris", operator, lambda s: s.get("phase") == "Ready", "Ready")
    assert status["url"] == "http://iris.e2e-ready.svc.cluster.local:8080"
    assert status["readyReplicas"] == 2 and status["observedGeneration"] == 1
    assert conds(status)["Ready"]["status"] == "True" and conds(status)["Available"]["status"] == "True"
    events = wait_until(lambda: [e for e in api.items(f"/api/v1/namespaces/{ns}/events")
                                 if e["involvedObject"]["name"] == "iris" and e["reason"] == "Ready"],
                        DEADLINE, what="a Ready event")
    assert events[0]["involvedObject"]["uid"] == uid


def test_spec_update_updates_children_and_delete(api, operator):
    ns = "e2e-update"
    api.create(MDS.format(ns=ns), md("upd", ns, replicas=1))
    wait_status(api, ns, "upd", operator, lambda s: s.get("phase") == "Deploying", "Deploying")
    path = MDS.format(ns=ns) + "/upd"

    api.patch(path, {"spec": {"replicas": 3, "resources": {"cpu": "250m", "memory": "256Mi"}}})
    dep = wait_until(lambda: (d := api.get(DEPS.format(ns=ns) + "/upd")) and d["spec"].get("replicas") == 3 and d,
                     DEADLINE, what="replicas 3")
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "250m"

    api.patch(path, {"spec": {"canary": {"version": "1", "trafficPercent": 34}, "model": {"alias": None,
                                                                                         "version": "1"}}})
    # canary == version is rejected by the CRD; the emulator lets it through: the operator must say why
    status = wait_status(api, ns, "upd", operator, lambda s: s.get("phase") == "Failed", "Failed (invalid)")
    assert "canary.version must differ" in conds(status)["Ready"]["message"]

    api.patch(path, {"spec": {"canary": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}})
    wait_until(lambda: api.get(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/upd"), DEADLINE,
               what="HPA")
    status = wait_status(api, ns, "upd", operator, lambda s: s.get("phase") == "Deploying", "Deploying again")
    assert status["observedGeneration"] == api.get(path)["metadata"]["generation"]

    api.patch(path, {"spec": {"autoscaling": None, "replicas": 1}})
    wait_until(lambda: api.get(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/upd") is None,
               DEADLINE, what="HPA pruned")

    uid = api.get(path)["metadata"]["uid"]
    api.delete(path)
    wait_until(lambda: api.get(path) is None, DEADLINE, what="ModelDeployment gone")
    # No garbage collector in the emulator: the children are the GC's through their ownerReferences.
    for child in api.items(DEPS.format(ns=ns)) + api.items(f"/api/v1/namespaces/{ns}/services"):
        assert [o["uid"] for o in child["metadata"]["ownerReferences"]] == [uid]
        assert child["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True


def test_unknown_model_fails_then_recovers(api, operator, registry):
    ns = "e2e-failed"
    api.create(MDS.format(ns=ns), md("ghost", ns, model={"name": "ghost_model", "version": "1"}))
    status = wait_status(api, ns, "ghost", operator, lambda s: s.get("phase") == "Failed", "Failed")
    assert conds(status)["ModelResolved"]["reason"] == "ModelNotFound"
    assert "ghost_model" in conds(status)["ModelResolved"]["message"]
    assert api.get(DEPS.format(ns=ns) + "/ghost") is None

    # The model appears in the registry: the slow retry picks it up.
    register(registry, "ghost_model")
    wait_status(api, ns, "ghost", operator, lambda s: s.get("phase") == "Deploying", "recovered")
    assert api.get(DEPS.format(ns=ns) + "/ghost") is not None


def test_schema_invalid_spec_fails_at_once(api, operator):
    ns = "e2e-invalid"
    api.create(MDS.format(ns=ns), md("bad", ns, model={"name": MODEL, "version": "1", "alias": "champion"}))
    status = wait_status(api, ns, "bad", operator, lambda s: s.get("phase") == "Failed", "Failed")
    assert conds(status)["Ready"]["reason"] == "InvalidSpec"
    assert "exactly one of model.version and model.alias" in conds(status)["Ready"]["message"]


def test_restart_never_duplicates(api, operator):
    ns = "e2e-restart"
    for name in ("r1", "r2"):
        api.create(MDS.format(ns=ns), md(name, ns, canary={"version": "1", "trafficPercent": 50}))
    for name in ("r1", "r2"):
        wait_status(api, ns, name, operator, lambda s: s.get("phase") == "Deploying", f"{name} Deploying")
    before = {(c["kind"], c["metadata"]["name"]): c["metadata"]["uid"]
              for c in api.items(DEPS.format(ns=ns)) + api.items(f"/api/v1/namespaces/{ns}/services")}
    assert len(before) == 6  # 2 x (stable + canary Deployment + Service)

    operator.stop()
    operator.start()
    wait_until(lambda: operator.log().count("Resuming is processed") >= 2 or None, DEADLINE,
               what="resume handlers after the restart")
    after = {(c["kind"], c["metadata"]["name"]): c["metadata"]["uid"]
             for c in api.items(DEPS.format(ns=ns)) + api.items(f"/api/v1/namespaces/{ns}/services")}
    assert after == before
    mark_ready(api, ns, "r1")
    mark_ready(api, ns, "r1-canary")
    wait_status(api, ns, "r1", operator, lambda s: s.get("phase") == "Ready", "Ready after restart")


def test_quota_priority_queue(api, operator):
    ns = "e2e-quota"
    quota_path = f"/api/v1/namespaces/{ns}/resourcequotas"
    api.create(quota_path, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "models"},
                            "spec": {"hard": {"requests.cpu": "1", "requests.memory": "4Gi"}}})
    one_cpu = {"cpu": "1", "memory": "1Gi"}
    api.create(MDS.format(ns=ns), md("a", ns, priority=10, resources=one_cpu))
    wait_status(api, ns, "a", operator, lambda s: s.get("phase") == "Deploying", "a admitted")
    api.create(MDS.format(ns=ns), md("b", ns, priority=1, resources=one_cpu))
    api.create(MDS.format(ns=ns), md("c", ns, priority=100, resources=one_cpu))
    sc = wait_status(api, ns, "c", operator, lambda s: s.get("queuePosition") == 1, "c queued first")
    sb = wait_status(api, ns, "b", operator, lambda s: s.get("queuePosition") == 2, "b queued second")
    assert sc["phase"] == sb["phase"] == "Queued"
    assert "waiting for quota" in conds(sc)["Admitted"]["message"]
    assert api.get(DEPS.format(ns=ns) + "/c") is None and api.get(DEPS.format(ns=ns) + "/b") is None

    api.delete(MDS.format(ns=ns) + "/a")  # capacity frees: c (higher priority) goes next
    wait_status(api, ns, "c", operator, lambda s: s.get("phase") == "Deploying", "c admitted")
    wait_status(api, ns, "b", operator, lambda s: s.get("queuePosition") == 1, "b moves up")
    assert api.get(DEPS.format(ns=ns) + "/c") is not None

    api.patch(quota_path + "/models", {"spec": {"hard": {"requests.cpu": "2"}}})  # a quota change frees capacity
    wait_status(api, ns, "b", operator, lambda s: s.get("phase") == "Deploying", "b admitted")
    assert "queuePosition" not in api.get(MDS.format(ns=ns) + "/b")["status"]
