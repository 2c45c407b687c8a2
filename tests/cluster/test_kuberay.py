"""The real KubeRay operator on the real control plane (issue 11, item 3): a ModelDeployment with
``server: rayserve`` becomes our RayService (the mlstack operator), which KubeRay turns into a RayCluster with a
head pod and worker pods (the real controllers, scheduler and fake nodes run them).

KubeRay is built from its Go module by tests/k8s/build.sh (optional step; cached next to the control plane's
binaries) and runs out of cluster as its own ServiceAccount, with the RBAC of its module's ``config/rbac``. It
binds its metrics and health endpoints to 127.0.0.1.

What cannot be real here: the pods are fake (tests/k8s/nodes.py marks them Running/Ready, nothing runs in them),
so KubeRay's calls to the Ray head's dashboard (serve config, Serve health) never succeed: the RayService never
reports Serve healthy and the ModelDeployment never turns Ready through it. The test asserts what is real (the
RayCluster, its ownership, head and worker pods and the head Service with their labels, pods Running on the fake
nodes) and that the RayService is not (falsely) reported ready.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s import controlplane
from tests.k8s.controlplane import Cluster, Kube, kubectl_bin
from tests.k8s.fixtures import MODEL, Operator
from tests.utils.procs import Proc, free_port, http_ok, start, wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
KUBERAY_NS = "ray-system"
KUBERAY_SA = "kuberay-operator"
MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"
RAY = "/apis/ray.io/v1/namespaces/{ns}"
DEADLINE = 90.0


def kuberay_binary() -> Path:
    """The KubeRay operator tests/k8s/build.sh built (or skip loudly with its reason)."""
    out = subprocess.run([str(ROOT / "tests" / "k8s" / "build.sh"), "--print-dir"], capture_output=True, text=True,
                         check=True)
    bin_dir = Path(out.stdout.strip().splitlines()[-1])
    version = controlplane.KUBERAY_MODULE.rpartition("@")[2]
    exe = bin_dir / f"kuberay-operator-{version}"
    if not exe.exists():
        failed = bin_dir / f"kuberay-operator-{version}.failed"
        why = (f"it did not build (see {failed.read_text().strip()})" if failed.exists()
               else "it is not built: MLSTACK_K8S_KUBERAY=1 tests/k8s/build.sh builds it")
        pytest.skip(f"the KubeRay operator ({controlplane.KUBERAY_MODULE}) is not available: {why}")
    return exe


def kuberay_rbac() -> list[dict[str, Any]]:
    """KubeRay's own ServiceAccount, ClusterRole and bindings from its module's config/rbac, in ray-system."""
    rbac = controlplane.kuberay_crd_dir().parents[1] / "rbac"
    out = subprocess.run([kubectl_bin(), "kustomize", str(rbac)], capture_output=True, text=True, check=True)
    objs = [o for o in yaml.safe_load_all(out.stdout) if o]
    for o in objs:
        if o["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            o["metadata"]["namespace"] = KUBERAY_NS
        for s in o.get("subjects") or []:
            s.setdefault("namespace", KUBERAY_NS)
    return objs


@pytest.fixture(scope="module")
def kuberay(k8s: Cluster, k8s_admin: Kube, tmp_path_factory) -> Iterator[Proc]:
    exe = kuberay_binary()
    crds = controlplane.kuberay_crd_dir()
    # KubeRay watches RayJobs too: without their CRD its manager does not start
    k8s.kubectl("apply", "--server-side", "--field-manager=mlstack-tests", "-f", str(crds / "ray.io_rayjobs.yaml"))
    k8s.wait_crds(["rayjobs.ray.io"])
    k8s_admin.ensure_namespace(KUBERAY_NS)
    k8s.kubectl("apply", "--server-side", "--field-manager=mlstack-tests", "--force-conflicts", "-f", "-",
                input=yaml.safe_dump_all(kuberay_rbac()))
    d = tmp_path_factory.mktemp("kuberay")
    cfg = k8s.token_kubeconfig(KUBERAY_NS, KUBERAY_SA, d / "kuberay.kubeconfig")
    probe = free_port()
    proc = start([str(exe), f"--kubeconfig={cfg}", f"--metrics-addr=127.0.0.1:{free_port()}",
                  f"--health-probe-bind-address=127.0.0.1:{probe}", "--enable-leader-election=false",
                  "--log-stdout-encoder=console"],
                 d / "kuberay.log", ready=lambda: http_ok(f"http://127.0.0.1:{probe}/readyz"), timeout=60,
                 env={"KUBECONFIG": str(cfg)}, what="kuberay-operator")
    yield proc
    proc.stop()


@pytest.fixture
def ns(k8s_admin: Kube) -> Iterator[str]:
    name = f"kuberay-{secrets.token_hex(3)}"
    k8s_admin.ensure_namespace(name)
    yield name
    k8s_admin.delete(f"/api/v1/namespaces/{name}")


def logs(*procs: Proc | Operator) -> str:
    return "\n".join((p.log() if isinstance(p, Operator) else p.log_tail(4000))[-4000:] for p in procs)


def test_rayserve_modeldeployment_becomes_a_raycluster_with_head_and_worker_pods(k8s_admin, kuberay,
                                                                                 mlstack_operator, ns):
    kube = k8s_admin
    md = {"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": "iris-ray", "namespace": ns},
          "spec": {"model": {"name": MODEL, "alias": "champion"}, "server": "rayserve", "replicas": 2,
                   "resources": {"cpu": "250m", "memory": "256Mi"}}}
    kube.create(MDS.format(ns=ns), md)

    # 1. ours: the mlstack operator creates the RayService, owned by the ModelDeployment
    try:
        svc = wait_until(lambda: kube.get(RAY.format(ns=ns) + "/rayservices/iris-ray"), DEADLINE, interval=0.2,
                         what="RayService iris-ray")
    except TimeoutError:
        raise AssertionError(logs(mlstack_operator)) from None
    assert svc["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    workers = svc["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    want_workers = sum(g["replicas"] for g in workers)
    assert want_workers >= 1

    # 2. KubeRay's: a RayCluster owned by the RayService
    def raycluster() -> dict[str, Any] | None:
        items = kube.items(RAY.format(ns=ns) + "/rayclusters")
        return items[0] if items else None

    try:
        rc = wait_until(raycluster, DEADLINE, interval=0.2, what="a RayCluster made by KubeRay")
    except TimeoutError:
        raise AssertionError(logs(kuberay, mlstack_operator)) from None
    (owner,) = rc["metadata"]["ownerReferences"]
    assert owner["kind"] == "RayService" and owner["uid"] == svc["metadata"]["uid"] and owner["controller"]
    assert rc["metadata"]["name"].startswith("iris-ray-")
    assert rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == \
        svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]

    # 3. the pods KubeRay creates (head + workers), scheduled by the real scheduler onto the fake nodes, Running
    def pods() -> tuple[list[dict], list[dict]] | None:
        items = kube.items(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"ray.io/cluster={rc['metadata']['name']}")
        running = [p for p in items if p.get("status", {}).get("phase") == "Running"]
        head = [p for p in running if p["metadata"]["labels"].get("ray.io/node-type") == "head"]
        work = [p for p in running if p["metadata"]["labels"].get("ray.io/node-type") == "worker"]
        return (head, work) if len(head) == 1 and len(work) == want_workers else None

    try:
        head, work = wait_until(pods, DEADLINE, interval=0.2, what=f"1 head and {want_workers} worker pods Running")
    except TimeoutError:
        got = kube.items(f"/api/v1/namespaces/{ns}/pods")
        raise AssertionError(f"pods: {[(p['metadata']['name'], p['status'].get('phase')) for p in got]}\n"
                             + logs(kuberay)) from None
    for p in head + work:
        assert p["spec"]["nodeName"].startswith("fake-node-"), p["spec"].get("nodeName")
        assert p["metadata"]["labels"]["mlstack.io/deployment"] == "iris-ray"  # our template's labels carried over
        assert p["metadata"]["ownerReferences"][0]["kind"] == "RayCluster"
    assert {p["metadata"]["labels"]["ray.io/group"] for p in work} == {g["groupName"] for g in workers}
    # KubeRay's head Service for the cluster
    wait_until(lambda: [s for s in kube.items(f"/api/v1/namespaces/{ns}/services")
                        if s["metadata"].get("labels", {}).get("ray.io/node-type") == "head"],
               DEADLINE, interval=0.2, what="the RayCluster's head Service")

    # 4. what is NOT real: nothing runs in the fake pods, so KubeRay cannot reach the head's dashboard to deploy
    #    the Serve config nor see Serve healthy. It must not claim otherwise, and neither may we.
    status = (kube.get(RAY.format(ns=ns) + "/rayservices/iris-ray") or {}).get("status") or {}
    ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
    assert ready != "True", json.dumps(status)
    phase = ((kube.get(MDS.format(ns=ns) + "/iris-ray") or {}).get("status") or {}).get("phase")
    assert phase != "Ready", phase


def test_kuberay_runs_as_its_own_service_account_only(k8s, kuberay):
    """KubeRay's RBAC is the module's config/rbac, nothing more: it may manage pods, not secrets cluster-wide."""
    sa = f"system:serviceaccount:{KUBERAY_NS}:{KUBERAY_SA}"
    can = {verb_res: k8s.kubectl("auth", "can-i", *verb_res.split(), f"--as={sa}", "-A", check=False).stdout.strip()
           for verb_res in ("create pods", "create rayclusters.ray.io", "delete nodes", "create clusterroles")}
    assert can == {"create pods": "yes", "create rayclusters.ray.io": "yes", "delete nodes": "no",
                   "create clusterroles": "no"}, can
    assert os.path.basename(kuberay.popen.args[0]).startswith("kuberay-operator-")
