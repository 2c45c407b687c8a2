"""The cluster monitor (``mlstack monitor``) as its own process against the real control plane (tests/k8s/), as its
ServiceAccount ``mlstack/mlstack-monitor`` with exactly the RBAC of ``manifests/monitor`` (a kubeconfig holding a
TokenRequest token, nothing more), with a real Redis, MLflow and real ``mlstack serve`` processes.

The fake nodes run no containers and there is no pod network, so the deployment's two pods are stood in for: two
real ``mlstack serve`` on this machine's own (non-loopback: the API server refuses loopback endpoints) IPv4 address,
a selector-less Service ``<name>`` and EndpointSlices (label ``kubernetes.io/service-name``) with that address and
each server's port: what the EndpointSlice controller writes for Ready pods (and a third, not ready). The shared
operator runs too (every namespace): the namespace's ResourceQuota is smaller than the deployment's requests, so the
operator fails it with ``ExceedsQuota`` and makes no children (the Service and EndpointSlices stay the test's), and
writes its own conditions concurrently with the monitor's ``SLOMet``: both sets must survive.

Checked: each pod's requests reach the deployment's Redis stream, drained with a cursor per pod (the unready one
left alone); ``SLOMet`` True under a loose latency objective and False (with a ``deployment.slo`` alert) under a
1 ms one; the operator's conditions kept; ``mlstack_monitor_*`` on the metrics port; deleting the ModelDeployment
drops its Redis state; a ModelDeployment changed since the list makes the condition write a 409, written next
round; and on the API server's audit log, the monitor's requests are exactly its ClusterRole (every request allowed,
every grant used).
"""

from __future__ import annotations

import json
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.k8s.controlplane import Cluster, Kube
from tests.utils.audit import audit_events, cluster_role_grants, used_grants
from tests.utils.kube_api import unique
from tests.utils.monitored import register_onnx
from tests.utils.procs import Proc, free_port, http_ok, start, wait_until

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MONITOR_USER = "system:serviceaccount:mlstack:mlstack-monitor"
MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"
NAME = "iris"
DEADLINE = 60.0
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def monitor_kubeconfig(k8s: Cluster, k8s_admin: Kube) -> Path:
    """The monitor's ServiceAccount, ClusterRole and binding as manifests/monitor renders them (its Deployment is
    left out: the fake nodes would not run it); a kubeconfig with that ServiceAccount's token."""
    k8s_admin.ensure_namespace("mlstack")
    rendered = k8s.kubectl("kustomize", "manifests/monitor").stdout
    docs = [d for d in yaml.safe_load_all(rendered)
            if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    k8s.kubectl("apply", "--server-side", "--field-manager=mlstack-tests", "--force-conflicts", "-f", "-",
                input=yaml.safe_dump_all(docs))
    return k8s.token_kubeconfig("mlstack", "mlstack-monitor", k8s.dir / "monitor.kubeconfig")


@pytest.fixture(scope="module")
def ns(k8s_admin: Kube) -> Iterator[str]:
    """A fresh namespace whose ResourceQuota (1 millicore) no model server fits: the operator makes no children."""
    name = unique("monitor")
    k8s_admin.ensure_namespace(name)
    k8s_admin.create(f"/api/v1/namespaces/{name}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "tiny"},
        "spec": {"hard": {"requests.cpu": "1m"}}})
    yield name
    k8s_admin.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def model(mlflow_uri: str) -> tuple[str, str]:
    name = f"mon_cluster_{uuid.uuid4().hex[:6]}"
    return name, register_onnx(mlflow_uri, name)


def host_ip() -> str:
    """This machine's IPv4 address on its default route (an EndpointSlice may not point at loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP: no packet is sent, only the route is looked up
        except OSError:
            pytest.skip("no non-loopback IPv4 address: no EndpointSlice can point at a local model server")
        ip = s.getsockname()[0]
    if ip.startswith("127.") or ip == "0.0.0.0":
        pytest.skip(f"no non-loopback IPv4 address ({ip}): no EndpointSlice can point at a local model server")
    return ip


@dataclass(frozen=True)
class Server:
    ip: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


@pytest.fixture(scope="module")
def pods(model, mlflow_uri: str, workdir: Path) -> Iterator[list[Server]]:
    """Two real model servers (two pods of the deployment) logging every request (the env the operator gives a
    monitored pod) on this machine's address; each request waits 4 ms for a batch, so its p99 is above 1 ms on any
    machine."""
    ip, (name, version) = host_ip(), model
    procs: list[Proc] = []
    servers = [Server(ip, free_port()) for _ in range(2)]
    try:
        for srv in servers:
            procs.append(start([sys.executable, "-m", "mlstack", "serve", "--model", f"models:/{name}/{version}",
                                "--host", srv.ip, "--port", str(srv.port), "--name", name],
                               workdir / "monitor-cluster" / f"serve-{srv.port}.log",
                               ready=lambda srv=srv: http_ok(f"{srv.url}/v2/health/ready"), timeout=120,
                               env={"MLSTACK_MLFLOW_TRACKING_URI": mlflow_uri,
                                    "MLSTACK_MODEL_CACHE_DIR": str(workdir / "monitor-cluster-cache"),
                                    "MLSTACK_SERVE_MONITORING_SAMPLE_RATE": "1", "MLSTACK_SERVE_TRACK": "stable",
                                    "MLSTACK_SERVE_BATCH_WINDOW_MS": "4"},
                               what="mlstack serve"))
        yield servers
    finally:
        for proc in procs:
            proc.stop()


class Monitor:
    def __init__(self, proc: Proc, metrics: str, prefix: str, alerts: str):
        self.proc, self.metrics, self.prefix, self.alerts = proc, metrics, prefix, alerts

    def stream(self, ns: str) -> str:
        return f"{self.prefix}:payloads:{ns}/{NAME}"

    def series(self) -> dict[str, float]:
        """The metrics port's samples as ``name{labels}`` -> value (labels as exposed)."""
        text = httpx.get(self.metrics, timeout=5).text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}


@pytest.fixture(scope="module")
def monitor(monitor_kubeconfig: Path, stack_env: dict[str, str], workdir: Path, mlstack_operator) -> Iterator[Monitor]:
    """``mlstack monitor`` with the monitor ServiceAccount's kubeconfig, draining every 0.3 s and evaluating every
    0.5 s, with keys of its own in the session's Redis. The shared operator is requested so that it always runs
    (a concurrent status writer in every run, not only when another module started it)."""
    port, tag = free_port(), uuid.uuid4().hex[:6]
    prefix, alerts = f"mlstack:monitoring:cluster:{tag}", f"mlstack:alerts:monitor-cluster:{tag}"
    env = {**stack_env, "MLSTACK_MODE": "cluster", "KUBECONFIG": str(monitor_kubeconfig),
           "MLSTACK_MONITOR_KEY_PREFIX": prefix, "MLSTACK_ALERTS_STREAM": alerts,
           "MLSTACK_MONITOR_DRAIN_SECONDS": "0.3", "MLSTACK_MONITOR_EVALUATE_SECONDS": "0.5",
           "MLSTACK_MONITOR_SERIES_STEP_SECONDS": "0.5", "MLSTACK_MONITOR_HISTORY_ENABLED": "false",
           "MLSTACK_MONITOR_LEASE_SECONDS": "5"}
    for key in ("MLSTACK_KUBE_SERVER", "MLSTACK_KUBECONFIG", "MLSTACK_KUBE_CONTEXT"):  # the kubeconfig is all
        env.pop(key, None)
    metrics = f"http://127.0.0.1:{port}/metrics"

    def first_round() -> bool:  # /metrics answers at once; a round done means Redis and the API server answered
        return 'mlstack_monitor_rounds_total{result="ok"}' in httpx.get(metrics, timeout=2).text

    proc = start([sys.executable, "-m", "mlstack", "monitor", "--metrics-host", "127.0.0.1",
                  "--metrics-port", str(port)], workdir / "monitor-cluster" / "monitor.log",
                 ready=first_round, timeout=90, env=env, cwd=REPO, what="mlstack monitor")
    yield Monitor(proc, metrics, prefix, alerts)
    proc.stop()


@pytest.fixture(scope="module")
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def conditions(kube: Kube, ns: str) -> dict[str, dict[str, Any]]:
    obj = kube.get(MDS.format(ns=ns) + f"/{NAME}") or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def infer(server: Server, n: int) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for _ in range(n):
            resp = c.post("/predict", json={"instances": ROWS})
            assert resp.status_code == 200, resp.text


def endpoint_slice(name: str, ip: str, port: int, ready: bool, service: str = NAME,
                   port_name: str = "http") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}]}


def test_each_pods_requests_reach_redis_and_slomet_lands_beside_the_operators_conditions(
        k8s_admin, ns, model, pods, monitor, r, mlstack_operator):
    kube, (model_name, version) = k8s_admin, model
    a, b = pods
    # the deployment's pods: a selector-less Service and the EndpointSlices the controller would write for it (one
    # per port here: the stand-ins share one address), plus a pod that is not ready, on a port nobody listens on
    kube.create(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME},
        "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}})
    unready = Server(a.ip, free_port())
    for i, (srv, ready) in enumerate(((a, True), (b, True), (unready, False))):
        kube.create(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                    endpoint_slice(f"{NAME}-{i}", srv.ip, srv.port, ready))
    kube.create(MDS.format(ns=ns), {
        "apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": NAME},
        "spec": {"model": {"name": model_name, "version": version},
                 "monitoring": {"sampleRate": 1, "windowSeconds": 60}, "alerts": {"maxP99LatencyMs": 10_000}}})
    # the operator's verdict first: it fails the deployment on the quota and writes its conditions
    def failed_on_quota():
        c = conditions(kube, ns)
        return c if c.get("Admitted", {}).get("reason") == "ExceedsQuota" else None

    ops = wait_until(failed_on_quota, DEADLINE, interval=0.2, what="the operator's ExceedsQuota")
    assert kube.items(f"/apis/apps/v1/namespaces/{ns}/deployments") == []  # no children: the Service stays ours

    infer(a, 30)
    infer(b, 20)

    def drained():
        entries = r.xrange(monitor.stream(ns))
        return entries if len(entries) >= 50 else None

    entries = wait_until(drained, DEADLINE, interval=0.2, what=f"50 records in Redis\n{monitor.proc.log_tail()}")
    assert len(entries) == 50
    # each pod drained with its own cursor (its ring's sequence); the unready one never asked
    key = f"{ns}/{NAME}"
    cursors = {f: int(v) for f, v in r.hgetall(f"{monitor.prefix}:cursors").items() if f.startswith(f"{key}|")}
    assert cursors == {f"{key}|{a.url}": 30, f"{key}|{b.url}": 20}, cursors
    recs = [json.loads(f["r"]) for _, f in entries]
    assert {(x["namespace"], x["deployment"], x["track"], str(x["version"])) for x in recs} == {
        (ns, NAME, "stable", version)}
    for x in recs:  # each record: the request's rows (as the model read them: float32) and its latency
        flat = [v for row in x["inputs"] for v in row]
        assert flat == pytest.approx([v for row in ROWS for v in row], rel=1e-6), x
        assert len(x["outputs"]) == 2 and x["latency_ms"] > 0, x

    def slo_met():
        c = conditions(kube, ns).get("SLOMet")
        return c if c and c["status"] == "True" else None

    cond = wait_until(slo_met, DEADLINE, interval=0.2, what=f"SLOMet True\n{monitor.proc.log_tail()}")
    assert cond["reason"] == "ObjectivesMet" and "<= 10000 ms" in cond["message"], cond
    after = conditions(kube, ns)
    for type_, c in ops.items():  # the operator's conditions are all there (its own updates may have moved on)
        assert after[type_]["status"] == c["status"] and after[type_]["reason"] == c["reason"], (type_, after)
    assert set(after) == set(ops) | {"SLOMet"}

    def metrics():
        s = monitor.series()
        labels = f'deployment="{NAME}",namespace="{ns}"'
        ok = (s.get(f"mlstack_monitor_records_total{{{labels}}}", 0) >= 50
              and s.get(f"mlstack_monitor_slo_met{{{labels}}}") == 1)
        return s if ok else None

    s = wait_until(metrics, DEADLINE, interval=0.3, what="mlstack_monitor_* series")
    assert s[f'mlstack_monitor_model_servers{{deployment="{NAME}",namespace="{ns}",track="stable"}}'] == 2
    assert s[f'mlstack_monitor_model_servers{{deployment="{NAME}",namespace="{ns}",track="canary"}}'] == 0
    assert s["mlstack_monitor_leader"] == 1 and s['mlstack_monitor_rounds_total{result="ok"}'] > 0
    assert s.get(f'mlstack_monitor_pull_errors_total{{deployment="{NAME}",namespace="{ns}"}}', 0) == 0
    assert s["mlstack_monitor_round_duration_seconds_count"] > 0


def test_a_latency_objective_below_the_measured_p99_turns_slomet_false_with_an_alert(
        k8s_admin, ns, pods, monitor, r):
    kube = k8s_admin
    before = conditions(kube, ns)
    assert before["SLOMet"]["status"] == "True"
    kube.patch(MDS.format(ns=ns) + f"/{NAME}", {"spec": {"alerts": {"maxP99LatencyMs": 1}}})
    infer(pods[0], 5)  # the window holds the earlier records too: every one waited 4 ms for its batch

    def breached():
        c = conditions(kube, ns).get("SLOMet")
        return c if c and c["status"] == "False" else None

    cond = wait_until(breached, DEADLINE, interval=0.2, what=f"SLOMet False\n{monitor.proc.log_tail()}")
    assert cond["reason"] == "P99LatencyAboveMax" and "> 1 ms" in cond["message"], cond
    assert cond["lastTransitionTime"] >= before["SLOMet"]["lastTransitionTime"]
    # the spec change is a new generation: the operator rewrites its conditions (a merge patch replaces the whole
    # list) and carries SLOMet along as it last watched it; the monitor's next write carries the operator's. (The
    # operator's write has no resourceVersion precondition: one landing right after the monitor's may bring back
    # the SLOMet it watched before, until the monitor's next evaluation: hence the wait for both.)
    gen = kube.get(MDS.format(ns=ns) + f"/{NAME}")["metadata"]["generation"]

    def operator_caught_up():
        c = conditions(kube, ns)
        mine = all(c[t].get("observedGeneration") == gen for t in before if t != "SLOMet")
        return c if mine and c["SLOMet"]["status"] == "False" else None

    after = wait_until(operator_caught_up, DEADLINE, interval=0.2, what=f"the operator at generation {gen}")
    assert set(after) == set(before)  # nothing lost, nothing added
    assert after["Admitted"]["reason"] == "ExceedsQuota" and after["SLOMet"]["reason"] == "P99LatencyAboveMax", after

    def alert():
        events = [json.loads(f["event"]) for _, f in r.xrange(monitor.alerts) if f.get("type") == "deployment.slo"]
        return [e for e in events if e["namespace"] == ns and e["deployment"] == NAME] or None

    (event,) = wait_until(alert, DEADLINE, interval=0.2, what="the deployment.slo alert")
    assert event["data"]["objective"] == "maxP99LatencyMs" and event["data"]["state"] == "breached"
    assert event["data"]["value"] > 1
    wait_until(lambda: monitor.series().get(f'mlstack_monitor_slo_met{{deployment="{NAME}",namespace="{ns}"}}') == 0,
               DEADLINE, interval=0.3, what="mlstack_monitor_slo_met 0")


def test_deleting_the_modeldeployment_drops_its_redis_state(k8s_admin, ns, monitor, r):
    key = f"{ns}/{NAME}"
    assert r.exists(monitor.stream(ns)) and r.sismember(f"{monitor.prefix}:watched", key)
    assert [f for f in r.hkeys(f"{monitor.prefix}:cursors") if f.startswith(f"{key}|")]
    k8s_admin.delete(MDS.format(ns=ns) + f"/{NAME}")
    wait_until(lambda: k8s_admin.get(MDS.format(ns=ns) + f"/{NAME}") is None, DEADLINE, interval=0.2,
               what="the ModelDeployment gone")

    def forgotten():
        return not r.sismember(f"{monitor.prefix}:watched", key)

    wait_until(forgotten, DEADLINE, interval=0.2, what=f"the monitor forgetting {key}\n{monitor.proc.log_tail()}")
    left = [k for k in r.scan_iter(match=f"{monitor.prefix}:*", count=1000) if key in k]
    assert left == [], left
    assert not [f for f in r.hkeys(f"{monitor.prefix}:cursors") if f.startswith(f"{key}|")]
    assert not r.hexists(f"{monitor.prefix}:conditions", key)
    assert monitor.proc.popen.poll() is None  # still running, with nothing to watch


def test_a_status_changed_since_the_list_is_a_409_and_the_next_round_writes(k8s_admin, ns, monitor_kubeconfig,
                                                                             monitor):
    """The precondition for real: ``ClusterTargets`` (the monitor's Kubernetes half, in this process, with the
    monitor's token) lists, the object changes, the condition write is refused (409) and left to the next round,
    which writes it on the newer object with the operator's conditions kept. No ``spec.alerts`` here: the running
    monitor writes no condition for this one."""
    import asyncio

    from mlstack.kubeapi import KubeSettings, connect
    from mlstack.monitoring.cluster import CONDITION, ClusterTargets

    name, path = "precond", MDS.format(ns=ns) + "/precond"
    k8s_admin.create(MDS.format(ns=ns), {
        "apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {"model": {"name": "any", "version": "1"}, "monitoring": {"sampleRate": 1}}})

    def operator_wrote():
        st = (k8s_admin.get(path) or {}).get("status") or {}
        return {c["type"]: c for c in st.get("conditions") or []} if st.get("phase") == "Failed" else None

    ops = wait_until(operator_wrote, DEADLINE, interval=0.2, what="the operator's ExceedsQuota")
    cond = {"type": CONDITION, "status": "True", "reason": "ObjectivesMet", "message": "written by the test"}
    ks = KubeSettings(kubeconfig=monitor_kubeconfig)
    api = connect(ks)
    try:
        kube = ClusterTargets(api, ks)

        async def round_() -> Any:
            targets = {t.key: t for t in await kube.targets()}
            return targets[f"{ns}/{name}"]

        t = asyncio.run(round_())
        listed = kube.objects[t.key]["metadata"]["resourceVersion"]
        k8s_admin.patch(path, {"metadata": {"labels": {"touched": "yes"}}})  # any change: a new resourceVersion
        asyncio.run(kube.condition(t, cond))  # refused: logged, not raised
        assert CONDITION not in {c["type"] for c in k8s_admin.get(path)["status"]["conditions"]}
        t = asyncio.run(round_())
        assert kube.objects[t.key]["metadata"]["resourceVersion"] != listed
        asyncio.run(kube.condition(t, cond))
    finally:
        api.close()
    obj = k8s_admin.get(path)
    after = {c["type"]: c for c in obj["status"]["conditions"]}
    assert after[CONDITION]["message"] == "written by the test" and after[CONDITION]["lastTransitionTime"]
    assert {k: (v["status"], v["reason"]) for k, v in after.items() if k != CONDITION} == {
        k: (v["status"], v["reason"]) for k, v in ops.items()}
    assert obj["metadata"]["labels"]["touched"] == "yes"
    k8s_admin.delete(path)


def test_a_rayserve_deployment_is_drained_at_one_serve_proxy(k8s_admin, ns, model, pods, monitor, r):
    """``server: rayserve``: KubeRay's ``<name>-serve-svc`` (port ``serve``) stands for every Serve proxy of the
    RayService, each reaching the application's one payload collector: the monitor drains one ready endpoint of it
    (here the stand-ins' first by URL), not each."""
    (model_name, version), name = model, "iris-rs"
    service = f"{name}-serve-svc"
    k8s_admin.create(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
        "spec": {"ports": [{"name": "serve", "port": 8000, "targetPort": "serve"}]}})
    first, second = sorted(pods, key=lambda srv: srv.url)
    for i, srv in enumerate((second, first)):
        k8s_admin.create(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                         endpoint_slice(f"{service}-{i}", srv.ip, srv.port, True, service, "serve"))
    k8s_admin.create(MDS.format(ns=ns), {
        "apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {"model": {"name": model_name, "version": version}, "server": "rayserve",
                 "monitoring": {"sampleRate": 1}}})
    key = f"{ns}/{name}"
    cursor = f"{key}|{first.url}"
    # the first drain reads what the proxy's collector holds so far; the count from then on is this test's
    base = int(wait_until(lambda: r.hget(f"{monitor.prefix}:cursors", cursor), DEADLINE, interval=0.2,
                          what=f"{key} drained at {first.url}\n{monitor.proc.log_tail()}"))
    stream = f"{monitor.prefix}:payloads:{key}"
    before = r.xlen(stream)
    infer(first, 7)
    wait_until(lambda: int(r.hget(f"{monitor.prefix}:cursors", cursor)) == base + 7, DEADLINE, interval=0.2,
               what="7 more records drained")
    assert r.xlen(stream) - before == 7
    assert [f for f in r.hkeys(f"{monitor.prefix}:cursors") if f.startswith(f"{key}|")] == [cursor]
    recs = [json.loads(f["r"]) for _, f in r.xrange(stream)][-7:]
    assert {(x["deployment"], x["track"], str(x["version"])) for x in recs} == {(name, "stable", version)}
    k8s_admin.delete(MDS.format(ns=ns) + f"/{name}")


def test_zz_least_privilege_measured_on_the_audit_log(k8s, monitor):
    """Every request the monitor made was allowed, and its requests are exactly its ClusterRole's grants."""
    audit = k8s.dir / "logs" / "audit.log"
    if not audit.exists():
        pytest.skip("no audit log (MLSTACK_TEST_KUBECONFIG cluster): least privilege not measured")
    events = audit_events(audit, MONITOR_USER)
    assert events, "the monitor made no request?"
    denied = [(e["verb"], e["requestURI"]) for e in events
              if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"]
    assert denied == []
    used = used_grants(events)
    granted = cluster_role_grants(REPO / "manifests" / "monitor" / "rbac.yaml")
    assert used == granted, f"used but not granted: {sorted(used - granted)}; granted, unused: {sorted(granted - used)}"
    failed = [(e["verb"], e["requestURI"], e["responseStatus"].get("code")) for e in events
              if e["responseStatus"].get("code", 0) >= 400 and e["responseStatus"].get("code") != 409]
    assert failed == []  # a 409 is the resourceVersion precondition meeting another write: retried next round
    conflicts = [e["requestURI"] for e in events if e["responseStatus"].get("code") == 409]
    assert any(u.endswith("/modeldeployments/precond/status") for u in conflicts), conflicts  # the test's one
