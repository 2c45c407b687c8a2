"""Helpers for the tests of a real API process (tests/api/conftest.py starts it): waiting for a training job, the
PID of a local model server."""

from __future__ import annotations

import os
import signal

import httpx

from tests.utils.procs import wait_until

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
