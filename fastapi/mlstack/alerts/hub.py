"""``AlertHub``: ONE Redis reader per process fanning every alert out to every SSE client.

- The reader task does ``XREAD BLOCK`` on its own single connection, starting after the last
  entry present at startup, and keeps its cursor across Redis outages (it retries with
  backoff), so connected clients miss nothing when Redis comes back.
- Each alert is encoded into its SSE frame once and put on every subscriber's bounded queue.
  A subscriber whose queue is full (slow client) is dropped and told ``event: reconnect``; it
  reconnects with ``Last-Event-ID`` and replays.
- Replay: the newest ``alerts_ring_size`` alerts are kept in memory, so a reconnect storm does
  not hit Redis; older ids are replayed with ``XRANGE``. The ring snapshot and the subscription
  happen without an ``await`` in between, and later duplicates are skipped by id: no gap, no
  duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from mlstack.aio import cancel_all
from mlstack.alerts.events import format_id, parse_id
from mlstack.alerts.settings import AlertSettings
from mlstack.alerts.sink import REDIS_ERRORS

log = logging.getLogger(__name__)

SEP = "\r\n"


@dataclass(frozen=True, slots=True)
class Item:
    key: tuple[int, int]
    id: str
    json: str  # AlertEvent JSON including id
    frame: bytes  # the SSE frame
    namespace: str | None = None  # of a deployment alert: who may see it (organisations)

    def visible(self, scope: frozenset[str] | None) -> bool:
        """``scope``: the namespaces a caller may see alerts of (None: all); alerts without one are for all."""
        return scope is None or self.namespace is None or self.namespace in scope


def make_item(entry_id: str, fields: dict[str, str]) -> Item:
    raw = fields.get("event") or "{}"
    body = raw.strip()
    if not body.startswith("{"):
        body = json.dumps({"type": "alert.invalid", "severity": "warning", "title": "unreadable alert",
                           "data": {"raw": raw[:1000]}})
    payload = '{"id":"' + entry_id + '"' + ("," + body[1:] if body != "{}" else "}")
    frame = f"id: {entry_id}{SEP}event: alert{SEP}data: {payload}{SEP}{SEP}".encode()
    try:  # once per alert, not per client
        namespace = json.loads(body).get("namespace")
    except (ValueError, AttributeError):
        namespace = None
    return Item(parse_id(entry_id), entry_id, payload, frame, namespace if isinstance(namespace, str) else None)


async def deployment_alerts(redis: Any, stream: str, namespace: str, name: str, since: float, scanned: int,
                            limit: int) -> list[dict[str, Any]]:
    """The ``deployment.*`` alerts of deployment ``namespace/name`` since ``since`` (unix seconds), oldest first:
    the newest ``limit`` found among the stream's newest ``scanned`` entries."""
    entries = await redis.xrevrange(stream, max="+", min=str(int(since * 1000)), count=scanned)
    out = []
    for entry_id, fields in entries:
        try:
            a = json.loads(make_item(entry_id, fields).json)
        except ValueError:
            continue
        if (str(a.get("type", "")).startswith("deployment.") and a.get("namespace") == namespace
                and a.get("deployment") == name):
            out.append(a)
            if len(out) >= limit:
                break
    return out[::-1]


def control_frame(event: str, data: dict[str, Any], retry_ms: int | None = None) -> bytes:
    """A non-alert SSE event; ``data`` is never empty (EventSource drops events without data)."""
    out = f"event: {event}{SEP}data: {json.dumps(data, separators=(',', ':'))}{SEP}"
    if retry_ms is not None:
        out += f"retry: {retry_ms}{SEP}"
    return (out + SEP).encode()


_OVERFLOW = object()
_CLOSED = object()


class Subscriber:
    """One client's bounded queue: a deque plus one waiter future (lighter than ``asyncio.Queue``,
    which matters when one alert is put on 1,000 of them)."""

    __slots__ = ("items", "maxsize", "on_overflow", "overflowed", "waiter")

    def __init__(self, maxsize: int, on_overflow: Callable[[], None] | None = None):
        self.items: deque = deque()
        self.maxsize = maxsize
        self.waiter: asyncio.Future | None = None
        self.overflowed = False
        self.on_overflow = on_overflow

    def put(self, item: object) -> bool:
        """Queue ``item``; False when the queue is full."""
        if len(self.items) >= self.maxsize:
            return False
        self.items.append(item)
        self._wake()
        return True

    def replace_all(self, sentinel: object) -> None:
        """Drop what the client has not taken yet; the next ``get`` returns ``sentinel``."""
        self.items.clear()
        self.items.append(sentinel)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> object:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.popleft()


class AlertHub:
    SCOPED_SCAN = 10

    def __init__(self, redis_url: str, settings: AlertSettings, query_redis: Any):
        """``query_redis``: the shared client used for replay (XRANGE) and ``GET /alerts``."""
        self._url = redis_url
        self._s = settings
        self._query = query_redis
        self._reader: Any = None
        self._task: asyncio.Task | None = None
        self._subs: set[Subscriber] = set()
        self._ring: deque[Item] = deque()
        self._covered_from: tuple[int, int] | None = None  # the ring holds every entry after this id
        self.cursor: str | None = None  # last entry id read
        self.connected = False
        self.last_error: str | None = None
        self.delivered = 0
        self.overflows = 0
        self.streams = 0  # open SSE responses (a dropped client stays open until it drains or times out)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._reader = aioredis.Redis.from_url(
            self._url, decode_responses=True, single_connection_client=True,
            client_name="mlstack-alerts-reader", socket_connect_timeout=self._s.alerts_redis_timeout,
            socket_timeout=self._s.alerts_block_ms / 1000 + self._s.alerts_redis_timeout + 1,
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alerts-reader")

    async def stop(self) -> None:
        await cancel_all([self._task])
        for sub in list(self._subs):
            self._close(sub, _CLOSED)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader.aclose()

    def status(self) -> dict[str, Any]:
        return {"reader_connected": self.connected, "cursor": self.cursor, "subscribers": len(self._subs),
                "streams": self.streams, "ring": len(self._ring), "delivered": self.delivered,
                "overflows": self.overflows, "last_error": self.last_error}

    # -- the one reader ----------------------------------------------------------------------
    async def _run(self) -> None:
        delay = 0.05
        stream = self._s.alerts_stream
        while True:
            try:
                if self.cursor is None:
                    last = await self._reader.xrevrange(stream, "+", "-", count=1)
                    self.cursor = last[0][0] if last else "0-0"
                    self._covered_from = parse_id(self.cursor)
                resp = await self._reader.xread({stream: self.cursor}, count=self._s.alerts_read_count,
                                                block=self._s.alerts_block_ms)
                if not self.connected:
                    log.info("alerts reader connected (cursor %s)", self.cursor)
                self.connected, self.last_error, delay = True, None, 0.05
                entries = resp.get(stream, []) if isinstance(resp, dict) else (resp[0][1] if resp else [])
                for entry_id, fields in entries:
                    self._dispatch(make_item(entry_id, fields))
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as e:
                if self.connected or self.last_error is None:
                    log.warning("alerts reader lost Redis (%s); retrying", e)
                self.connected, self.last_error = False, f"{type(e).__name__}: {e}"[:300]
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception:  # a bug must not kill the one reader
                log.exception("alerts reader failed; retrying")
                await asyncio.sleep(1.0)

    def _dispatch(self, item: Item) -> None:
        self.cursor = item.id
        if self._s.alerts_ring_size:
            if len(self._ring) >= self._s.alerts_ring_size:
                self._covered_from = self._ring.popleft().key
            self._ring.append(item)
        else:
            self._covered_from = item.key
        for sub in list(self._subs):
            if not sub.put(item):
                self.overflows += 1
                self._close(sub, _OVERFLOW)
        self.delivered += 1

    def _close(self, sub: Subscriber, sentinel: object) -> None:
        """Unsubscribe ``sub``: drop what it has not taken yet, wake it with ``sentinel``."""
        self._subs.discard(sub)
        sub.overflowed = sentinel is _OVERFLOW
        sub.replace_all(sentinel)
        if sub.overflowed and sub.on_overflow is not None:
            sub.on_overflow()

    # -- replay and the per-client stream ---------------------------------------------------
    def _from_ring(self, after: tuple[int, int]) -> list[Item] | None:
        """Items after ``after`` if the ring covers that id, else None."""
        if self._covered_from is None or after < self._covered_from:
            return None
        out: list[Item] = []
        for item in reversed(self._ring):
            if item.key <= after:
                break
            out.append(item)
        out.reverse()
        return out

    async def _from_redis(self, after: tuple[int, int]) -> list[Item]:
        entries = await asyncio.wait_for(
            self._query.xrange(self._s.alerts_stream, f"({format_id(after)}", "+", count=self._s.alerts_replay_max),
            timeout=self._s.alerts_redis_timeout * 3,
        )
        return [make_item(i, f) for i, f in entries]

    async def recent(self, limit: int, scope: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """Newest ``limit`` alerts ``scope`` may see, oldest first (Redis; the in-memory ring while Redis is down).

        A scoped reader's alerts are found among the newest ``SCOPED_SCAN`` x ``limit`` entries."""
        count = limit if scope is None else limit * self.SCOPED_SCAN
        try:
            entries = await asyncio.wait_for(
                self._query.xrevrange(self._s.alerts_stream, "+", "-", count=count),
                timeout=self._s.alerts_redis_timeout,
            )
            items = [make_item(i, f) for i, f in reversed(entries)]
        except REDIS_ERRORS:
            items = list(self._ring)[-count:]
        return [json.loads(i.json) for i in items if i.visible(scope)][-limit:]

    async def events(self, last_event_id: str | None, on_overflow: Callable[[], None] | None = None,
                     scope: frozenset[str] | None = None) -> AsyncIterator[bytes]:
        """SSE byte frames for one client: the replay after ``last_event_id``, then live alerts.

        Frames already queued are sent together (one write) when the client fell behind a little.
        ``on_overflow`` is called when the hub drops this client for being too slow. ``scope``: only
        alerts of these namespaces (and those of none), for a member of an organisation.
        """
        sub = Subscriber(self._s.alerts_client_queue, on_overflow)
        self._subs.add(sub)
        self.streams += 1
        last: tuple[int, int] | None = None
        try:
            yield f"retry: {self._s.alerts_retry_ms}{SEP}{SEP}".encode()
            if last_event_id is not None:
                last = parse_id(last_event_id)
                replay = self._from_ring(last)  # same tick as the subscription: no gap
                if replay is None:
                    try:
                        replay = await self._from_redis(last)
                    except REDIS_ERRORS as e:
                        # cannot replay now; the browser retries with the same Last-Event-ID
                        yield control_frame("reconnect", {"reason": "replay unavailable", "error": str(e)[:200],
                                                          "last_event_id": last_event_id},
                                            retry_ms=max(self._s.alerts_retry_ms, 1000))
                        return
                for item in replay:
                    if item.visible(scope):
                        yield item.frame
                    last = item.key
            items = sub.items
            while True:
                item = await sub.get()
                batch: list[bytes] = []
                while True:
                    if item is _OVERFLOW:
                        batch.append(control_frame(
                            "reconnect", {"reason": "client too slow; reconnect with Last-Event-ID",
                                          "last_event_id": format_id(last) if last else None},
                            retry_ms=self._s.alerts_retry_ms))
                        yield b"".join(batch)
                        return
                    if item is _CLOSED:
                        if batch:
                            yield b"".join(batch)
                        return
                    if last is None or item.key > last:  # else: already sent by the replay
                        last = item.key
                        if item.visible(scope):
                            batch.append(item.frame)
                    if not items or len(batch) >= 64:
                        break
                    item = items.popleft()
                if batch:
                    yield batch[0] if len(batch) == 1 else b"".join(batch)
        finally:
            self._subs.discard(sub)
            self.streams -= 1

