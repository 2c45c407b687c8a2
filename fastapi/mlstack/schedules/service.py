"""``ScheduleService``: add / list / kill schedules and run each firing exactly once across processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.triggers.interval import IntervalTrigger
from redis.exceptions import RedisError

from mlstack.alerts.events import MODEL_STALE, SCHEDULE_FAILED, SCHEDULE_FIRED
from mlstack.errors import InvalidInput, NotFound, Unavailable
from mlstack.schedules.executor import ExactlyOnceExecutor, PollingScheduler
from mlstack.schedules.settings import ScheduleSettings

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


async def scheduled_job(**_: Any) -> None:
    """The job store's reference target; firings go through ``ScheduleService.fire`` instead."""
    raise RuntimeError("scheduled jobs run through mlstack.schedules.executor.ExactlyOnceExecutor")


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z") if dt else None


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class ScheduleService:
    def __init__(self, svc: Any, settings: ScheduleSettings):
        self.svc = svc
        self.s = settings
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.scheduler: PollingScheduler | None = None
        self._runners: dict[str, Callable[[str, dict, datetime], Awaitable[dict]]] = {
            "training": self._run_training,
            "watch_model": self._run_watch,
        }

    # -- keys ------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ":".join((self.s.schedules_prefix, *parts))

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        import redis

        store = RedisJobStore(jobs_key=self._key("jobs"), run_times_key=self._key("run_times"))
        store.redis = redis.Redis.from_url(
            self.svc.settings.redis_url, socket_timeout=self.s.schedules_redis_timeout,
            socket_connect_timeout=self.s.schedules_redis_timeout, client_name="mlstack-scheduler",
        )
        sched = PollingScheduler(
            jobstores={"default": store},
            executors={"default": ExactlyOnceExecutor(self.fire, loop)},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(self.s.schedules_misfire_grace_seconds)},
            timezone=UTC, daemon=True,
        )
        sched.poll_seconds = self.s.schedules_poll_seconds
        sched.start()
        self.scheduler = sched
        log.info("scheduler started (%s)", self.instance)

    async def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            await asyncio.to_thread(self.scheduler.shutdown, wait=False)

    async def _call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run a (synchronous, Redis-backed) scheduler call off the event loop; Redis down → 503."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs),
                                          timeout=self.s.schedules_redis_timeout * 3)
        except REDIS_ERRORS as e:
            raise Unavailable(f"schedules unavailable, Redis unreachable: {type(e).__name__}: {e}") from None

    async def _redis(self, coro: Awaitable) -> Any:
        try:
            return await asyncio.wait_for(coro, timeout=self.s.schedules_redis_timeout)
        except REDIS_ERRORS as e:
            raise Unavailable(f"schedules unavailable, Redis unreachable: {type(e).__name__}: {e}") from None

    # -- API -------------------------------------------------------------------------------------
    async def add(self, kind: str, params: dict[str, Any], interval_seconds: float) -> dict[str, Any]:
        if not self.s.schedules_min_seconds <= interval_seconds <= self.s.schedules_max_seconds:
            raise InvalidInput(f"interval must be between {self.s.schedules_min_seconds:g} and "
                               f"{self.s.schedules_max_seconds:g} seconds, got {interval_seconds:g}")
        job_id = uuid.uuid4().hex
        kwargs = {"kind": kind, "params": params, "created_at": _iso(datetime.now(UTC)),
                  "interval_seconds": interval_seconds}
        job = await self._call(
            self.scheduler.add_job, scheduled_job, IntervalTrigger(seconds=interval_seconds, timezone=UTC),
            id=job_id, name=kind, kwargs=kwargs,
        )
        return self._out(job, None)

    async def list(self) -> list[dict[str, Any]]:
        jobs = await self._call(self.scheduler.get_jobs)
        if not jobs:
            return []
        pipe = self.svc.redis.pipeline(transaction=False)
        for job in jobs:
            pipe.lindex(self._key("runs", job.id), 0)
        last = await self._redis(pipe.execute())
        return [self._out(job, json.loads(r) if r else None) for job, r in zip(jobs, last, strict=True)]

    async def history(self, job_id: str) -> list[dict[str, Any]]:
        raw = await self._redis(self.svc.redis.lrange(self._key("runs", job_id), 0, -1))
        return [json.loads(r) for r in raw]

    async def kill(self, job_id: str) -> None:
        if await self._call(self.scheduler.get_job, job_id) is None:
            raise NotFound(f"no scheduled job {job_id!r}")
        # the tombstone stops a firing that already read the job before it was removed
        await self._redis(self.svc.redis.set(self._key("killed", job_id), "1", ex=86400))
        with contextlib.suppress(JobLookupError):  # removed concurrently by another process
            await self._call(self.scheduler.remove_job, job_id)
        await self._redis(self.svc.redis.delete(self._key("stale", job_id)))

    @staticmethod
    def _out(job: Job, last_run: dict | None) -> dict[str, Any]:
        kw = job.kwargs
        return {"job_id": job.id, "kind": kw.get("kind", job.name),
                "interval_seconds": kw.get("interval_seconds", job.trigger.interval.total_seconds()),
                "next_run_time": _iso(job.next_run_time), "created_at": kw.get("created_at"),
                "params": kw.get("params", {}), "last_run": last_run}

    # -- firing ----------------------------------------------------------------------------------
    async def fire(self, job: Job, run_time: datetime) -> dict[str, Any]:
        """Run one firing if this process wins its lock; every process may call this for the same firing."""
        r = self.svc.redis
        interval = float(job.kwargs.get("interval_seconds") or 60)
        lock = self._key("fire", job.id, str(int(run_time.timestamp() * 1000)))
        ttl = int(max(600, 4 * interval, 2 * self.s.schedules_misfire_grace_seconds))
        won = await asyncio.wait_for(r.set(lock, self.instance, nx=True, ex=ttl), self.s.schedules_redis_timeout)
        if not won:
            with contextlib.suppress(*REDIS_ERRORS):  # how often replicas raced for a firing (observability)
                await r.incr(self._key("contended"))
            return {"skipped": "fired by another process"}
        if await r.exists(self._key("killed", job.id)):
            with contextlib.suppress(JobLookupError):
                await asyncio.to_thread(self.scheduler.remove_job, job.id)
            return {"skipped": "killed"}
        kind = job.kwargs.get("kind", job.name)
        record: dict[str, Any] = {"scheduled_run_time": _iso(run_time), "fired_at": _iso(datetime.now(UTC)),
                                  "instance": self.instance, "kind": kind}
        try:
            runner = self._runners[kind]
            record["result"] = await runner(job.id, job.kwargs.get("params", {}), run_time)
            record["outcome"] = "ok"
        except Exception as e:
            record.update(outcome="error", error=f"{type(e).__name__}: {e}"[:1000])
            await self._emit(SCHEDULE_FAILED, "error", f"Scheduled {kind} failed", record["error"],
                             data={"schedule_id": job.id, "kind": kind, "scheduled_run_time": _iso(run_time),
                                   "error": record["error"], "instance": self.instance})
        await self._record(job.id, record)
        return record

    async def _record(self, job_id: str, record: dict[str, Any]) -> None:
        key = self._key("runs", job_id)
        try:
            pipe = self.svc.redis.pipeline(transaction=True)
            pipe.lpush(key, json.dumps(record, default=str))
            pipe.ltrim(key, 0, self.s.schedules_history - 1)
            pipe.expire(key, 30 * 86400)
            await asyncio.wait_for(pipe.execute(), self.s.schedules_redis_timeout)
        except REDIS_ERRORS as e:
            log.warning("could not record firing of %s: %s", job_id, e)

    async def _emit(self, type: str, severity: str, title: str, message: str = "", **fields: Any) -> None:
        try:
            await self.svc.alerts.emit(type, severity, title, message, **fields)
        except Exception:
            log.exception("could not emit %s alert", type)

    async def _run_training(self, schedule_id: str, params: dict, run_time: datetime) -> dict[str, Any]:
        from mlstack.training.schemas import TrainingRequest

        req = TrainingRequest.model_validate(params)
        job = await self.svc.training.submit(req)  # a TrainingJob (pydantic model), not a dict
        model = req.model_name or self.svc.settings.model_name
        await self._emit(SCHEDULE_FIRED, "info", "Scheduled training started",
                         f"schedule {schedule_id} started training job {job.job_id}", model=model,
                         data={"schedule_id": schedule_id, "kind": "training", "job_id": job.job_id,
                               "scheduled_run_time": _iso(run_time), "instance": self.instance})
        return {"job_id": job.job_id, "status": job.status}

    async def _run_watch(self, schedule_id: str, params: dict, run_time: datetime) -> dict[str, Any]:
        name = params.get("model_name") or self.svc.settings.model_name
        max_age = float(params["max_age_seconds"])
        latest = await asyncio.to_thread(self.svc.registry.latest_version, name)
        version = str(latest["version"]) if latest else None
        age = time.time() - _epoch(latest["created_at"]) if latest else None
        result = {"model": name, "version": version, "age_seconds": age, "max_age_seconds": max_age}
        stale_key = self._key("stale", schedule_id)
        if age is not None and age <= max_age:
            await self.svc.redis.delete(stale_key)
            return {**result, "stale": False}
        marker = version or "none"
        previous = await self.svc.redis.set(stale_key, marker, get=True, ex=30 * 86400)
        if previous == marker and not params.get("repeat"):
            return {**result, "stale": True, "alerted": False}
        if latest is None:
            title, message = f"Model {name} has no registered version", "nothing to serve yet"
        else:
            title = f"Model {name} is stale"
            message = (f"newest version {version} was registered {age / 60:.1f} min ago "
                       f"(max {max_age / 60:.1f} min)")
        await self._emit(MODEL_STALE, "warning", title, message, model=name, version=version,
                         data={"age_seconds": age, "max_age_seconds": max_age, "schedule_id": schedule_id,
                               "scheduled_run_time": _iso(run_time)})
        return {**result, "stale": True, "alerted": True}
