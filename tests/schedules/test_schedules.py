"""Schedules across real API processes sharing one real Redis: exactly once, persistent, killable."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from datetime import datetime

import httpx

from tests.schedules.miniapp import REGISTRY_KEY, SUBMITTED_KEY
from tests.utils.alerts import alert_env, holds_for, start_app, until
from tests.utils.schedules import MINIAPP, alerts_of, runs


def api(redis_url: str, log, port: int | None = None):
    env = alert_env(redis_url, MLSTACK_SCHEDULES_POLL_SECONDS="0.5", MLSTACK_MODEL_NAME="iris_model",
                    MLSTACK_SCHEDULES_MIN_TRAINING_SECONDS="1")  # fast firings (the default floor is 5 minutes)
    return start_app(MINIAPP, log, env, port=port)


def set_latest(r, version: str, age_seconds: float) -> None:
    r.hset(REGISTRY_KEY.format(name="iris_model"), mapping={"version": version,
                                                           "created_at": time.time() - age_seconds})


async def test_bad_input_is_4xx(own_redis, tmp_path):
    proc, base = api(own_redis.url, tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            for body in ({}, {"minutes": 1, "seconds": 10}, {"seconds": 0.5}, {"seconds": 8 * 86400},
                         {"minutes": -1}, {"seconds": 5, "hyperparameters": {"n_estimators": 0}},
                         {"seconds": 5, "hyperparameters": {"bogus": 1}}, {"seconds": 5, "colour": "red"}):
                r = await c.post("/schedule_training", json=body)
                assert r.status_code == 422, (body, r.text)
                assert r.json()["detail"]
            for body in ({"seconds": 5, "max_age_minutes": 1, "max_age_seconds": 5},
                         {"seconds": 5, "max_age_minutes": 0}, {"seconds": 5, "model_name": "bad name!"}):
                assert (await c.post("/watch_model", json=body)).status_code == 422, body
            r = await c.delete("/kill_scheduled_job/nope")
            assert r.status_code == 404 and "nope" in r.json()["detail"]
            assert (await c.get("/schedules")).json() == []
    finally:
        proc.stop()


async def test_two_processes_run_each_firing_exactly_once(own_redis, tmp_path):
    r = own_redis.client()
    set_latest(r, "1", age_seconds=3600)
    a, base_a = api(own_redis.url, tmp_path / "a.log")
    b, base_b = api(own_redis.url, tmp_path / "b.log")
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            t = await c.post(f"{base_a}/schedule_training", json={"seconds": 1, "hyperparameters": {"n_estimators": 7}})
            assert t.status_code == 201, t.text
            train = t.json()
            assert train["kind"] == "training" and train["interval_seconds"] == 1 and train["next_run_time"]
            assert train["params"]["hyperparameters"]["n_estimators"] == 7
            w = await c.post(f"{base_b}/watch_model", json={"seconds": 1, "max_age_seconds": 60, "repeat": True})
            assert w.status_code == 201, w.text
            watch = w.json()
            # both processes list both schedules (one shared, persistent store)
            for base in (base_a, base_b):
                listed = {s["job_id"] for s in (await c.get(f"{base}/schedules")).json()}
                assert listed == {train["job_id"], watch["job_id"]}

        await until(lambda: len(runs(r, train["job_id"])) >= 6 and len(runs(r, watch["job_id"])) >= 6, 30,
                    "six firings of each schedule")
        async with httpx.AsyncClient(timeout=10) as c:  # stop both schedules, then count
            for job in (train, watch):
                assert (await c.delete(f"{base_a}/kill_scheduled_job/{job['job_id']}")).status_code == 200
        for job in (train, watch):
            history = runs(r, job["job_id"])
            times = [datetime.fromisoformat(h["scheduled_run_time"].replace("Z", "+00:00")) for h in history]
            assert len(times) == len(set(times)), f"a firing ran twice: {history}"
            gaps = {(b_ - a_).total_seconds() for a_, b_ in itertools.pairwise(times)}
            assert gaps == {1.0}, f"a firing was skipped or doubled: {gaps}"
            assert all(h["outcome"] == "ok" for h in history)
        # side effects happened once per firing: training submissions and stale alerts
        submitted = [json.loads(x) for x in r.lrange(SUBMITTED_KEY, 0, -1)]
        assert len(submitted) == len(runs(r, train["job_id"]))
        assert {s["job_id"] for s in submitted} == {h["result"]["job_id"] for h in runs(r, train["job_id"])}
        fired = Counter(e["data"]["scheduled_run_time"] for e in alerts_of(r, "schedule.fired"))
        assert set(fired.values()) == {1} and len(fired) == len(submitted)
        instances = Counter(h["instance"] for j in (train, watch) for h in runs(r, j["job_id"]))
        print("firings per process:", dict(instances), "lost lock races:", r.get("mlstack:schedules:contended"))
        stale = Counter(e["data"]["scheduled_run_time"] for e in alerts_of(r, "model.stale"))
        assert set(stale.values()) == {1} and len(stale) == len(runs(r, watch["job_id"]))
    finally:
        a.stop()
        b.stop()


async def test_schedule_survives_restart_and_redis_outage(own_redis, tmp_path):
    r = own_redis.client()
    set_latest(r, "1", age_seconds=10)
    proc, base = api(own_redis.url, tmp_path / "a1.log")
    port = int(base.rsplit(":", 1)[1])
    async with httpx.AsyncClient(timeout=10) as c:
        job = (await c.post(f"{base}/watch_model", json={"seconds": 1, "max_age_minutes": 60})).json()
    await until(lambda: len(runs(r, job["job_id"])) >= 1, 15, "first firing")
    proc.stop()
    stopped_at = time.time()
    proc, base = api(own_redis.url, tmp_path / "a2.log", port=port)
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            listed = (await c.get(f"{base}/schedules")).json()
            assert [s["job_id"] for s in listed] == [job["job_id"]]
            assert listed[0]["params"]["max_age_seconds"] == 3600 and listed[0]["last_run"]["outcome"] == "ok"
            await until(lambda: _fired_after(r, job["job_id"], stopped_at), 15, "firing after restart")

            own_redis.stop()
            r2 = await c.post(f"{base}/schedule_training", json={"seconds": 5})
            assert r2.status_code == 503 and "Redis" in r2.json()["detail"]
            assert (await c.get(f"{base}/schedules")).status_code == 503
            own_redis.start()
            back_at = time.time()
            await until(lambda: _fired_after(r, job["job_id"], back_at), 20, "firing after Redis came back")
            assert (await c.post(f"{base}/schedule_training", json={"seconds": 5})).status_code == 201
        # fresh model: no stale alert was raised
        assert alerts_of(r, "model.stale") == []
    finally:
        proc.stop()


async def test_kill_from_another_process_stops_it_everywhere(own_redis, tmp_path):
    r = own_redis.client()
    set_latest(r, "1", age_seconds=10)
    a, base_a = api(own_redis.url, tmp_path / "a.log")
    b, base_b = api(own_redis.url, tmp_path / "b.log")
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            job = (await c.post(f"{base_a}/watch_model", json={"seconds": 1})).json()
            await until(lambda: len(runs(r, job["job_id"])) >= 2, 15, "two firings")
            k = await c.delete(f"{base_b}/kill_scheduled_job/{job['job_id']}")
            assert k.status_code == 200 and k.json() == {"job_id": job["job_id"], "killed": True}
            assert (await c.delete(f"{base_a}/kill_scheduled_job/{job['job_id']}")).status_code == 404
            for base in (base_a, base_b):
                assert (await c.get(f"{base}/schedules")).json() == []
        count = len(runs(r, job["job_id"]))
        await holds_for(lambda: len(runs(r, job["job_id"])) == count, 3.0, "a killed schedule fired again")
    finally:
        a.stop()
        b.stop()


async def test_watch_model_raises_one_stale_alert_per_stale_version(own_redis, tmp_path):
    r = own_redis.client()
    set_latest(r, "3", age_seconds=7200)
    proc, base = api(own_redis.url, tmp_path / "api.log")
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            job = (await c.post(f"{base}/watch_model", json={"seconds": 1, "max_age_minutes": 60})).json()
            await until(lambda: alerts_of(r, "model.stale"), 15, "stale alert")
            [alert] = alerts_of(r, "model.stale")
            assert alert["severity"] == "warning" and alert["model"] == "iris_model" and alert["version"] == "3"
            assert alert["data"]["schedule_id"] == job["job_id"] and alert["data"]["age_seconds"] > 3600
            # more checks while still stale: no repeat
            n = len(runs(r, job["job_id"]))
            await until(lambda: len(runs(r, job["job_id"])) >= n + 2, 15, "two more checks")
            assert len(alerts_of(r, "model.stale")) == 1
            # a fresh version: checks pass quietly; when it goes stale too, one new alert
            set_latest(r, "4", age_seconds=0)
            await until(lambda: runs(r, job["job_id"])[-1]["result"]["version"] == "4", 15, "fresh check")
            assert runs(r, job["job_id"])[-1]["result"]["stale"] is False
            set_latest(r, "4", age_seconds=7200)
            await until(lambda: len(alerts_of(r, "model.stale")) == 2, 15, "stale alert for v4")
            assert alerts_of(r, "model.stale")[-1]["version"] == "4"
            # and the same alert is on the SSE history endpoint
            recent = (await c.get(f"{base}/alerts", params={"limit": 10})).json()
            assert [a["version"] for a in recent if a["type"] == "model.stale"] == ["3", "4"]
    finally:
        proc.stop()


def _fired_after(r, job_id: str, t: float) -> bool:
    return any(datetime.fromisoformat(h["fired_at"].replace("Z", "+00:00")).timestamp() > t
               for h in runs(r, job_id))
