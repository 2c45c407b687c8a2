"""APScheduler 3 pieces: a scheduler thread that never dies and an executor that runs each firing once.

``PollingScheduler`` runs in its own thread (the Redis job store is synchronous, so its I/O never
blocks the event loop) and re-reads the job store at least every ``poll_seconds``, so it picks up
jobs another process added. ``ExactlyOnceExecutor`` hands each firing, with its scheduled run time,
to an async ``fire(job, run_time)`` on the API's event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler

Fire = Callable[[Job, datetime], Awaitable[Any]]


class PollingScheduler(BackgroundScheduler):
    poll_seconds: float = 1.0

    def _process_jobs(self):
        try:
            wait = super()._process_jobs()
        except Exception as e:  # e.g. Redis went away between reading and updating a job
            self._logger.warning("processing jobs failed (%s); retrying in %ss", e, self.poll_seconds)
            return self.poll_seconds
        return self.poll_seconds if wait is None else min(wait, self.poll_seconds)


class ExactlyOnceExecutor(BaseExecutor):
    def __init__(self, fire: Fire, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._fire = fire
        self._loop = loop
        self._pending: set[concurrent.futures.Future] = set()

    def shutdown(self, wait: bool = True) -> None:
        for f in list(self._pending):
            f.cancel()
        self._pending.clear()

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        future = asyncio.run_coroutine_threadsafe(self._run(job, run_times), self._loop)
        self._pending.add(future)

        def done(f: concurrent.futures.Future) -> None:
            self._pending.discard(f)
            try:
                events = f.result()
            except BaseException:
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, events)

        future.add_done_callback(done)

    async def _run(self, job: Job, run_times: list[datetime]) -> list[JobExecutionEvent]:
        events = []
        for run_time in run_times:
            if job.misfire_grace_time is not None and \
                    datetime.now(UTC) - run_time > timedelta(seconds=job.misfire_grace_time):
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time))
                self._logger.warning("run of %s at %s missed (misfire grace exceeded)", job.id, run_time)
                continue
            try:
                retval = await self._fire(job, run_time)
            except Exception as e:
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time,
                                                exception=e, traceback=traceback.format_exc()))
                self._logger.exception("firing %s at %s failed", job.id, run_time)
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time,
                                                retval=retval))
        return events
