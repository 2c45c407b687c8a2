"""A scheduled training firing through the real API (real JobManager, Ray, MLflow, Redis): one `schedule.fired`,
no `schedule.failed`, and the job it started really trains (issue 13, item 10)."""

from __future__ import annotations

import httpx

from tests.utils.alerts import until
from tests.utils.procs import start_api
from tests.utils.schedules import alerts_of, runs


async def test_a_firing_produces_exactly_one_schedule_fired_and_no_failure(own_redis, stack_env, tmp_path):
    env = {**stack_env, "MLSTACK_REDIS_URL": own_redis.url, "MLSTACK_MLFLOW_EXPERIMENT": "scheduled-training",
           "MLSTACK_SCHEDULES_POLL_SECONDS": "0.5", "MLSTACK_SCHEDULES_MIN_SECONDS": "1",
           "MLSTACK_SCHEDULES_MIN_TRAINING_SECONDS": "1",
           "MLSTACK_STATE_DIR": str(tmp_path / "state"), "MLSTACK_SERVE_PORT_RANGE": "[24000, 24099]"}
    proc, base = start_api(tmp_path / "api.log", env)
    r = own_redis.client()
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            resp = await c.post("/schedule_training", json={
                "seconds": 4, "hyperparameters": {"n_estimators": 5, "random_state": 3}})
            assert resp.status_code == 201, resp.text
            schedule_id = resp.json()["job_id"]
            await until(lambda: runs(r, schedule_id), 60, "the first firing")
            assert (await c.delete(f"/kill_scheduled_job/{schedule_id}")).status_code == 200

            history = runs(r, schedule_id)
            assert history and all(h["outcome"] == "ok" for h in history), history
            assert alerts_of(r, "schedule.failed") == []
            fired = [a for a in alerts_of(r, "schedule.fired") if a["data"]["schedule_id"] == schedule_id]
            # exactly one schedule.fired per firing, naming the job that firing started
            assert [a["data"]["scheduled_run_time"] for a in fired] == [h["scheduled_run_time"] for h in history]
            assert [a["data"]["job_id"] for a in fired] == [h["result"]["job_id"] for h in history]

            job_id = history[0]["result"]["job_id"]

            async def finished():
                job = (await c.get(f"/training/{job_id}")).json()
                return job if job["status"] in ("succeeded", "failed") else None

            job = await until(finished, 300, f"training job {job_id}")
            assert job["status"] == "succeeded", job
            assert job["hyperparameters"]["n_estimators"] == 5
    finally:
        proc.stop(timeout=30)
