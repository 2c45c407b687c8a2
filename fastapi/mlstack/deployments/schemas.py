"""Request and response bodies of ``/deployments``; the spec and status are the operator's contract models."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlstack.errors import Conflict
from mlstack_operator.contract import (
    API_VERSION,
    KIND,
    OBJECT_NAME_MAX,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    NamespaceName,
    ObjectName,
)

log = logging.getLogger(__name__)
EXAMPLE = {"name": "iris", "namespace": "models",
           "spec": {"model": {"name": "iris_model", "alias": "champion"}, "runtime": "pod", "server": "onnx"}}


class DeploymentCreate(BaseModel):
    """``POST /deployments``: a ModelDeployment's name, namespace and spec (the CRD's spec, camelCase)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    name: ObjectName = Field(..., description=f"a DNS-1035 label of at most {OBJECT_NAME_MAX} characters")
    namespace: NamespaceName | None = Field(None, description="default: the caller's organisation, else the API's "
                                                              "deployments namespace")
    spec: ModelDeploymentSpec


class MetadataView(BaseModel):
    """The metadata the API reports (the API server may add more; it is passed through)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str
    namespace: str
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(None, alias="resourceVersion")
    creation_timestamp: str | None = Field(None, alias="creationTimestamp")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class DeploymentView(BaseModel):
    """A ModelDeployment as ``kubectl get mdep -o json`` shows it (status always present)."""

    model_config = ConfigDict(populate_by_name=True)

    api_version: str = Field(API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: MetadataView
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)


def view(obj: Mapping[str, Any]) -> DeploymentView:
    """A stored or API-server object -> the response model (an unreadable status reads as Pending)."""
    status = obj.get("status") or {}
    try:
        st = ModelDeploymentStatus.model_validate(status)
    except ValidationError as e:
        log.warning("unreadable status of %s: %s", (obj.get("metadata") or {}).get("name"), e)
        st = ModelDeploymentStatus()
    return DeploymentView(apiVersion=obj.get("apiVersion", API_VERSION), kind=obj.get("kind", KIND),
                          metadata=MetadataView.model_validate(obj["metadata"]),
                          spec=ModelDeploymentSpec.model_validate(obj["spec"]), status=st)


def views(objs: list[Mapping[str, Any]]) -> list[DeploymentView]:
    """Like ``view`` for a list; an object whose spec no longer parses is logged and left out."""
    out = []
    for obj in objs:
        try:
            out.append(view(obj))
        except (ValidationError, KeyError) as e:
            log.warning("skipping unreadable ModelDeployment %s: %s", (obj.get("metadata") or {}).get("name"), e)
    return out


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def new_object(namespace: str, name: str, spec: ModelDeploymentSpec, *, local: bool) -> dict[str, Any]:
    """The object to store/send. Locally the API plays the API server (uid, generation, timestamp)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if local:
        meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=now_rfc3339())
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec.to_k8s()}


def promote_spec(spec: ModelDeploymentSpec, what: str) -> ModelDeploymentSpec:
    """The spec after promoting its canary: pinned to the canary's version, no canary (409 without one)."""
    if spec.canary is None:
        raise Conflict(f"ModelDeployment {what} has no canary to promote")
    raw = spec.to_k8s()
    raw["model"] = {"name": spec.model.name, "version": spec.canary.version}
    raw.pop("canary")
    return ModelDeploymentSpec.model_validate(raw)


def abort_spec(spec: ModelDeploymentSpec, what: str) -> ModelDeploymentSpec:
    """The spec after aborting its canary: the same, without the canary (409 without one)."""
    if spec.canary is None:
        raise Conflict(f"ModelDeployment {what} has no canary to abort")
    raw = spec.to_k8s()
    raw.pop("canary")
    return ModelDeploymentSpec.model_validate(raw)
