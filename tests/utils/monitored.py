"""Helpers of the monitoring-series tests (API and browser): a registered ONNX iris model, the environment of an
API whose monitor evaluates (and records points) every half second, and a deployment slower than its latency SLO.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.utils.deployments import register_onnx
from tests.utils.procs import wait_until

__all__ = ["deploy_slow", "fast_monitor_env", "register_onnx", "send_traffic"]


def fast_monitor_env(workdir: Path, tag: str, ports: str) -> dict[str, str]:
    """An API of its own (state, deployments, monitor keys) whose monitor drains every 0.3 s and evaluates and
    records a series point every 0.5 s; every request waits 4 ms for a batch (a slow model, on purpose)."""
    return {
        "MLSTACK_STATE_DIR": str(workdir / f"{tag}-state"),
        "MLSTACK_SERVE_PORT_RANGE": ports,
        "MLSTACK_DEPLOYMENTS_REDIS_KEY": f"mlstack:deployments:{tag}:{uuid.uuid4().hex[:6]}",
        "MLSTACK_MONITOR_KEY_PREFIX": f"mlstack:monitoring:{tag}:{uuid.uuid4().hex[:6]}",
        "MLSTACK_MONITOR_DRAIN_SECONDS": "0.3", "MLSTACK_MONITOR_EVALUATE_SECONDS": "0.5",
        "MLSTACK_MONITOR_SERIES_STEP_SECONDS": "0.5", "MLSTACK_MONITOR_HISTORY_ENABLED": "false",
        "MLSTACK_SERVE_BATCH_WINDOW_MS": "4",
    }


def deploy_slow(client: httpx.Client, model: str, version: str, name: str, namespace: str,
                timeout: float = 180) -> None:
    """A deployment logging every request whose latency SLO (1 ms) the 4 ms batch window breaches; Ready."""
    r = client.post("/deployments", json={"name": name, "namespace": namespace, "spec": {
        "model": {"name": model, "version": version}, "monitoring": {"sampleRate": 1, "windowSeconds": 60},
        "alerts": {"maxP99LatencyMs": 1}}})
    assert r.status_code == 201, r.text

    def ready():
        r = client.get(f"/deployments/{name}", params={"namespace": namespace})
        assert r.status_code == 200, r.text
        return r.json()["status"]["phase"] == "Ready"

    wait_until(ready, timeout, interval=0.3, what=f"deployment {namespace}/{name} Ready")


def send_traffic(client: httpx.Client, deployment: str, n: int) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    for _ in range(n):
        r = client.post("/inference", json={"deployment": deployment, "input_data": rows})
        assert r.status_code == 200, r.text
