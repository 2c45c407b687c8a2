"""The API's HTTP/1.1 protocol (``mlstack.api.http``) under a real uvicorn server, in-process, over real sockets.

uvicorn writes an answer's head and body with two ``transport.write`` calls; the protocol's ``CorkedTransport``
makes them one write on the socket (one syscall, one segment), without holding back a stream's head or events.
The writes are counted on the event loop's real socket transport (asyncio's selector transport, a Python class).
``send_whole`` (the ``/inference`` answer written without ASGI messages) writes what uvicorn's ``send`` writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn

from mlstack.api.http import bounded_protocol, send_whole
from tests.utils.http import record_socket_writes


class App:
    """``/json``: a small JSON answer; ``/whole``: the same through ``send_whole``; ``/stream``: a chunked answer
    whose one event waits for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await self.gate.wait()
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        body = b'{"ok":true}'
        if scope["path"] == "/whole":
            return await send_whole(receive, send, 200, [(b"content-type", b"application/json")], body)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def socket_writes(monkeypatch) -> list[bytes]:
    return record_socket_writes(monkeypatch)


@contextlib.asynccontextmanager
async def serving(app: App, keep_alive: float = 5) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=bounded_protocol(32 * 1024), lifespan="off", log_level="warning",
                            timeout_graceful_shutdown=1, timeout_keep_alive=keep_alive)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        assert asyncio.get_running_loop().time() < deadline and not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def _head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


async def test_an_answer_is_one_write_and_keep_alive_still_works(socket_writes):
    async with serving(App()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            socket_writes.clear()
            writer.write(b"GET /json HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await _head(reader)
            assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 11\r\n" in head
            assert await asyncio.wait_for(reader.readexactly(11), 10) == b'{"ok":true}'
            server_writes = [w for w in socket_writes if w.startswith(b"HTTP/1.1 200")]
            assert len(server_writes) == 1 and server_writes[0].endswith(b'\r\n\r\n{"ok":true}'), socket_writes
            assert len(socket_writes) == 2  # the client's request, the server's whole answer
        writer.close()


async def test_connection_close_writes_the_answer_before_closing(socket_writes):
    async with serving(App()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)  # to EOF: the server closed after answering
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"ok":true}')
        assert b"connection: close\r\n" in answer
        writer.close()


async def test_a_streams_head_and_events_are_not_held_back():
    app = App()
    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await _head(reader)  # before the app has an event to send
        assert b"transfer-encoding: chunked" in head and not app.gate.is_set()
        app.gate.set()
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10) == b"b\r\ndata: one\n\n\r\n0\r\n\r\n"
        writer.close()



def _without_date(answer: bytes) -> bytes:
    return b"\r\n".join(line for line in answer.split(b"\r\n") if not line.startswith(b"date: "))


async def test_send_whole_writes_what_uvicorn_writes_in_order_and_keeps_the_connection(socket_writes):
    async with serving(App()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for path in ("/json", "/whole"):
            writer.write(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}" % path.encode())
            answers.append(await _head(reader) + await asyncio.wait_for(reader.readexactly(11), 10))
        assert _without_date(answers[1]) == _without_date(answers[0])
        assert b"server: uvicorn\r\n" in answers[1]
        # pipelined: three requests in one write, answered in order on the same connection
        socket_writes.clear()
        writer.write(b"".join(b"POST /whole HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nX-N: %d\r\n\r\n{}" % i
                              for i in range(3)))
        for _ in range(3):
            assert _without_date(await _head(reader)) == _without_date(answers[0][:-11])
            assert await asyncio.wait_for(reader.readexactly(11), 10) == b'{"ok":true}'
        # Connection: close: the answer says so and the server closes after it
        writer.write(b"POST /whole HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        last = await asyncio.wait_for(reader.read(), 10)
        assert b"connection: close\r\n" in last and last.endswith(b'\r\n\r\n{"ok":true}')
        writer.close()


async def test_send_whole_elsewhere_sends_the_two_asgi_messages():
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await send_whole(receive, send, 201, [(b"content-type", b"application/json")], b"{}")
    assert sent == [{"type": "http.response.start", "status": 201,
                     "headers": [(b"content-length", b"2"), (b"content-type", b"application/json")]},
                    {"type": "http.response.body", "body": b"{}"}]


async def test_an_idle_connection_is_closed_after_keep_alive_counted_from_its_last_answer():
    """One keep-alive timer per connection, not one per answer: the timer set after the first answer finds a later
    answer when it fires and waits for that one's time."""
    async with serving(App(), keep_alive=2) as port:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ends = []
        for pause in (0, 0.5):  # the second request well within keep-alive, even on a loaded machine
            await asyncio.sleep(pause)
            writer.write(b"GET /json HTTP/1.1\r\nHost: t\r\n\r\n")
            await _head(reader)
            assert await asyncio.wait_for(reader.readexactly(11), 10) == b'{"ok":true}'
            ends.append(loop.time())
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        closed = loop.time()
        assert closed - ends[0] >= 2.4 and 1.9 <= closed - ends[1] < 6, (ends, closed)
        writer.close()
