from __future__ import annotations

import asyncio

from fastapi import APIRouter

from mlstack.api.deps import ServicesDep, allow
from mlstack.api.params import ModelNameQuery

router = APIRouter(tags=["metrics"])


@router.get("/get_metrics", dependencies=[allow("get", "models")],
            summary="Latest model's metrics, averages over the past 7 days, per-version history")
async def get_metrics(
    svc: ServicesDep, model_name: ModelNameQuery = None,
) -> dict:
    return await asyncio.to_thread(svc.registry.metrics_summary, model_name or svc.settings.model_name)
