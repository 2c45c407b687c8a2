"""Ray's Job Submission API for training jobs, and the local Ray head the API starts when none is configured.

``RayJobs`` talks to a Ray job server (the dashboard: ``http://head:8265``; ``ray.job_submission`` is a
blocking HTTP client, so every call runs in a thread). A job submitted there is supervised by Ray, not by
the API: it keeps running when the API process dies.

``LocalHead``: with neither ``MLSTACK_RAY_JOBS_URL`` nor ``MLSTACK_RAY_ADDRESS`` (local mode outside
``./init.sh``), the API starts ``ray start --head --block`` with its job server as a process of its own
(its own session: a crash of the API leaves it running) and records it in ``STATE_DIR/ray-heads/<pid>.json``
with the API process that owns it. An API that starts adopts a head whose owner is gone (its jobs are then
re-attached); a clean stop of the owner stops the head.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mlstack.local import procs
from mlstack.rayclient import ray_temp_dir

log = logging.getLogger(__name__)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
NO_AGENT = "No available agent to submit job"  # the job server's 500 while its agent is not up: nothing was created
AGENT_WAIT_SECONDS = 60.0


class HeadStopped(RuntimeError):
    """``LocalHead.stop()`` ran while ``start()`` was starting the head (the API is stopping)."""

    def __init__(self) -> None:
        super().__init__("the API stopped while its local Ray head was starting")


class _ExitedEarly(RuntimeError):
    """``ray start`` exited before its job server answered."""


class RayUnreachable(Exception):
    """The job server did not answer (not: it answered that it does not know a job)."""


@dataclass(frozen=True)
class JobState:
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED (ray.job_submission.JobStatus values)
    message: str
    start_time: float | None  # seconds since the epoch

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def _not_found(e: Exception) -> bool:
    return isinstance(e, RuntimeError) and "status code 404" in str(e)


class RayJobs:
    """One Ray job server. ``connect`` raises ``RayUnreachable``; ``info``/``logs``/``stop`` too, and answer
    None/False for a job the server does not know."""

    def __init__(self, address: str):
        self.address = address
        self._client = None

    async def connect(self) -> RayJobs:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = await asyncio.to_thread(JobSubmissionClient, self.address)
            except Exception as e:
                raise RayUnreachable(f"the Ray job server at {self.address} did not answer: "
                                     f"{type(e).__name__}: {e}"[:500]) from None
        return self

    async def _call(self, fn: str, *args, **kwargs):
        await self.connect()
        try:
            return await asyncio.to_thread(getattr(self._client, fn), *args, **kwargs)
        except Exception as e:
            if _not_found(e):
                raise LookupError(str(e)) from None
            raise RayUnreachable(f"Ray job server {self.address}: {type(e).__name__}: {e}"[:500]) from None

    async def submit(self, submission_id: str, entrypoint: str, env_vars: dict[str, str], num_cpus: float,
                     metadata: dict[str, str], agent_wait: float = AGENT_WAIT_SECONDS) -> None:
        """Submit; while the job server has no agent to run it yet (a head that just started, or a busy one: "No
        available agent to submit job, please try again later"), ask again for up to ``agent_wait`` seconds."""
        deadline = time.monotonic() + agent_wait
        while True:
            try:
                await self._call("submit_job", entrypoint=entrypoint, submission_id=submission_id,
                                 runtime_env={"env_vars": env_vars}, entrypoint_num_cpus=num_cpus, metadata=metadata)
                return
            except RayUnreachable as e:
                if NO_AGENT not in str(e) or time.monotonic() >= deadline:
                    raise
                log.info("Ray job server %s has no agent yet; submitting %s again", self.address, submission_id)
                await asyncio.sleep(0.5)

    async def info(self, submission_id: str) -> JobState | None:
        try:
            d = await self._call("get_job_info", submission_id)
        except LookupError:
            return None
        status = getattr(d.status, "value", str(d.status))
        return JobState(status, d.message or "", d.start_time / 1000 if d.start_time else None)

    async def logs(self, submission_id: str) -> str | None:
        try:
            return await self._call("get_job_logs", submission_id)
        except LookupError:
            return None

    async def stop(self, submission_id: str) -> bool:
        try:
            return bool(await self._call("stop_job", submission_id))
        except LookupError:
            return False


def _started_at(pid: int) -> float | None:
    """The start time of process ``pid`` (so that a reused pid is not mistaken for it), None if gone."""
    import psutil

    try:
        p = psutil.Process(pid)
        return None if p.status() == psutil.STATUS_ZOMBIE else p.create_time()
    except psutil.Error:
        return None


def _alive(pid: int, started: float) -> bool:
    t = _started_at(pid)
    return t is not None and abs(t - started) < 1.0


class LocalHead:
    """A Ray head (with its job server) that this API process started or adopted. Blocking: call in a thread."""

    def __init__(self, state_dir: Path, temp_dir: Path, num_cpus: int, object_store_mb: int):
        self.dir = Path(state_dir) / "ray-heads"
        self.temp_dir, self.num_cpus, self.object_store_mb = ray_temp_dir(temp_dir), num_cpus, object_store_mb
        self.pid: int | None = None
        self.started: float = 0.0
        self.url: str | None = None
        self._me = {"pid": os.getpid(), "started": _started_at(os.getpid()) or 0.0}
        # stop() may run (from the API's shutdown) while start() runs in another thread: the lock makes a head
        # spawned by start() either seen and stopped by stop(), or never spawned
        self._lock = threading.Lock()
        self._stopped = False

    def _file(self, pid: int) -> Path:
        return self.dir / f"{pid}.json"

    def alive(self) -> bool:
        return self.pid is not None and _alive(self.pid, self.started)

    def adopt(self) -> str | None:
        """Take over a head whose owner process is gone; its URL, or None. Files of dead heads are removed."""
        for f in sorted(self.dir.glob("*.json")):
            try:
                rec = json.loads(f.read_text())
                head, owner = rec["head"], rec["owner"]
            except (OSError, ValueError, KeyError):
                continue
            if not _alive(head["pid"], head["started"]):
                f.unlink(missing_ok=True)
                continue
            if _alive(owner["pid"], owner["started"]):
                continue  # another live API's head
            self.pid, self.started, self.url = head["pid"], head["started"], rec["url"]
            self._write()
            log.info("adopted the local Ray head pid %s (%s) of a stopped API process %s", self.pid, self.url,
                     owner["pid"])
            return self.url
        return None

    def _write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._file(self.pid).with_suffix(".tmp")
        tmp.write_text(json.dumps({"head": {"pid": self.pid, "started": self.started}, "owner": self._me,
                                   "url": self.url}))
        tmp.replace(self._file(self.pid))

    def start(self, timeout: float = 120.0, attempts: int = 3) -> str:
        """Start the head; a ``ray start`` that exits at once is tried again on fresh ports (a free port found here
        can be taken by another process before Ray binds it: "Failed to start GCS ... Address already in use")."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start(timeout)
            except _ExitedEarly as e:
                if attempt == attempts:
                    raise RuntimeError(f"{e} ({attempts} tries)") from None
                log.warning("%s; trying again on other ports", e)
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> str:
        gcs, dash, agent, client = (procs.free_port() for _ in range(4))
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        ray = str(Path(sys.executable).parent / "ray")
        cmd = [ray, "start", "--head", "--block", "--port", str(gcs), "--node-ip-address", "127.0.0.1",
               "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
               "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client),
               "--num-cpus", str(self.num_cpus), "--object-store-memory", str(self.object_store_mb * 1024 * 1024),
               "--temp-dir", str(self.temp_dir), "--disable-usage-stats"]
        with self._lock:
            if self._stopped:
                raise HeadStopped()
            # its own session: an API crash leaves it (and its jobs)
            proc = procs.spawn(cmd, self.dir / "ray-head.log", append=True, what="ray start")
            self.pid, self.started = proc.pid, _started_at(proc.pid) or time.time()
            self.url = f"http://127.0.0.1:{dash}"
            self._write()
        try:
            proc.wait_ready(lambda: self._stopped or procs.http_ok(f"{self.url}/api/version"), timeout, interval=0.3)
        except procs.StartFailed:
            if self._stopped:
                raise HeadStopped() from None
            if proc.alive():
                self._kill()
                raise RuntimeError(f"the local Ray head's job server did not answer within {timeout:.0f}s") from None
            with self._lock:
                self._file(proc.pid).unlink(missing_ok=True)
                self.pid = None
            proc.kill()  # whatever it had started of its own session
            raise _ExitedEarly(f"ray start exited with {proc.popen.returncode} (log: {proc.log_path})") from None
        if self._stopped:  # stop() took it and stops it
            raise HeadStopped()
        log.info("started a local Ray head pid %s, job server %s", self.pid, self.url)
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the head for good: the head this object runs, and one a ``start()`` in another thread is starting
        (it raises ``HeadStopped``); no later ``start()`` starts one."""
        with self._lock:
            self._stopped = True
        self._kill(timeout)

    def _kill(self, timeout: float = 30.0) -> None:
        """SIGTERM ``ray start --block`` (it then stops every Ray process it started, workers included: a
        SIGTERM to the whole group at once would cut that short), SIGKILL its group after ``timeout``."""
        with self._lock:
            pid, self.pid = self.pid, None
        if pid is None:
            return
        if _alive(pid, self.started):
            log.info("stopping the local Ray head pid %s", pid)
            procs.stop_pid(pid, timeout, term_group=False)
            log.info("stopped the local Ray head pid %s", pid)
        else:
            log.info("the local Ray head pid %s had already ended", pid)
        self._file(pid).unlink(missing_ok=True)
