"""A Redis outage while a training job runs (issue 13, item 8): the routes answer 503 with a message, nothing is
half-written, and the job that finished during the outage is stored as finished once Redis is back."""

from __future__ import annotations

import json
import time

import httpx
from mlflow.tracking import MlflowClient

from tests.utils.alerts import RedisServer, until
from tests.utils.procs import start_api

MODEL = "outage_model"


async def test_job_finishing_during_a_redis_outage_is_stored_when_redis_is_back(stack_env, mlflow_uri, tmp_path):
    redis_server = RedisServer(tmp_path / "redis").start()
    env = {**stack_env, "MLSTACK_REDIS_URL": redis_server.url, "MLSTACK_MLFLOW_EXPERIMENT": "redis-outage",
           "MLSTACK_STATE_DIR": str(tmp_path / "state"), "MLSTACK_SERVE_PORT_RANGE": "[24100, 24199]"}
    log = tmp_path / "api.log"
    proc, base = start_api(log, env)
    mc = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            r = await c.post("/trigger_training", json={"model_name": MODEL,
                                                        "hyperparameters": {"n_estimators": 1000, "random_state": 1}})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            await until(lambda: _status(c, job_id, "running"), 120, "the job running")

            redis_server.stop()
            down_at = time.monotonic()
            # every route that needs Redis: a 503 with a message, not a bare 500
            for method, path, body in [("GET", f"/training/{job_id}", None), ("GET", "/training", None),
                                       ("GET", f"/training/{job_id}/logs", None),
                                       ("POST", "/trigger_training", {"model_name": MODEL})]:
                resp = await c.request(method, path, json=body)
                assert resp.status_code == 503, (path, resp.status_code, resp.text)
                assert "Redis" in resp.json()["detail"], resp.text

            # the job finishes while Redis is down: its version is registered, its record could not be stored
            version = await until(lambda: _version_of(mc, job_id), 180, "the job's model version in MLflow")
            await until(lambda: "kept in memory" in log.read_text(), 30, "the API keeping the finished record")

            redis_server.start()
            back_at = time.monotonic()
            rc = redis_server.client()
            await until(lambda: _stored_status(rc, job_id) == "succeeded", 30, "the finished job stored in Redis")
            stored_after = time.monotonic() - back_at
            print(f"outage {back_at - down_at:.1f}s; record stored {stored_after:.2f}s after Redis came back")
            job = (await c.get(f"/training/{job_id}")).json()
            assert job["status"] == "succeeded" and job["version"] == version and job["finished_at"]
            logs = await c.get(f"/training/{job_id}/logs")
            assert logs.status_code == 200 and "is running" not in logs.text

            # what Redis holds: exactly the one job (the 503'd submit left nothing behind), stored as succeeded
            assert rc.zrange("mlstack:training:jobs", 0, -1) == [job_id]
            assert rc.keys("mlstack:training:job:*") == [f"mlstack:training:job:{job_id}"]
            # the alert of the finish, buffered during the outage, arrives exactly once
            finished = await until(lambda: _alerts(rc, "training.finished"), 30, "training.finished alert")
            assert [a["data"]["job_id"] for a in finished] == [job_id]
            assert (await c.get("/training")).json()[0]["status"] == "succeeded"
    finally:
        proc.stop(timeout=30)
        redis_server.stop()


async def _status(c: httpx.AsyncClient, job_id: str, status: str) -> bool:
    return (await c.get(f"/training/{job_id}")).json()["status"] == status


def _stored_status(r, job_id: str) -> str | None:
    raw = r.get(f"mlstack:training:job:{job_id}")
    return json.loads(raw)["status"] if raw else None


def _version_of(mc: MlflowClient, job_id: str) -> str | None:
    for mv in mc.search_model_versions(f"name = '{MODEL}'"):
        if mv.tags.get("mlstack.job_id") == job_id:
            return mv.version
    return None


def _alerts(r, type_: str) -> list[dict]:
    return [json.loads(f["event"]) for _, f in r.xrange("mlstack:alerts") if f.get("type") == type_]


# A crashed API's jobs (re-attached by a live one, or failed when Ray lost them): tests/training/test_durable_jobs.py
