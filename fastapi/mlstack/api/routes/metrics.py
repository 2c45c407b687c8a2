from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, Field

from mlstack.api.deps import ServicesDep, allow
from mlstack.api.params import ModelNameQuery

router = APIRouter(tags=["metrics"])


class VersionMetrics(BaseModel):
    """One registered version's run metrics (``Registry.metrics_summary``)."""
    version: str
    run_id: str | None = Field(description="the MLflow run that logged it")
    created_at: str | None = Field(description="ISO 8601")
    metrics: dict[str, float] = Field(description="the run's metrics (empty when the run is gone)")
    tags: dict[str, str]


class RecentRuns(BaseModel):
    since: str = Field(description="ISO 8601: the window's start")
    runs: int = Field(description="FINISHED runs of the experiment in the window")
    averages: dict[str, float] = Field(description="each metric's mean over those runs")


class MetricsSummary(BaseModel):
    model_name: str
    primary_metric: str = Field(description="the metric that ranks versions for the model's task")
    latest: VersionMetrics | None = Field(description="the newest version; null when none is registered")
    last_7_days: RecentRuns
    history: list[VersionMetrics] = Field(description="every version, oldest first")


@router.get("/get_metrics", dependencies=[allow("get", "models")],
            summary="Latest model's metrics, averages over the past 7 days, per-version history")
async def get_metrics(svc: ServicesDep, model_name: ModelNameQuery = None) -> MetricsSummary:
    return await asyncio.to_thread(svc.registry.metrics_summary, model_name or svc.settings.model_name)
