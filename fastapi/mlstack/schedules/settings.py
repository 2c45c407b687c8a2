"""Settings of the schedules subsystem (env prefix ``MLSTACK_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ScheduleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_", env_file=None, extra="ignore")

    schedules_prefix: str = Field("mlstack:schedules", min_length=1, description="Redis key prefix")
    schedules_min_seconds: float = Field(1.0, gt=0, description="shortest allowed interval")
    schedules_min_training_seconds: float = Field(
        300.0, gt=0, description="shortest interval of a training schedule (each firing trains a model)")
    schedules_max_seconds: float = Field(7 * 86400.0, gt=0, description="longest allowed interval")
    schedules_poll_seconds: float = Field(1.0, gt=0, le=60,
                                          description="how often a process looks for jobs added elsewhere")
    schedules_misfire_grace_seconds: float = Field(
        60.0, gt=0, description="a firing missed (all processes down) by more than this is skipped")
    schedules_redis_timeout: float = Field(2.0, gt=0)
    schedules_history: int = Field(50, ge=1, description="firings kept per schedule")
    default_max_age_minutes: float = Field(1440.0, gt=0, description="watch_model default staleness bound")
