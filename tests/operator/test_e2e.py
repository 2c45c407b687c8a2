"""End to end on a real control plane: the kopf operator (a subprocess, as its own ServiceAccount) turns
ModelDeployments into children; the real controllers, scheduler and fake nodes make the pods Ready; the real
garbage collector deletes the children; a real ResourceQuota drives priority admission.

Every wait polls with a deadline; every test has its own namespace.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.k8s.controlplane import Kube, KubeError
from tests.k8s.fixtures import MODEL, Operator, register
from tests.utils.procs import wait_until

pytestmark = pytest.mark.slow
MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"
DEPS = "/apis/apps/v1/namespaces/{ns}/deployments"
HPAS = "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers"
DEADLINE = 60.0


def md(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("model", {"name": MODEL, "alias": "champion"})
    spec.setdefault("resources", {"cpu": "100m", "memory": "128Mi"})
    return {"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


@pytest.fixture
def ns(k8s_admin: Kube, request) -> Iterator[str]:
    """A fresh namespace per test (unique per run: MLSTACK_TEST_KUBECONFIG clusters outlive runs), deleted after."""
    name = f"e2e-{secrets.token_hex(2)}-" + request.node.name.removeprefix("test_").replace("_", "-")[:30]
    k8s_admin.ensure_namespace(name)
    yield name
    k8s_admin.delete(f"/api/v1/namespaces/{name}")


def wait_status(kube: Kube, ns: str, name: str, op: Operator, check, what: str,
                timeout: float = DEADLINE) -> dict[str, Any]:
    def probe():
        status = (kube.get(MDS.format(ns=ns) + f"/{name}") or {}).get("status") or {}
        return status if check(status) else None

    try:
        return wait_until(probe, timeout, interval=0.1, what=what)
    except TimeoutError:
        obj = kube.get(MDS.format(ns=ns) + f"/{name}")
        raise AssertionError(f"{what}: last status {(obj or {}).get('status')}\n{op.log()[-4000:]}") from None


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def children(kube: Kube, ns: str) -> dict[tuple[str, str], str]:
    return {(kind, c["metadata"]["name"]): c["metadata"]["uid"]  # list items carry no kind on a real server
            for kind, path in (("Deployment", DEPS.format(ns=ns)), ("Service", f"/api/v1/namespaces/{ns}/services"))
            for c in kube.items(path)}


def test_apply_children_pods_ready_url(k8s_admin, mlstack_operator, ns):
    kube = k8s_admin
    uid = kube.create(MDS.format(ns=ns), md("iris", ns, replicas=2))["metadata"]["uid"]
    wait_until(lambda: kube.get(DEPS.format(ns=ns) + "/iris") and kube.get(f"/api/v1/namespaces/{ns}/services/iris"),
               DEADLINE, what="Deployment and Service")
    for path in (DEPS.format(ns=ns) + "/iris", f"/api/v1/namespaces/{ns}/services/iris"):
        (owner,) = kube.get(path)["metadata"]["ownerReferences"]
        assert owner["uid"] == uid and owner["controller"] and owner["kind"] == "ModelDeployment"

    # the real controllers: ReplicaSet -> 2 pods -> scheduled on the fake nodes -> Ready -> Deployment available
    status = wait_status(kube, ns, "iris", mlstack_operator, lambda s: s.get("phase") == "Ready", "Ready")
    pods = kube.items(f"/api/v1/namespaces/{ns}/pods", labelSelector="app.kubernetes.io/instance=iris")
    assert len(pods) == 2 and all(p["spec"]["nodeName"].startswith("fake-node-") for p in pods)
    assert status["url"] == f"http://iris.{ns}.svc.cluster.local:8080"
    assert status["resolvedVersion"] == "1" and status["readyReplicas"] == 2 and status["observedGeneration"] == 1
    for c in ("Admitted", "ModelResolved", "Available", "Ready"):
        assert conds(status)[c]["status"] == "True", c
    events = wait_until(lambda: [e for e in kube.items(f"/api/v1/namespaces/{ns}/events")
                                 if e["involvedObject"]["name"] == "iris" and e["reason"] == "Ready"],
                        DEADLINE, what="a Ready event")
    assert events[0]["involvedObject"]["uid"] == uid
    svc = kube.get(f"/api/v1/namespaces/{ns}/services/iris")
    assert svc["spec"]["clusterIP"].startswith("10.96.")  # allocated by the real API server


def test_updates_replicas_version_canary_autoscaling_then_gc(k8s_admin, mlstack_operator, ns, registered_model):
    kube = k8s_admin
    kube.create(MDS.format(ns=ns), md("upd", ns, replicas=1))
    wait_status(kube, ns, "upd", mlstack_operator, lambda s: s.get("phase") == "Ready", "Ready")
    path = MDS.format(ns=ns) + "/upd"

    kube.patch(path, {"spec": {"replicas": 3, "resources": {"cpu": "250m", "memory": "256Mi"}}})
    dep = wait_until(lambda: (d := kube.get(DEPS.format(ns=ns) + "/upd")) and d["spec"].get("replicas") == 3 and d,
                     DEADLINE, what="replicas 3")
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "250m"
    st = wait_status(kube, ns, "upd", mlstack_operator, lambda s: s.get("readyReplicas") == 3 and
                     s.get("phase") == "Ready", "3 ready replicas")
    assert st["observedGeneration"] == kube.get(path)["metadata"]["generation"]

    # the CRD's CEL rule refuses canary == version at the API server, with a field path
    with pytest.raises(KubeError) as e:
        kube.patch(path, {"spec": {"canary": {"version": "1", "trafficPercent": 34},
                                   "model": {"alias": None, "version": "1"}}})
    assert e.value.status == 422 and "canary.version must differ from model.version" in e.value.body

    # a new version: pin version 2, canary on 1
    v2 = register(registered_model, MODEL)
    kube.patch(path, {"spec": {"model": {"alias": None, "version": v2}, "canary": {"version": "1",
                                                                                   "trafficPercent": 25}}})
    wait_until(lambda: kube.get(DEPS.format(ns=ns) + "/upd-canary"), DEADLINE, what="canary Deployment")
    st = wait_status(kube, ns, "upd", mlstack_operator,
                     lambda s: s.get("phase") == "Ready" and s.get("resolvedVersion") == v2, f"Ready on version {v2}")
    container = kube.get(DEPS.format(ns=ns) + "/upd")["spec"]["template"]["spec"]["containers"][0]
    assert f"models:/{MODEL}/{v2}" in container["command"]

    kube.patch(path, {"spec": {"canary": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}})
    wait_until(lambda: kube.get(HPAS.format(ns=ns) + "/upd"), DEADLINE, what="HPA")
    wait_until(lambda: kube.get(DEPS.format(ns=ns) + "/upd-canary") is None, DEADLINE, what="canary pruned")

    kube.patch(path, {"spec": {"autoscaling": None, "replicas": 1}})
    wait_until(lambda: kube.get(HPAS.format(ns=ns) + "/upd") is None, DEADLINE, what="HPA pruned")

    kube.delete(path)
    # the real garbage collector removes the children through their ownerReferences, and the pods with them
    wait_until(lambda: not children(kube, ns), DEADLINE, what="children garbage-collected")
    wait_until(lambda: not kube.items(f"/api/v1/namespaces/{ns}/pods"), DEADLINE, what="pods gone")


def test_unknown_model_fails_then_recovers(k8s_admin, mlstack_operator, ns, registered_model):
    kube = k8s_admin
    ghost = f"ghost_{ns.replace('-', '_')}"
    kube.create(MDS.format(ns=ns), md("ghost", ns, model={"name": ghost, "version": "1"}))
    status = wait_status(kube, ns, "ghost", mlstack_operator, lambda s: s.get("phase") == "Failed", "Failed")
    assert conds(status)["ModelResolved"]["reason"] == "ModelNotFound"
    assert ghost in conds(status)["ModelResolved"]["message"]
    assert kube.get(DEPS.format(ns=ns) + "/ghost") is None

    register(registered_model, ghost)  # the model appears in the registry: the slow retry picks it up
    wait_status(kube, ns, "ghost", mlstack_operator, lambda s: s.get("phase") == "Ready", "recovered")


def test_invalid_specs_are_refused_by_the_api_server(k8s_admin, ns):
    kube = k8s_admin
    cases = {
        "both": (md("bad", ns, model={"name": MODEL, "version": "1", "alias": "champion"}),
                 "exactly one of model.version and model.alias"),
        "vm": (md("bad", ns, runtime="vm"), "spec.vm is required with runtime: vm"),
        "name": (md("n" * 43, ns), "metadata.name must be at most 42 characters"),
        "replicas": (md("bad", ns, replicas=-1), "spec.replicas"),
    }
    for what, (obj, message) in cases.items():
        with pytest.raises(KubeError) as e:
            kube.create(MDS.format(ns=ns), obj)
        assert e.value.status == 422 and message in e.value.body, what
    # the name rule reports its field path (not a root-level error without one)
    with pytest.raises(KubeError) as e:
        kube.create(MDS.format(ns=ns), md("n" * 43, ns))
    assert '"field":"metadata.name"' in e.value.body.replace(" ", ""), e.value.body
    assert kube.items(MDS.format(ns=ns)) == []


def test_restart_never_duplicates(k8s_admin, mlstack_operator, ns):
    kube = k8s_admin
    for name in ("r1", "r2"):
        kube.create(MDS.format(ns=ns), md(name, ns, canary={"version": "1", "trafficPercent": 50}))
    for name in ("r1", "r2"):
        wait_status(kube, ns, name, mlstack_operator, lambda s: s.get("phase") in ("Deploying", "Ready"),
                    f"{name} admitted")
    wait_until(lambda: len(children(kube, ns)) == 6, DEADLINE, what="2 x (stable + canary Deployment + Service)")
    before = children(kube, ns)

    mlstack_operator.stop()
    kube.patch(MDS.format(ns=ns) + "/r2", {"spec": {"replicas": 4}})  # a change while it is down: 2 + 2 canary
    mlstack_operator.start()
    wait_until(lambda: (kube.get(DEPS.format(ns=ns) + "/r2") or {}).get("spec", {}).get("replicas") == 2, DEADLINE,
               what="the change made while the operator was down")
    assert children(kube, ns) == before  # same objects (uids), none duplicated
    for name in ("r1", "r2"):
        wait_status(kube, ns, name, mlstack_operator, lambda s: s.get("phase") == "Ready", f"{name} Ready")


def test_quota_priority_queue(k8s_admin, mlstack_operator, ns):
    kube = k8s_admin
    quota_path = f"/api/v1/namespaces/{ns}/resourcequotas"
    kube.create(quota_path, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "models"},
                             "spec": {"hard": {"requests.cpu": "1", "requests.memory": "4Gi"}}})
    one_cpu = {"cpu": "1", "memory": "1Gi"}
    kube.create(MDS.format(ns=ns), md("a", ns, priority=10, resources=one_cpu))
    wait_status(kube, ns, "a", mlstack_operator, lambda s: s.get("phase") == "Ready", "a admitted and Ready")
    kube.create(MDS.format(ns=ns), md("b", ns, priority=1, resources=one_cpu))
    kube.create(MDS.format(ns=ns), md("c", ns, priority=100, resources=one_cpu))
    sc = wait_status(kube, ns, "c", mlstack_operator, lambda s: s.get("queuePosition") == 1, "c queued first")
    sb = wait_status(kube, ns, "b", mlstack_operator, lambda s: s.get("queuePosition") == 2, "b queued second")
    assert sc["phase"] == sb["phase"] == "Queued"
    assert "waiting for quota" in conds(sc)["Admitted"]["message"]
    assert kube.get(DEPS.format(ns=ns) + "/c") is None and kube.get(DEPS.format(ns=ns) + "/b") is None
    used = kube.get(quota_path + "/models")["status"]["used"]
    assert used["requests.cpu"] == "1"  # the quota controller counts a's pod

    kube.delete(MDS.format(ns=ns) + "/a")  # capacity frees (GC, pod deletion, quota recount): c goes next
    wait_status(kube, ns, "c", mlstack_operator, lambda s: s.get("phase") == "Ready", "c admitted and Ready")
    wait_status(kube, ns, "b", mlstack_operator, lambda s: s.get("queuePosition") == 1, "b moves up")

    kube.patch(quota_path + "/models", {"spec": {"hard": {"requests.cpu": "2"}}})  # a quota change frees capacity
    wait_status(kube, ns, "b", mlstack_operator, lambda s: s.get("phase") == "Ready", "b admitted and Ready")
    assert "queuePosition" not in kube.get(MDS.format(ns=ns) + "/b")["status"]
