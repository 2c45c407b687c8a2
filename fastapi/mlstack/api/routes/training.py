from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError

from mlstack.api.deps import QuotasDep, ServicesDep, allow
from mlstack.api.quotas import Quotas
from mlstack.api.services import Services
from mlstack.auth import Caller
from mlstack.errors import InvalidInput
from mlstack.training.access import upload_uri
from mlstack.training.data import MAX_CSV_BYTES, parse_csv
from mlstack.training.jobs import JOB_KEY
from mlstack.training.schemas import Hyperparameters, TrainingJob, TrainingRequest
from mlstack_operator.contract import MODEL_NAME_MAX, MODEL_NAME_PATTERN

router = APIRouter(tags=["training"])


CreateJob = Annotated[Caller, allow("create", "trainingjobs")]


@router.post("/trigger_training", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingJob,
             summary="Train a RandomForest on Ray from a CSV URI; returns at once with a job id",
             description="`data_uri`: an `s3://` object the caller may read (in cluster mode: their organisation's "
                         "prefix or the platform's data) or, in local mode, a file in `MLSTACK_DATA_DIR`; anything "
                         "else is 422 without being touched.")
async def trigger_training(req: TrainingRequest, svc: ServicesDep, caller: CreateJob,
                           quotas: QuotasDep) -> TrainingJob:
    return await _submit(svc, quotas, req, caller)


async def _submit(svc: Services, quotas: Quotas, req: TrainingRequest, caller: Caller) -> TrainingJob:
    """Within the caller's (and their organisation's) limit of queued + running jobs, else 429."""
    async def alive(ids: list[str]) -> set[str]:  # a finished or expired job holds no slot
        raws = await svc.redis.mget([JOB_KEY.format(i) for i in ids])
        jobs = [TrainingJob.model_validate_json(r) for r in raws if r]
        return {j.job_id for j in jobs if j.status in ("queued", "running")}

    return await quotas.admit("training", caller.principal, alive, "queued or running training jobs",
                              lambda: svc.training.submit(req, caller.principal), lambda job: job.job_id)


@router.post("/train", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingJob,
             summary="Train on an uploaded CSV (multipart)")
async def train_upload(
    svc: ServicesDep,
    caller: CreateJob,
    quotas: QuotasDep,
    file: Annotated[UploadFile, File(description="CSV with a header row and a target column")],
    hyperparameters: Annotated[str, Form(description="JSON object of hyperparameters")] = "{}",
    target: Annotated[str | None, Form(max_length=200)] = None,
    model_name: Annotated[str | None, Form(min_length=1, max_length=MODEL_NAME_MAX, pattern=MODEL_NAME_PATTERN)] = None,
) -> TrainingJob:
    s = svc.settings
    try:
        hp = Hyperparameters.model_validate(json.loads(hyperparameters or "{}"))
    except (json.JSONDecodeError, ValidationError) as e:
        raise InvalidInput(f"hyperparameters: {e}") from None
    data = await file.read(MAX_CSV_BYTES + 1)
    if len(data) > MAX_CSV_BYTES:
        raise InvalidInput(f"the upload is larger than {MAX_CSV_BYTES} bytes")
    parse_csv(data, target or s.data_target, source=file.filename or "the upload")  # 422 before storing
    uri = upload_uri(s.upload_prefix, f"{uuid.uuid4().hex}.csv", caller.principal, svc.training.policy)
    await svc.training.store_upload(uri, data)
    return await _submit(svc, quotas, TrainingRequest(hyperparameters=hp, data_uri=uri, target=target,
                                                      model_name=model_name), caller)


@router.get("/training", dependencies=[allow("list", "trainingjobs")],
            response_model=list[TrainingJob], summary="Recent training jobs, newest first")
async def list_jobs(svc: ServicesDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[TrainingJob]:
    return await svc.training.list(limit)


@router.get("/training/{job_id}", dependencies=[allow("get", "trainingjobs")],
            response_model=TrainingJob, summary="A training job's status, metrics, version")
async def get_job(job_id: str, svc: ServicesDep) -> TrainingJob:
    return await svc.training.get(job_id)


@router.get("/training/{job_id}/logs", dependencies=[allow("get", "trainingjobs")],
            response_class=PlainTextResponse, summary="A job's training log (so far, while it runs)")
async def get_logs(job_id: str, svc: ServicesDep) -> str:
    return await svc.training.logs(job_id)


@router.delete("/training/{job_id}", response_model=TrainingJob, summary="Cancel a queued or running training job",
               description="Stops the job's Ray job; the record says `cancelled` at once and the job's MLflow run "
                           "ends as KILLED once Ray has stopped it. 404 for an unknown job, 409 for one that has "
                           "already ended. The role that may start training may cancel it.",
               responses={404: {"description": "no such job"}, 409: {"description": "the job has already ended"}})
async def cancel_job(job_id: str, svc: ServicesDep,
                     caller: Annotated[Caller, allow("delete", "trainingjobs")]) -> TrainingJob:
    return await svc.training.cancel(job_id, caller.principal.describe())
