"""A lean keep-alive HTTP/1.1 client for ``POST`` to a local model server: the API's ``/inference`` hot path.

aiohttp's client costs ~90 µs of CPU per call on a 2-core box (more than the model server's whole answer); this
one parses answers with httptools (C) and pipelines: calls to one server go out on as few connections as can
carry them (up to ``MAX_PIPELINE`` waiting answers each, at most ``MAX_OPEN`` connections; after a burst, those
over ``MAX_IDLE`` close as they go idle), and the requests
written in one step of the event loop leave in one write. A write is a syscall and a wake-up of the server, as
costly as the rest of a call; the server (``mlstack serve``, or any HTTP/1.1 server: pipelining is part of HTTP/1.1)
reads them together and answers them in order. It speaks only what a model server answers (a status, headers, a
``Content-Length`` or chunked body) and only to loopback servers (``local()``): anything else stays with aiohttp.

Errors are ``OSError``s (a refused or dropped connection) or ``TimeoutError``. A call that times out closes its
connection (its state is unknown); the other calls on it fail as a dropped connection does. A call that is
cancelled (its client left) leaves its connection open: its answer is read and dropped when it comes. When a
connection ends before any byte of a call's answer came and the connection had already answered a call (a
kept-alive connection the server closed while idle, as mlstack serve does after 5 s, can take the next request
before its close is seen), the call goes again, once, on another connection (as HTTP clients do with an idle
connection; a model server's answer to the same input is the same).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

LOOPBACK = ("http://127.0.0.1:", "http://localhost:", "http://[::1]:")
MAX_PIPELINE = 4  # answers waited for on one connection before another is opened (mlstack serve reads 16)
MAX_OPEN = 256  # connections per server at once: beyond it, calls queue on the least busy one
MAX_IDLE = 64  # a connection whose last answer came while more than this many are open to its server closes


class Answer(NamedTuple):
    status: int
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes


class Unanswered(ConnectionResetError):
    """The connection ended before any byte of this call's answer came."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry  # the connection had answered before: sending the call again is safe and expected


def local(url: str) -> bool:
    """Is ``url`` a plain-HTTP loopback server (the ones this client serves)?"""
    return url.startswith(LOOPBACK)


class _Connection(asyncio.Protocol):
    """One connection: calls written in order, their answers matched in order (``waiters``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: list[_Connection]) -> None:
        self.loop = loop
        self.pool = pool  # the open connections to its server, which it leaves when it closes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        # (its answer, retry if unanswered, its deadline in loop time)
        self.waiters: deque[tuple[asyncio.Future[Answer], bool, float]] = deque()
        # one timer per connection, at the earliest deadline (not one per call: in uvloop a timer's creation and
        # cancellation cost ~2 µs, a fortieth of the API's CPU per /inference); it is not cancelled when calls end
        # in time, but finds nothing to expire when it fires and is set again for the next deadline
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf
        self.pending: list[bytes] = []  # requests not written yet (this loop step's, or before connecting)
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.closed = False
        self.answered = 0  # answers read on this connection
        self.receiving = False  # a byte of the first waiter's answer came

    # -- calls ------------------------------------------------------------------------------------

    def send(self, request: bytes, deadline: float) -> asyncio.Future[Answer]:
        """The call's answer; ``TimeoutError`` once the loop's time passes ``deadline``."""
        waiter = self.loop.create_future()
        self.waiters.append((waiter, self.answered > 0, deadline))
        if deadline < self.timer_at:
            self._set_timer(deadline)
        if not self.pending and self.transport is not None:
            self.loop.call_soon(self._flush)
        self.pending.append(request)
        return waiter

    def _set_timer(self, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.timer_at = self.loop.call_at(at, self._expire, at), at

    def _expire(self, at: float) -> None:
        """The earliest deadline came: the calls due by then raise ``TimeoutError`` and the connection, whose state
        is unknown, is closed (the others fail as on a dropped connection); if none is due, wait for the next."""
        self.timer, self.timer_at = None, math.inf
        due = [waiter for waiter, _, deadline in self.waiters if deadline <= at and not waiter.done()]
        for waiter in due:
            waiter.set_exception(TimeoutError())
        if due:
            self.close()
        else:  # those due by then were cancelled, or answered
            later = [deadline for _, _, deadline in self.waiters if deadline > at]
            if later:
                self._set_timer(min(later))

    def _flush(self) -> None:
        pending, self.pending = self.pending, []
        if pending and not self.closed and self.transport is not None:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.closed:
            transport.close()
        else:
            self._flush()  # what was sent while connecting

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionError(f"not an HTTP answer: {e}"))

    def on_message_begin(self) -> None:
        self.receiving = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        answer = Answer(self.parser.get_status_code(), self.headers, b"".join(self.body))
        self.headers, self.body = {}, []
        self.answered += 1
        self.receiving = False
        if not self.waiters:
            self._fail(ConnectionError("an answer to no request"))
            return
        waiter = self.waiters.popleft()[0]
        if not self.parser.should_keep_alive() or (not self.waiters and len(self.pool) > MAX_IDLE):
            self.close()  # the server ends it, or a burst is over: not every connection it opened is kept
        if not waiter.done():  # else cancelled: its answer is dropped
            waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the model server closed the connection"))

    # -- ending -----------------------------------------------------------------------------------

    def connect_failed(self, exc: BaseException) -> None:
        """The connection could not be made: every call on it gets that error."""
        self.close()
        while self.waiters:
            waiter = self.waiters.popleft()[0]
            if not waiter.done():
                waiter.set_exception(exc)

    def _fail(self, exc: BaseException) -> None:
        """End the connection; every call still waiting gets ``exc`` (the first, if its answer had begun) or
        ``Unanswered``."""
        self.close()
        first = True
        while self.waiters:
            waiter, retry, _ = self.waiters.popleft()
            if not waiter.done():
                if first and self.receiving:
                    waiter.set_exception(exc)
                else:
                    waiter.set_exception(Unanswered(f"the connection ended before an answer ({exc})", retry))
            first = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.remove(self)
        self.pending = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer, self.timer_at = None, math.inf
        if self.transport is not None:
            self.transport.close()


class LocalClient:
    """``post()`` to loopback model servers over kept-alive, pipelined connections."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}  # base URL -> (host, port), Host header
        self._connecting: set[asyncio.Task] = set()

    async def post(self, url: str, path: bytes, body: bytes, headers: bytes, timeout: float) -> Answer:
        """``POST url + path``; ``headers``: extra header lines, each ending in CRLF."""
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            key = (parts.hostname or "127.0.0.1", parts.port or 80)
            target = self._targets[url] = (key, b"Host: %s\r\n" % parts.netloc.encode())
        key, host = target
        request = b"".join((b"POST ", path, b" HTTP/1.1\r\n", host, b"Content-Type: application/json\r\n", headers,
                            b"Content-Length: %d\r\n\r\n" % len(body), body))
        deadline = asyncio.get_running_loop().time() + timeout
        for again in (False, True):
            try:
                return await self._connection(key, fresh=again).send(request, deadline)
            except Unanswered as e:
                if again or not e.retry:
                    raise
        raise AssertionError("unreachable")

    def _connection(self, key: tuple[str, int], fresh: bool = False) -> _Connection:
        """The first open connection to ``key`` with room for one more call, else a new one."""
        conns = self._conns.get(key)
        if conns is None:
            conns = self._conns[key] = []
        if not fresh:
            for conn in conns:
                if len(conn.waiters) < MAX_PIPELINE:
                    return conn
            if len(conns) >= MAX_OPEN:
                return min(conns, key=lambda c: len(c.waiters))
        loop = asyncio.get_running_loop()
        conn = _Connection(loop, conns)
        conns.append(conn)
        task = loop.create_task(self._connect(conn, key))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return conn

    @staticmethod
    async def _connect(conn: _Connection, key: tuple[str, int]) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: conn, key[0], key[1])
        except OSError as e:
            conn.connect_failed(e)
        except asyncio.CancelledError:  # the client was closed
            conn.connect_failed(ConnectionAbortedError("the client was closed while connecting"))
            raise

    def close(self) -> None:
        for task in self._connecting:
            task.cancel()
        for conns in self._conns.values():
            for conn in list(conns):
                conn.close()  # a call waiting on it gets an error when the connection is lost
        self._conns.clear()
