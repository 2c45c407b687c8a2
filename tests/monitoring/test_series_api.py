"""``GET /deployments/{name}/monitoring`` end to end, local mode: a real ``mlstack api`` (Redis, MLflow, moto S3)
monitoring a real ``mlstack serve`` deployment; the series gains points with counted requests, latency
percentiles and the deployment's ``deployment.slo`` alert; bad parameters and unknown deployments are refused;
deleting the deployment drops its series."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import redis

from tests.utils.monitored import deploy_slow, fast_monitor_env, register_onnx, send_traffic
from tests.utils.procs import start_api, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
NS = "models"


@pytest.fixture(scope="module")
def api(stack_env, workdir, mlflow_uri):
    env = {**stack_env, **fast_monitor_env(workdir, "series-api", "[25500, 25699]")}
    proc, url = start_api(workdir / "series-api.log", env, what="mlstack api (series)")
    yield url, env
    proc.stop(timeout=30)


def test_the_series_and_the_alerts_of_a_deployment(api, mlflow_uri, redis_url):
    url, env = api
    model = f"series_iris_{uuid.uuid4().hex[:6]}"
    version = register_onnx(mlflow_uri, model)
    with httpx.Client(base_url=url, timeout=60) as c:
        deploy_slow(c, model, version, "charted", NS)
        t0 = time.time()
        # at once, before or around the deployment's first point: a server the monitor reads for the first time
        # counts from its start (its counters' _created), so no request is lost into a baseline
        send_traffic(c, f"{NS}/charted", 30)

        def charted():
            r = c.get("/deployments/charted/monitoring", params={"namespace": NS, "since": t0 - 60})
            assert r.status_code == 200, r.text
            body = r.json()
            counted = sum(p["requests"] or 0 for p in body["points"] if p["counted"])
            # the servers' counters can reach a point before the last sampled record is drained into one
            sampled = sum(p["versions"].get(version, {}).get("sampled", 0) for p in body["points"])
            slo = [a for a in body["alerts"] if a["type"] == "deployment.slo"]
            return body if counted == 30 and sampled == 30 and slo else None

        body = wait_until(charted, 60, interval=0.5, what="all 30 requests counted and sampled, and the latency breach")
        assert body["namespace"] == NS and body["name"] == "charted" and body["step_seconds"] == 0.5
        points = body["points"]
        assert points == sorted(points, key=lambda p: p["ts"])
        v = [p["versions"][version] for p in points if version in p["versions"] and "p99_ms" in p["versions"][version]]
        assert v and max(x["p99_ms"] for x in v) > 1 and sum(x["sampled"] for x in v) == 30
        assert all(p["errors"] == 0 for p in points if p["counted"])
        (breach,) = [a for a in body["alerts"] if a["type"] == "deployment.slo"]
        assert breach["deployment"] == "charted" and breach["namespace"] == NS
        assert breach["data"]["objective"] == "maxP99LatencyMs"

        # a later since: none of those points or alerts
        r = c.get("/deployments/charted/monitoring", params={"namespace": NS, "since": time.time() - 0.01,
                                                              "limit": 1})
        assert r.status_code == 200 and len(r.json()["points"]) <= 1 and r.json()["alerts"] == []

        # refused: unknown deployment, bad parameters
        r = c.get("/deployments/nope/monitoring", params={"namespace": NS})
        assert r.status_code == 404 and "nope" in r.json()["detail"]
        for params in ({"namespace": NS, "since": time.time() + 3600}, {"namespace": NS, "since": -1},
                       {"namespace": NS, "limit": 0}, {"namespace": "Bad_NS"}, {"namespace": NS, "since": "x"}):
            r = c.get("/deployments/charted/monitoring", params=params)
            assert r.status_code in (400, 422), (params, r.status_code, r.text)

        # deleted: its series goes
        assert c.delete("/deployments/charted", params={"namespace": NS}).status_code == 204
        key = f"{env['MLSTACK_MONITOR_KEY_PREFIX']}:series:{NS}/charted"
        r = redis.Redis.from_url(redis_url)
        try:
            wait_until(lambda: not r.exists(key), 30, interval=0.3, what="the series dropped")
        finally:
            r.close()
