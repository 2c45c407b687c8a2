"""Lifespan wiring: ``svc.alerts`` becomes the Redis Streams sink; one ``AlertHub`` reader starts."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from mlstack.alerts.hub import AlertHub
from mlstack.alerts.settings import AlertSettings, get_alert_settings
from mlstack.alerts.sink import RedisStreamSink

HUB = "alerts_hub"
SETTINGS = "alerts_settings"


async def start(svc: Any, stack: AsyncExitStack, settings: AlertSettings | None = None) -> None:
    """Needs ``svc.redis`` (redis.asyncio, decode_responses=True) and ``svc.settings.redis_url``.

    Never fails because Redis is down: the sink buffers and the reader retries.
    """
    s = settings or get_alert_settings()
    svc.extras[SETTINGS] = s
    sink = RedisStreamSink(svc.redis, s)
    svc.alerts = sink
    stack.push_async_callback(sink.aclose)
    hub = AlertHub(svc.settings.redis_url, s, svc.redis)
    await hub.start()
    svc.extras[HUB] = hub
    stack.push_async_callback(hub.stop)
    # readiness contributors (see the note to the lead: /readyz may merge these)
    svc.extras.setdefault("ready_checks", {})["alerts"] = lambda: _ready(hub, sink)


def _ready(hub: AlertHub, sink: RedisStreamSink) -> str:
    if not hub.connected:
        return f"alerts reader not connected: {hub.last_error or 'starting'}"
    if sink.buffered:
        return f"{sink.buffered} alerts waiting for Redis"
    return "ok"
