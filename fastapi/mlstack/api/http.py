"""The API's HTTP/1.1 server protocol: uvicorn's httptools (C parser) with a bound on the request head.

httptools keeps an unfinished request line + header block in its own buffer, whatever its size; h11 stops at
``h11_max_incomplete_event_size`` but parses in Python (about a tenth of the API's CPU per ``/inference``).
This protocol counts the bytes fed while a request head is unfinished and answers 431 (and closes) once they
pass the limit, so what it buffers stays within ``api_max_header_bytes`` plus one read. A complete head that
arrives in one piece and is too large is ``BodyGuard``'s (431 too).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 32 * 1024  # set per server by bounded_protocol()

    _in_head = True  # a connection starts waiting for a request head
    _head_bytes = 0
    _completed = False  # a request ended in the current read

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
