from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from mlstack.api.deps import ServicesDep, allow
from mlstack.training.schemas import NAME_PATTERN

router = APIRouter(tags=["metrics"])


@router.get("/get_metrics", dependencies=[allow("get", "models")],
            summary="Latest model's metrics, averages over the past 7 days, per-version history")
async def get_metrics(
    svc: ServicesDep, model_name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> dict:
    return await asyncio.to_thread(svc.registry.metrics_summary, model_name or svc.settings.model_name)
