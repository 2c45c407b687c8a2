"""An alerts-only ASGI app (the alert router + the sink/hub lifespan, nothing else).

Used by ``bench/alerts.py`` and the alert tests, and usable as a separate SSE fan-out
Deployment: ``uvicorn --factory mlstack.api.alerts_app:create_app``.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mlstack.api.config import Config
from mlstack.api.services import start_core
from mlstack.errors import MlstackError, error_response
from mlstack.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    config = Config.from_env(settings)  # the one settings tree, built once

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from mlstack.auth.setup import start as start_auth

        async with AsyncExitStack() as stack:
            svc = await start_core(config, stack)
            svc.auth = await start_auth(config.core.mode, stack, config.deployments.deployments_namespace,
                                        config.auth, config.kube)
            app.state.services = svc
            yield

    app = FastAPI(title="mlstack alerts", lifespan=lifespan)

    @app.exception_handler(MlstackError)
    async def _domain_error(_: Request, exc: MlstackError) -> JSONResponse:
        return error_response(exc)

    from mlstack.api.routes.alerts import router

    app.include_router(router)
    return app
