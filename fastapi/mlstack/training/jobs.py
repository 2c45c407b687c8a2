"""Training jobs: accepted at once (202), run as Ray jobs (Job Submission API), tracked in Redis so any API
replica can answer.

A job's record lives under ``mlstack:training:job:<id>`` (JSON) and in the sorted set
``mlstack:training:jobs`` (by creation time); ``mlstack:training:ray:<id>`` says where it was submitted (Ray
submission id and job server). The job itself is ``python -m mlstack.training.run`` supervised by Ray
(``mlstack.training.run``), so it does not depend on the API process: killing or restarting the API leaves
it running.

Each record names its ``owner``, the API process that follows it (asks Ray for its state every
``train_poll_seconds``, stores the result, emits the alerts). An owner holds a short Redis lease while alive;
a queued or running job whose owner's lease is gone (crash, ``kill -9``, restart) is adopted by a live
process (any replica, or the restarted API), which asks Ray: still running -> followed to its end; ended ->
its result stored; unknown to Ray (the Ray cluster restarted) or never submitted -> ``failed`` with the
reason. A job whose MLflow run did not end by itself (the process was killed) has it ended: ``KILLED`` when
cancelled, ``FAILED`` otherwise. ``cancel`` (``DELETE /training/{id}``) stops the Ray job; the record says
``cancelled``.

Redis outages: a route that needs Redis answers 503 with a message; a job that changes state while Redis
is down keeps its record in this process and a background task stores it as soon as Redis is back, so a
job that finished during the outage never stays ``running``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import socket
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from mlstack.aio import cancel_all
from mlstack.alerts import AlertSink
from mlstack.errors import Conflict, InvalidInput, NotFound, Unavailable
from mlstack.rayclient import RayClient
from mlstack.registry import Registry
from mlstack.settings import Settings
from mlstack.training.access import DataPolicy, check_data_uri
from mlstack.training.data import ObjectStore, check_exists
from mlstack.training.rayjobs import JobState, LocalHead, RayJobs, RayUnreachable
from mlstack.training.run import JOB_ENV, parse_result, strip_result
from mlstack.training.schemas import TrainingJob, TrainingRequest

log = logging.getLogger(__name__)
JOB_KEY = "mlstack:training:job:{}"
JOBS_INDEX = "mlstack:training:jobs"
LOGS_KEY = "mlstack:training:logs:{}"
SUBMISSION_KEY = "mlstack:training:ray:{}"  # job -> {"submission_id", "address", "experiment"}: where it runs
JOB_TTL_SECONDS = 30 * 24 * 3600
MAX_LOG_CHARS = 256 * 1024
REDIS_TIMEOUT = 3.0  # a route's Redis call; redis-py would otherwise retry a refused connection for seconds
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
RETRY_MIN, RETRY_MAX = 0.2, 2.0  # seconds between attempts to store records kept while Redis was down
OWNER_KEY = "mlstack:training:owner:{}"  # a live API process's lease (its jobs are not orphans)
RECONCILE_LOCK = "mlstack:training:reconcile:{}"
LEASE_SECONDS = 10.0  # an owner's lease lives this long; renewed every LEASE_SECONDS / 3
RECONCILE_SCAN = 500  # newest jobs looked at for orphans on each renewal
OPEN = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
MLFLOW_END_TIMEOUT = 60.0


def _unavailable(e: BaseException) -> Unavailable:
    return Unavailable(f"training jobs are unavailable: Redis is unreachable ({type(e).__name__}: {e}); "
                       "retry shortly")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def submission_id(job_id: str) -> str:
    return f"mlstack-train-{job_id}"


class JobManager:
    def __init__(self, settings: Settings, redis, registry: Registry, alerts: AlertSink, ray: RayClient):
        self.settings = settings
        self.redis = redis
        self.registry = registry
        self.alerts = alerts
        self.store = ObjectStore.from_settings(settings)
        self.policy = DataPolicy.from_settings(settings)
        self.ray = ray  # the API's in-process Ray (local Ray Serve starts it); training jobs do not use it
        self.jobs_address = settings.ray_jobs_url or settings.ray_address  # None: a local head of our own
        self._jobs: RayJobs | None = None
        self._jobs_lock = asyncio.Lock()
        self._head: LocalHead | None = None
        self._jobs_error: str | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._current: dict[str, TrainingJob] = {}  # records of the jobs this process follows
        # records of this process's jobs not yet stored in Redis (it was down): job -> record, job -> log
        self._unsaved: dict[str, TrainingJob] = {}
        self._unsaved_logs: dict[str, str] = {}
        self._runs_to_end: dict[str, str] = {}  # job -> MLflow status: ending its runs failed, retried
        self._write_lock = asyncio.Lock()  # one writer at a time: a newer record is never overwritten by an older
        self._retrier: asyncio.Task | None = None
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._lease: asyncio.Task | None = None

    @property
    def ray_ready(self) -> bool:
        return self._jobs is not None or self.ray.started

    @property
    def ray_error(self) -> str | None:
        """Why Ray is not ready: the job server's last error, else the in-process connection's."""
        return self._jobs_error or self.ray.error

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.jobs_address is None:  # a head left by a crashed API of ours: adopt it before its jobs
            head = self._local_head()
            url = await asyncio.to_thread(head.adopt)
            if url is not None:
                self._head = head
                with contextlib.suppress(RayUnreachable):
                    self._jobs = await RayJobs(url).connect()
        elif self.settings.ray_jobs_url:  # cheap to connect to: do it now, so /readyz says so
            with contextlib.suppress(Unavailable):
                await self.jobs()
        self._lease = asyncio.create_task(self._keep_lease(), name="training-lease")

    async def stop(self) -> None:
        """Stop following jobs; they keep running on Ray and the next API process (or another replica) takes
        them over. Only a Ray head this process started itself (no Ray configured) is stopped, and its jobs
        with it: those are marked failed."""
        followed = dict(self._current)
        await cancel_all([*self._tasks.values(), self._lease])
        if self._head is not None:
            await asyncio.to_thread(self._head.stop)
            message = ("the API stopped, and with it the local Ray head it had started for training (no "
                       "MLSTACK_RAY_JOBS_URL): set MLSTACK_RAY_JOBS_URL (./init.sh --local does) for jobs that "
                       "outlive the API")
            for job_id, job in followed.items():
                with contextlib.suppress(Exception):
                    self._current[job_id] = job
                    job = await self._fresh(job_id)
                    if job.status in OPEN:
                        await self._update(job_id, status="failed", finished_at=_now(), error=message)
                        await self._end_runs(job_id, "FAILED")
        with contextlib.suppress(*REDIS_ERRORS):  # else it expires: jobs left behind are adopted then
            await asyncio.wait_for(self.redis.delete(OWNER_KEY.format(self.instance)), REDIS_TIMEOUT)

    def _local_head(self) -> LocalHead:
        s = self.settings
        return LocalHead(s.state_dir, s.ray_temp_dir, s.ray_num_cpus, s.ray_object_store_mb)

    async def jobs(self) -> RayJobs:
        """The Ray job server training jobs go to (a local head is started on the first job if none is set)."""
        async with self._jobs_lock:
            if self._jobs is not None and (self._head is None or await asyncio.to_thread(self._head.alive)):
                return self._jobs
            try:
                if self.jobs_address is not None:
                    self._jobs = await RayJobs(self.jobs_address).connect()
                else:
                    self._head = self._head or self._local_head()
                    url = await asyncio.to_thread(self._head.start)
                    self._jobs = await RayJobs(url).connect()
            except Exception as e:
                self._jobs = None
                self._jobs_error = f"Ray unavailable: {e}"
                raise Unavailable(self._jobs_error) from None
            self._jobs_error = None
            return self._jobs

    async def _jobs_at(self, address: str) -> RayJobs:
        """The job server a job was submitted to (usually ours); raises ``RayUnreachable``/``Unavailable``."""
        if self._jobs is not None and self._jobs.address == address:
            return self._jobs
        if address == self.jobs_address:
            return await self.jobs()
        return await RayJobs(address).connect()

    # -- records -----------------------------------------------------------------------------------
    async def _redis(self, coro: Any) -> Any:
        """A Redis call on behalf of a request: Redis down is a 503 with a message, never a bare 500."""
        try:
            return await asyncio.wait_for(coro, REDIS_TIMEOUT)
        except REDIS_ERRORS as e:
            raise _unavailable(e) from None

    async def _update(self, job_id: str, **changes: Any) -> TrainingJob:
        """Change a job this process runs; stored at once, or kept and stored when Redis is back."""
        job = self._unsaved.get(job_id) or self._current.get(job_id) or await self.get(job_id)
        job = job.model_copy(update=changes)
        if job_id in self._current:
            self._current[job_id] = job
        self._unsaved[job_id] = job
        try:
            await self._store(job_id)
        except REDIS_ERRORS as e:
            log.warning("could not store training job %s (%s, Redis unreachable: %s); kept in memory, retrying "
                        "until Redis is back", job_id, job.status, e)
            if self._retrier is None or self._retrier.done():
                self._retrier = asyncio.create_task(self._store_when_back(), name="training-records-retry")
        return job

    async def _store(self, job_id: str) -> None:
        async with self._write_lock:
            job = self._unsaved.get(job_id)
            if job is None:
                return
            logs = self._unsaved_logs.get(job_id)
            pipe = self.redis.pipeline(transaction=True)  # record and log land together or not at all
            pipe.set(JOB_KEY.format(job_id), job.model_dump_json(), ex=JOB_TTL_SECONDS)
            if logs is not None:
                pipe.set(LOGS_KEY.format(job_id), logs, ex=JOB_TTL_SECONDS)
            await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            if self._unsaved.get(job_id) is job:
                del self._unsaved[job_id]
            if self._unsaved_logs.get(job_id) is logs:
                self._unsaved_logs.pop(job_id, None)

    async def _store_when_back(self) -> None:
        """Store the records kept while Redis was down, retrying with backoff until none is left."""
        delay = RETRY_MIN
        while self._unsaved:
            await asyncio.sleep(delay)
            for job_id in list(self._unsaved):
                try:
                    await self._store(job_id)
                except REDIS_ERRORS:
                    delay = min(delay * 2, RETRY_MAX)
                    break
                log.info("stored training job %s after Redis came back", job_id)
            else:
                delay = RETRY_MIN

    async def _keep_lease(self) -> None:
        """Renew this process's lease, adopt the jobs of owners whose lease is gone, retry ending MLflow runs,
        forever (Redis errors are waited out: the first pass after an outage reconciles what happened)."""
        while True:
            try:
                await asyncio.wait_for(self.redis.set(OWNER_KEY.format(self.instance), "1",
                                                      px=int(LEASE_SECONDS * 1000)), REDIS_TIMEOUT)
                await self.reconcile()
            except REDIS_ERRORS as e:
                log.debug("training lease/reconcile skipped: %s", e)
            except Exception:
                log.exception("reconciling training jobs failed")
            for job_id, status in list(self._runs_to_end.items()):
                await self._end_runs(job_id, status)
            await asyncio.sleep(LEASE_SECONDS / 3)

    async def reconcile(self) -> list[str]:
        """Adopt the queued/running jobs whose owner process is gone (this process follows them from now on:
        re-attached if Ray still runs them, finished or failed with the reason if not); returns their ids."""
        ids = await asyncio.wait_for(self.redis.zrevrange(JOBS_INDEX, 0, RECONCILE_SCAN - 1), REDIS_TIMEOUT)
        raws = await asyncio.wait_for(self.redis.mget([JOB_KEY.format(i) for i in ids]), REDIS_TIMEOUT) if ids else []
        open_jobs = [j for j in (TrainingJob.model_validate_json(r) for r in raws if r)
                     if j.status in OPEN and j.owner != self.instance and j.job_id not in self._tasks]
        adopted = []
        for job in open_jobs:
            if job.owner and await self.redis.exists(OWNER_KEY.format(job.owner)):
                continue
            # one process adopts a job from a given owner (one follower, one record, one alert)
            if not await self.redis.set(RECONCILE_LOCK.format(f"{job.job_id}:{job.owner}"), self.instance,
                                        nx=True, ex=3600):
                continue
            log.warning("training job %s: its API process %s is gone; %s follows it now", job.job_id, job.owner,
                        self.instance)
            self._current[job.job_id] = job
            await self._update(job.job_id, owner=self.instance)
            self._tasks[job.job_id] = asyncio.create_task(self._adopted(job.job_id, job.owner),
                                                          name=f"train-{job.job_id}")
            adopted.append(job.job_id)
        return adopted

    async def _adopted(self, job_id: str, previous_owner: str | None) -> None:
        try:
            raw = await self._redis(self.redis.get(SUBMISSION_KEY.format(job_id)))
            if raw is None:
                await self._failed(job_id, f"the API process that accepted it ({previous_owner}) stopped before "
                                           f"submitting it to Ray; found by {self.instance}")
                return
            await self._follow(job_id, json.loads(raw))
        finally:
            self._tasks.pop(job_id, None)
            self._current.pop(job_id, None)

    def _stage_logs(self, job_id: str, logs: str) -> None:
        """Keep a finished job's log; the next ``_update`` stores it with the record."""
        if len(logs) > MAX_LOG_CHARS:
            logs = f"[... {len(logs) - MAX_LOG_CHARS} characters cut ...]\n" + logs[-MAX_LOG_CHARS:]
        self._unsaved_logs[job_id] = logs

    async def logs(self, job_id: str) -> str:
        """A finished job's stored log; a queued or running job's log so far, from Ray."""
        job = await self.get(job_id)  # 404 for unknown jobs
        logs = self._unsaved_logs.get(job_id) or await self._redis(self.redis.get(LOGS_KEY.format(job_id)))
        if logs is not None:
            return logs
        if job.status in OPEN:
            raw = await self._redis(self.redis.get(SUBMISSION_KEY.format(job_id)))
            if raw is not None:
                where = json.loads(raw)
                with contextlib.suppress(RayUnreachable, Unavailable):
                    live = await (await self._jobs_at(where["address"])).logs(where["submission_id"])
                    if live is not None:
                        return strip_result(live)
        return f"job {job_id} is {job.status}: its log is stored when it finishes\n"

    async def get(self, job_id: str) -> TrainingJob:
        raw = await self._redis(self.redis.get(JOB_KEY.format(job_id)))
        if raw is None:
            raise NotFound(f"no training job {job_id!r}")
        # a change of this process not stored yet (Redis just came back) is newer than what Redis holds
        return self._unsaved.get(job_id) or TrainingJob.model_validate_json(raw)

    async def _fresh(self, job_id: str) -> TrainingJob:
        """The newest record this process can see: Redis's (another replica may have cancelled the job), or
        while Redis is down, its own copy."""
        if job_id in self._unsaved:
            return self._unsaved[job_id]
        try:
            raw = await asyncio.wait_for(self.redis.get(JOB_KEY.format(job_id)), REDIS_TIMEOUT)
        except REDIS_ERRORS:
            raw = None
        if raw is not None:
            job = TrainingJob.model_validate_json(raw)
            if job_id in self._current:  # what this process writes next starts from it
                self._current[job_id] = job
            return job
        if job_id in self._current:
            return self._current[job_id]
        raise NotFound(f"no training job {job_id!r}")

    async def list(self, limit: int = 50) -> list[TrainingJob]:
        ids = await self._redis(self.redis.zrevrange(JOBS_INDEX, 0, limit - 1))
        raws = await self._redis(self.redis.mget([JOB_KEY.format(i) for i in ids])) if ids else []
        jobs = [TrainingJob.model_validate_json(r) for r in raws if r]
        return [self._unsaved.get(j.job_id, j) for j in jobs]

    async def store_upload(self, uri: str, data: bytes) -> None:
        await asyncio.to_thread(self.store.write, uri, data)

    # -- submit / follow / cancel ------------------------------------------------------------------
    async def submit(self, req: TrainingRequest, who=None) -> TrainingJob:
        """``who``: the caller (a ``Principal``) whose data the URI must be; None for the platform (schedules)."""
        s = self.settings
        data_uri = check_data_uri(req.data_uri or s.data_uri, who, self.policy)  # 422 before touching anything
        try:
            await asyncio.to_thread(check_exists, data_uri, self.store)
        except NotFound as e:
            raise InvalidInput(f"data_uri: {e.message}") from None
        job = TrainingJob(
            job_id=uuid.uuid4().hex[:12], status="queued", created_at=_now(),
            hyperparameters=req.hyperparameters.model_dump(), data_uri=data_uri,
            target=req.target or s.data_target, model_name=req.model_name or s.model_name, owner=self.instance,
        )
        pipe = self.redis.pipeline(transaction=True)  # record and index together: no half-written job
        pipe.set(JOB_KEY.format(job.job_id), job.model_dump_json(), ex=JOB_TTL_SECONDS)
        pipe.zadd(JOBS_INDEX, {job.job_id: datetime.now(UTC).timestamp()})
        await self._redis(pipe.execute())
        self._current[job.job_id] = job
        self._tasks[job.job_id] = asyncio.create_task(self._run(job), name=f"train-{job.job_id}")
        return job

    def _job_env(self, job: TrainingJob) -> dict[str, str]:
        """The job's environment on the Ray node: the job, and where MLflow and the data are. S3 credentials
        only in local mode (cluster Ray pods have their own, from the mlstack-s3 secret)."""
        s = self.settings
        spec = {"job_id": job.job_id, "model_name": job.model_name, "data_uri": job.data_uri, "target": job.target,
                "hyperparameters": job.hyperparameters}
        env = {JOB_ENV: json.dumps(spec), "MLSTACK_MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
               "MLSTACK_MLFLOW_EXPERIMENT": s.mlflow_experiment, "MLSTACK_S3_REGION": s.s3_region,
               "PYTHONUNBUFFERED": "1"}
        if s.s3_endpoint_url:
            env["MLSTACK_S3_ENDPOINT_URL"] = s.s3_endpoint_url
        if s.object_store_dir:
            env["MLSTACK_OBJECT_STORE_DIR"] = str(s.object_store_dir.resolve())
        if s.data_dir:
            env["MLSTACK_DATA_DIR"] = str(s.data_dir.resolve())
        if s.mode == "local":
            for name in ("s3_access_key", "s3_secret_key"):
                if getattr(s, name) is not None:
                    env[f"MLSTACK_{name.upper()}"] = getattr(s, name).get_secret_value()
        return env

    def _entrypoint(self) -> str:
        s = self.settings
        python = s.train_python or (sys.executable if s.mode == "local" else "python")
        return f"{shlex.quote(python)} -m mlstack.training.run"

    async def _run(self, job: TrainingJob) -> None:
        # the MLflow experiment goes with it: a replica that adopts the job finds its runs there, whatever its own
        # MLSTACK_MLFLOW_EXPERIMENT says
        where = {"submission_id": submission_id(job.job_id), "address": None, "local_head": False,
                 "experiment": self.settings.mlflow_experiment}
        try:
            try:
                jobs = await self.jobs()
                where.update(address=jobs.address, local_head=self._head is not None)
                # where it goes, before it goes: a process that crashes right after submitting leaves a link
                await self._redis(self.redis.set(SUBMISSION_KEY.format(job.job_id), json.dumps(where),
                                                 ex=JOB_TTL_SECONDS))
                if (await self._fresh(job.job_id)).status not in OPEN:
                    return  # cancelled before it reached Ray
                await jobs.submit(where["submission_id"], self._entrypoint(), self._job_env(job),
                                  self.settings.train_num_cpus, {"mlstack.job_id": job.job_id,
                                                                 "mlstack.model": job.model_name})
            except (Unavailable, RayUnreachable) as e:
                await self._failed(job.job_id, getattr(e, "message", None) or str(e))
                return
            await self._follow(job.job_id, where)
        finally:
            self._tasks.pop(job.job_id, None)
            self._current.pop(job.job_id, None)

    async def _follow(self, job_id: str, where: dict) -> None:
        """Ask Ray for the job's state until it ends; store the result. Unknown to Ray -> failed."""
        s = self.settings
        sub, address = where["submission_id"], where["address"]
        unreachable_since: float | None = None
        while True:
            try:
                jobs = await self._jobs_at(address)
                state = await jobs.info(sub)
                unreachable_since = None
            except (RayUnreachable, Unavailable) as e:
                why = getattr(e, "message", None) or str(e)
                if where.get("local_head") and (self._head is None or self._head.url != address
                                                or not await asyncio.to_thread(self._head.alive)):
                    await self._lost(job_id, f"the local Ray head that ran it ({address}) is gone: {why}")
                    return
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > s.train_ray_unreachable_seconds:
                    await self._lost(job_id, f"Ray has been unreachable for {s.train_ray_unreachable_seconds:.0f}s "
                                             f"({why})")
                    return
                log.warning("training job %s: %s; asking again", job_id, why)
                await asyncio.sleep(min(5.0, s.train_poll_seconds * 5))
                continue
            if state is None:
                await self._lost(job_id, f"Ray does not know its job {sub} at {address} any more (the Ray "
                                         "cluster restarted or lost it)")
                return
            record = await self._fresh(job_id)
            if state.terminal:
                await self._finish(record, state, jobs, sub)
                return
            if record.status not in OPEN:  # cancelled (maybe by another replica) while Ray still runs it
                with contextlib.suppress(RayUnreachable):
                    await jobs.stop(sub)
            elif state.status == "RUNNING" and record.status == "queued":
                # Ray's start_time is when the job was submitted, not when it got its CPUs: seen running now (the
                # job's own start time replaces this when it ends)
                await self._update(job_id, status="running", started_at=_now())
            await asyncio.sleep(s.train_poll_seconds)

    async def _finish(self, record: TrainingJob, state: JobState, jobs: RayJobs, sub: str) -> None:
        job_id = record.job_id
        try:
            logs = await jobs.logs(sub) or ""
        except RayUnreachable as e:
            logs = f"(the job's log could not be read from Ray: {e})\n"
        out = parse_result(logs)
        self._stage_logs(job_id, strip_result(logs))
        if record.status not in OPEN:  # cancelled: keep that; store the log, end the run
            await self._update(job_id)
            await self._end_runs(job_id, "KILLED" if record.status == "cancelled" else "FAILED")
            return
        if state.status == "SUCCEEDED" and out and out.get("ok"):
            await self._succeeded(record, out["result"], out.get("started_at"), out.get("finished_at"))
        elif state.status == "STOPPED":
            await self._update(job_id, status="cancelled", finished_at=_now(),
                               error=f"stopped in Ray, not through the API: {state.message}"[:2000])
            await self._end_runs(job_id, "KILLED")
            await self._alert("training.cancelled", "warning", f"Training job {job_id} cancelled",
                              "stopped in Ray", model=record.model_name, data={"job_id": job_id})
        elif out is not None:
            await self._failed(job_id, out.get("error") or f"the Ray job ended {state.status}: {state.message}")
            await self._end_runs(job_id, "FAILED")
        else:  # ended without its result line (killed, or its log lost): its MLflow run may still say
            await self._lost(job_id, f"the Ray job ended {state.status} ({state.message}) without a result")

    async def _lost(self, job_id: str, reason: str) -> None:
        """The job's process ended without saying how: succeeded if its MLflow run registered a version (Ray lost
        the job after that), else failed with ``reason`` and its open runs ended."""
        record = await self._fresh(job_id)
        try:
            experiment = await self._experiment(job_id)
            result = await asyncio.wait_for(asyncio.to_thread(self._result_of_run_sync, record, experiment),
                                            MLFLOW_END_TIMEOUT)
        except Exception as e:
            log.warning("training job %s: could not read its MLflow run (%s: %s)", job_id, type(e).__name__, e)
            result = None
        if result is not None and record.status in OPEN:
            log.info("training job %s: %s; its MLflow run %s had registered version %s", job_id, reason,
                     result["run_id"], result["version"])
            await self._succeeded(record, result)
            return
        await self._failed(job_id, reason)
        await self._end_runs(job_id, "FAILED")

    async def _experiment(self, job_id: str) -> str:
        """The MLflow experiment the job was submitted with (its submission record), else this process's."""
        with contextlib.suppress(Exception):
            raw = await self._redis(self.redis.get(SUBMISSION_KEY.format(job_id)))
            if raw is not None and (experiment := json.loads(raw).get("experiment")):
                return experiment
        return self.settings.mlflow_experiment

    def _result_of_run_sync(self, record: TrainingJob, experiment: str) -> dict | None:
        from mlflow.tracking import MlflowClient

        from mlstack.training.train import result_of_run

        s = self.settings
        client = MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)
        return result_of_run(client, experiment, record.model_name, record.job_id)

    async def cancel(self, job_id: str, who: str) -> TrainingJob:
        """Stop a queued or running job: the record says ``cancelled`` at once, the Ray job is stopped, the MLflow
        run ends as KILLED when Ray says the job has ended (by its follower). 409 when it has already ended."""
        job = await self.get(job_id)
        if job.status not in OPEN:
            raise Conflict(f"training job {job_id} has already ended ({job.status})")
        job = await self._update(job_id, status="cancelled", finished_at=_now(), error=f"cancelled by {who}")
        raw = await self._redis(self.redis.get(SUBMISSION_KEY.format(job_id)))
        if raw is not None:
            where = json.loads(raw)
            try:
                await (await self._jobs_at(where["address"])).stop(where["submission_id"])
            except (RayUnreachable, Unavailable) as e:  # its follower keeps trying
                log.warning("training job %s: stopping the Ray job failed (%s); retried by its follower", job_id, e)
            if job_id not in self._tasks:  # another process follows it (or none yet): end the run here too
                self._tasks[job_id] = asyncio.create_task(self._after_cancel(job_id, where), name=f"cancel-{job_id}")
        log.info("training job %s cancelled by %s", job_id, who)
        await self._alert("training.cancelled", "warning", f"Training job {job_id} cancelled", f"cancelled by {who}",
                          model=job.model_name, data={"job_id": job_id})
        return job

    async def _after_cancel(self, job_id: str, where: dict) -> None:
        """Wait (bounded) for Ray to end a cancelled job this process does not follow, then end its MLflow run."""
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with contextlib.suppress(RayUnreachable, Unavailable):
                    state = await (await self._jobs_at(where["address"])).info(where["submission_id"])
                    if state is None or state.terminal:
                        break
                await asyncio.sleep(self.settings.train_poll_seconds)
            await self._end_runs(job_id, "KILLED")
        finally:
            self._tasks.pop(job_id, None)

    async def _end_runs(self, job_id: str, status: str) -> None:
        """End the MLflow runs of a job that are still open (its process was killed); retried if MLflow fails."""
        try:
            experiment = await self._experiment(job_id)
            ended = await asyncio.wait_for(asyncio.to_thread(self._end_runs_sync, job_id, status, experiment),
                                           MLFLOW_END_TIMEOUT)
        except Exception as e:
            log.warning("training job %s: could not end its MLflow run (%s: %s); retrying", job_id,
                        type(e).__name__, e)
            self._runs_to_end[job_id] = status
            return
        self._runs_to_end.pop(job_id, None)
        for run_id in ended:
            log.info("training job %s: MLflow run %s ended %s", job_id, run_id, status)

    def _end_runs_sync(self, job_id: str, status: str, experiment: str) -> list[str]:
        from mlflow.tracking import MlflowClient

        from mlstack.training.train import job_runs

        s = self.settings
        client = MlflowClient(tracking_uri=s.mlflow_tracking_uri)
        ended = []
        for run in job_runs(client, experiment, job_id):
            if run.info.status in ("RUNNING", "SCHEDULED"):
                client.set_terminated(run.info.run_id, status)
                ended.append(run.info.run_id)
        return ended

    async def _alert(self, *args, **fields) -> None:
        """Alerts must never break the job's bookkeeping (the job record is already written)."""
        try:
            await self.alerts.emit(*args, **fields)
        except Exception:
            log.exception("could not emit alert %s", args[0])

    async def _failed(self, job_id: str, message: str) -> None:
        log.warning("training job %s failed: %s", job_id, message)
        job = await self._update(job_id, status="failed", finished_at=_now(), error=str(message)[:2000])
        await self._alert("training.failed", "error", f"Training job {job_id} failed", str(message)[:500],
                          model=job.model_name, data={"job_id": job_id, "error": str(message)[:500]})

    async def _succeeded(self, job: TrainingJob, r: dict, started_at: str | None = None,
                         finished_at: str | None = None) -> None:
        """``started_at``/``finished_at``: the job process's own clock (exact), when it said them."""
        self.registry.forget(job.model_name)
        times = {"started_at": started_at} if started_at else {}
        await self._update(job.job_id, status="succeeded", finished_at=finished_at or _now(), task=r["task"],
                           run_id=r["run_id"], version=r["version"], metrics=r["metrics"], champion=r["champion"],
                           **times)
        primary = r["primary_metric"]
        value = r["metrics"][primary]
        verdict = ("now champion" if r["champion"] else f"champion stays v{r['previous_champion']}"
                   if r["previous_champion"] else "no champion")
        await self._alert(
            "training.finished", "info", f"{job.model_name} v{r['version']} trained",
            f"{primary}={value:.4f}; {verdict}", model=job.model_name, version=r["version"],
            data={"job_id": job.job_id, "run_id": r["run_id"], "metrics": r["metrics"], "champion": r["champion"]},
        )
        threshold = self.settings.alert_accuracy_threshold
        if r["task"] == "classification" and value >= threshold:
            await self._alert(
                "model.accuracy", "info", f"{job.model_name} v{r['version']} accuracy {value:.1%}",
                f"accuracy {value:.4f} is at or above the threshold {threshold:.2f}",
                model=job.model_name, version=r["version"], data={"accuracy": value, "job_id": job.job_id},
            )
