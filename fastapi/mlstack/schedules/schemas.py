"""Request and response bodies of the schedule endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlstack.training.schemas import TrainingRequest
from mlstack_operator.contract import ModelName

MAX_SECONDS = 7 * 86400

Kind = Literal["training", "watch_model"]


class Interval(BaseModel):
    """Exactly one of ``minutes`` or ``seconds``."""

    minutes: float | None = Field(None, gt=0, le=MAX_SECONDS / 60, description="interval in minutes")
    seconds: float | None = Field(None, ge=1, le=MAX_SECONDS, description="interval in seconds")

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.minutes is None) == (self.seconds is None):
            raise ValueError("give exactly one of 'minutes' or 'seconds'")
        if self.interval_seconds < 1:
            raise ValueError("the interval must be at least 1 second")
        return self

    @property
    def interval_seconds(self) -> float:
        return self.seconds if self.seconds is not None else float(self.minutes) * 60


class ScheduleTrainingRequest(TrainingRequest, Interval):
    """``POST /schedule_training``: the ``/trigger_training`` body plus an interval."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"minutes": 60, "hyperparameters": {"n_estimators": 200}}]}
    )

    def training_params(self) -> dict[str, Any]:
        return TrainingRequest.model_validate(self.model_dump(exclude={"minutes", "seconds"})).model_dump(mode="json")


class WatchModelRequest(Interval):
    """``POST /watch_model``: every interval, alert ``model.stale`` when the newest registered version
    of ``model_name`` is older than the max age (or there is none)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"minutes": 10, "max_age_minutes": 1440}]}
    )

    max_age_minutes: float | None = Field(None, gt=0, le=366 * 1440)
    max_age_seconds: float | None = Field(None, gt=0, le=366 * 86400)
    model_name: ModelName | None = Field(None, description="default: the configured model")
    repeat: bool = Field(False, description="alert at every check while stale, not once per stale version")

    @model_validator(mode="after")
    def _one_age(self):
        if self.max_age_minutes is not None and self.max_age_seconds is not None:
            raise ValueError("give at most one of 'max_age_minutes' or 'max_age_seconds'")
        return self


class ScheduleRun(BaseModel):
    """One firing, as the replica that won it recorded it."""
    scheduled_run_time: str | None = Field(None, description="ISO 8601 UTC: the time it was due")
    fired_at: str | None = Field(None, description="ISO 8601 UTC")
    instance: str | None = Field(None, description="the API process that ran it")
    kind: str | None = None
    outcome: Literal["ok", "error"] | None = None
    result: dict[str, Any] | None = Field(None, description="training: the job it started; watch_model: the "
                                          "newest version's age and whether it was stale / alerted")
    error: str | None = None


class ScheduleOut(BaseModel):
    job_id: str
    kind: Kind
    interval_seconds: float
    next_run_time: str | None = Field(None, description="ISO 8601 UTC; null when paused")
    created_at: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    last_run: ScheduleRun | None = None


class Killed(BaseModel):
    job_id: str
    killed: bool = True
