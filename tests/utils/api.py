"""A real API process (``mlstack api``) on the session's real Redis, MLflow, S3 and a local Ray, and helpers for its
tests: waiting for a training job, the PID of a local model server. A pytest plugin (tests/conftest.py loads it):
tests/api and tests/training share the one session API."""

from __future__ import annotations

import os
import secrets
import signal

import httpx
import pytest

from tests.utils.procs import start_api, wait_until
from tests.utils.stack import IRIS_CSV

TRAIN_TIMEOUT = 300


def wait_job(client: httpx.Client, job_id: str, timeout: float = TRAIN_TIMEOUT) -> dict:
    def done():
        job = client.get(f"/training/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed") else None

    return wait_until(done, timeout, interval=0.5, what=f"training job {job_id}")


def model_server_pid(state_dir: str, name: str, version: str) -> int:
    return int(open(os.path.join(state_dir, "servers", f"{name}-v{version}.pid")).read())


def signal_pid(pid: int, sig: signal.Signals) -> None:
    os.kill(pid, sig)


@pytest.fixture(scope="session")
def data_dir(workdir):
    """The API's one local data directory (MLSTACK_DATA_DIR), holding iris.csv."""
    d = workdir / "data"
    d.mkdir(exist_ok=True)
    (d / "iris.csv").write_bytes(IRIS_CSV.read_bytes())
    return d


@pytest.fixture(scope="session")
def api_url(stack_env, workdir, data_dir):
    env = {**stack_env, "MLSTACK_MLFLOW_EXPERIMENT": "api-tests", "MLSTACK_SERVE_PORT_RANGE": "[23000, 23999]",
           "MLSTACK_DATA_DIR": str(data_dir),
           # deployments of their own (schemathesis creates some): not the session Redis' default key
           "MLSTACK_DEPLOYMENTS_REDIS_KEY": f"mlstack:deployments:api-{secrets.token_hex(4)}"}
    proc, url = start_api(workdir / "api.log", env)
    yield url
    # its shutdown stops the local Ray head of its training jobs (no MLSTACK_RAY_JOBS_URL here), which can take
    # LocalHead.stop's 30 s on a busy machine: a SIGKILL before that would leave the head (own session) running
    proc.stop(timeout=90)


@pytest.fixture(scope="session")
def client(api_url):
    with httpx.Client(base_url=api_url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def trained(client) -> dict:
    """One finished training on the default data (s3://mlops/data/iris.csv): the champion."""
    r = client.post("/trigger_training", json={"hyperparameters": {"n_estimators": 20, "random_state": 1}})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job
