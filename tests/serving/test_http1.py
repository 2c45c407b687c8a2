"""``mlstack serve``'s own HTTP/1.1 protocol (``serving/http1.py``) over real sockets.

In-process, with a small app behind the real protocol (the model server itself runs on this protocol in every
other test of this folder): keep-alive, pipelining, chunked bodies, Expect: 100-continue, HEAD, HTTP/1.0, the
head and body limits, malformed requests, idle expiry, a client that leaves, graceful shutdown, a taken port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import orjson
import pytest

from mlstack.serving.http1 import MAX_HEAD_BYTES, Http1Server


class EchoApp:
    """Answers each request with what it received; ``/slow`` waits for ``gate``."""

    max_body_bytes = 1024

    def __init__(self) -> None:
        self.started = self.stopped = False
        self.gate = asyncio.Event()
        self.cancelled = 0
        self.entered = asyncio.Event()
        self.waiting = 0  # requests in /slow now

    def too_large(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return 413, [(b"content-type", b"application/json")], orjson.dumps(
            {"error": f"request body over {self.max_body_bytes} bytes"})

    async def startup(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.stopped = True

    async def dispatch(self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
                       body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if path == "/slow":
            self.entered.set()
            self.waiting += 1
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.waiting -= 1
        if path == "/boom":
            raise RuntimeError("a bug")
        echo = {"method": method, "path": path, "query": query.decode(), "body": body.decode(),
                "headers": {k.decode(): v.decode() for k, v in headers}}
        return 200, [(b"content-type", b"application/json")], orjson.dumps(echo)


@contextlib.asynccontextmanager
async def running(app: EchoApp, **kw: float) -> AsyncIterator[Http1Server]:
    srv = Http1Server(app, **kw)  # type: ignore[arg-type]
    task = asyncio.create_task(srv.serve("127.0.0.1", 0, signals=False))
    await asyncio.wait_for(srv.listening.wait(), 10)
    try:
        yield srv
    finally:
        srv.request_stop()
        assert await asyncio.wait_for(task, 10) is True


async def connect(srv: Http1Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", srv.port)


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if line)}
    n = 0 if head_only else int(headers["content-length"])
    body = await asyncio.wait_for(reader.readexactly(n), 10)
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection (EOF) within the deadline."""
    return await asyncio.wait_for(reader.read(), 10) == b""


def request(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def test_keep_alive_and_pipelining_in_order():
    async with running(EchoApp()) as srv:
        reader, writer = await connect(srv)
        writer.write(request("POST", "/a?x=1", b'{"n":1}'))
        status, headers, body = await read_response(reader)
        assert status == 200 and "connection" not in headers
        assert orjson.loads(body)["body"] == '{"n":1}' and orjson.loads(body)["query"] == "x=1"
        # three requests in one write: three answers, in request order, on the same connection
        writer.write(b"".join(request("POST", f"/p{i}", b"%d" % i) for i in range(3)))
        for i in range(3):
            _, _, body = await read_response(reader)
            assert orjson.loads(body)["path"] == f"/p{i}"
        writer.close()


async def test_pipelined_requests_are_handled_together_and_answered_in_order():
    """Requests that arrive together on one connection are in the app at the same time (the API pipelines its
    calls to a model server: one at a time would serialise them), and their answers keep the request order."""
    app = EchoApp()
    async with running(app) as srv:
        reader, writer = await connect(srv)
        writer.write(request("POST", "/slow", b"1") + request("POST", "/slow", b"2") + request("POST", "/p", b"3"))
        deadline = asyncio.get_running_loop().time() + 10
        while app.waiting < 2:
            assert asyncio.get_running_loop().time() < deadline, f"{app.waiting} request(s) in the app, not 2"
            await asyncio.sleep(0.01)
        app.gate.set()
        bodies = [orjson.loads((await read_response(reader))[2])["body"] for _ in range(3)]
        assert bodies == ["1", "2", "3"]
        writer.close()


async def test_chunked_body_percent_decoding_and_header_names():
    async with running(EchoApp()) as srv:
        reader, writer = await connect(srv)
        writer.write(b"POST /v2/models/a%20b/infer HTTP/1.1\r\nHost: t\r\nX-Request-ID: r1\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        status, _, body = await read_response(reader)
        echo = orjson.loads(body)
        assert status == 200 and echo["body"] == "abcde" and echo["path"] == "/v2/models/a b/infer"
        assert echo["headers"]["x-request-id"] == "r1"  # names in lower case, as ASGI gives them
        writer.close()


async def test_expect_continue_head_and_http10():
    async with running(EchoApp()) as srv:
        reader, writer = await connect(srv)
        writer.write(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ok")
        _, _, body = await read_response(reader)
        assert orjson.loads(body)["body"] == "ok"
        writer.write(request("HEAD", "/h"))
        status, headers, _ = await read_response(reader, head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        writer.write(request("GET", "/after-head"))  # nothing of HEAD's body was sent: the next answer parses
        _, _, body = await read_response(reader)
        assert orjson.loads(body)["path"] == "/after-head"
        writer.close()

        reader, writer = await connect(srv)
        writer.write(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        _, headers, _ = await read_response(reader)
        assert headers["connection"] == "keep-alive"
        writer.write(b"GET /old HTTP/1.0\r\n\r\n")
        _, headers, _ = await read_response(reader)
        assert headers["connection"] == "close"
        assert await closed(reader)


@pytest.mark.parametrize("case", ["declared", "chunked"])
async def test_body_over_the_limit_is_413_and_closes(case):
    async with running(EchoApp()) as srv:
        reader, writer = await connect(srv)
        writer.write(request("GET", "/first"))
        if case == "declared":  # refused from its Content-Length, before a byte of the body is sent
            writer.write(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n")
        else:
            writer.write(b"POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"200\r\n" + b"x" * 512 + b"\r\n" + b"201\r\n" + b"x" * 513 + b"\r\n")
        status, _, _ = await read_response(reader)
        assert status == 200  # the request before it is still answered, first
        status, headers, body = await read_response(reader)
        assert status == 413 and headers["connection"] == "close"
        assert orjson.loads(body) == {"error": "request body over 1024 bytes"}
        assert await closed(reader)


async def test_head_over_the_limit_is_431_and_closes():
    async with running(EchoApp()) as srv:
        reader, writer = await connect(srv)
        writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: ")
        with contextlib.suppress(ConnectionError):  # the server may close while the rest is still being sent
            for _ in range(MAX_HEAD_BYTES // 4096 + 2):
                writer.write(b"y" * 4096)
                await writer.drain()
        status, _, body = await read_response(reader)
        assert status == 431 and "request head over" in orjson.loads(body)["error"]
        assert await closed(reader)


async def test_malformed_request_is_400_and_closes():
    async with running(EchoApp()) as srv:
        reader, writer = await connect(srv)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert status == 400 and headers["connection"] == "close"
        assert orjson.loads(body)["error"].startswith("malformed HTTP/1.1 request")
        assert await closed(reader)


async def test_a_bug_in_the_app_is_500_and_the_connection_lives():
    async with running(EchoApp()) as srv:
        reader, writer = await connect(srv)
        writer.write(request("GET", "/boom") + request("GET", "/next"))
        status, _, body = await read_response(reader)
        assert status == 500 and orjson.loads(body) == {"error": "internal error: RuntimeError: a bug"}
        status, _, _ = await read_response(reader)
        assert status == 200
        writer.close()


async def test_upgrade_is_answered_as_http11_then_closed():
    async with running(EchoApp()) as srv:
        reader, writer = await connect(srv)
        writer.write(b"GET /u HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert status == 200 and orjson.loads(body)["path"] == "/u"
        assert "upgrade" not in headers
        assert await closed(reader)


async def test_idle_keep_alive_connection_is_closed():
    async with running(EchoApp(), keepalive_s=0.3) as srv:
        reader, writer = await connect(srv)
        writer.write(request("GET", "/once"))
        await read_response(reader)
        assert await closed(reader)  # within the deadline, after ~0.3 s of silence
        assert not srv.connections


async def test_a_client_that_leaves_cancels_its_request():
    app = EchoApp()
    async with running(app) as srv:
        _, writer = await connect(srv)
        writer.write(request("GET", "/slow"))
        await asyncio.wait_for(app.entered.wait(), 10)
        writer.close()
        await asyncio.wait_for(_until(lambda: app.cancelled == 1), 10)


async def _until(cond) -> None:  # type: ignore[no-untyped-def]
    while not cond():
        await asyncio.sleep(0.01)


async def test_graceful_shutdown_finishes_requests_in_flight():
    app = EchoApp()
    srv = Http1Server(app, graceful_s=10)  # type: ignore[arg-type]
    task = asyncio.create_task(srv.serve("127.0.0.1", 0, signals=False))
    await asyncio.wait_for(srv.listening.wait(), 10)
    assert app.started
    idle_reader, _ = await connect(srv)
    busy_reader, busy_writer = await connect(srv)
    busy_writer.write(request("GET", "/slow"))
    await asyncio.wait_for(app.entered.wait(), 10)
    upload_reader, upload_writer = await connect(srv)  # its head is in, its body not yet
    upload_writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(upload_reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    await asyncio.wait_for(_until(lambda: len(srv.connections) == 3), 10)
    srv.request_stop()
    assert await closed(idle_reader)  # idle: closed at once
    upload_writer.write(b"ok")  # the body on the way is still taken, and answered with connection: close
    status, headers, body = await read_response(upload_reader)
    assert status == 200 and headers["connection"] == "close" and orjson.loads(body)["body"] == "ok"
    with pytest.raises(OSError):  # no new connections
        await asyncio.wait_for(_connect_refused(srv.port), 10)
    assert not task.done()
    app.gate.set()  # the request in flight finishes and is answered, with connection: close
    status, headers, _ = await read_response(busy_reader)
    assert status == 200 and headers["connection"] == "close"
    assert await asyncio.wait_for(task, 10) is True
    assert app.stopped and app.cancelled == 0


async def _connect_refused(port: int) -> None:
    while True:  # the listening socket closes on the next loop turns
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await asyncio.sleep(0.01)


async def test_a_taken_port_is_reported():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        app = EchoApp()
        assert await Http1Server(app).serve("127.0.0.1", held.getsockname()[1], signals=False) is False  # type: ignore[arg-type]
        assert not app.started
