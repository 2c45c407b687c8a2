"""Fake nodes for the test control plane: what a kubelet tells the API server, without running containers.

Registers ``--nodes`` Nodes with generous capacity, keeps them Ready (a Lease in ``kube-node-lease`` renewed every
10 s and the Ready condition's heartbeat), marks every pod the scheduler binds to them Running and Ready with a
pod IP, and finishes graceful deletes (as a kubelet does once the containers stopped). Containers never run, so
nothing here checks images or probes: readiness is immediate. A pod asking for more than a node has stays Pending
with the scheduler's ``Insufficient ...`` reason, as on a real cluster.

``python -m tests.k8s.nodes --kubeconfig FILE [--nodes N]``; started and stopped by ``tests/k8s/controlplane.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import ipaddress
import json
import signal
import ssl
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import yaml

CAPACITY = {"cpu": "32", "memory": "128Gi", "pods": "250", "ephemeral-storage": "500Gi"}
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Agent:
    def __init__(self, server: str, session: aiohttp.ClientSession, names: list[str]) -> None:
        self.server, self.session, self.names = server, session, names
        self.node_ips = {n: f"172.18.0.{i + 2}" for i, n in enumerate(names)}
        self.pod_net = ipaddress.ip_network("10.244.0.0/16")
        self.next_ip = 2
        self.ips: dict[str, str] = {}  # pod uid -> IP
        self.inflight: set[str] = set()
        self.tasks: set[asyncio.Task] = set()

    def spawn(self, pod: dict[str, Any]) -> None:
        t = asyncio.create_task(self.handle_safely(pod))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def call(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
                   params: dict[str, str] | None = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = ctype
            data = json.dumps(body)
        async with self.session.request(method, self.server + path, data=data, headers=headers,
                                        params=params) as r:
            raw = await r.read()
            return r.status, (json.loads(raw) if raw else None)

    # nodes ------------------------------------------------------------------------------------------------------

    def node_status(self, name: str) -> dict[str, Any]:
        t = now()
        conds = [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake node (tests)",
                  "lastHeartbeatTime": t, "lastTransitionTime": t}]
        for ctype in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            conds.append({"type": ctype, "status": "False", "reason": f"KubeletHasNo{ctype}",
                          "lastHeartbeatTime": t, "lastTransitionTime": t})
        return {"capacity": CAPACITY, "allocatable": CAPACITY, "conditions": conds, "phase": "Running",
                "addresses": [{"type": "InternalIP", "address": self.node_ips[name]},
                              {"type": "Hostname", "address": name}],
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.36.3-fake",
                             "kubeProxyVersion": "", "osImage": "fake", "kernelVersion": "fake",
                             "containerRuntimeVersion": "fake://0", "machineID": name, "systemUUID": name,
                             "bootID": name}}

    async def register(self, name: str) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                      "kubernetes.io/arch": "amd64", "type": "fake"}},
                "spec": {}}
        status, body = await self.call("POST", "/api/v1/nodes", node)
        if status not in (201, 409):
            raise RuntimeError(f"register node {name}: {status} {body}")
        await self.heartbeat(name)

    async def heartbeat(self, name: str) -> None:
        await self.call("PATCH", f"/api/v1/nodes/{name}/status", {"status": self.node_status(name)},
                        "application/strategic-merge-patch+json")
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}}
        status, _ = await self.call("PATCH", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}",
                                    {"spec": lease["spec"]}, "application/merge-patch+json")
        if status == 404:
            await self.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            for n in self.names:
                try:
                    await self.heartbeat(n)
                except aiohttp.ClientError as e:
                    print(f"heartbeat {n}: {e!r}", flush=True)

    # pods -------------------------------------------------------------------------------------------------------

    def pod_ip(self, uid: str) -> str:
        if uid not in self.ips:
            self.ips[uid] = str(self.pod_net[self.next_ip])
            self.next_ip += 1
        return self.ips[uid]

    def running_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        t = now()
        ip = self.pod_ip(pod["metadata"]["uid"])
        spec = pod["spec"]

        def cstatus(c: dict[str, Any]) -> dict[str, Any]:
            return {"name": c["name"], "image": c["image"], "imageID": f"fake://{c['image']}",
                    "containerID": f"fake://{pod['metadata']['uid']}/{c['name']}", "ready": True, "started": True,
                    "restartCount": 0, "state": {"running": {"startedAt": t}}}

        return {"phase": "Running", "hostIP": self.node_ips[spec["nodeName"]],
                "hostIPs": [{"ip": self.node_ips[spec["nodeName"]]}], "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": t, "qosClass": pod.get("status", {}).get("qosClass", "BestEffort"),
                "conditions": [{"type": ctype, "status": "True", "lastTransitionTime": t}
                               for ctype in ("PodReadyToStartContainers", "Initialized", "ContainersReady",
                                             "Ready", "PodScheduled")],
                "initContainerStatuses": [{**cstatus(c), "ready": True, "started": False,
                                           "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                                    "startedAt": t, "finishedAt": t}}}
                                          for c in spec.get("initContainers") or []],
                "containerStatuses": [cstatus(c) for c in spec["containers"]]}

    async def handle(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if spec.get("nodeName") not in self.node_ips:
            return
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if meta.get("deletionTimestamp"):
            # the kubelet's part of a graceful delete: containers are "stopped", remove the pod for good
            await self.call("DELETE", path, {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
            self.ips.pop(meta["uid"], None)
            return
        status = pod.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        if status.get("phase") == "Running" and ready:
            return
        await self.call("PATCH", path + "/status", {"status": self.running_status(pod)},
                        "application/strategic-merge-patch+json")

    async def handle_safely(self, pod: dict[str, Any]) -> None:
        key = pod["metadata"]["uid"]
        if key in self.inflight:
            return
        self.inflight.add(key)
        try:
            await self.handle(pod)
        except aiohttp.ClientError as e:
            print(f"pod {pod['metadata'].get('name')}: {e!r}", flush=True)
        finally:
            self.inflight.discard(key)

    async def watch_pods(self) -> None:
        rv = ""
        while True:
            try:
                if not rv:
                    _status, body = await self.call("GET", "/api/v1/pods")
                    rv = body["metadata"]["resourceVersion"]
                    for pod in body["items"]:
                        self.spawn(pod)
                params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                          "timeoutSeconds": "300"}
                async with self.session.get(self.server + "/api/v1/pods", params=params,
                                            timeout=aiohttp.ClientTimeout(total=None, sock_read=330)) as r:
                    if r.status == 410:
                        rv = ""
                        continue
                    async for line in r.content:
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        if ev["type"] == "ERROR":
                            rv = "" if ev["object"].get("code") == 410 else rv
                            break
                        rv = ev["object"]["metadata"]["resourceVersion"]
                        if ev["type"] in ("ADDED", "MODIFIED"):
                            self.spawn(ev["object"])
                        elif ev["type"] == "DELETED":
                            self.ips.pop(ev["object"]["metadata"]["uid"], None)
            except (aiohttp.ClientError, TimeoutError) as e:
                print(f"pod watch: {e!r}; re-listing once the API server is ready", flush=True)
                rv = ""
                await self.api_ready()

    async def api_ready(self, deadline_s: float = 60.0) -> bool:
        """Poll the API server's /readyz until it answers 200 (True) or ``deadline_s`` passes (False: the next
        list fails and brings the watch back here)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while loop.time() < end:
            try:
                async with self.session.get(self.server + "/readyz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
        return False


def connect(kubeconfig: Path) -> tuple[str, ssl.SSLContext]:
    cfg = yaml.safe_load(kubeconfig.read_text())
    ctx_name = cfg["current-context"]
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    tmp = Path(tempfile.mkdtemp(prefix="fake-nodes-"))
    for key, fname in (("certificate-authority-data", "ca.crt"), ("client-certificate-data", "tls.crt"),
                       ("client-key-data", "tls.key")):
        (tmp / fname).write_bytes(base64.b64decode(user.get(key) or cluster.get(key)))
    sslctx = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    sslctx.load_cert_chain(str(tmp / "tls.crt"), str(tmp / "tls.key"))
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return cluster["server"], sslctx


async def run(kubeconfig: Path, n: int) -> None:
    server, sslctx = connect(kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=sslctx, limit=64),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        agent = Agent(server, session, [f"fake-node-{i}" for i in range(n)])
        for name in agent.names:
            await agent.register(name)
        print(f"READY {len(agent.names)} nodes", flush=True)
        tasks = [asyncio.create_task(agent.heartbeats()), asyncio.create_task(agent.watch_pods())]
        await stop.wait()
        for t in tasks:
            t.cancel()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.k8s.nodes")
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--nodes", type=int, default=2)
    a = p.parse_args()
    asyncio.run(run(a.kubeconfig, a.nodes))


if __name__ == "__main__":
    main()
