"""HTTP/1.1 for ``mlstack serve`` without ASGI: an asyncio protocol over httptools calling ``ServingApp.dispatch``.

uvicorn's ASGI layer (a scope dict, receive/send message dicts and two writes per response) cost ~20 µs of CPU
per request on the development VM, about as much as the model's own work; this protocol answers a request with
one write (``bench/serving.py``: the HTTP/1.1 floor against uvicorn's). It keeps what an HTTP/1.1 server owes its
clients:

- keep-alive (HTTP/1.1 by default, HTTP/1.0 when asked) and pipelining: the requests that arrived together on a
  connection are handled together (the API pipelines its calls), their answers go out in request order in one
  write, and reading pauses while ``MAX_QUEUED`` requests wait or are in the app;
- Content-Length and chunked request bodies, ``Expect: 100-continue``, HEAD answered without a body;
- limits: a request head over ``MAX_HEAD_BYTES`` is answered 431 and a body over the app's maximum with the app's
  ``too_large()`` (413; before reading it when Content-Length says so), a malformed request 400; each then closes
  the connection;
- an idle keep-alive connection is closed after ``keepalive_s`` (5 s, as uvicorn);
- write backpressure: a client that does not read its answers stops being read;
- a client that goes away cancels its request (the batcher drops it);
- graceful shutdown on SIGTERM/SIGINT: stop accepting, close idle connections, let the requests in flight (and
  those whose body is on the way) finish for up to ``graceful_s`` (their answers say ``connection: close``), then
  close the rest; a second signal does not wait. ``ServingApp.startup``/``shutdown`` run around it, as a lifespan would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import deque
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from mlstack.serving.app import Reply, ServingApp, as_reply
from mlstack.serving.service import error

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line + headers
MAX_QUEUED = 16  # pipelined requests waiting on one connection before it stops being read
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CONTENT_LENGTH = b"content-length"
_EXPECT = b"expect"


# a parsed request, queued for the connection's worker: (method, path, query, headers, body, keep_alive, http10,
# fixed), where ``fixed`` is an answer the protocol decided (413, 431, 400): written, then the connection closes
_Request = tuple[str, str, bytes, list[tuple[bytes, bytes]], bytes, bool, bool, "Reply | None"]


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status


def encode(reply: Reply, keep_alive: bool, http10: bool = False, head_only: bool = False) -> bytes:
    """The whole answer on the wire: status line, headers, Content-Length, the body (none for HEAD)."""
    status, headers, body = reply
    parts = [_status_line(status)]
    for k, v in headers:
        parts += (k, b": ", v, b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif http10:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, hands them to the app one at a time, writes answers in order."""

    def __init__(self, server: Http1Server):
        self._server = server
        self._app = server.app
        self._loop = server.loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0  # bytes received since the current request head began
        self._in_body = False  # the head is complete; bytes now belong to the body
        self._expect_continue = False
        self._declared = b""  # the request's Content-Length, as sent
        self._queue: deque[_Request] = deque()
        # one worker task per connection answers its requests in order (cheaper than a task per request)
        self._worker: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the idle worker waits on it for the next request
        self._busy = 0  # requests the worker has in the app
        self._dead = False  # rejected or lost: parse nothing more
        self._write_paused = False
        self._read_paused = False
        self.idle_since = self._loop.time()

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._queue.clear()
        if self._worker is not None:
            self._worker.cancel()  # the client is gone: its request need not be answered
            self._worker = None
        self._server.forget(self)

    def data_received(self, data: bytes) -> None:
        if self._dead:
            return
        self.idle_since = self._loop.time()
        if not self._in_body:
            self._head_size += len(data)  # reset when a request completes: pipelined requests are each counted
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade is not spoken here (RFC 9110 lets a server ignore it): the request was answered as plain
            # HTTP/1.1, and whatever follows belongs to another protocol, so the connection ends after the answers
            self._dead = True
            self._update_reading()
            if self.idle and self._transport is not None:
                self._transport.close()
        except httptools.HttpParserError as e:
            if not self._dead:
                self._reject(as_reply(error(400, f"malformed HTTP/1.1 request: {e}")))
        if self._head_size > MAX_HEAD_BYTES and not self._in_body and not self._dead:  # before httptools buffers more
            self._reject(as_reply(error(431, f"request head over {MAX_HEAD_BYTES} bytes")))

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0
        self._expect_continue = False
        self._declared = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        if name == _CONTENT_LENGTH:
            self._declared = value
        elif name == _EXPECT and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        self._in_body = True
        if self._declared:
            try:
                declared = int(self._declared)
            except ValueError:
                declared = 0  # the parser rejects a bad Content-Length itself
            if declared > self._app.max_body_bytes:
                self._reject(self._app.too_large())
                return
        if self._expect_continue and self.idle:
            assert self._transport is not None
            self._transport.write(_CONTINUE)  # only at the head of the line: a 100 never splits another answer

    def on_body(self, body: bytes) -> None:
        if self._dead:
            return
        self._body_size += len(body)
        if self._body_size > self._app.max_body_bytes:
            self._reject(self._app.too_large())
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_size = 0
        if self._dead:
            return
        url = self._url
        if url[:1] == b"/":
            raw, _, query = url.partition(b"?")
        else:  # absolute-form (a proxy's request) or "*"
            try:
                parsed = httptools.parse_url(url)
                raw, query = parsed.path or b"/", parsed.query or b""
            except httptools.HttpParserInvalidURLError:
                raw, query = url, b""
        path = raw.decode("latin-1")
        if "%" in path:
            path = unquote(path, encoding="latin-1")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        parser = self._parser
        self._queue.append((parser.get_method().decode("ascii"), path, query, self._headers, body,
                            parser.should_keep_alive(), parser.get_http_version() == "1.0", None))
        self._wake()

    # -- requests in order --------------------------------------------------------------------------

    def _reject(self, reply: Reply) -> None:
        """Answer ``reply`` after the answers already owed, then close; read nothing more."""
        self._dead = True
        self._update_reading()
        self._queue.append(("", "", b"", [], b"", False, False, reply))
        self._wake()

    def _wake(self) -> None:
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())
        elif self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            if not waiter.done():
                waiter.set_result(None)
        if len(self._queue) + self._busy >= MAX_QUEUED:
            self._update_reading()

    async def _work(self) -> None:
        queue = self._queue
        while True:
            while queue:
                # what is queued is handled together (pipelined requests: a client such as the API's sends several
                # in one write) and answered, in request order, with one write
                batch = list(queue)
                queue.clear()
                self._busy = len(batch)
                try:
                    if len(batch) == 1:
                        replies = [await self._reply(batch[0])]
                    else:
                        replies = await asyncio.gather(*(self._reply(r) for r in batch))
                finally:
                    self._busy = 0
                if not self._write(batch, replies):
                    return
                if self._read_paused:
                    self._update_reading()
            self._waiter = self._loop.create_future()
            await self._waiter

    async def _reply(self, request: _Request) -> Reply:
        method, path, query, headers, body, _, _, reply = request
        if reply is not None:
            return reply
        try:
            return await self._app.dispatch(method, path, query, headers, body)
        except Exception as e:  # dispatch answers its own errors; this is a bug: say so, keep serving
            log.exception("error handling %s %s", method, path)
            return as_reply(error(500, f"internal error: {type(e).__name__}: {e}"))

    def _write(self, batch: list[_Request], replies: list[Reply]) -> bool:
        """Write the answers in one write; False when the connection is (now) closed."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        out, keep_alive, last = [], True, len(batch) - 1
        for i, (request, reply) in enumerate(zip(batch, replies, strict=True)):
            method, keep_alive, http10 = request[0], request[5], request[6]
            keep_alive = keep_alive and not self._server.stopping and not (self._dead and i == last and not self._queue)
            out.append(encode(reply, keep_alive, http10, method == "HEAD"))
            if not keep_alive:
                break
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if not keep_alive:
            self._dead = True
            self._queue.clear()
            transport.close()
            return False
        self.idle_since = self._loop.time()
        return True

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        pause = self._dead or self._write_paused or len(self._queue) + self._busy >= MAX_QUEUED
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # -- for the server -----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue

    @property
    def receiving(self) -> bool:
        """A request's head is in and its body on the way (at shutdown it is let finish, as one in the app is)."""
        return self._in_body and not self._dead

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class Http1Server:
    """The listening socket, its connections, idle keep-alive expiry and graceful shutdown."""

    def __init__(self, app: ServingApp, keepalive_s: float = 5.0, graceful_s: float = 5.0):
        self.app = app
        self.keepalive_s = keepalive_s
        self.graceful_s = graceful_s
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by serve()
        self._server: asyncio.Server | None = None
        self._stop: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._force = False
        self._sweeper: asyncio.TimerHandle | None = None
        self.port = 0
        self.listening = asyncio.Event()

    def request_stop(self) -> None:
        """Begin the graceful shutdown (call on the server's loop); a second call skips the grace period."""
        if self._stop is None:
            return
        if self._stop.is_set():
            self._force = True
            if self._drained is not None:
                self._drained.set()
        self._stop.set()

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections and self._drained is not None:
            self._drained.set()

    async def serve(self, host: str, port: int, signals: bool = True) -> bool:
        """Bind, start the app, serve until ``request_stop`` (or SIGINT/SIGTERM with ``signals``), shut down.
        False: nothing could be served (the HTTP or the gRPC port could not be bound; logged). ``port`` 0: any
        free port, then in ``self.port``; ``self.listening`` is set once requests are taken."""
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self._server = await self.loop.create_server(lambda: _Connection(self), host, port, backlog=2048,
                                                         reuse_address=True)
        except OSError as e:
            log.error("could not bind the HTTP port %s:%d: %s", host, port, e)
            return False
        try:
            await self.app.startup()
        except Exception as e:
            log.error("could not start: %s: %s", type(e).__name__, e)
            self._server.close()
            await self.app.shutdown()
            return False
        sigs = (signal.SIGINT, signal.SIGTERM) if signals else ()
        for sig in sigs:
            self.loop.add_signal_handler(sig, self.request_stop)
        self._sweeper = self.loop.call_later(min(1.0, self.keepalive_s), self._sweep)
        self.port = self._server.sockets[0].getsockname()[1]
        self.listening.set()
        log.info("HTTP/1.1 on http://%s:%d", host, self.port)
        try:
            await self._stop.wait()
            await self._shutdown()
        finally:
            for sig in sigs:
                self.loop.remove_signal_handler(sig)
        return True

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in [c for c in self.connections if c.idle and now - c.idle_since > self.keepalive_s]:
            conn.close()
        self._sweeper = self.loop.call_later(min(1.0, self.keepalive_s), self._sweep)

    async def _shutdown(self) -> None:
        assert self._server is not None
        self.stopping = True
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._drained = asyncio.Event()
        for conn in [c for c in self.connections if c.idle and not c.receiving]:
            conn.close()
        if self.connections and not self._force:
            log.info("waiting up to %gs for %d connection(s) to finish", self.graceful_s, len(self.connections))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.graceful_s)
        for conn in list(self.connections):
            conn.abort()
        await self.app.shutdown()


def run(server: Http1Server, host: str, port: int) -> bool:
    """``Http1Server.serve`` on uvloop when installed."""
    factory: Any = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(server.serve(host, port))
