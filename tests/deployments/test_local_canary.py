"""Local mode canaries, measured through a real API: ``/inference`` naming the deployment gets exactly the
canary's share (counted from ``model_version`` in the answers), and promote/abort are one call each that roll
without a failed request."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.utils.deployments import ROWS, Api, register_onnx, wait_phase
from tests.utils.procs import wait_until

NS = "models"
N = 2000


@pytest.fixture(scope="module")
def local_api(api_factory, workdir) -> Api:
    return api_factory("local-canary", {
        "MLSTACK_STATE_DIR": str(workdir / "deploy-canary-state"),
        "MLSTACK_SERVE_PORT_RANGE": "[24500, 24999]",
        "MLSTACK_DEPLOYMENTS_REDIS_KEY": f"mlstack:deployments:canary:{uuid.uuid4().hex[:6]}",
        "MLSTACK_DEPLOYMENTS_RETRY_SECONDS": "2",
    })


@pytest.fixture(scope="module")
def versions(mlflow_uri) -> tuple[str, str, str]:
    name = f"canary_iris_{uuid.uuid4().hex[:6]}"
    return name, register_onnx(mlflow_uri, name), register_onnx(mlflow_uri, name)


@pytest.fixture
def client(local_api):
    with local_api.client() as c:
        yield c


def serve_processes(api: Api, name: str) -> list[str]:
    """The ``mlstack serve`` command lines the API runs for deployment ``name`` (by their pid files)."""
    import psutil

    out = []
    for pid_file in (api.state_dir / "deployments" / NS / name).glob("*/*.pid"):
        with contextlib.suppress(psutil.Error, ValueError, OSError):
            out.append(" ".join(psutil.Process(int(pid_file.read_text())).cmdline()))
    return sorted(out)


class Load:
    """Clients in a loop on /inference through a deployment, recording (status, model_version)."""

    def __init__(self, api: Api, deployment: str, clients: int = 3):
        self.results: list[tuple[float, int, str | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(api.url, deployment)) for _ in range(clients)]

    def _run(self, url: str, deployment: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not self.stop.is_set():
                r = c.post("/inference", json={"deployment": deployment, "input_data": ROWS})
                self.results.append((time.monotonic(), r.status_code,
                                     r.json().get("model_version") if r.status_code == 200 else r.text))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def failed(self) -> list:
        return [(s, v) for _, s, v in self.results if s != 200]


def test_share_is_exact_through_inference_then_abort_rolls_without_a_failed_request(client, local_api, versions):
    name, v1, v2 = versions
    body = {"name": "iris-canary", "spec": {"model": {"name": name, "version": v1},
                                            "canary": {"version": v2, "trafficPercent": 10}}}
    assert client.post("/deployments", json=body).status_code == 201
    st = wait_phase(client, "iris-canary", {"Ready", "Failed"})["status"]
    assert st["phase"] == "Ready" and st["resolvedVersion"] == v1 and st["canaryVersion"] == v2, st
    cmds = serve_processes(local_api, "iris-canary")
    assert len(cmds) == 2 and sum("--canary-percent 10" in c for c in cmds) == 1, cmds

    def some(n: int) -> list[str]:
        out = []
        with httpx.Client(base_url=local_api.url, timeout=60) as c:  # keep-alive, as a real client
            for _ in range(n):
                r = c.post("/inference", json={"deployment": f"{NS}/iris-canary", "input_data": ROWS})
                assert r.status_code == 200, r.text
                assert r.json()["predictions"] == [0, 2]
                out.append(r.json()["model_version"])
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        served = [v for part in pool.map(some, [N // 4] * 4) for v in part]
    share = 100 * served.count(v2) / N
    print(f"\nlocal /inference through the deployment: canary share {share:.2f} % of {N} (asked 10 %), "
          f"{N / (time.perf_counter() - t0):.0f} req/s")
    assert set(served) == {v1, v2}
    assert abs(share - 10) <= 2

    # abort under load: one call; the stable version takes every request, no request fails
    with Load(local_api, f"{NS}/iris-canary") as load:
        wait_until(lambda: len(load.results) >= 30, 30, what="load running")
        r = client.post("/deployments/iris-canary/canary/abort")
        assert r.status_code == 200, r.text
        assert r.json()["spec"].get("canary") is None and r.json()["spec"]["model"]["version"] == v1
        wait_until(lambda: client.get("/deployments/iris-canary").json()["status"].get("canaryVersion") is None,
                   30, interval=0.1, what="canary gone from the status")
        wait_until(lambda: len(serve_processes(local_api, "iris-canary")) == 1, 30, what="canary server stopped")
        cut = time.monotonic()
        wait_until(lambda: sum(1 for ts, _, _ in load.results if ts > cut) >= 60, 30, what="load after the roll")
    assert not load.failed(), load.failed()[:5]
    assert {v for ts, _, v in load.results if ts > cut} == {v1}
    assert "--canary" not in serve_processes(local_api, "iris-canary")[0]
    r = client.post("/deployments/iris-canary/canary/abort")
    assert r.status_code == 409 and "no canary" in r.json()["detail"]
    assert client.post("/deployments/iris-canary/canary/promote").status_code == 409
    assert client.post("/deployments/nope/canary/promote").status_code == 404
    assert client.delete("/deployments/iris-canary").status_code == 204


def test_promote_switches_to_the_canary_without_a_failed_request(client, local_api, versions):
    name, v1, v2 = versions
    body = {"name": "iris-promote", "spec": {"model": {"name": name, "version": v1},
                                             "canary": {"version": v2, "trafficPercent": 50}}}
    assert client.post("/deployments", json=body).status_code == 201
    assert wait_phase(client, "iris-promote", {"Ready"})["status"]["canaryVersion"] == v2
    with Load(local_api, f"{NS}/iris-promote") as load:
        wait_until(lambda: {v for _, _, v in load.results} >= {v1, v2}, 30, what="both versions answering")
        t0 = time.monotonic()
        r = client.post("/deployments/iris-promote/canary/promote", params={"namespace": NS})
        assert r.status_code == 200, r.text
        assert r.json()["spec"]["model"] == {"name": name, "version": v2, "alias": None}
        assert r.json()["spec"].get("canary") is None and r.json()["metadata"]["generation"] == 2
        obj = wait_until(lambda: (o := client.get("/deployments/iris-promote").json())["status"].get(
            "resolvedVersion") == v2 and o["status"].get("canaryVersion") is None and o, 30, interval=0.1,
            what="promoted")
        promoted = time.monotonic() - t0
        wait_until(lambda: len(serve_processes(local_api, "iris-promote")) == 1, 30, what="old stable stopped")
        cut = time.monotonic()
        wait_until(lambda: sum(1 for ts, _, _ in load.results if ts > cut) >= 60, 30, what="load after the roll")
    print(f"\npromote under load: {len(load.results)} requests, {len(load.failed())} non-2xx, "
          f"Ready on v{v2} {promoted:.2f} s after the call")
    assert not load.failed(), load.failed()[:5]
    assert {v for ts, _, v in load.results if ts > cut} == {v2}
    assert obj["status"]["phase"] == "Ready" and obj["status"]["observedGeneration"] == 2
    alerts = client.get("/alerts", params={"limit": 1000}).json()
    assert [(a["data"]["from"], a["data"]["to"]) for a in alerts
            if a["type"] == "deployment.rolled" and a["deployment"] == "iris-promote"] == [(v1, v2)]
    assert client.delete("/deployments/iris-promote").status_code == 204
