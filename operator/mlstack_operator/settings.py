"""Operator settings: one pydantic-settings class, env prefix ``MLSTACK_OPERATOR_``.

Nothing here is read at import time; ``get_settings()`` builds the object on first use (the kopf
startup handler, the ``render`` command) and tests pass their own instance.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SERVER_IMAGE = "ghcr.io/mlstack/model-server:0.1.0"
DEFAULT_RAY_IMAGE = "ghcr.io/mlstack/model-server-ray:0.1.0"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_OPERATOR_", env_file=None, extra="ignore")

    # What the children run
    server_image: str = Field(DEFAULT_SERVER_IMAGE, description="model server image (runs `mlstack serve`)")
    ray_image: str = Field(DEFAULT_RAY_IMAGE, description="Ray image holding mlstack.serving.rayserve")
    ray_version: str = Field("2.52.0", description="Ray version inside ray_image (RayService rayVersion)")
    ray_serve_app: str = Field("mlstack.serving.rayserve:build_app", description="Ray Serve import path")
    ray_serve_deployment: str = Field("ModelServer", description="the Serve deployment inside ray_serve_app")
    image_pull_policy: str = Field("IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    server_port: int = Field(8080, ge=1, le=65535)
    grpc_port: int = Field(8081, ge=0, le=65535, description="the model server's gRPC v2 port (0: HTTP only)")
    mlflow_tracking_uri: str = Field(
        "http://mlflow.mlflow.svc.cluster.local:5000",
        description="MLflow as the children reach it (MLSTACK_MLFLOW_TRACKING_URI in their env)",
    )
    vm_server_image: str | None = Field(None, description="the model server image a VM runs (with podman); unset: "
                                        "server_image. Pin it by digest (@sha256:...) so a VM runs exactly the "
                                        "platform's build: nothing is installed by name from a public index")
    cluster_domain: str = "cluster.local"

    # How the operator reaches MLflow for alias -> version resolution (default: mlflow_tracking_uri)
    registry_uri: str | None = Field(None, description="MLflow tracking URI the operator itself uses")
    resolve_cache_seconds: float = Field(30.0, ge=0, description="alias -> version cache; versions are kept")

    # Scope and behaviour
    namespaces: list[str] = Field(default_factory=list, description="empty: all namespaces (clusterwide)")
    failed_retry_seconds: float = Field(300.0, gt=0, description="slow re-check of Failed deployments")
    resync_seconds: float = Field(300.0, gt=0, description="safety net: re-check every child this often "
                                  "(changes and deletions of children are healed at once from their watch)")
    alias_poll_seconds: float = Field(10.0, ge=0, description="how often the aliases deployments follow are "
                                      "re-resolved (one registry call per model/alias, shared); 0: never")
    retry_max_seconds: float = Field(300.0, gt=0, description="backoff cap for a child write the API refused")
    unschedulable_check_seconds: float = Field(3.0, ge=0, description="how long a pod may wait for the "
                                               "scheduler before the operator reads its reason")
    post_info_events: bool = Field(False, description="also post kopf's per-handler Normal events")

    # Connection override (e.g. `kubectl proxy` on localhost): otherwise in-cluster or kubeconfig
    kube_server: str | None = Field(None, description="API server URL; unset: in-cluster or kubeconfig")
    kube_insecure: bool = False

    @field_validator("server_image", "ray_image", "vm_server_image")
    @classmethod
    def _pinned(cls, v: str | None) -> str | None:
        if v is None:
            return v
        tail = v.rsplit("/", 1)[-1]
        if "@" not in tail and (":" not in tail or tail.endswith(":latest")):
            raise ValueError(f"image {v!r} must be pinned to a tag or digest (not :latest)")
        return v

    @property
    def effective_vm_image(self) -> str:
        return self.vm_server_image or self.server_image

    @property
    def effective_registry_uri(self) -> str:
        return self.registry_uri or self.mlflow_tracking_uri


@lru_cache(maxsize=1)
def get_settings() -> OperatorSettings:
    return OperatorSettings()
