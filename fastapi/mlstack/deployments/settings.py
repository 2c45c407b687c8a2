"""Settings of ``/deployments`` (env prefix ``MLSTACK_``), kept beside the code that reads them."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeploymentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_", env_file=None, extra="ignore")

    deployments_namespace: str = Field(
        "models", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63,
        description="namespace used when a request names none (the API's RBAC Role lives there)")
    deployments_redis_key: str = Field("mlstack:deployments", min_length=1,
                                       description="local mode: Redis hash of ModelDeployments (namespace/name)")
    deployments_retry_seconds: float = Field(
        30.0, gt=0, description="local mode: re-check of a Failed deployment (the model may appear)")
    deployments_resolve_seconds: float = Field(
        5.0, gt=0, description="local mode: how often a Ready deployment following an alias re-resolves it "
                               "(through the registry's cache; an alias moved through the API wakes it at once)")
    deployments_local_max_replicas: int = Field(
        1, ge=1, le=16, description="local mode: replicas are capped at this (one process for onnx)")

    # local Ray Serve (server: rayserve)
    rayserve_host: str = "127.0.0.1"
    rayserve_port: int = Field(8000, ge=1, le=65535, description="local Ray Serve HTTP port")
    rayserve_replica_cpus: float = Field(0.25, gt=0, le=64, description="CPUs reserved per Ray Serve replica")
    rayserve_start_timeout: float = Field(300.0, gt=0)

    # cluster mode (the connection itself: mlstack.kubeapi.KubeSettings)
    endpoint_cache_seconds: float = Field(
        2.0, ge=0, description="cluster mode: how long /inference reuses the list of Ready ModelDeployments")
    deployments_watch_seconds: float = Field(
        5.0, gt=0, description="cluster mode: how often phase changes are checked for alerts")
    endpoint_namespaces: list[str] = Field(
        default_factory=list,
        description="cluster mode: namespaces /inference and phase alerts look in (empty: all; organisations need it)")
