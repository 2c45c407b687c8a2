"""The alert event model, the known event types, and Redis Stream id helpers.

Event types (``type``) and who emits them:

==========================  ==========================================  ===========================================
type                        producer                                    fields used
==========================  ==========================================  ===========================================
``training.finished``       training job manager, job succeeded        model, version, data.job_id, data.metrics
``training.failed``         training job manager, job failed           model, data.job_id, data.error
``training.cancelled``      training job manager, DELETE /training/ID  model, data.job_id
``model.accuracy``          training job manager, accuracy >= the      model, version, data.accuracy,
                            ``alert_accuracy_threshold`` setting        data.threshold
``model.stale``             ``watch_model`` schedule                   model, version, data.age_seconds,
                                                                        data.max_age_seconds, data.schedule_id
``schedule.fired``          scheduler, one per firing (exactly once)    data.schedule_id, data.kind,
                                                                        data.scheduled_run_time, data.job_id
``schedule.failed``         scheduler, a firing raised                  data.schedule_id, data.kind, data.error
``deployment.phase``        operator / local deployments, phase change  namespace, deployment, model, version,
                                                                        data.phase, data.previous, data.reason
``deployment.rolled``       local deployments / the API's watch of      namespace, deployment, model, version,
                            the operator's status, alias moved          data.from, data.to, data.alias
``deployment.drift``        the monitor: a version's inputs drifted    namespace, deployment, model, version,
                            (warning, once per episode) / recovered    data.state, data.features [{name, psi, ks,
                            (info)                                      rows}], data.threshold, data.window_seconds
``deployment.slo``          the monitor: spec.alerts breached          namespace, deployment, model, data.state,
                            (warning) / met again (info)                data.objective, data.value, data.threshold
``alert.manual``            ``POST /alerts`` (operators, demos)        anything
==========================  ==========================================  ===========================================

Producers may add new dotted lower-case types; consumers must ignore types they do not know.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

Severity = Literal["info", "warning", "error", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")

TRAINING_FINISHED = "training.finished"
TRAINING_FAILED = "training.failed"
MODEL_ACCURACY = "model.accuracy"
MODEL_STALE = "model.stale"
SCHEDULE_FIRED = "schedule.fired"
SCHEDULE_FAILED = "schedule.failed"
DEPLOYMENT_PHASE = "deployment.phase"
DEPLOYMENT_ROLLED = "deployment.rolled"
DEPLOYMENT_DRIFT = "deployment.drift"
DEPLOYMENT_SLO = "deployment.slo"
DEPLOYMENT_SHADOW = "deployment.shadow"
MANUAL = "alert.manual"
KNOWN_TYPES = (TRAINING_FINISHED, TRAINING_FAILED, MODEL_ACCURACY, MODEL_STALE, SCHEDULE_FIRED,
               SCHEDULE_FAILED, DEPLOYMENT_PHASE, DEPLOYMENT_ROLLED, DEPLOYMENT_DRIFT, DEPLOYMENT_SLO,
               DEPLOYMENT_SHADOW, MANUAL)

TYPE_PATTERN = r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$"
STREAM_ID_PATTERN = r"^\d{1,20}(-\d{1,20})?$"

# AlertEvent fields a producer passes as keywords; any other keyword goes into ``data``
TOP_LEVEL = ("model", "version", "namespace", "deployment")


class AlertFields(BaseModel):
    """What a producer says about an alert (``AlertEvent`` adds the stream id, a required type and ts)."""

    model_config = ConfigDict(coerce_numbers_to_str=True, extra="forbid")

    type: str = Field(MANUAL, pattern=TYPE_PATTERN, max_length=100, examples=["training.finished"])
    severity: Severity = "info"
    title: str = Field(..., min_length=1, max_length=500)
    message: str = Field("", max_length=10_000)
    model: str | None = Field(None, max_length=200)
    version: str | None = Field(None, max_length=100)
    namespace: str | None = Field(None, max_length=253)
    deployment: str | None = Field(None, max_length=253)
    data: dict[str, Any] = Field(default_factory=dict)


class AlertEvent(AlertFields):
    """One alert. ``id`` is the Redis Stream entry id (also the SSE ``id:``), set once stored."""

    id: str | None = Field(None, description="Redis Stream id, e.g. 1718000000000-0; the SSE Last-Event-ID")
    type: str = Field(..., pattern=TYPE_PATTERN, max_length=100, examples=["training.finished"])
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC), description="ISO 8601, UTC")

    @field_serializer("ts")
    def _iso_utc(self, ts: datetime) -> str:
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_event(type: str, severity: str, title: str, message: str = "", **fields: Any) -> AlertEvent:
    """Build (and validate) an event from ``AlertSink.emit`` arguments; unknown keywords land in ``data``."""
    data = dict(fields.pop("data", None) or {})
    top = {k: fields.pop(k) for k in TOP_LEVEL if k in fields}
    ts = fields.pop("ts", None)
    data.update(fields)
    kw: dict[str, Any] = {"type": type, "severity": severity, "title": title, "message": message or "",
                          "data": data, **top}
    if ts is not None:
        kw["ts"] = ts
    return AlertEvent(**kw)


def parse_id(stream_id: str) -> tuple[int, int]:
    """``"1718000000000-3"`` → ``(1718000000000, 3)``; a bare ``"5"`` means ``(5, 0)``."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"
