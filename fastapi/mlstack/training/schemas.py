"""Request and job models for training (the seed's ``TrainingRequest``, with bounds)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlstack_operator.contract import ModelName


class Hyperparameters(BaseModel):
    """RandomForest hyperparameters; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(100, ge=1, le=2000)
    max_depth: int | None = Field(None, ge=1, le=100)
    min_samples_split: int = Field(2, ge=2, le=1000)
    min_samples_leaf: int = Field(1, ge=1, le=1000)
    max_features: Literal["sqrt", "log2"] | float | None = Field(
        "sqrt", description="'sqrt', 'log2', a fraction in (0, 1], or null")
    random_state: int = Field(42, ge=0, le=2**31 - 1)
    test_size: float = Field(0.2, ge=0.05, le=0.5)

    @field_validator("max_features")
    @classmethod
    def _fraction(cls, v):
        if isinstance(v, float) and not 0 < v <= 1:
            raise ValueError("max_features as a number must be a fraction in (0, 1]")
        return v


class TrainingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    data_uri: str | None = Field(
        None, max_length=1024, description="s3://bucket/key.csv or a local path; default from settings")
    target: str | None = Field(None, max_length=200, description="target column; default from settings")
    model_name: ModelName | None = Field(None, description="registered model; default from settings")


class TrainingJob(BaseModel):
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] = Field(
        description="queued (waiting for a Ray CPU), running, then succeeded, failed (error says why) or "
                    "cancelled (DELETE /training/{id})")
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    hyperparameters: dict
    data_uri: str
    target: str
    model_name: str
    task: Literal["classification", "regression"] | None = None
    run_id: str | None = None
    version: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    champion: bool = False
    error: str | None = None
    owner: str | None = Field(None, description="the API process (host:pid:id) that follows the job on Ray")
