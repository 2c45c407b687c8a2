from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlstack.api.deps import ServicesDep
from mlstack.api.services import check_ready

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: Redis and MLflow reachable (503 with the reasons otherwise)")
async def readyz(svc: ServicesDep) -> JSONResponse:
    checks = await check_ready(svc)
    required = {k: v for k, v in checks.items() if k != "ray"}
    ok = all(v == "ok" for v in required.values())
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics of this API process")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
