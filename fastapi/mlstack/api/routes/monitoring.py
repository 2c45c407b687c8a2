"""Ground truth and live quality of deployments (``mlstack.monitoring``).

``POST /feedback``: labels joined to logged predictions, by request id (one, or ``items``) or by sending the rows
again through a deployment (``deployment`` + ``rows`` + ``labels``: works whatever was sampled). Needs the role
that may update the deployment (deployer). ``GET /deployments/{name}/quality``: online accuracy / RMSE per
version over sliding windows, latency percentiles and drift of the sampled traffic, SLO state, and with
``spec.shadow`` the shadow version's agreement with the live one (viewer).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlstack.alerts.events import AlertEvent
from mlstack.alerts.hub import deployment_alerts
from mlstack.api.deps import CallerDep, DeploymentsDep, MonitoringDep, ServicesDep, allow
from mlstack.api.params import DeploymentPath, NamespaceQuery
from mlstack.auth import Caller
from mlstack.errors import InvalidInput
from mlstack.inference import MAX_ROWS, Finite, InferenceRequest
from mlstack.monitoring.report import label_logged, quality_report
from mlstack_operator.contract import DeploymentRef

router = APIRouter(tags=["monitoring"])

Label = Annotated[str, Field(min_length=1, max_length=200)] | Finite
RequestId = Annotated[str, Field(min_length=1, max_length=128)]
MAX_ITEMS = 1000


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: RequestId
    label: Label | list[Label] = Field(..., description="the true label (a list: one per row of the request)")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"request_id": "3f9a1c2b4d5e-17", "label": 2},
        {"items": [{"request_id": "3f9a1c2b4d5e-17", "label": 2}, {"request_id": "3f9a1c2b4d5e-18", "label": 0}]},
        {"deployment": "models/iris", "rows": [[5.1, 3.5, 1.4, 0.2]], "labels": [0]}]})

    request_id: RequestId | None = None
    label: Label | list[Label] | None = None
    items: list[FeedbackItem] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    deployment: DeploymentRef | None = Field(None, description='"namespace/name": the rows are scored through it')
    rows: list[list[Finite]] | None = Field(None, min_length=1, max_length=MAX_ROWS)
    labels: list[Label] | None = Field(None, min_length=1, max_length=MAX_ROWS)

    @model_validator(mode="after")
    def _one_form(self) -> FeedbackRequest:
        forms = [self.request_id is not None, self.items is not None, self.deployment is not None]
        if sum(forms) != 1:
            raise ValueError("send one of: request_id + label, items, or deployment + rows + labels")
        if (self.request_id is None) != (self.label is None):
            raise ValueError("request_id and label go together")
        if self.deployment is not None:
            if self.rows is None or self.labels is None:
                raise ValueError("deployment needs rows and labels")
            if len(self.rows) != len(self.labels):
                raise ValueError(f"{len(self.rows)} rows but {len(self.labels)} labels")
        elif self.rows is not None or self.labels is not None:
            raise ValueError("rows and labels go with deployment")
        return self


class FeedbackResult(BaseModel):
    matched: int = Field(..., description="request ids (or rows) joined with a logged prediction")
    unmatched: int = Field(..., description="request ids never logged (not sampled), expired, or of a deployment "
                                            "the caller may not update")
    labelled: int = Field(..., description="(prediction, label) pairs counted")
    unmatched_ids: list[str] = Field(default_factory=list, description="the first 100 unmatched ids")
    deployments: dict[str, dict[str, int]] = Field(default_factory=dict,
                                                   description='"namespace/name" -> {version: pairs counted}')


@router.post("/feedback", response_model=FeedbackResult,
             responses={404: {"description": "a single request id that was never logged (or expired)"},
                        422: {"description": "bad body; labels that do not match the request's rows"}},
             summary="Ground truth for served predictions: by request id, or rows scored through a deployment")
async def feedback(body: FeedbackRequest, svc: ServicesDep,
                   caller: Annotated[Caller, allow("update", "modeldeployments")],
                   monitoring: MonitoringDep) -> FeedbackResult:
    """Who may label: a deployer (checked first, so a viewer learns nothing about which ids were logged), and
    then per deployment the labels are for."""
    quality = monitoring.quality
    if body.deployment is not None:
        ns, name = body.deployment.split("/", 1)
        await caller.require("update", "modeldeployments", ns, name)
        result = await svc.inference.infer(InferenceRequest(deployment=body.deployment, input_data=body.rows),
                                           caller.principal.namespace)
        pairs = list(zip(result.predictions, body.labels or [], strict=True))
        await quality.record(ns, name, result.model_version, pairs)
        return FeedbackResult(matched=len(pairs), unmatched=0, labelled=len(pairs),
                              deployments={body.deployment: {result.model_version: len(pairs)}})

    items = body.items or [FeedbackItem(request_id=body.request_id, label=body.label)]

    async def may_update(ns: str, name: str) -> None:
        await caller.require("update", "modeldeployments", ns, name)

    counts = await label_logged(quality, [(i.request_id, i.label) for i in items], may_update, body.items is None)
    return FeedbackResult(**asdict(counts))


class FeedbackMetrics(BaseModel):
    n: int = Field(..., description="labelled predictions")
    accuracy: float | None = Field(None, description="share of exact matches (None without labels)")
    rmse: float | None = Field(None, description="root mean squared error over numeric pairs")


class FeedbackWindow(BaseModel):
    seconds: int
    total: FeedbackMetrics
    versions: dict[str, FeedbackMetrics]


class PayloadCounts(BaseModel):
    records: int = Field(..., description="payload records drained into the stream")
    missed: int = Field(..., description="records a model server's ring overwrote before they were drained")
    dropped: int = Field(..., description="records the servers could not log (ring or collector full)")
    stream: str = Field(..., description="the Redis Stream holding the records")


class LatencyWindow(BaseModel):
    window_seconds: int
    samples: int
    p50_ms: float | None = None
    p99_ms: float | None = None


class ShadowVersionQuality(BaseModel):
    requests: int = Field(..., description="the shadow's logged copies")
    compared: int = Field(..., description="of which a live answer of the same request is in the window")
    rows: int
    live_versions: list[str]
    kind: str | None = Field(None, description="classification, regression or other")
    agreement: float | None = None
    mean_abs_diff: float | None = None


class ShadowQuality(BaseModel):
    window_seconds: int
    versions: dict[str, ShadowVersionQuality]
    ts: float = Field(..., description="unix seconds of the evaluation")


class QualityReport(BaseModel):
    namespace: str
    name: str
    monitoring: dict[str, Any] = Field(..., description="spec.monitoring with its defaults")
    alerts: dict[str, Any] | None = Field(None, description="spec.alerts (the SLO objectives)")
    feedback: list[FeedbackWindow] = Field(..., description="the deployment's window and the configured others")
    payloads: PayloadCounts
    latency: LatencyWindow = Field(..., description="the sampled traffic's latency over the deployment's window")
    drift: dict[str, dict[str, Any]] = Field(..., description="the last drift judgement per version")
    episodes: dict[str, Any] = Field(..., description="open alert episodes (drift|v, slo|objective, shadow|v)")
    shadow: ShadowQuality | None = None
    condition: dict[str, Any] | None = Field(None, description="the SLOMet condition")


@router.get("/deployments/{name}/quality", tags=["deployments"], response_model=QualityReport,
            responses={404: {"description": "no such ModelDeployment"}},
            summary="Live quality: accuracy/RMSE from feedback, latency, drift per feature, SLO state")
async def deployment_quality(name: DeploymentPath, svc: ServicesDep, caller: CallerDep, monitoring: MonitoringDep,
                             deployments: DeploymentsDep, namespace: NamespaceQuery = None) -> dict[str, Any]:
    namespace = namespace or caller.principal.namespace
    await caller.require("get", "modeldeployments", namespace, name)
    dep = await deployments.get(namespace, name)
    slo = dep.status.condition("SLOMet")
    return await quality_report(svc.redis, monitoring.settings, monitoring.quality, namespace, name, dep.spec,
                                slo.model_dump(by_alias=True, mode="json") if slo else None)


# -- the deployment page's time series -----------------------------------------------------------------------

MAX_POINTS = 5000
ALERTS_SCANNED = 5000  # newest alert stream entries searched for the deployment's alerts
MAX_ALERTS = 100


class TrackPoint(BaseModel):
    requests: int = Field(..., description="inference requests the track's servers answered in the interval")
    errors: int = Field(..., description="of which answered with a 5xx")
    rate: float | None = Field(None, description="requests per second")
    error_rate: float | None = None


class VersionPoint(BaseModel):
    sampled: int | None = Field(None, description="sampled (logged) requests of the version in the interval")
    rate: float | None = Field(None, description="requests per second, estimated from the sample rate")
    p50_ms: float | None = None
    p99_ms: float | None = None
    feedback: int | None = Field(None, description="labelled predictions over the deployment's window")
    accuracy: float | None = None
    rmse: float | None = None
    psi: dict[str, float] | None = Field(None, description="PSI per feature (and the prediction) over the "
                                                            "deployment's window, when drift was judged")
    drifted: list[str] | None = None


class ShadowPoint(BaseModel):
    agreement: float
    samples: int | None = None


class SeriesPoint(BaseModel):
    ts: float = Field(..., description="unix seconds")
    seconds: float | None = Field(None, description="the interval the point covers (since the previous point)")
    counted: bool = Field(False, description="requests/errors counted by the model servers (else: rate estimated "
                                             "from the sampled requests, errors unknown)")
    requests: int | None = None
    errors: int | None = None
    rate: float | None = None
    error_rate: float | None = None
    tracks: dict[str, TrackPoint] = Field(default_factory=dict)
    versions: dict[str, VersionPoint] = Field(default_factory=dict)
    shadow: dict[str, ShadowPoint] = Field(default_factory=dict, description="shadow agreement, by shadow version")


class DeploymentMonitoring(BaseModel):
    namespace: str
    name: str
    since: float = Field(..., description="unix seconds: points and alerts from then on")
    step_seconds: float = Field(..., description="least time between two points")
    points: list[SeriesPoint] = Field(..., description="oldest first")
    alerts: list[AlertEvent] = Field(..., description=f"the deployment's deployment.* alerts since ``since``, "
                                                      f"oldest first (the newest {MAX_ALERTS} among the newest "
                                                      f"{ALERTS_SCANNED} alerts)")


@router.get("/deployments/{name}/monitoring", tags=["deployments"], response_model=DeploymentMonitoring,
            responses={404: {"description": "no such ModelDeployment"},
                       422: {"description": "bad namespace, since or limit"}},
            summary="The deployment's monitoring time series (rate, latency, errors, accuracy, drift, shadow "
                    "agreement) and its recent alerts")
async def deployment_monitoring(
    name: DeploymentPath, svc: ServicesDep, caller: CallerDep,
    monitoring: MonitoringDep, deployments: DeploymentsDep, namespace: NamespaceQuery = None,
    since: Annotated[float | None, Query(ge=0, description="unix seconds (default: one hour ago)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_POINTS, description="most points (the newest)")] = 2000,
) -> DeploymentMonitoring:
    series = monitoring.series
    now = time.time()
    if since is None:
        since = now - 3600
    elif since > now + 60:
        raise InvalidInput(f"since ({since:.0f}) is in the future: pass unix seconds, e.g. {now - 3600:.0f}")
    namespace = namespace or caller.principal.namespace
    await caller.require("get", "modeldeployments", namespace, name)
    await deployments.get(namespace, name)  # 404 for an unknown deployment
    points = await series.read(f"{namespace}/{name}", since, limit)
    return DeploymentMonitoring(namespace=namespace, name=name, since=since, step_seconds=series.ss.step_seconds,
                                points=points,
                                alerts=await deployment_alerts(svc.redis, svc.config.alerts.alerts_stream, namespace,
                                                               name, since, ALERTS_SCANNED, MAX_ALERTS))
