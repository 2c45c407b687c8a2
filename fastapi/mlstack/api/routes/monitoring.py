"""Ground truth and live quality of deployments (``mlstack.monitoring``).

``POST /feedback``: labels joined to logged predictions, by request id (one, or ``items``) or by sending the rows
again through a deployment (``deployment`` + ``rows`` + ``labels``: works whatever was sampled). Needs the role
that may update the deployment (deployer). ``GET /deployments/{name}/quality``: online accuracy / RMSE per
version over sliding windows, latency percentiles and drift of the sampled traffic, SLO state, and with
``spec.shadow`` the shadow version's agreement with the live one (viewer).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlstack.alerts.events import AlertEvent
from mlstack.alerts.hub import make_item
from mlstack.api.deps import CallerDep, DeploymentsDep, MonitoringDep, ServicesDep, allow
from mlstack.api.params import DeploymentPath, NamespaceQuery
from mlstack.api.services import Services
from mlstack.auth import Caller
from mlstack.errors import Forbidden, InvalidInput, NotFound
from mlstack.inference import MAX_ROWS, Finite, InferenceRequest
from mlstack.monitoring.monitor import payload_stream, read_records, windows_of
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


def _pairs(outputs: Any, label: Any) -> list[tuple[Any, Any]] | None:
    outs = outputs if isinstance(outputs, list) else [outputs]
    labels = label if isinstance(label, list) else [label]
    if len(labels) != len(outs):
        return None
    return list(zip(outs, labels, strict=True))


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
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if body.deployment is not None:
        ns, name = body.deployment.split("/", 1)
        await caller.require("update", "modeldeployments", ns, name)
        result = await svc.inference.infer(InferenceRequest(deployment=body.deployment, input_data=body.rows),
                                           caller.principal.namespace)
        pairs = list(zip(result.predictions, body.labels or [], strict=True))
        await quality.record(ns, name, result.model_version, pairs)
        counts[body.deployment][result.model_version] += len(pairs)
        return FeedbackResult(matched=len(pairs), unmatched=0, labelled=len(pairs), deployments=counts)

    items = body.items or [FeedbackItem(request_id=body.request_id, label=body.label)]
    logged = await quality.lookup([i.request_id for i in items])
    single = body.items is None
    groups: dict[tuple[str, str, str], list[tuple[Any, Any]]] = defaultdict(list)
    unmatched: list[str] = []
    allowed: dict[str, bool] = {}
    for item, rec in zip(items, logged, strict=True):
        if rec is None:
            if single:
                raise NotFound(f"request {item.request_id} was not logged (only sampled requests are: see "
                               "spec.monitoring.sampleRate; or it expired), send the rows with the deployment instead")
            unmatched.append(item.request_id)
            continue
        key = f"{rec['namespace']}/{rec['deployment']}"
        if key not in allowed:
            try:
                await caller.require("update", "modeldeployments", rec["namespace"], rec["deployment"])
                allowed[key] = True
            except Forbidden:
                if single:
                    raise
                allowed[key] = False
        if not allowed[key]:
            unmatched.append(item.request_id)
            continue
        pairs = _pairs(rec.get("outputs"), item.label)
        if pairs is None:
            msg = f"request {item.request_id} had {len(rec.get('outputs') or [])} rows: send one label per row"
            if single:
                raise InvalidInput(msg)
            unmatched.append(item.request_id)
            continue
        groups[(rec["namespace"], rec["deployment"], str(rec.get("version")))].extend(pairs)
    labelled = 0
    for (ns, name, version), pairs in groups.items():
        await quality.record(ns, name, version, pairs)
        counts[f"{ns}/{name}"][version] += len(pairs)
        labelled += len(pairs)
    return FeedbackResult(matched=len(items) - len(unmatched), unmatched=len(unmatched), labelled=labelled,
                          unmatched_ids=unmatched[:100], deployments=counts)




@router.get("/deployments/{name}/quality", tags=["deployments"],
            responses={404: {"description": "no such ModelDeployment"}},
            summary="Live quality: accuracy/RMSE from feedback, latency, drift per feature, SLO state")
async def deployment_quality(name: DeploymentPath, svc: ServicesDep,
                             caller: CallerDep, monitoring: MonitoringDep, deployments: DeploymentsDep,
                             namespace: NamespaceQuery = None) -> dict[str, Any]:
    quality, ms = monitoring.quality, monitoring.settings
    namespace = namespace or caller.principal.namespace
    await caller.require("get", "modeldeployments", namespace, name)
    dep = await deployments.get(namespace, name)
    key = f"{namespace}/{name}"
    mon = dep.spec.effective_monitoring
    seconds = sorted({mon.window_seconds, *ms.quality_windows})
    now = time.time()
    out: dict[str, Any] = {"namespace": namespace, "name": name, "monitoring": mon.model_dump(by_alias=True),
                           "alerts": dep.spec.alerts.model_dump(by_alias=True) if dep.spec.alerts else None,
                           "feedback": [await quality.window(namespace, name, s, now) for s in seconds]}
    redis = svc.redis
    stats = await redis.hgetall(f"{ms.key_prefix}:stats:{key}")
    out["payloads"] = {"records": int(stats.get("records", 0)), "missed": int(stats.get("missed", 0)),
                       "dropped": sum(int(v) for k, v in stats.items() if k.startswith("dropped|")),
                       "stream": payload_stream(ms, key)}
    # from the payload stream itself: whoever drains it (this API's monitor, or the cluster's `mlstack monitor`)
    latency: dict[str, Any] = {"window_seconds": mon.window_seconds, "samples": 0}
    records = await read_records(redis, ms, key, mon.window_seconds, now)
    lat = [x for w in windows_of(records).values() for x in w.latencies]
    if lat:
        p50, p99 = np.percentile(lat, [50, 99])
        latency.update(samples=len(lat), p50_ms=round(float(p50), 3), p99_ms=round(float(p99), 3))
    out["latency"] = latency
    state = await redis.hgetall(f"{ms.key_prefix}:state:{key}")
    out["drift"] = {f.split("|", 1)[1]: json.loads(v) for f, v in state.items() if f.startswith("drift:last|")}
    out["episodes"] = {f: json.loads(v) for f, v in state.items() if f.startswith(("drift|", "slo|"))}
    # spec.shadow: the shadow version's answers against the live ones (agreement / mean absolute difference)
    out["shadow"] = json.loads(state["shadow:last"]) if "shadow:last" in state else None
    out["condition"] = dep.status.condition("SLOMet").model_dump(by_alias=True, mode="json") \
        if dep.status.condition("SLOMet") else None
    return out


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


async def _deployment_alerts(svc: Services, namespace: str, name: str, since: float) -> list[dict[str, Any]]:
    """The deployment's ``deployment.*`` alerts from the alert stream (newest ``ALERTS_SCANNED`` entries)."""
    s = svc.config.alerts
    entries = await svc.redis.xrevrange(s.alerts_stream, max="+", min=str(int(since * 1000)), count=ALERTS_SCANNED)
    out = []
    for entry_id, fields in entries:
        try:
            a = json.loads(make_item(entry_id, fields).json)
        except ValueError:
            continue
        if (str(a.get("type", "")).startswith("deployment.") and a.get("namespace") == namespace
                and a.get("deployment") == name):
            out.append(a)
            if len(out) >= MAX_ALERTS:
                break
    return out[::-1]


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
                                points=points, alerts=await _deployment_alerts(svc, namespace, name, since))
