"""Schedules: periodic training and model-staleness watchers, persistent and exactly-once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from mlstack.api.deps import QuotasDep, SchedulesDep, ServicesDep, allow
from mlstack.api.quotas import Quotas
from mlstack.auth import Caller
from mlstack.errors import InvalidInput
from mlstack.schedules.schemas import Killed, ScheduleOut, ScheduleRun, ScheduleTrainingRequest, WatchModelRequest
from mlstack.schedules.service import ScheduleService
from mlstack.training.access import check_data_uri

router = APIRouter(tags=["schedules"])


@router.post("/schedule_training", status_code=201, response_model=ScheduleOut,
             summary="Train every N minutes/seconds (persistent; runs once per interval across replicas)")
async def schedule_training(body: ScheduleTrainingRequest, svc: ServicesDep,
                            caller: Annotated[Caller, allow("create", "schedules")], service: SchedulesDep,
                            quotas: QuotasDep) -> dict:
    params = body.training_params()
    # the caller's data rules hold for every firing: check the URI now, while we know who asked
    if params.get("data_uri"):  # (the default data is everyone's)
        params["data_uri"] = check_data_uri(params["data_uri"], caller.principal, svc.training.policy)
    floor = service.s.schedules_min_training_seconds
    if body.interval_seconds < floor:  # every firing trains a model: minutes apart, not seconds
        raise InvalidInput(f"a training schedule's interval must be at least {floor:g} seconds "
                           f"({floor / 60:g} minutes), got {body.interval_seconds:g}")
    return await _admit(quotas, service, caller, "training", params, body.interval_seconds)


async def _admit(quotas: Quotas, service: ScheduleService, caller: Caller, kind: str, params: dict,
                 interval: float) -> dict:
    """Within the caller's (and their organisation's) limit of schedules, else 429."""
    async def alive(ids: list[str]) -> set[str]:  # a killed schedule holds no slot
        return {i for i in ids if await service._call(service.scheduler.get_job, i) is not None}

    return await quotas.admit("schedules", caller.principal, alive, "schedules",
                              lambda: service.add(kind, params, interval), lambda out: out["job_id"])


@router.post("/watch_model", status_code=201, response_model=ScheduleOut,
             summary="Check every N minutes/seconds that the newest model version is fresh; alert model.stale")
async def watch_model(body: WatchModelRequest, svc: ServicesDep,
                      caller: Annotated[Caller, allow("create", "schedules")], service: SchedulesDep,
                      quotas: QuotasDep) -> dict:
    if body.max_age_seconds is not None:
        max_age = body.max_age_seconds
    elif body.max_age_minutes is not None:
        max_age = body.max_age_minutes * 60
    else:
        max_age = service.s.default_max_age_minutes * 60
    params = {"model_name": body.model_name or svc.settings.model_name, "max_age_seconds": max_age,
              "repeat": body.repeat}
    return await _admit(quotas, service, caller, "watch_model", params, body.interval_seconds)


@router.get("/schedules", dependencies=[allow("list", "schedules")],
            response_model=list[ScheduleOut], summary="All schedules with their last firing")
async def list_schedules(service: SchedulesDep) -> list[dict]:
    return await service.list()


@router.get("/schedules/{job_id}/runs", dependencies=[allow("get", "schedules")], response_model=list[ScheduleRun],
            summary="Recent firings of one schedule, newest first")
async def schedule_runs(job_id: Annotated[str, Path(max_length=64)], service: SchedulesDep) -> list[dict]:
    return await service.history(job_id)


@router.delete("/kill_scheduled_job/{job_id}", dependencies=[allow("delete", "schedules")], response_model=Killed,
               summary="Remove a schedule for every replica (404 when unknown)")
async def kill_scheduled_job(job_id: Annotated[str, Path(max_length=64)], service: SchedulesDep) -> Killed:
    await service.kill(job_id)
    return Killed(job_id=job_id)
