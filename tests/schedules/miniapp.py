"""An API process with the alerts and schedules subsystems and stand-ins for the lead's training/registry.

The stand-ins keep their state in the same real Redis, so tests control "the newest registered version"
and can count training submissions across processes. Everything else (Redis, APScheduler, HTTP,
the processes themselves) is real. Run: ``uvicorn --factory tests.schedules.miniapp:create_app``.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mlstack.api.config import Config
from mlstack.api.quotas import Quotas
from mlstack.api.services import start_core
from mlstack.errors import MlstackError
from mlstack.training.schemas import TrainingJob

REGISTRY_KEY = "test:registry:{name}"
SUBMITTED_KEY = "test:training:submitted"


class RedisRegistry:
    """``latest_version(name)`` as the lead's Registry returns it, read from a Redis hash the test sets."""

    def __init__(self, url: str):
        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)

    def latest_version(self, name: str) -> dict | None:
        h = self.r.hgetall(REGISTRY_KEY.format(name=name))
        return {"version": h["version"], "created_at": float(h["created_at"])} if h else None


class RecordingTraining:
    """``submit(TrainingRequest)`` that records each submission in Redis instead of training."""

    def __init__(self, r):
        self.r = r

    async def submit(self, req) -> TrainingJob:  # the same type JobManager.submit returns
        job_id = uuid.uuid4().hex
        hp = req.hyperparameters.model_dump()
        await self.r.rpush(SUBMITTED_KEY, json.dumps({"job_id": job_id, "pid": os.getpid(), "hyperparameters": hp}))
        return TrainingJob(job_id=job_id, status="queued", created_at=datetime.now(UTC).isoformat(),
                           hyperparameters=hp, data_uri=req.data_uri or "s3://test/data.csv",
                           target=req.target or "target", model_name=req.model_name or "iris_model")


def create_app() -> FastAPI:
    config = Config.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from mlstack.auth.setup import start as start_auth
        from mlstack.schedules.setup import start as start_schedules

        async with AsyncExitStack() as stack:
            svc = await start_core(config, stack)  # Redis and the alerts
            # the routes check the caller (auth off: no tokens configured)
            svc.auth = await start_auth(config.core.mode, stack, "models", config.auth, config.kube)
            svc.registry = RedisRegistry(config.core.redis_url)  # type: ignore[assignment]  # a stand-in
            svc.training = RecordingTraining(svc.redis)  # type: ignore[assignment]  # a stand-in
            svc.quotas = Quotas(svc.redis, config.quotas)
            svc.schedules = await start_schedules(svc, stack, config.schedules)
            app.state.services = svc
            yield

    app = FastAPI(lifespan=lifespan)

    @app.exception_handler(MlstackError)
    async def _domain_error(_: Request, exc: MlstackError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    from mlstack.api.routes import alerts, schedules

    app.include_router(alerts.router)
    app.include_router(schedules.router)
    return app
