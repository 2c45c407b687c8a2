"""End to end through the real API (`mlstack api`): training alerts, watchers on the real MLflow registry,
two full API processes sharing Redis, readiness during a Redis outage."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import httpx
import pytest

from tests.utils.alerts import SSEClient, holds_for, until
from tests.utils.procs import start_api

pytestmark = pytest.mark.slow


def run_api(env: dict, log, port: int | None = None):
    return start_api(log, env, port)


@pytest.fixture(scope="module")
def e2e_env(stack_env):
    """Own stream and schedule keys, so other suites' API processes on the session Redis do not interfere."""
    tag = uuid.uuid4().hex[:8]
    return {**stack_env, "MLSTACK_ALERTS_STREAM": f"e2e:{tag}:alerts", "MLSTACK_SCHEDULES_PREFIX": f"e2e:{tag}:sched",
            "MLSTACK_SCHEDULES_POLL_SECONDS": "0.5", "MLSTACK_ALERTS_HEARTBEAT_SECONDS": "1",
            "MLSTACK_MODEL_NAME": f"e2e_{tag}"}


@pytest.fixture(scope="module")
def full_api(e2e_env, tmp_path_factory):
    proc, base = run_api(e2e_env, tmp_path_factory.mktemp("e2e") / "api.log")
    yield base
    proc.stop()


@pytest.fixture(scope="module")
def trained(full_api):
    """Filled by the training test (a real Ray → MLflow job); the watcher tests reuse its model version."""
    return {}


async def test_training_completion_and_accuracy_alerts_arrive_on_the_stream(full_api, e2e_env, trained):
    async with SSEClient(f"{full_api}/webhook") as sse, httpx.AsyncClient(base_url=full_api, timeout=30) as c:
        await until(lambda: _status(c, "subscribers", 1), 20, "subscribed")
        r = await c.post("/trigger_training", json={"hyperparameters": {"n_estimators": 10, "max_depth": 4}})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]

        def mine(type_):
            return [a for a in sse.alerts if a["type"] == type_ and a["data"].get("job_id") == job_id]

        await until(lambda: mine("training.finished") or mine("training.failed"), 600, "training alert")
        assert not mine("training.failed"), mine("training.failed")
        [done] = mine("training.finished")
        await until(lambda: mine("model.accuracy"), 30, "accuracy alert")
        [acc] = mine("model.accuracy")
        assert done["model"] == e2e_env["MLSTACK_MODEL_NAME"] and done["version"]
        assert acc["version"] == done["version"] and acc["data"]["accuracy"] >= 0.9
        assert sse.ids.index(done["id"]) < sse.ids.index(acc["id"])
        trained.update(version=done["version"])


async def test_watch_model_raises_stale_alert_on_the_real_registry(full_api, trained):
    if not trained:
        pytest.skip("needs the trained model of the previous test")
    async with SSEClient(f"{full_api}/alerts/stream") as sse, httpx.AsyncClient(base_url=full_api, timeout=30) as c:
        r = await c.post("/watch_model", json={"seconds": 1, "max_age_seconds": 1})
        assert r.status_code == 201, r.text
        job = r.json()
        try:
            await until(lambda: [a for a in sse.alerts if a["type"] == "model.stale"], 60, "stale alert")
            stale = next(a for a in sse.alerts if a["type"] == "model.stale")
            assert stale["version"] == trained["version"] and stale["data"]["schedule_id"] == job["job_id"]
            assert stale["data"]["age_seconds"] > 1
        finally:
            assert (await c.delete(f"/kill_scheduled_job/{job['job_id']}")).status_code == 200


async def test_two_full_api_processes_fire_once_and_kill_works_across(full_api, e2e_env, tmp_path, trained):
    if not trained:
        pytest.skip("needs the trained model of the first test")
    other, base_b = run_api(e2e_env, tmp_path / "b.log")
    try:
        async with httpx.AsyncClient(timeout=30) as c:
            job = (await c.post(f"{full_api}/watch_model", json={"seconds": 1, "max_age_seconds": 1,
                                                                 "repeat": True})).json()

            async def runs():
                return (await c.get(f"{base_b}/schedules/{job['job_id']}/runs")).json()

            await until(lambda: _len_ge(runs(), 5), 60, "five firings")
            assert (await c.delete(f"{base_b}/kill_scheduled_job/{job['job_id']}")).status_code == 200
            history = await runs()
            times = Counter(h["scheduled_run_time"] for h in history)
            assert set(times.values()) == {1}, history
            assert all(h["outcome"] == "ok" and h["result"]["stale"] for h in history)
            n = len(history)
            for base in (full_api, base_b):
                assert job["job_id"] not in {s["job_id"] for s in (await c.get(f"{base}/schedules")).json()}
        import redis

        r = redis.Redis.from_url(e2e_env["MLSTACK_REDIS_URL"], decode_responses=True)
        key = f"{e2e_env['MLSTACK_SCHEDULES_PREFIX']}:runs:{job['job_id']}"
        await holds_for(lambda: r.llen(key) == n, 3.0, "killed schedule fired again")
        stale = [json.loads(f["event"]) for _, f in r.xrange(e2e_env["MLSTACK_ALERTS_STREAM"])
                 if f["type"] == "model.stale" and job["job_id"] in f["event"]]
        assert len(stale) == n  # repeat=True: one alert per firing, none twice
    finally:
        other.stop()


async def test_readyz_reports_redis_outage_and_alerts_are_kept(own_redis, e2e_env, tmp_path):
    env = {**e2e_env, "MLSTACK_REDIS_URL": own_redis.url}
    proc, base = run_api(env, tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            await until(lambda: _ready(c, True), 60, "ready")
            own_redis.stop()
            await until(lambda: _ready(c, False), 30, "not ready while Redis is down")
            body = (await c.get("/readyz")).json()
            assert body["checks"]["redis"] != "ok"
            r = await c.post("/alerts", json={"title": "during outage", "severity": "critical"})
            assert r.status_code == 201 and r.json() == {"id": None, "buffered": True}
            own_redis.start()
            await until(lambda: _ready(c, True), 60, "ready again")
            await until(lambda: _status(c, "buffered", 0, eq=True), 30, "buffer flushed")
            recent = (await c.get("/alerts", params={"limit": 5})).json()
            assert recent[-1]["title"] == "during outage" and recent[-1]["id"]
    finally:
        proc.stop()


async def _ready(c: httpx.AsyncClient, want: bool) -> bool:
    return ((await c.get("/readyz")).status_code == 200) is want


async def _status(c: httpx.AsyncClient, key: str, n: int, eq: bool = False) -> bool:
    value = (await c.get("/alerts/status")).json()[key]
    return value == n if eq else value >= n


async def _len_ge(coro, n: int) -> bool:
    return len(await coro) >= n
