"""``RedisStreamSink``: producers append typed alerts to one capped Redis Stream.

While Redis is unreachable an accepted alert is never dropped silently: it waits in a bounded
in-memory buffer (in order) and a background task appends it once Redis is back. When that
buffer is full ``emit`` raises ``AlertsUnavailable`` (a 503), so the producer knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from redis.exceptions import RedisError

from mlstack.aio import cancel_all
from mlstack.alerts.events import AlertEvent, make_event
from mlstack.alerts.settings import AlertSettings
from mlstack.errors import Unavailable

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class AlertsUnavailable(Unavailable):
    """Redis is unreachable and the in-memory alert buffer is full."""


def to_fields(event: AlertEvent) -> dict[str, str]:
    """Stream entry fields: the event JSON without ``id`` (the entry id is the id) plus ``type`` for redis-cli."""
    return {"type": event.type, "event": event.model_dump_json(exclude={"id"})}


class RedisStreamSink:
    """The ``AlertSink`` of the API: ``XADD <stream> MAXLEN ~ <cap> * type .. event <json>``."""

    def __init__(self, redis: Any, settings: AlertSettings):
        self._redis = redis
        self._s = settings
        self._buffer: deque[dict[str, str]] = deque()
        self._flusher: asyncio.Task | None = None
        self._closed = False
        self.last_error: str | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def emit(self, type: str, severity: str, title: str, message: str = "", **fields: Any) -> str | None:
        """Append one alert; returns its stream id, or None when it was buffered (Redis down).

        Raises ``pydantic.ValidationError`` for a malformed event (a producer bug) and
        ``AlertsUnavailable`` when Redis is down and the buffer is full.
        """
        return await self.publish(make_event(type, severity, title, message, **fields))

    async def publish(self, event: AlertEvent) -> str | None:
        entry = to_fields(event)
        if self._buffer:  # keep order: nothing overtakes what is already waiting
            return self._enqueue(entry, None)
        try:
            return await self._xadd(entry)
        except REDIS_ERRORS as e:
            return self._enqueue(entry, e)

    async def _xadd(self, entry: dict[str, str]) -> str:
        return await asyncio.wait_for(
            self._redis.xadd(self._s.alerts_stream, entry, maxlen=self._s.alerts_maxlen, approximate=True),
            timeout=self._s.alerts_redis_timeout,
        )

    def _enqueue(self, entry: dict[str, str], error: BaseException | None) -> None:
        if error is not None:
            self.last_error = f"{type(error).__name__}: {error}"[:300]
        if len(self._buffer) >= self._s.alerts_buffer_max:
            raise AlertsUnavailable(
                f"alert not stored: Redis is unreachable ({self.last_error}) and "
                f"{len(self._buffer)} alerts are already waiting (MLSTACK_ALERTS_BUFFER_MAX)"
            )
        self._buffer.append(entry)
        log.warning("Redis unreachable (%s); alert buffered (%d waiting)", self.last_error, len(self._buffer))
        if not self._closed and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="alerts-flush")
        return None

    async def _flush(self) -> None:
        delay = 0.05
        while self._buffer:
            try:
                await self._xadd(self._buffer[0])
            except REDIS_ERRORS as e:
                self.last_error = f"{type(e).__name__}: {e}"[:300]
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._buffer.popleft()
            delay = 0.05
        log.info("alert buffer flushed to Redis")

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for buffered alerts to reach Redis; True when none are left."""
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._flusher), timeout)
        return not self._buffer

    async def aclose(self) -> None:
        """Give buffered alerts a last chance (shutdown), then stop the flusher."""
        self._closed = True
        if self._buffer:
            await self.drain(self._s.alerts_redis_timeout)
            if self._buffer:
                log.error("%d buffered alerts could not be stored before shutdown", len(self._buffer))
        await cancel_all([self._flusher])
