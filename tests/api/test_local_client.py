"""The lean client ``/inference`` uses for local model servers (``mlstack.serving.client``) against a real HTTP
server (stdlib, in a thread) that counts its connections: kept alive, pipelined (concurrent calls share a
connection, leave in one write, and each gets its own answer, a cancelled one's dropped), closed by the server,
chunked, refused, silent (timeout: that connection is never reused), a kept-alive connection closed before
answering (sent again once, on a new connection) or midway through an answer (not sent again)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlstack.serving.client import MAX_IDLE, MAX_PIPELINE, LocalClient, local
from tests.utils.http import record_socket_writes
from tests.utils.procs import free_port


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless an answer says close
    server: Server

    def setup(self) -> None:
        super().setup()
        self.served = 0  # requests answered on this connection
        with self.server.lock:
            self.server.connections += 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        mode = self.path.strip("/")
        if mode == "silent":
            self.server.release.wait(10)
            return
        if mode == "slow":  # answers, once released
            self.server.release.wait(10)
        if mode == "drop" or (mode == "drop-reused" and self.served):
            self.close_connection = True  # closed without a byte of an answer
            return
        if mode == "partial-reused" and self.served:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")  # then closed midway
            self.close_connection = True
            return
        self.served += 1
        answer = b'{"predictions":[0],"echo":%s,"pin":"%s"}' % (body, (self.headers["X-Model-Version"] or "").encode())
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Request-ID", "req-1")
        if mode == "close":
            self.send_header("Connection", "close")
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (answer[:5], answer[5:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        if mode == "close":
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: a burst opens many connections at once
    connections = 0
    lock = threading.Lock()
    release = threading.Event()


@pytest.fixture
def server() -> Iterator[tuple[Server, str]]:
    port = free_port()
    srv = Server(("127.0.0.1", port), Handler)
    srv.release = threading.Event()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{port}"
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def run(coro):
    return asyncio.run(coro)


def test_only_loopback_plain_http_is_local():
    assert local("http://127.0.0.1:8000") and local("http://localhost:1") and local("http://[::1]:2")
    assert not local("https://127.0.0.1:8000") and not local("http://iris.models.svc:80")
    assert not local("http://127.0.0.1.example.com:80")


def test_answers_over_one_kept_alive_connection(server):
    srv, url = server

    async def go():
        client = LocalClient()
        answers = [await client.post(url, b"/ok", b'{"i":%d}' % i, b"X-Model-Version: 7\r\n", 5) for i in range(20)]
        client.close()
        return answers

    answers = run(go())
    assert [a.status for a in answers] == [200] * 20
    assert answers[3].body == b'{"predictions":[0],"echo":{"i":3},"pin":"7"}'
    assert answers[0].headers[b"x-request-id"] == b"req-1"
    assert srv.connections == 1


def test_concurrent_calls_share_a_connection_and_each_get_their_own_answer(server):
    srv, url = server
    n = MAX_PIPELINE + 4

    async def go():
        client = LocalClient()
        answers = await asyncio.gather(*(client.post(url, b"/ok", b'{"i":%d}' % i, b"", 5) for i in range(n)))
        again = await asyncio.gather(*(client.post(url, b"/ok", b'{"i":%d}' % i, b"", 5) for i in range(n)))
        client.close()
        return answers + again

    answers = run(go())
    assert [a.body for a in answers] == [b'{"predictions":[0],"echo":{"i":%d},"pin":""}' % (i % n)
                                         for i in range(2 * n)]
    # MAX_PIPELINE calls on the first connection, the rest on a second; the second round reused both
    assert srv.connections == 2


def test_after_a_burst_at_most_max_idle_connections_stay_open(server):
    _, url = server

    async def go():
        client = LocalClient()
        calls = (MAX_IDLE + 16) * MAX_PIPELINE  # more connections than MAX_IDLE, each full
        answers = await asyncio.gather(*(client.post(url, b"/ok", b"{}", b"", 30) for _ in range(calls)))
        assert all(a.status == 200 for a in answers)
        (pool,) = client._conns.values()
        open_now = len(pool)
        assert all(not c.closed for c in pool)  # a closed connection has left the pool
        again = await client.post(url, b"/ok", b"{}", b"", 30)  # the kept connections still serve
        client.close()
        return open_now, again.status

    open_now, status = run(go())
    assert open_now == MAX_IDLE and status == 200


def test_calls_made_together_leave_in_one_write(server, monkeypatch):
    """Counted on asyncio's real socket transport (its selector loop: a Python class)."""
    _, url = server
    writes = record_socket_writes(monkeypatch)

    async def go():
        client = LocalClient()
        await client.post(url, b"/ok", b"{}", b"", 5)  # the connection is open and idle
        writes.clear()
        answers = await asyncio.gather(*(client.post(url, b"/ok", b'{"i":%d}' % i, b"", 5)
                                         for i in range(MAX_PIPELINE)))
        client.close()
        return answers

    assert [a.status for a in run(go())] == [200] * MAX_PIPELINE
    assert len(writes) == 1 and writes[0].count(b"POST /ok HTTP/1.1\r\n") == MAX_PIPELINE, writes


def test_a_cancelled_call_leaves_its_connection_and_its_answer_is_dropped(server):
    """Answers are matched to calls in order: the answer of a call whose caller left is read and dropped, and the
    call behind it on the same connection gets its own answer."""
    srv, url = server

    async def go():
        client = LocalClient()
        await client.post(url, b"/ok", b"{}", b"", 5)
        slow = asyncio.create_task(client.post(url, b"/slow", b'{"i":"slow"}', b"", 5))
        behind = asyncio.create_task(client.post(url, b"/ok", b'{"i":"behind"}', b"", 5))
        await asyncio.sleep(0)  # both are written
        slow.cancel()
        srv.release.set()
        answer = await behind
        with pytest.raises(asyncio.CancelledError):
            await slow
        after = await client.post(url, b"/ok", b'{"i":"after"}', b"", 5)
        client.close()
        return answer, after

    answer, after = run(go())
    assert answer.body == b'{"predictions":[0],"echo":{"i":"behind"},"pin":""}'
    assert after.body == b'{"predictions":[0],"echo":{"i":"after"},"pin":""}'
    assert srv.connections == 1


def test_a_connection_the_server_closes_is_not_reused(server):
    srv, url = server

    async def go():
        client = LocalClient()
        answers = [await client.post(url, b"/close", b"{}", b"", 5) for _ in range(3)]
        client.close()
        return answers

    assert [a.status for a in run(go())] == [200] * 3
    assert srv.connections == 3


def test_a_chunked_answer(server):
    _, url = server

    async def go():
        client = LocalClient()
        answer = await client.post(url, b"/chunked", b'{"x":1}', b"", 5)
        client.close()
        return answer

    assert run(go()).body == b'{"predictions":[0],"echo":{"x":1},"pin":""}'


def test_a_silent_server_times_out_and_that_connection_is_dropped(server):
    srv, url = server

    async def go():
        client = LocalClient()
        with pytest.raises(TimeoutError):
            await client.post(url, b"/silent", b"{}", b"", 0.3)
        srv.release.set()
        answer = await client.post(url, b"/ok", b"{}", b"", 5)
        client.close()
        return answer

    assert run(go()).status == 200
    assert srv.connections == 2


def test_each_call_times_out_at_its_own_deadline_with_one_timer_per_connection(server):
    """The connection's one timer is set for its earliest deadline and not cancelled when that call is answered:
    a later call with a later deadline still times out at its own; a call with a shorter deadline than the one in
    flight ahead of it times out at its own too (and the call ahead fails as on a dropped connection)."""
    _, url = server

    async def go():
        client = LocalClient()
        loop = asyncio.get_running_loop()
        assert (await client.post(url, b"/ok", b"{}", b"", 0.2)).status == 200  # the timer, set for 0.2 s
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await client.post(url, b"/silent", b"{}", b"", 0.6)  # same connection: due after that timer fired
        late = loop.time() - t0
        ahead = asyncio.ensure_future(client.post(url, b"/slow", b"{}", b"", 30))
        await asyncio.sleep(0)
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await client.post(url, b"/silent", b"{}", b"", 0.3)
        early = loop.time() - t0
        with pytest.raises(OSError):
            await ahead
        client.close()
        return late, early

    late, early = run(go())
    assert 0.55 <= late < 5 and 0.25 <= early < 5, (late, early)


def test_a_kept_alive_connection_closed_before_answering_is_retried_once_on_a_new_one(server):
    """The server closed a kept-alive connection (as after its keep-alive timeout) and the next request went out
    on it: nothing came back, so it is sent again, once, on a new connection (retries: 0 in /inference must not
    turn that into a 503)."""
    srv, url = server

    async def go():
        client = LocalClient()
        first = await client.post(url, b"/ok", b"{}", b"", 5)
        second = await client.post(url, b"/drop-reused", b'{"i":2}', b"", 5)
        client.close()
        return first, second

    first, second = run(go())
    assert first.status == second.status == 200
    assert second.body == b'{"predictions":[0],"echo":{"i":2},"pin":""}'
    assert srv.connections == 2


def test_only_one_retry_and_only_for_a_reused_connection(server):
    srv, url = server

    async def go():
        client = LocalClient()
        with pytest.raises(ConnectionError):  # a new connection closed unanswered: no retry
            await client.post(url, b"/drop", b"{}", b"", 5)
        assert srv.connections == 1
        await client.post(url, b"/ok", b"{}", b"", 5)
        with pytest.raises(ConnectionError):  # reused: retried once on a new one, which is closed too
            await client.post(url, b"/drop", b"{}", b"", 5)
        client.close()

    run(go())
    assert srv.connections == 3


def test_a_connection_closed_midway_through_an_answer_is_not_retried(server):
    srv, url = server

    async def go():
        client = LocalClient()
        await client.post(url, b"/ok", b"{}", b"", 5)
        with pytest.raises(ConnectionError):
            await client.post(url, b"/partial-reused", b"{}", b"", 5)
        client.close()

    run(go())
    assert srv.connections == 1


def test_a_refused_connection_is_an_oserror():
    async def go():
        client = LocalClient()
        try:
            await client.post(f"http://127.0.0.1:{free_port()}", b"/predict", b"{}", b"", 5)
        finally:
            client.close()

    with pytest.raises(OSError):
        run(go())
