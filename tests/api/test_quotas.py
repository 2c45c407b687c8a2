"""Per-caller limits, tried as an attacker with a deployer token (issue 13, item 5): a burst of training jobs,
a flood of schedules, a 1-second training schedule, deployments without end. A real API process on the
session's Redis, MLflow, S3 and its own local Ray with one CPU (so jobs really queue)."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
from datetime import datetime

import httpx
import pytest

from tests.utils.procs import start_api, wait_until

TOKENS = [{"name": "mallory", "role": "deployer", "token": "deployer-token-quota"},
          {"name": "ada", "role": "admin", "token": "admin-token-quota"}]
MALLORY = {"Authorization": "Bearer deployer-token-quota"}
ADA = {"Authorization": "Bearer admin-token-quota"}
LIMITS = {"MLSTACK_LIMITS_TRAINING_JOBS_PER_CALLER": "4", "MLSTACK_LIMITS_SCHEDULES_PER_CALLER": "10",
          "MLSTACK_LIMITS_DEPLOYMENTS_PER_CALLER": "3", "MLSTACK_LIMITS_TRAINING_RETRY_AFTER_SECONDS": "30"}


@pytest.fixture(scope="module")
def quota_api(stack_env, workdir, data_dir):
    ray_tmp = tempfile.mkdtemp(prefix="mlq-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    env = {**stack_env, **LIMITS, "MLSTACK_AUTH_TOKENS": json.dumps(TOKENS), "MLSTACK_MLFLOW_EXPERIMENT": "quotas",
           "MLSTACK_MODEL_NAME": "quota_model", "MLSTACK_RAY_NUM_CPUS": "1",
           "MLSTACK_RAY_TEMP_DIR": ray_tmp, "MLSTACK_STATE_DIR": str(workdir / "quota-state"),
           "MLSTACK_SERVE_PORT_RANGE": "[25500, 25599]", "MLSTACK_DATA_DIR": str(data_dir)}
    proc, url = start_api(workdir / "quota-api.log", env, what="mlstack api (quotas)")
    yield url
    proc.stop(timeout=30)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _burst(url: str, headers: dict, requests: list[tuple[str, str, dict | None]]) -> list[httpx.Response]:
    async def go():
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as c:
            return await asyncio.gather(*(c.request(m, p, json=b) for m, p, b in requests))

    return asyncio.run(go())


def test_a_burst_of_30_training_jobs_is_capped_and_jobs_run_only_when_they_run(quota_api):
    body = {"hyperparameters": {"n_estimators": 2, "random_state": 7}}
    answers = _burst(quota_api, MALLORY, [("POST", "/trigger_training", body)] * 30)
    codes = [r.status_code for r in answers]
    accepted = [r.json() for r in answers if r.status_code == 202]
    refused = [r for r in answers if r.status_code == 429]
    assert len(accepted) == 4 and len(refused) == 26, codes
    for r in refused:
        assert r.headers["Retry-After"] == "30"
        assert "too many queued or running training jobs: you have 4 (the limit is 4)" in r.json()["detail"]
    # another caller has their own limit
    other = httpx.post(f"{quota_api}/trigger_training", json=body, headers=ADA, timeout=60)
    assert other.status_code == 202, other.text
    ids = {j["job_id"] for j in accepted} | {other.json()["job_id"]}

    # one CPU: one job runs at a time, the others say queued (with no started_at) until a worker takes them
    seen_queued_while_running = False

    def all_done():
        nonlocal seen_queued_while_running
        jobs = [httpx.get(f"{quota_api}/training/{i}", headers=ADA, timeout=30).json() for i in ids]
        running = [j for j in jobs if j["status"] == "running"]
        queued = [j for j in jobs if j["status"] == "queued"]
        assert all(j["started_at"] is None for j in queued), queued
        if running and queued:
            seen_queued_while_running = True
        return jobs if all(j["status"] in ("succeeded", "failed") for j in jobs) else None

    jobs = wait_until(all_done, 600, interval=0.3, what="the admitted jobs")
    assert all(j["status"] == "succeeded" for j in jobs), [j.get("error") for j in jobs]
    assert seen_queued_while_running
    # and each started only when the one before it was done (one CPU), not when it was submitted
    spans = sorted((datetime.fromisoformat(j["started_at"]), datetime.fromisoformat(j["finished_at"])) for j in jobs)
    for (_, prev_end), (start, _) in itertools.pairwise(spans):
        assert (start - prev_end).total_seconds() > -0.5, spans
    # finished jobs hold no slot: the caller may train again
    again = httpx.post(f"{quota_api}/trigger_training", json=body, headers=MALLORY, timeout=60)
    assert again.status_code == 202, again.text


def test_43_schedules_are_capped_and_a_training_schedule_is_minutes_apart(quota_api):
    one_second = httpx.post(f"{quota_api}/schedule_training", json={"seconds": 1}, headers=MALLORY)
    assert one_second.status_code == 422
    assert "at least 300 seconds (5 minutes)" in one_second.json()["detail"]
    assert httpx.post(f"{quota_api}/schedule_training", json={"minutes": 4}, headers=MALLORY).status_code == 422

    reqs = [("POST", "/schedule_training", {"minutes": 60})] * 23 + [("POST", "/watch_model", {"minutes": 30})] * 20
    answers = _burst(quota_api, MALLORY, reqs)
    created = [r.json()["job_id"] for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code == 429]
    assert len(created) == 10 and len(refused) == 33, [r.status_code for r in answers]
    assert all(r.headers["Retry-After"] == "60" and "too many schedules" in r.json()["detail"] for r in refused)
    mine = {s["job_id"] for s in httpx.get(f"{quota_api}/schedules", headers=ADA).json()}
    assert set(created) <= mine
    # a killed schedule frees its slot
    assert httpx.delete(f"{quota_api}/kill_scheduled_job/{created[0]}", headers=MALLORY).status_code == 200
    assert httpx.post(f"{quota_api}/watch_model", json={"minutes": 30}, headers=MALLORY).status_code == 201
    assert httpx.post(f"{quota_api}/watch_model", json={"minutes": 30}, headers=MALLORY).status_code == 429
    for job_id in created[1:]:
        httpx.delete(f"{quota_api}/kill_scheduled_job/{job_id}", headers=MALLORY)


def test_deployments_are_capped_per_caller(quota_api):
    spec = {"model": {"name": "quota_absent_model", "alias": "champion"}}
    reqs = [("POST", "/deployments", {"name": f"flood-{i}", "spec": spec}) for i in range(8)]
    answers = _burst(quota_api, MALLORY, reqs)
    created = [r.json()["metadata"]["name"] for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code == 429]
    assert len(created) == 3 and len(refused) == 5, [(r.status_code, r.text[:100]) for r in answers]
    assert all(r.headers["Retry-After"] == "60" and "too many deployments" in r.json()["detail"] for r in refused)
    # a failed create (duplicate: 409) takes no slot; a deleted deployment gives its slot back
    assert httpx.post(f"{quota_api}/deployments", json={"name": created[0], "spec": spec},
                      headers=ADA).status_code == 409
    assert httpx.delete(f"{quota_api}/deployments/{created[0]}", headers=MALLORY, timeout=60).status_code == 204
    r = httpx.post(f"{quota_api}/deployments", json={"name": "flood-again", "spec": spec}, headers=MALLORY)
    assert r.status_code == 201, r.text
    for name in [*created[1:], "flood-again"]:
        httpx.delete(f"{quota_api}/deployments/{name}", headers=MALLORY, timeout=60)
