"""Settings of the monitor, feedback and quality (env prefix ``MLSTACK_MONITOR_``), beside the code that reads them."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_MONITOR_", env_file=None, extra="ignore")

    enabled: bool = Field(True, description="run the monitor in this API process (one per Redis holds the lease)")
    key_prefix: str = Field("mlstack:monitoring", min_length=1, description="Redis keys of the monitor")
    drain_seconds: float = Field(2.0, gt=0, le=300, description="how often each model server's ring is drained")
    evaluate_seconds: float = Field(5.0, gt=0, le=3600, description="how often drift and SLOs are evaluated")
    lease_seconds: float = Field(15.0, ge=1, le=600, description="the monitor's Redis lease (another API process "
                                 "takes over this long after the holder died)")
    pull_limit: int = Field(2000, ge=1, le=5000, description="records asked of a model server per pull")
    pull_timeout_seconds: float = Field(5.0, gt=0, le=120)
    stream_maxlen: int = Field(100_000, ge=100, description="records kept per deployment's Redis Stream (approx.)")
    request_ttl_seconds: int = Field(86_400, ge=60, description="how long a logged request id can be joined with "
                                     "feedback")
    bucket_seconds: int = Field(60, ge=1, le=3600, description="feedback time buckets (windows are whole buckets)")
    quality_windows: list[int] = Field(default_factory=lambda: [3600, 86_400], description="windows GET "
                                       "/deployments/{name}/quality reports besides the deployment's own")
    window_max_records: int = Field(20_000, ge=100, description="most payload records read for one window")
    min_latency_samples: int = Field(20, ge=1, description="sampled requests a window needs to judge latency")
    min_feedback: int = Field(20, ge=1, description="labelled predictions a window needs to judge accuracy")
    min_shadow_rows: int = Field(20, ge=1, description="compared rows a window needs to judge a shadow's agreement")
    profile_retry_seconds: float = Field(60.0, gt=0, description="a version without a reference profile is asked "
                                         "again after this")
    history_uri: str | None = Field(None, description="s3://bucket/prefix for Parquet history (unset: "
                                    "s3://<bucket of MLSTACK_UPLOAD_PREFIX>/monitoring)")
    history_seconds: float = Field(300.0, gt=0, description="how often payload history is written as Parquet")
    history_enabled: bool = True
    metrics_port: int = Field(9090, ge=1, le=65535, description="mlstack monitor: Prometheus /metrics port")
    metrics_host: str = Field("0.0.0.0", description="mlstack monitor: address of the /metrics port")
