"""Alerts: SSE fan-out with replay (``GET /webhook``, alias ``/alerts/stream``), recent alerts, publish."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field

from mlstack.alerts.events import STREAM_ID_PATTERN, AlertEvent, AlertFields
from mlstack.alerts.sse import FanoutEventSourceResponse
from mlstack.api.deps import AlertingDep, allow
from mlstack.auth import CLUSTER, Caller
from mlstack.errors import Forbidden

router = APIRouter(tags=["alerts"])

_ID_DOC = "Redis Stream id of the last alert seen (e.g. 1718000000000-0); '0' replays the whole stream"


SSE_DOC = (
    "Authenticate with `Authorization: Bearer <token>` or, from a browser's EventSource (which cannot send "
    "headers), with `?ticket=` from `POST /alerts/ticket` (single-use, short-lived). "
    "Server-sent events. Every alert reaches every connected client as `event: alert`, "
    "`id: <stream id>`, `data: <AlertEvent JSON>`. Reconnect with the `Last-Event-ID` header "
    "(or `?last_event_id=`; the header wins) to replay what was missed, in order. Heartbeats are SSE "
    "comments. A client that falls too far behind gets `event: reconnect` and the stream closes; "
    "reconnecting with Last-Event-ID replays the rest."
)


async def _scope(caller: Caller) -> frozenset[str] | None:
    """Who may read every namespace's deployment alerts (a platform role, any local token) reads all; a member
    of an organisation reads those of their own namespace (plus the alerts that concern no namespace)."""
    try:
        await caller.require("list", "alerts", CLUSTER)
        return None
    except Forbidden:
        return frozenset({caller.principal.namespace})


@router.get("/webhook", summary="Alert stream (SSE)", description=SSE_DOC,
            responses={200: {"content": {"text/event-stream": {}}, "description": "an endless SSE stream"}})
@router.get("/alerts/stream", summary="Alert stream (SSE), alias of /webhook", description=SSE_DOC,
            responses={200: {"content": {"text/event-stream": {}}, "description": "an endless SSE stream"}})
async def alert_stream(
    caller: Annotated[Caller, allow("get", "alerts", stream=True)],
    alerting: AlertingDep,
    last_event_id: Annotated[str | None, Query(pattern=STREAM_ID_PATTERN, description=_ID_DOC)] = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", pattern=STREAM_ID_PATTERN, description=_ID_DOC)
    ] = None,
) -> FanoutEventSourceResponse:
    hub, s = alerting.hub, alerting.settings
    # the header is what a browser sends on its automatic reconnects, so it is newer than the URL's
    since = last_event_id_header if last_event_id_header is not None else last_event_id
    response: FanoutEventSourceResponse | None = None

    def expire() -> None:  # the hub dropped this client: close it if it cannot drain in time
        if response is not None:
            response.expire()

    scope = await _scope(caller)
    response = FanoutEventSourceResponse(hub.events(since, on_overflow=expire, scope=scope),
                                         ping=s.alerts_heartbeat_seconds,
                                         send_timeout=s.alerts_send_timeout)
    return response


class Ticket(BaseModel):
    ticket: str = Field(description="pass as ?ticket= to GET /webhook or /alerts/stream, once")
    expires_in: int = Field(description="seconds it stays valid if unused")


@router.post("/alerts/ticket", response_model=Ticket, status_code=201,
             summary="A single-use, short-lived ticket to open the alert stream (for EventSource)",
             description="Exchanges the bearer token (header only) for a ticket that opens one SSE stream as the "
                         "same caller within `MLSTACK_ALERTS_TICKET_SECONDS`. URLs end up in proxy and browser "
                         "logs; a used or expired ticket is worth nothing there, the token would be.")
async def stream_ticket(caller: Annotated[Caller, allow("get", "alerts")], alerting: AlertingDep) -> Ticket:
    book = alerting.tickets
    return Ticket(ticket=await book.issue(caller.principal), expires_in=book.ttl)


@router.get("/alerts", response_model=list[AlertEvent], summary="Recent alerts, newest last")
async def recent_alerts(caller: Annotated[Caller, allow("list", "alerts")], alerting: AlertingDep,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    return await alerting.hub.recent(limit, await _scope(caller))


class AlertIn(AlertFields):
    """An alert to publish (``type`` defaults to ``alert.manual``)."""


class AlertAccepted(BaseModel):
    id: str | None = Field(description="stream id; null when Redis is down and the alert waits in memory")
    buffered: bool


@router.post("/alerts", dependencies=[allow("create", "alerts")],
             status_code=201, response_model=AlertAccepted, summary="Publish an alert")
async def publish_alert(body: AlertIn, alerting: AlertingDep) -> AlertAccepted:
    entry_id = await alerting.sink.publish(AlertEvent(**body.model_dump()))
    return AlertAccepted(id=entry_id, buffered=entry_id is None)


class AlertsStatus(BaseModel):
    reader_connected: bool = Field(..., description="this process's one stream reader is connected to Redis")
    cursor: str | None = Field(None, description="the last stream entry id it read")
    subscribers: int = Field(..., description="SSE clients subscribed")
    streams: int = Field(..., description="open SSE responses")
    ring: int = Field(..., description="recent alerts kept in memory (replay while Redis is down)")
    delivered: int
    overflows: int = Field(..., description="clients dropped for falling behind (they reconnect and replay)")
    last_error: str | None = None
    buffered: int = Field(..., description="alerts waiting in memory for Redis")
    sink_error: str | None = None


@router.get("/alerts/status", dependencies=[allow("get", "alerts")], response_model=AlertsStatus,
            summary="Alert reader and buffer state of this process")
async def alerts_status(alerting: AlertingDep) -> dict[str, Any]:
    sink = alerting.sink
    return {**alerting.hub.status(), "buffered": sink.buffered, "sink_error": sink.last_error}
