"""The API's HTTP/1.1 server protocol: uvicorn's httptools (C parser) with a bound on the request head.

httptools keeps an unfinished request line + header block in its own buffer, whatever its size; h11 stops at
``h11_max_incomplete_event_size`` but parses in Python (about a tenth of the API's CPU per ``/inference``).
This protocol counts the bytes fed while a request head is unfinished and answers 431 (and closes) once they
pass the limit, so what it buffers stays within ``api_max_header_bytes`` plus one read. A complete head that
arrives in one piece and is too large is ``BodyGuard``'s (431 too).

uvicorn writes an answer's head and its body in two ``transport.write`` calls: two syscalls, two TCP segments
(``TCP_NODELAY``) and often two wake-ups of the client, for every answer. The protocol hands uvicorn a
``CorkedTransport`` instead: what is written in one step of the event loop goes out as one write at the end of that
step (an SSE stream's head and each of its events still go out at once: nothing waits for more data).

``send_whole`` answers a request on this protocol with one bytes string: no ASGI messages (a ``POST /inference``
answer, ``mlstack.api.hotpath``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import Receive, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string


class CorkedTransport:
    """A transport whose writes within one event-loop step are joined into one write, made by a ``call_soon``
    callback (so after every write of that step); ``close()`` writes what is pending first. Everything else is the
    real transport's (reading, flow control, ``abort()``, which drops what is pending)."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop, self._pending = transport, loop, []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 32 * 1024  # set per server by bounded_protocol()

    _in_head = True  # a connection starts waiting for a request head
    _head_bytes = 0
    _completed = False  # a request ended in the current read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]

    def on_message_begin(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # the next request's head starts after this one; the rest of this read (the body's end, perhaps a
        # pipelined head's start) is not counted: the bound is then one read looser, never wrong
        self._in_head, self._head_bytes, self._completed = True, 0, True
        super().on_message_complete()

    # -- keep-alive: uvicorn sets a timer when an answer ends and cancels it when the next request comes; in uvloop
    # that costs ~2 µs per request. Here a connection has at most one timer, set when it becomes idle with none
    # set; a request in between does not cancel it: when it fires, a connection busy since does nothing (its next
    # answer sets the timer again) and one idle since a later answer waits for that answer's time.

    _idle_at: float | None = None  # the loop's time when the connection's last answer ended; None: busy

    def _unset_keepalive_if_required(self) -> None:  # uvicorn calls it when data comes and when the connection ends
        self._idle_at = None

    def on_response_complete(self) -> None:
        # uvicorn's, but for the keep-alive timer
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_at = None
        self.flow.resume_reading()
        if self.pipeline:  # the next pipelined request
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_at = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self._keep_alive_from(self._idle_at)

    def _keep_alive_from(self, idle_at: float) -> None:
        self.timeout_keep_alive_task = self.loop.call_at(idle_at + self.timeout_keep_alive, self._keep_alive_due,
                                                         idle_at)

    def _keep_alive_due(self, idle_at: float) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_at == idle_at:  # idle since that answer: as long as keep-alive allows
            self.timeout_keep_alive_handler()
        elif self._idle_at is not None:  # idle since a later answer
            self._keep_alive_from(self._idle_at)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def data_received(self, data: bytes) -> None:
        self._completed = False
        super().data_received(data)
        if not self._in_head or self._completed or self.transport is None or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._in_head = False
            self._refuse_head()

    def _refuse_head(self) -> None:
        msg = f"request line and headers larger than {self.max_head_bytes} bytes".encode()
        self.logger.warning("Request head larger than %d bytes: refused with 431", self.max_head_bytes)
        self.transport.write(b"".join([
            STATUS_LINE[431], b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(msg), b"connection: close\r\n\r\n", msg]))
        self.transport.close()


def bounded_protocol(max_head_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with this bound."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"max_head_bytes": max_head_bytes})


async def send_whole(receive: Receive, send: Send, status: int, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> None:
    """Answer ``status``, ``headers`` (the app's own: not checked), Content-Length and ``body``.

    On this module's protocol (``receive`` is a method of uvicorn's ``RequestResponseCycle``) the answer is written
    as the cycle's ``send`` writes it, with its default headers, access log line, keep-alive and flow control, but
    without two ASGI messages and their checks (~4 µs of the API's ~95 µs per ``/inference``). Elsewhere (another
    server, a test transport), the two messages."""
    cycle = getattr(receive, "__self__", None)
    if type(cycle) is not RequestResponseCycle or cycle.response_started or cycle.scope["method"] == "HEAD":
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", b"%d" % len(body)), *headers]})
        await send({"type": "http.response.body", "body": body})
        return
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    cycle.response_started, cycle.waiting_for_100_continue = True, False
    scope = cycle.scope
    if cycle.access_log and cycle.access_logger.isEnabledFor(logging.INFO):  # its line's parts only if it is kept
        cycle.access_logger.info('%s - "%s %s HTTP/%s" %d', get_client_addr(scope), scope["method"],
                                 get_path_with_query_string(scope), scope["http_version"], status)
    parts = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(body))
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    cycle.transport.write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
