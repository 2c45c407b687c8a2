"""Lifespan wiring: the Redis Streams sink, one ``AlertHub`` reader and the stream tickets, as one ``Alerting``."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from mlstack.alerts.hub import AlertHub
from mlstack.alerts.settings import AlertSettings
from mlstack.alerts.sink import RedisStreamSink
from mlstack.alerts.tickets import TicketBook


@dataclass
class Alerting:
    """This process's alerts: ``sink`` publishes, ``hub`` reads the stream once for every SSE client."""

    settings: AlertSettings
    sink: RedisStreamSink
    hub: AlertHub
    tickets: TicketBook

    def ready(self) -> str:
        """The readiness check (``/readyz``): "ok" or what is wrong."""
        if not self.hub.connected:
            return f"alerts reader not connected: {self.hub.last_error or 'starting'}"
        if self.sink.buffered:
            return f"{self.sink.buffered} alerts waiting for Redis"
        return "ok"


async def start(redis: Any, redis_url: str, stack: AsyncExitStack, settings: AlertSettings) -> Alerting:
    """``redis``: the API's redis.asyncio client (decode_responses=True); the hub opens its own on ``redis_url``.

    Never fails because Redis is down: the sink buffers and the reader retries.
    """
    s = settings
    sink = RedisStreamSink(redis, s)
    stack.push_async_callback(sink.aclose)
    hub = AlertHub(redis_url, s, redis)
    await hub.start()
    stack.push_async_callback(hub.stop)
    return Alerting(s, sink, hub, TicketBook(redis, s.alerts_ticket_seconds))
