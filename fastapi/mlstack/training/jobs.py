"""Training jobs: accepted at once (202), run as Ray tasks, tracked in Redis so any API replica can answer.

A job's record lives under ``mlstack:training:job:<id>`` (JSON) and in the sorted set
``mlstack:training:jobs`` (by creation time). Local Ray is started on the first job, not at import.

Redis outages: a route that needs Redis answers 503 with a message; a job that changes state while Redis
is down keeps its record in this process and a background task stores it as soon as Redis is back, so a
job that finished during the outage never stays ``running``. Each record names its ``owner`` (the API
process running it), which holds a short Redis lease while alive; a queued or running job whose owner's
lease is gone (the process crashed, or stopped while Redis was down) is marked failed by a live process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from mlstack.alerts import AlertSink
from mlstack.errors import InvalidInput, NotFound, Unavailable
from mlstack.registry import Registry
from mlstack.settings import Settings
from mlstack.training.access import DataPolicy, check_data_uri
from mlstack.training.data import ObjectStore, check_exists
from mlstack.training.schemas import TrainingJob, TrainingRequest
from mlstack.training.train import TrainConfig, run_job_stream

log = logging.getLogger(__name__)
JOB_KEY = "mlstack:training:job:{}"
JOBS_INDEX = "mlstack:training:jobs"
LOGS_KEY = "mlstack:training:logs:{}"
JOB_TTL_SECONDS = 30 * 24 * 3600
MAX_LOG_CHARS = 256 * 1024
REDIS_TIMEOUT = 3.0  # a route's Redis call; redis-py would otherwise retry a refused connection for seconds
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
RETRY_MIN, RETRY_MAX = 0.2, 2.0  # seconds between attempts to store records kept while Redis was down
OWNER_KEY = "mlstack:training:owner:{}"  # a live API process's lease (its jobs are not orphans)
RECONCILE_LOCK = "mlstack:training:reconcile:{}"
LEASE_SECONDS = 10.0  # an owner's lease lives this long; renewed every LEASE_SECONDS / 3
RECONCILE_SCAN = 500  # newest jobs looked at for orphans on each renewal


def _unavailable(e: BaseException) -> Unavailable:
    return Unavailable(f"training jobs are unavailable: Redis is unreachable ({type(e).__name__}: {e}); "
                       "retry shortly")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class JobManager:
    def __init__(self, settings: Settings, redis, registry: Registry, alerts: AlertSink):
        self.settings = settings
        self.redis = redis
        self.registry = registry
        self.alerts = alerts
        self.store = ObjectStore.from_settings(settings)
        self.policy = DataPolicy.from_settings(settings)
        self.ray_ready = False
        self.ray_error: str | None = None
        self._ray_lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task] = {}
        self._current: dict[str, TrainingJob] = {}  # records of the jobs this process runs (no Redis read needed)
        # records of this process's jobs not yet stored in Redis (it was down): job -> record, job -> log
        self._unsaved: dict[str, TrainingJob] = {}
        self._unsaved_logs: dict[str, str] = {}
        self._write_lock = asyncio.Lock()  # one writer at a time: a newer record is never overwritten by an older
        self._retrier: asyncio.Task | None = None
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._lease: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._lease = asyncio.create_task(self._keep_lease(), name="training-lease")
        if self.settings.ray_address:  # a Ray cluster is cheap to connect to: do it now
            await self.ensure_ray()

    async def stop(self) -> None:
        for job_id, task in list(self._tasks.items()):
            task.cancel()
            await self._update(job_id, status="failed", finished_at=_now(),
                               error="the API stopped before the job finished")
        if self._lease is not None:
            self._lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease
            with contextlib.suppress(*REDIS_ERRORS):  # else it expires: jobs left behind are reconciled then
                await asyncio.wait_for(self.redis.delete(OWNER_KEY.format(self.instance)), REDIS_TIMEOUT)
        if self.ray_ready:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self.ray_ready = False

    async def ensure_ray(self) -> None:
        async with self._ray_lock:
            if self.ray_ready:
                return
            try:
                await asyncio.to_thread(self._init_ray)
            except Exception as e:
                self.ray_error = f"Ray unavailable: {e}"
                raise Unavailable(self.ray_error) from None
            self.ray_ready, self.ray_error = True, None

    def _init_ray(self) -> None:
        import ray

        s = self.settings
        if s.ray_address:
            ray.init(address=s.ray_address, ignore_reinit_error=True, log_to_driver=False)
            return
        s.ray_temp_dir.mkdir(parents=True, exist_ok=True)
        ray.init(num_cpus=s.ray_num_cpus, object_store_memory=s.ray_object_store_mb * 1024 * 1024,
                 include_dashboard=False, _temp_dir=str(s.ray_temp_dir.resolve()), ignore_reinit_error=True,
                 log_to_driver=False)

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
        """Renew this process's lease and fail the jobs of owners whose lease is gone, forever (Redis errors
        are waited out: the first pass after an outage reconciles what happened during it)."""
        while True:
            try:
                await asyncio.wait_for(self.redis.set(OWNER_KEY.format(self.instance), "1",
                                                      px=int(LEASE_SECONDS * 1000)), REDIS_TIMEOUT)
                await self.reconcile()
            except REDIS_ERRORS as e:
                log.debug("training lease/reconcile skipped: %s", e)
            except Exception:
                log.exception("reconciling training jobs failed")
            await asyncio.sleep(LEASE_SECONDS / 3)

    async def reconcile(self) -> list[str]:
        """Mark failed the queued/running jobs whose owner process is gone; returns their ids."""
        ids = await asyncio.wait_for(self.redis.zrevrange(JOBS_INDEX, 0, RECONCILE_SCAN - 1), REDIS_TIMEOUT)
        raws = await asyncio.wait_for(self.redis.mget([JOB_KEY.format(i) for i in ids]), REDIS_TIMEOUT) if ids else []
        open_jobs = [j for j in (TrainingJob.model_validate_json(r) for r in raws if r)
                     if j.status in ("queued", "running") and j.owner and j.owner != self.instance]
        failed = []
        for job in open_jobs:
            if await self.redis.exists(OWNER_KEY.format(job.owner)):
                continue
            # one process reconciles a job (one record, one alert), even with several replicas
            if not await self.redis.set(RECONCILE_LOCK.format(job.job_id), self.instance, nx=True, ex=3600):
                continue
            message = (f"the API process that ran it ({job.owner}) stopped before the job finished; "
                       f"found by {self.instance}")
            await self._update(job.job_id, status="failed", finished_at=_now(), error=message)
            log.warning("training job %s: %s", job.job_id, message)
            await self._alert("training.failed", "error", f"Training job {job.job_id} failed", message,
                              model=job.model_name, data={"job_id": job.job_id})
            failed.append(job.job_id)
        return failed

    def _stage_logs(self, job_id: str, logs: str) -> None:
        """Keep a finished job's log; the next ``_update`` stores it with the record."""
        if len(logs) > MAX_LOG_CHARS:
            logs = f"[... {len(logs) - MAX_LOG_CHARS} characters cut ...]\n" + logs[-MAX_LOG_CHARS:]
        self._unsaved_logs[job_id] = logs

    async def logs(self, job_id: str) -> str:
        job = await self.get(job_id)  # 404 for unknown jobs
        logs = self._unsaved_logs.get(job_id) or await self._redis(self.redis.get(LOGS_KEY.format(job_id)))
        if logs is None:
            return f"job {job_id} is {job.status}: its log is stored when it finishes\n"
        return logs

    async def get(self, job_id: str) -> TrainingJob:
        raw = await self._redis(self.redis.get(JOB_KEY.format(job_id)))
        if raw is None:
            raise NotFound(f"no training job {job_id!r}")
        # a change of this process not stored yet (Redis just came back) is newer than what Redis holds
        return self._unsaved.get(job_id) or TrainingJob.model_validate_json(raw)

    async def list(self, limit: int = 50) -> list[TrainingJob]:
        ids = await self._redis(self.redis.zrevrange(JOBS_INDEX, 0, limit - 1))
        raws = await self._redis(self.redis.mget([JOB_KEY.format(i) for i in ids])) if ids else []
        jobs = [TrainingJob.model_validate_json(r) for r in raws if r]
        return [self._unsaved.get(j.job_id, j) for j in jobs]

    async def store_upload(self, uri: str, data: bytes) -> None:
        await asyncio.to_thread(self.store.write, uri, data)

    # -- submit / run ------------------------------------------------------------------------------
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

    async def _run(self, job: TrainingJob) -> None:
        s = self.settings
        cfg = TrainConfig(tracking_uri=s.mlflow_tracking_uri, experiment=s.mlflow_experiment,
                          model_name=job.model_name, data_uri=job.data_uri, target=job.target,
                          hyperparameters=job.hyperparameters, store=self.store, job_id=job.job_id)
        try:
            await self.ensure_ray()
            import ray

            remote = ray.remote(num_cpus=s.train_num_cpus, max_retries=0, num_returns="streaming")(run_job_stream)
            stream = remote.remote(cfg)
            await (await stream.__anext__())  # a worker runs it now: until then the job stays queued
            await self._update(job.job_id, status="running", started_at=_now())
            out = await (await stream.__anext__())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # Ray itself failed (worker died, cluster unreachable)
            await self._failed(job, e)
        else:
            self._stage_logs(job.job_id, out["logs"])
            if out["ok"]:
                await self._succeeded(job, out["result"])
            else:
                await self._failed(job, RuntimeError(out["error"]))
        finally:
            self._tasks.pop(job.job_id, None)
            self._current.pop(job.job_id, None)

    async def _alert(self, *args, **fields) -> None:
        """Alerts must never break the job's bookkeeping (the job record is already written)."""
        try:
            await self.alerts.emit(*args, **fields)
        except Exception:
            log.exception("could not emit alert %s", args[0])

    async def _failed(self, job: TrainingJob, exc: BaseException) -> None:
        cause = getattr(exc, "cause", None) or exc  # unwrap ray.exceptions.RayTaskError
        message = getattr(cause, "message", None) or f"{type(cause).__name__}: {cause}"
        log.warning("training job %s failed: %s", job.job_id, message)
        await self._update(job.job_id, status="failed", finished_at=_now(), error=str(message)[:2000])
        await self._alert("training.failed", "error", f"Training job {job.job_id} failed", str(message)[:500],
                          model=job.model_name, data={"job_id": job.job_id})

    async def _succeeded(self, job: TrainingJob, r: dict) -> None:
        self.registry.forget(job.model_name)
        await self._update(job.job_id, status="succeeded", finished_at=_now(), task=r["task"], run_id=r["run_id"],
                           version=r["version"], metrics=r["metrics"], champion=r["champion"])
        primary = r["primary_metric"]
        value = r["metrics"][primary]
        verdict = "now champion" if r["champion"] else f"champion stays v{r['previous_champion']}"
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
