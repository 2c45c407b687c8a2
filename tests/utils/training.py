"""Helpers for the training tests: a real Ray head with its job server (``ray start --head --block``, as
./init.sh --local runs it), restartable on the same ports; API processes pointed at it (MLSTACK_RAY_JOBS_URL); the
jobs, runs and alerts they leave."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
from pathlib import Path

import httpx
import psutil
from mlflow.tracking import MlflowClient

from tests.utils.procs import BIN, Proc, free_port, http_ok, port_open, start, start_api, wait_until


class RayHead:
    """``ray start --head --block`` with the dashboard (the job server) on fixed ports: stop() (graceful) or crash()
    (SIGKILL) loses every job it runs; start() again is a restarted Ray that knows none of them."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.temp = Path(f"/tmp/mlt-{secrets.token_hex(3)}")  # Ray's socket paths must stay short
        self.ports = {k: free_port() for k in ("gcs", "dashboard", "agent", "client")}
        self.url = f"http://127.0.0.1:{self.ports['dashboard']}"
        self.proc: Proc | None = None

    def start(self) -> RayHead:
        p = self.ports
        self.proc = start(
            [str(BIN / "ray"), "start", "--head", "--block", "--port", str(p["gcs"]), "--node-ip-address", "127.0.0.1",
             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(p["dashboard"]),
             "--dashboard-agent-listen-port", str(p["agent"]), "--ray-client-server-port", str(p["client"]),
             "--num-cpus", "2", "--object-store-memory", str(256 * 1024 * 1024), "--temp-dir", str(self.temp),
             "--disable-usage-stats"],
            self.workdir / "ray-head.log", ready=lambda: http_ok(f"{self.url}/api/version"), timeout=180,
            env={"RAY_AUTH_MODE": "disabled"}, what="ray head")
        return self

    def stop(self) -> None:
        """SIGTERM ``ray start --block`` alone (it drains, then stops the processes it started, workers too), then
        the group; returns once its ports are free."""
        if self.proc is not None:
            self.proc.stop(timeout=40, term_group=False)
            self.proc = None
            self._wait_ports_free()

    def crash(self) -> None:
        """Ray dies at once: SIGKILL of every Ray process (the head's tree and anything in its temp dir), no drain
        (a SIGTERM lets running jobs finish for up to 30 s). The training entrypoints are left alone: they are to
        notice by themselves that their supervisor is gone."""
        assert self.proc is not None
        ray = [self.proc.pid, *(c.pid for c in _descendants(self.proc.pid)
                                if "mlstack.training.run" not in _cmdline(c))]
        ray += [p.pid for p in psutil.process_iter(["cmdline"])
                if str(self.temp) in " ".join(p.info["cmdline"] or []) and p.pid not in ray]
        for pid in ray:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.popen.wait(10)
        self.proc = None
        self._wait_ports_free()

    def _wait_ports_free(self) -> None:
        wait_until(lambda: not any(port_open(p) for p in self.ports.values()), 60, interval=0.2,
                   what="the Ray head's ports free")

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.url)

    def status(self, job_id: str) -> str:
        return self.client().get_job_status(f"mlstack-train-{job_id}").value


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


TRAINING_DB = 9  # the Redis database of these tests' API processes


def own_db(redis_url: str) -> str:
    """The session's Redis, database ``TRAINING_DB``: an API process of another test module (the session's, on
    database 0) would otherwise adopt these tests' orphaned jobs (a job whose API was killed is any live API's to
    follow) and judge them with its own Ray and MLflow experiment."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(redis_url)._replace(path=f"/{TRAINING_DB}"))


def api_env(stack_env, state: Path, **extra: str) -> dict[str, str]:
    return {**stack_env, "MLSTACK_REDIS_URL": own_db(stack_env["MLSTACK_REDIS_URL"]),
            "MLSTACK_MLFLOW_EXPERIMENT": "durable-training", "MLSTACK_STATE_DIR": str(state),
            "MLSTACK_SERVE_PORT_RANGE": "[24200, 24299]", "MLSTACK_TRAIN_POLL_SECONDS": "0.3", **extra}


def start_training_api(log: Path, env: dict[str, str]) -> tuple[Proc, str]:
    return start_api(log, env)


def trigger(base: str, model: str, n_estimators: int = 1500, seed: int = 1) -> str:
    r = httpx.post(f"{base}/trigger_training", timeout=30,
                   json={"model_name": model, "hyperparameters": {"n_estimators": n_estimators, "random_state": seed}})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def job(base: str, job_id: str) -> dict:
    r = httpx.get(f"{base}/training/{job_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(base: str, job_id: str, statuses: tuple[str, ...], timeout: float = 300) -> dict:
    return wait_until(lambda: (j := job(base, job_id))["status"] in statuses and j, timeout, interval=0.3,
                      what=f"training job {job_id} {'/'.join(statuses)}")


def mlflow_runs(mlflow_uri: str, job_id: str) -> list:
    mc = MlflowClient(tracking_uri=mlflow_uri)
    exp = mc.get_experiment_by_name("durable-training")
    if exp is None:
        return []
    return mc.search_runs([exp.experiment_id], filter_string=f"tags.`mlstack.job_id` = '{job_id}'")


def alerts(redis_url: str, type_: str, job_id: str) -> list[dict]:
    import redis

    r = redis.Redis.from_url(own_db(redis_url), decode_responses=True)
    events = [json.loads(f["event"]) for _, f in r.xrange("mlstack:alerts") if f.get("type") == type_]
    return [e for e in events if e.get("data", {}).get("job_id") == job_id]
