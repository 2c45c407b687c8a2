"""The ModelDeployment contract (``mlstack.io/v1alpha1``): the one pydantic model of spec and status.

The CRD in ``manifests/crds/modeldeployment.yaml`` mirrors these models field by field (bounds,
enums, defaults, CEL rules for the cross-field constraints); ``tests/operator/test_contract.py``
proves both accept and reject the same examples. The API imports this module; it imports nothing
from the API.

Integer fields are strict (``1.0`` and ``true`` are not integers) and quantities are strings, as
the CRD's structural schema has them; unknown fields are rejected (as ``kubectl apply`` does with
server-side field validation).
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

GROUP = "mlstack.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]

# The vocabulary: each kind of name is defined here once, with its longest length, and reused by the CRD (the
# contract test compares behaviour), the API's bodies, paths and queries, and the dashboard's forms
# (frontend/src/lib/patterns.ts is generated from these by frontend/scripts/openapi.py).
MODEL_NAME_PATTERN, MODEL_NAME_MAX = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", 256  # a registered MLflow model
VERSION_PATTERN, VERSION_MAX = r"^[1-9][0-9]*$", 10  # a registered model's version
ALIAS_PATTERN, ALIAS_MAX = r"^[A-Za-z][A-Za-z0-9_-]*$", 63  # a registered model's alias (champion)
CPU_PATTERN, QUANTITY_MAX = r"^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$", 16
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"
# A DNS-1123 label: namespaces, organisations, ServiceAccounts.
DNS_LABEL_PATTERN, DNS_LABEL_MAX = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", 63
# A ModelDeployment's name: a DNS-1035 label (its Services' names), short enough to leave room for the "-canary" and
# "-serve-svc" suffixes.
OBJECT_NAME_PATTERN, OBJECT_NAME_MAX = r"^[a-z]([-a-z0-9]*[a-z0-9])?$", 42
# "namespace/name" of a ModelDeployment (what /inference and /feedback take)
DEPLOYMENT_REF_PATTERN = f"^{DNS_LABEL_PATTERN[1:-1]}/{OBJECT_NAME_PATTERN[1:-1]}$"
DEPLOYMENT_REF_MAX = DNS_LABEL_MAX + 1 + OBJECT_NAME_MAX

ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_NAME_MAX, pattern=MODEL_NAME_PATTERN)]
ModelVersion = Annotated[str, Field(min_length=1, max_length=VERSION_MAX, pattern=VERSION_PATTERN)]
ModelAlias = Annotated[str, Field(min_length=1, max_length=ALIAS_MAX, pattern=ALIAS_PATTERN)]
NamespaceName = Annotated[str, Field(min_length=1, max_length=DNS_LABEL_MAX, pattern=DNS_LABEL_PATTERN)]
ObjectName = Annotated[str, Field(min_length=1, max_length=OBJECT_NAME_MAX, pattern=OBJECT_NAME_PATTERN)]
DeploymentRef = Annotated[str, Field(min_length=3, max_length=DEPLOYMENT_REF_MAX, pattern=DEPLOYMENT_REF_PATTERN)]
CpuQuantity = Annotated[str, Field(min_length=1, max_length=QUANTITY_MAX, pattern=CPU_PATTERN)]
MemoryQuantity = Annotated[str, Field(min_length=1, max_length=QUANTITY_MAX, pattern=MEMORY_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelRef(_Strict):
    """A registered MLflow model, pinned to a version or followed through an alias (exactly one)."""

    name: ModelName
    version: ModelVersion | None = None
    alias: ModelAlias | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelRef:
        if (self.version is None) == (self.alias is None):
            raise ValueError("exactly one of model.version and model.alias must be set")
        return self


class Runtime(StrEnum):
    pod = "pod"
    vm = "vm"


class Server(StrEnum):
    onnx = "onnx"
    rayserve = "rayserve"


class Autoscaling(_Strict):
    min_replicas: StrictInt = Field(1, ge=1, le=100, alias="minReplicas")
    max_replicas: StrictInt = Field(..., ge=1, le=100, alias="maxReplicas")
    target_cpu_utilization: StrictInt = Field(70, ge=1, le=100, alias="targetCPUUtilization")

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        return self


class Resources(_Strict):
    """Per replica (per VM for ``runtime: vm``, where ``vm`` sizes the guest)."""

    cpu: CpuQuantity = "500m"
    memory: MemoryQuantity = "512Mi"
    gpu: StrictInt = Field(0, ge=0, le=16)


class Canary(_Strict):
    version: ModelVersion
    traffic_percent: StrictInt = Field(..., ge=1, le=99, alias="trafficPercent")


class Shadow(_Strict):
    """Another version that gets a copy of ``percent`` of the inference requests: its answers are logged for the
    monitor (agreement with the live version), never returned."""

    version: ModelVersion | None = None
    alias: ModelAlias | None = None
    percent: float = Field(..., gt=0, le=100, strict=True,  # strict: 20 and 0.5, not "20" or true
                           description="share of inference requests mirrored (0 < percent <= 100)")
    min_agreement: float | None = Field(None, ge=0, le=1, alias="minAgreement",
                                        description="a deployment.shadow alert when the shadow answers like the live "
                                        "version on a smaller share of the compared rows (0-1; unset: no alert)")

    @model_validator(mode="after")
    def _exactly_one(self) -> Shadow:
        if (self.version is None) == (self.alias is None):
            raise ValueError("exactly one of shadow.version and shadow.alias must be set")
        return self


class VMSpec(_Strict):
    image: str = Field(..., min_length=1, max_length=512,
                       description="containerDisk image of a Linux distribution with podman and cloud-init")
    cores: StrictInt = Field(1, ge=1, le=64)
    memory: MemoryQuantity = "2Gi"


class Alerts(_Strict):
    min_accuracy: float | None = Field(None, ge=0, le=1, alias="minAccuracy")
    max_p99_latency_ms: StrictInt | None = Field(None, ge=1, le=600_000, alias="maxP99LatencyMs")


class Monitoring(_Strict):
    """The payload log and drift watch (``mlstack.monitoring``); absent: these defaults (monitoring on)."""

    sample_rate: float = Field(0.05, ge=0, le=1, alias="sampleRate",
                               description="share of inference requests logged for the monitor; 0 turns it off")
    psi_threshold: float = Field(0.2, gt=0, le=10, alias="psiThreshold",
                                 description="a feature (or the predictions) drifted when its PSI exceeds this")
    window_seconds: StrictInt = Field(300, ge=10, le=86_400, alias="windowSeconds",
                                      description="the sliding window drift, latency and accuracy are judged over")
    min_rows: StrictInt = Field(100, ge=1, le=1_000_000, alias="minRows",
                                description="a window with fewer logged rows is not judged for drift")


class ModelDeploymentSpec(_Strict):
    model: ModelRef
    runtime: Runtime = Runtime.pod
    server: Server = Server.onnx
    replicas: StrictInt = Field(1, ge=0, le=100)
    autoscaling: Autoscaling | None = None
    resources: Resources = Field(default_factory=Resources)
    priority: StrictInt = Field(0, ge=0, le=1_000_000, description="higher is admitted first")
    canary: Canary | None = None
    shadow: Shadow | None = None
    vm: VMSpec | None = None
    alerts: Alerts | None = None
    monitoring: Monitoring | None = None

    @property
    def effective_monitoring(self) -> Monitoring:
        return self.monitoring or Monitoring()

    @model_validator(mode="after")
    def _cross_field(self) -> ModelDeploymentSpec:
        if (self.runtime == Runtime.vm) != (self.vm is not None):
            raise ValueError("spec.vm is required with runtime: vm and not allowed otherwise")
        if self.runtime == Runtime.vm and self.server == Server.rayserve:
            raise ValueError("server: rayserve needs runtime: pod")
        if self.canary is not None and self.model.version is not None and self.canary.version == self.model.version:
            raise ValueError("canary.version must differ from model.version")
        if self.shadow is not None:
            if self.server == Server.rayserve:
                raise ValueError("spec.shadow needs server: onnx (Ray Serve applications do not mirror requests)")
            if self.model.version is not None and self.shadow.version == self.model.version:
                raise ValueError("shadow.version must differ from model.version")
            if self.canary is not None and self.shadow.version == self.canary.version:
                raise ValueError("shadow.version must differ from canary.version")
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The spec as it is stored in Kubernetes (camelCase, defaults filled, unset optionals left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Phase(StrEnum):
    Pending = "Pending"
    Queued = "Queued"
    Deploying = "Deploying"
    Ready = "Ready"
    Degraded = "Degraded"
    Failed = "Failed"


# SLOMet: set by the API's monitor (spec.alerts evaluated on live traffic), kept by the operator's status updates
ConditionType = Literal["Admitted", "ModelResolved", "Available", "Ready", "SLOMet"]
CONDITION_TYPES: tuple[str, ...] = ("Admitted", "ModelResolved", "Available", "Ready", "SLOMet")


class Condition(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(..., min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field("", max_length=32768)
    last_transition_time: dt.datetime = Field(..., alias="lastTransitionTime")
    observed_generation: int | None = Field(None, ge=0, alias="observedGeneration")


class ModelDeploymentStatus(BaseModel):
    """Written by the operator only. ``kopf`` holds the framework's own bookkeeping."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    phase: Phase = Phase.Pending
    url: str | None = None
    resolved_version: str | None = Field(None, alias="resolvedVersion")
    canary_version: str | None = Field(None, alias="canaryVersion")
    shadow_version: str | None = Field(None, alias="shadowVersion")
    replicas: int | None = Field(None, ge=0)
    ready_replicas: int | None = Field(None, ge=0, alias="readyReplicas")
    queue_position: int | None = Field(None, ge=1, alias="queuePosition")
    observed_generation: int | None = Field(None, ge=0, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: ObjectName
    namespace: NamespaceName = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelDeployment(BaseModel):
    """A whole ModelDeployment object, e.g. as read from a file for ``mlstack operator render``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["mlstack.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["ModelDeployment"] = KIND
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace
