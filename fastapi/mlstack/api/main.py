"""Wires the FastAPI app: settings, lifespan-built services, routers, error mapping. Nothing else."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mlstack.api.config import Config
from mlstack.api.hotpath import FastInference, InferenceFirst
from mlstack.api.limits import BodyGuard, body_limits, validation_response
from mlstack.api.routes import (
    alerts,
    auth,
    batch,
    deployments,
    health,
    inference,
    metrics,
    models,
    monitoring,
    orgs,
    packages,
    schedules,
    training,
)
from mlstack.api.services import start_services
from mlstack.auth.redact import redact_access_logs
from mlstack.errors import MlstackError, error_response, mlflow_error
from mlstack.settings import Settings

log = logging.getLogger("mlstack.api")

# one module per resource, each exporting ``router`` (in the OpenAPI document's order)
ROUTES = (health, training, inference, batch, models, packages, metrics, alerts, schedules, deployments, monitoring,
          auth, orgs)


def create_app(settings: Settings | None = None, fast_inference: bool = True) -> FastAPI:
    """``fast_inference=False``: ``POST /inference`` through FastAPI's route only (the tests compare the two)."""
    config = Config.from_env(settings)  # the one settings tree, built once
    settings = config.core
    redact_access_logs()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            app.state.services = await start_services(config, stack)
            log.info("mlstack API ready (mode=%s)", settings.mode)
            yield

    app = InferenceFirst(
        title="mlstack API",
        version="0.1.0",
        description="Train on Ray, register in MLflow, serve, deploy ModelDeployments, stream alerts.",
        lifespan=lifespan,
    )

    @app.exception_handler(MlstackError)
    async def _domain_error(_: Request, exc: MlstackError) -> JSONResponse:
        return error_response(exc)

    from mlflow.exceptions import MlflowException

    @app.exception_handler(MlflowException)
    async def _mlflow_error(_: Request, exc: MlflowException) -> JSONResponse:
        return error_response(mlflow_error(exc))  # what MLflow refused is the request's fault, else MLflow's

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc.errors())  # never the whole input back

    limits = body_limits(settings, config.packages)
    app.add_middleware(BodyGuard, settings=settings, limits=limits)  # token and body size before the body is read

    for routes in ROUTES:
        app.include_router(routes.router)
    if fast_inference:  # POST /inference ahead of all of the above, with the same answers (mlstack.api.hotpath)
        app.fast = FastInference(app, settings, limits)
    return app
