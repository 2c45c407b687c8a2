"""Local mode, ``server: rayserve``: an application in the API's local Ray Serve."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.utils.deployments import ROWS, wait_phase
from tests.utils.procs import free_port

pytestmark = pytest.mark.slow


def test_rayserve_deployment(api_factory, workdir, model):
    serve_port = free_port()
    api = api_factory("rayserve", {
        "MLSTACK_STATE_DIR": str(workdir / "deploy-state-ray"),
        "MLSTACK_DEPLOYMENTS_REDIS_KEY": f"mlstack:deployments:test:{uuid.uuid4().hex[:6]}",
        "MLSTACK_RAYSERVE_PORT": str(serve_port),
        "MLSTACK_RAY_TEMP_DIR": f"/tmp/mlray-{uuid.uuid4().hex[:6]}",  # Ray's socket paths must stay short
    })
    with api.client() as c:
        r = c.post("/deployments", json={"name": "iris-ray", "spec": {
            "model": {"name": model.name, "alias": "champion"}, "server": "rayserve"}})
        assert r.status_code == 201, r.text
        obj = wait_phase(c, "iris-ray", {"Ready", "Failed"}, timeout=300)
        st = obj["status"]
        assert st["phase"] == "Ready", st
        assert st["url"] == f"http://127.0.0.1:{serve_port}/models/iris-ray"
        assert st["resolvedVersion"] == model.version and st["readyReplicas"] == 1

        pred = httpx.post(f"{st['url']}/predict", json={"instances": ROWS}, timeout=60)
        assert pred.status_code == 200, pred.text
        assert pred.json()["predictions"] == [0, 2]
        assert httpx.get(f"{st['url']}/v2/models/{model.name}/ready", timeout=30).status_code == 200
        # the payload log at the spec's default sample rate: the application's collector, behind the same URL
        pay = httpx.get(f"{st['url']}/v2/monitoring/payloads", timeout=30)
        assert pay.status_code == 200 and pay.json()["sample_rate"] == 0.05, pay.text

        assert c.delete("/deployments/iris-ray").status_code == 204
        assert httpx.post(f"{st['url']}/predict", json={"instances": ROWS}, timeout=30).status_code == 404
    t0 = time.monotonic()
    api.stop()
    assert time.monotonic() - t0 < 25, "the API must not hang on Ray at shutdown"
