"""A lean keep-alive HTTP/1.1 client for ``POST`` to a local model server: the API's ``/inference`` hot path.

aiohttp's client costs ~90 µs of CPU per call on a 2-core box (more than the model server's whole answer); this
one writes each request in one piece, parses the answer with httptools (C) and keeps idle connections per
server (at most ``MAX_OPEN`` open to one server; more calls wait, within their timeout). It speaks only what a
model server answers (a status, headers, a ``Content-Length`` or chunked body) and only to loopback servers
(``local()``): anything else stays with aiohttp. Errors are ``OSError``s (a refused or dropped connection) or
``TimeoutError``; a connection that failed or timed out is closed, never reused. A kept-alive connection the
server closed while it was idle (mlstack serve does after 5 s) can take the next request before its close is seen:
when such a reused connection fails before any byte of the answer came, the request goes again, once, on a new
connection (as HTTP clients do with an idle connection; a model server's answer to the same input is the same).
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

LOOPBACK = ("http://127.0.0.1:", "http://localhost:", "http://[::1]:")
MAX_IDLE = 64  # idle connections kept per server
MAX_OPEN = 256  # connections per server at once (aiohttp's limit before): more calls wait for one


class Answer(NamedTuple):
    status: int
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes


def local(url: str) -> bool:
    """Is ``url`` a plain-HTTP loopback server (the ones this client serves)?"""
    return url.startswith(LOOPBACK)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.closed = False
        self.received = False  # any byte of the current answer came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionError(f"not an HTTP answer: {e}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        answer = Answer(self.parser.get_status_code(), self.headers, b"".join(self.body))
        self.headers, self.body = {}, []
        if not self.parser.should_keep_alive():
            self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the model server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LocalClient:
    """``post()`` to loopback model servers over kept-alive connections (one writer per connection)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}  # base URL -> (host, port), Host header
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}

    async def post(self, url: str, path: bytes, body: bytes, headers: bytes, timeout: float) -> Answer:
        """``POST url + path``; ``headers``: extra header lines, each ending in CRLF."""
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            key = (parts.hostname or "127.0.0.1", parts.port or 80)
            target = self._targets[url] = (key, b"Host: %s\r\n" % parts.netloc.encode())
        key, host = target
        loop = asyncio.get_running_loop()
        slots = self._slots.get(key) or self._slots.setdefault(key, asyncio.Semaphore(MAX_OPEN))
        request = b"".join((b"POST ", path, b" HTTP/1.1\r\n", host, b"Content-Type: application/json\r\n", headers,
                            b"Content-Length: %d\r\n\r\n" % len(body), body))
        async with asyncio.timeout(timeout), slots:
            conn = self._take(key)
            retry = conn is not None  # a kept-alive connection: the server may have closed it meanwhile
            while True:
                if conn is None:
                    _, conn = await loop.create_connection(_Connection, key[0], key[1])
                waiter = conn.waiter = loop.create_future()
                conn.received = False
                try:
                    conn.transport.write(request)  # type: ignore[union-attr]
                    answer = await waiter
                    break
                except OSError:
                    conn.close()
                    if not retry or conn.received:
                        raise
                    retry, conn = False, None  # closed before answering anything: once more, on a new connection
                except BaseException:
                    conn.close()  # its state is unknown (a timeout, a cancel): never reused
                    raise
        if not conn.closed:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE:
                idle.append(conn)
            else:
                conn.close()
        return answer

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
