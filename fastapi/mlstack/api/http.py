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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


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
