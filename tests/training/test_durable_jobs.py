"""Training jobs outlive the API (issue 14, item 6): they run as Ray jobs (Job Submission API), so ``kill -9`` of
the API leaves them running and the next API process re-attaches them; a job Ray lost (Ray restarted) is marked
failed with the reason and its MLflow run ended; ``DELETE /training/{id}`` cancels a queued or running job."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import psutil
from mlflow.tracking import MlflowClient

from tests.utils.procs import wait_until
from tests.utils.training import alerts, api_env, job, mlflow_runs, start_training_api, trigger, wait_status

MODEL = "durable_model"


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
               what=f"pid {pid} gone")


def _run_status(mlflow_uri: str, job_id: str) -> str | None:
    runs = mlflow_runs(mlflow_uri, job_id)
    return runs[0].info.status if runs else None


def test_kill_9_of_the_api_leaves_the_job_running_and_the_next_api_reattaches_it(
        stack_env, ray_head, mlflow_uri, redis_url, tmp_path):
    env = api_env(stack_env, tmp_path / "state", MLSTACK_RAY_JOBS_URL=ray_head.url)
    first, base = start_training_api(tmp_path / "api1.log", env)
    second = None
    try:
        job_id = trigger(base, MODEL)
        running = wait_status(base, job_id, ("running",), 180)
        assert running["owner"] and ray_head.status(job_id) == "RUNNING"
        owner = running["owner"]

        _kill9(first.pid)  # a crash: no shutdown hook runs
        killed_at = time.monotonic()
        assert ray_head.status(job_id) == "RUNNING"  # Ray's job does not depend on the API process
        second, base = start_training_api(tmp_path / "api2.log", env)
        adopted = wait_until(lambda: (j := job(base, job_id))["owner"] != owner and j, 60, interval=0.2,
                             what="the job re-attached by a live API")
        reattach_s = time.monotonic() - killed_at
        ray_at_adoption = ray_head.status(job_id)
        done = wait_status(base, job_id, ("succeeded", "failed"), 300)
        print(f"re-attached {reattach_s:.1f}s after kill -9 (Ray said {ray_at_adoption}, record "
              f"{adopted['status']}); finished {time.monotonic() - killed_at:.1f}s after")
        assert done["status"] == "succeeded", done
        assert done["version"] and done["metrics"]["accuracy"] > 0.8
        assert _run_status(mlflow_uri, job_id) == "FINISHED"
        logs = httpx.get(f"{base}/training/{job_id}/logs", timeout=30).text
        assert f"registered {MODEL} version {done['version']}" in logs and "MLSTACK_TRAINING_RESULT" not in logs
        finished = wait_until(lambda: alerts(redis_url, "training.finished", job_id), 30, what="training.finished")
        assert len(finished) == 1
    finally:
        first.stop()
        if second is not None:
            second.stop(timeout=30)


def test_a_job_ray_lost_is_failed_with_the_reason_and_its_mlflow_run_ended(
        stack_env, ray_head, mlflow_uri, redis_url, tmp_path):
    env = api_env(stack_env, tmp_path / "state", MLSTACK_RAY_JOBS_URL=ray_head.url)
    first, base = start_training_api(tmp_path / "api1.log", env)
    second = None
    try:
        job_id = trigger(base, MODEL, n_estimators=2000, seed=2)
        wait_status(base, job_id, ("running",), 180)
        # the run starts after the fit; logging and registering the models take seconds more
        wait_until(lambda: _run_status(mlflow_uri, job_id) == "RUNNING", 120, interval=0.1, what="the MLflow run")
        _kill9(first.pid)
        ray_head.crash()  # Ray dies with the job (no drain that would let it finish), and comes back knowing nothing
        ray_head.start()
        second, base = start_training_api(tmp_path / "api2.log", env)
        failed = wait_status(base, job_id, ("failed", "succeeded"), 90)
        assert failed["status"] == "failed", failed
        assert "Ray does not know its job" in failed["error"], failed
        # never left RUNNING: FAILED by the API, or KILLED by the job itself when its Ray supervisor went away
        wait_until(lambda: _run_status(mlflow_uri, job_id) in ("FAILED", "KILLED"), 60, interval=0.3,
                   what="the run ended")
        assert len(wait_until(lambda: alerts(redis_url, "training.failed", job_id), 30, what="alert")) == 1
        # nothing of the job kept running outside Ray
        wait_until(lambda: not _leftovers(job_id), 30, what="the job's process gone with its Ray")
    finally:
        first.stop()
        if second is not None:
            second.stop(timeout=30)


def test_a_job_ray_lost_after_it_registered_its_version_is_succeeded_from_its_mlflow_run(
        stack_env, ray_head, mlflow_uri, redis_url, tmp_path):
    """Ray (and the API) died after the job's MLflow run had registered the version but before the API read the
    job's result: the restarted API finds the version through the run (in the experiment the job was submitted
    with, not its own), and the record says succeeded, not failed while the registry holds the model."""
    env = api_env(stack_env, tmp_path / "state", MLSTACK_RAY_JOBS_URL=ray_head.url)
    first, base = start_training_api(tmp_path / "api1.log", env)
    second = None
    try:
        job_id = trigger(base, MODEL, n_estimators=50, seed=6)
        wait_status(base, job_id, ("running",), 180)
        _kill9(first.pid)  # nobody reads the result from Ray
        wait_until(lambda: _run_status(mlflow_uri, job_id) == "FINISHED", 180, interval=0.1, what="run FINISHED")
        ray_head.crash()
        ray_head.start()
        # a replica set up with another experiment still finds the job's run: the job's record names its own
        second, base = start_training_api(tmp_path / "api2.log",
                                          {**env, "MLSTACK_MLFLOW_EXPERIMENT": "durable-training-replica"})
        done = wait_status(base, job_id, ("failed", "succeeded"), 90)
        assert done["status"] == "succeeded", done
        [run] = mlflow_runs(mlflow_uri, job_id)
        versions = MlflowClient(tracking_uri=mlflow_uri).search_model_versions(
            f"name = '{MODEL}' and run_id = '{run.info.run_id}'")
        assert [v.version for v in versions] == [done["version"]] and done["run_id"] == run.info.run_id
        assert done["metrics"]["accuracy"] == run.data.metrics["accuracy"]
        finished = wait_until(lambda: alerts(redis_url, "training.finished", job_id), 30, what="training.finished")
        assert len(finished) == 1 and finished[0]["version"] == done["version"]
        assert alerts(redis_url, "training.failed", job_id) == []
    finally:
        first.stop()
        if second is not None:
            second.stop(timeout=30)


def _leftovers(job_id: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if "mlstack.training.run" in " ".join(p.info["cmdline"] or []) and job_id in json.dumps(_environ(p))]


def _environ(p: psutil.Process) -> dict:
    try:
        return p.environ()
    except psutil.Error:
        return {}


def test_delete_cancels_a_queued_and_a_running_job(stack_env, ray_head, mlflow_uri, redis_url, tmp_path):
    # one job takes both of the head's CPUs: the second waits in Ray's queue
    env = api_env(stack_env, tmp_path / "state", MLSTACK_RAY_JOBS_URL=ray_head.url, MLSTACK_TRAIN_NUM_CPUS="2")
    proc, base = start_training_api(tmp_path / "api.log", env)
    try:
        running_id = trigger(base, MODEL, n_estimators=2000, seed=3)
        wait_status(base, running_id, ("running",), 180)
        wait_until(lambda: _run_status(mlflow_uri, running_id) == "RUNNING", 120, interval=0.3, what="MLflow run")
        queued_id = trigger(base, MODEL, n_estimators=5, seed=4)
        wait_until(lambda: ray_head.status(queued_id) == "PENDING", 60, interval=0.2, what="the second job queued")
        assert job(base, queued_id)["status"] == "queued"

        assert httpx.delete(f"{base}/training/doesnotexist", timeout=30).status_code == 404
        stopped_at = {}
        for job_id in (queued_id, running_id):
            r = httpx.delete(f"{base}/training/{job_id}", timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "cancelled" and r.json()["finished_at"], r.text
            stopped_at[job_id] = time.monotonic()
            assert job(base, job_id)["status"] == "cancelled"
            again = httpx.delete(f"{base}/training/{job_id}", timeout=30)
            assert again.status_code == 409 and "already ended (cancelled)" in again.json()["detail"], again.text
            assert len(wait_until(lambda job_id=job_id: alerts(redis_url, "training.cancelled", job_id), 30,
                                  what="training.cancelled alert")) == 1
        # Ray delivers a stop to the job's supervisor, which (like the job) waits for its CPUs: the queued job
        # ends in Ray once the running one has freed them
        for job_id in (running_id, queued_id):
            wait_until(lambda job_id=job_id: ray_head.status(job_id) == "STOPPED", 90, interval=0.2,
                       what=f"Ray job {job_id} stopped")
            print(f"{job_id}: Ray job STOPPED {time.monotonic() - stopped_at[job_id]:.1f}s after DELETE")
        wait_until(lambda: _run_status(mlflow_uri, running_id) == "KILLED", 60, interval=0.3, what="run KILLED")
        # the queued job never trained: no MLflow run, or one ended KILLED had it started before its stop arrived
        wait_until(lambda: all(r.info.status == "KILLED" for r in mlflow_runs(mlflow_uri, queued_id)), 60,
                   interval=0.3, what="the queued job's runs ended")
        # the records stay cancelled once the follower has seen Ray's end (it stores the log then)
        wait_until(lambda: "is cancelled" not in httpx.get(f"{base}/training/{running_id}/logs", timeout=30).text,
                   30, what="the cancelled job's log stored")
        assert job(base, running_id)["status"] == job(base, queued_id)["status"] == "cancelled"
        done = httpx.get(f"{base}/training", params={"limit": 10}, timeout=30).json()
        assert {j["job_id"]: j["status"] for j in done}[running_id] == "cancelled"
    finally:
        proc.stop(timeout=30)


def test_without_a_configured_ray_the_api_starts_its_own_head_which_survives_kill_9(stack_env, mlflow_uri, tmp_path):
    """No MLSTACK_RAY_JOBS_URL / MLSTACK_RAY_ADDRESS: the API starts a Ray head of its own (own session); after a
    kill -9 the restarted API adopts it and the job; a clean stop stops the head."""
    state = tmp_path / "state"
    env = api_env(stack_env, state, MLSTACK_RAY_TEMP_DIR=f"/tmp/mlt-{os.getpid()}-own")
    first, base = start_training_api(tmp_path / "api1.log", env)
    second = None
    heads = state / "ray-heads"
    try:
        job_id = trigger(base, MODEL, n_estimators=1500, seed=5)
        wait_status(base, job_id, ("running",), 240)
        [head_file] = list(heads.glob("*.json"))
        head_pid = json.loads(head_file.read_text())["head"]["pid"]
        _kill9(first.pid)
        assert psutil.pid_exists(head_pid)
        second, base = start_training_api(tmp_path / "api2.log", env)
        done = wait_status(base, job_id, ("succeeded", "failed"), 300)
        assert done["status"] == "succeeded", done
        assert json.loads(head_file.read_text())["owner"]["pid"] == second.pid  # adopted, not a second head
        assert len(list(heads.glob("*.json"))) == 1
        second.stop(timeout=60)
        try:
            wait_until(lambda: not psutil.pid_exists(head_pid) or psutil.Process(head_pid).status() == "zombie", 60,
                       what="the head stopped with its API")
        except TimeoutError as e:
            raise AssertionError(f"{e}; the API's log ends:\n{second.log_tail()}") from None
        assert list(heads.glob("*.json")) == []
    finally:
        first.stop()
        if second is not None:
            second.stop(timeout=30)
        for f in heads.glob("*.json"):  # a head left by a failed test: stop it by its PID
            pid = json.loads(f.read_text())["head"]["pid"]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_a_long_temp_dir_is_shortened_for_rays_unix_sockets(tmp_path):
    """pytest's own tmp paths (/tmp/pytest-of-root/pytest-198/...) made `ray start` fail: the dashboard's
    sockets under <temp>/session_<date>_<pid>/sockets/ went over the 107-byte AF_UNIX limit."""
    from mlstack.rayclient import RAY_TEMP_DIR_MAX, ray_temp_dir

    long = tmp_path / ("x" * 60) / "ray"
    short = ray_temp_dir(long)
    assert len(str(short)) <= RAY_TEMP_DIR_MAX and short == ray_temp_dir(long) != ray_temp_dir(tmp_path / "other")
    assert ray_temp_dir(Path("/tmp/r")) == Path("/tmp/r")
    socket = f"{short}/session_2026-11-25_21-09-43_108876_34540/sockets/dash_MetricsHead"
    assert len(socket.encode()) <= 107


def test_a_local_head_whose_port_was_taken_starts_again_on_other_ports(tmp_path, monkeypatch):
    """A port found free can be taken before Ray binds it (a busy machine: "Failed to start GCS ... Address already
    in use"); the API's local head then tries again on fresh ports instead of failing every training job."""
    import socket

    from mlstack.training import rayjobs

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    real, handed = rayjobs.procs.free_port, []

    def free_port() -> int:  # the head's first port (its GCS) is one another process holds
        handed.append(port if not handed else real())
        return handed[-1]

    monkeypatch.setattr(rayjobs.procs, "free_port", free_port)
    temp = Path(f"/tmp/mlh-{os.getpid()}")  # Ray's socket paths must stay short
    head = rayjobs.LocalHead(tmp_path / "state", temp, 1, 128)
    try:
        url = head.start(timeout=180)
        assert httpx.get(f"{url}/api/version", timeout=10).status_code == 200
        assert handed[0] == port and len(handed) == 8  # two tries of four ports each
        assert "Failed to start GCS" in (tmp_path / "state" / "ray-heads" / "ray-head.log").read_text()
    finally:
        head.stop()
        taken.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_local_head_stopped_while_it_starts_is_not_left_running(tmp_path):
    """The API stops (``LocalHead.stop`` from its shutdown) while a training job's ``start()`` is still bringing the
    head up in a thread: that ``start()`` gives up, the head it spawned is stopped, and no later start spawns one
    (a head started after the stop had no owner to stop it and outlived the test suite)."""
    import threading

    from mlstack.training import rayjobs

    temp = Path(f"/tmp/mlh-{os.getpid()}")  # Ray's socket paths must stay short
    head = rayjobs.LocalHead(tmp_path / "state", temp, 1, 128)
    raised: list[BaseException] = []

    def start() -> None:
        try:
            head.start(timeout=180)
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=start)
    try:
        thread.start()
        wait_until(lambda: head.pid is not None, 60, what="ray start spawned")
        pid = head.pid
        head.stop()
        thread.join(60)
        assert not thread.is_alive()
        assert len(raised) == 1 and isinstance(raised[0], rayjobs.HeadStopped), raised
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert head.pid is None and not list((tmp_path / "state" / "ray-heads").glob("*.json"))
        with contextlib.suppress(rayjobs.HeadStopped):
            head.start(timeout=5)
            raise AssertionError("a stopped LocalHead started a head")
    finally:
        head.stop()
        thread.join(60)
        shutil.rmtree(temp, ignore_errors=True)
