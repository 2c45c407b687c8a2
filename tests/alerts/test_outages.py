"""Slow clients, Redis outages and API restarts: clients resume and miss nothing."""

from __future__ import annotations

import socket

import httpx

from tests.utils.alerts import STANDALONE, SSEClient, alert_env, publish, start_app, status, until


async def test_redis_restart_mid_stream_clients_resume_and_miss_nothing(own_redis, tmp_path):
    proc, base = start_app(STANDALONE, tmp_path / "api.log", alert_env(own_redis.url))
    try:
        async with SSEClient(f"{base}/webhook") as a, SSEClient(f"{base}/webhook") as b:
            await until(lambda: _subs(base, 2), 10, "two subscribers")
            before = await publish(base, 3, prefix="before")
            await until(lambda: a.ids == before and b.ids == before, 10, "alerts before the outage")

            own_redis.stop()
            await until(lambda: _reader(base, False), 15, "reader notices Redis is down")
            # producers are not failed: alerts are accepted and buffered, in order
            during = await publish(base, 3, prefix="during")
            assert during == [None, None, None]
            st = await status(base)
            assert st["buffered"] == 3 and st["reader_connected"] is False and st["last_error"]
            async with httpx.AsyncClient(timeout=10) as c:  # first paint still works from memory
                r = await c.get(f"{base}/alerts", params={"limit": 10})
                assert r.status_code == 200 and [x["id"] for x in r.json()][-3:] == before

            own_redis.start()
            await until(lambda: len(a.alerts) >= 6 and len(b.alerts) >= 6, 30, "catch-up after Redis is back")
            after = await publish(base, 1, prefix="after")
            await until(lambda: len(a.alerts) >= 7 and len(b.alerts) >= 7, 10, "live alert after recovery")
            titles = [x["title"] for x in a.alerts]
            assert titles == [f"before {i}" for i in range(3)] + [f"during {i}" for i in range(3)] + ["after 0"]
            assert a.ids == b.ids and a.ids[-1] == after[0]
            assert len(set(a.ids)) == 7
            assert (await status(base))["buffered"] == 0
        # what the stream holds after the restart is exactly what was published (AOF kept it)
        r = own_redis.client()
        stored = [e[0] for e in r.xrange("mlstack:alerts")]
        assert stored == a.ids
    finally:
        proc.stop()


async def test_api_restart_client_reconnects_and_replays_from_redis(own_redis, tmp_path):
    proc, base = start_app(STANDALONE, tmp_path / "api1.log", alert_env(own_redis.url))
    port = int(base.rsplit(":", 1)[1])
    async with SSEClient(f"{base}/webhook") as c:
        await until(lambda: _subs(base, 1), 10, "subscriber")
        first = await publish(base, 2, prefix="first")
        await until(lambda: c.ids == first, 10, "first alerts")
        proc.stop()
        # alerts published while this API is down (another replica, or a worker, writes to Redis)
        r = own_redis.client()
        missed = [r.xadd("mlstack:alerts", {"type": "alert.manual", "event": '{"type":"alert.manual",'
                                            f'"severity":"info","title":"missed {i}"}}'}) for i in range(3)]
        proc, base = start_app(STANDALONE, tmp_path / "api2.log", alert_env(own_redis.url), port=port)
        try:
            await until(lambda: len(c.alerts) >= 5, 30, "client reconnected and replayed")
            later = await publish(base, 1, prefix="later")
            await until(lambda: len(c.alerts) >= 6, 10, "live after replay")
            assert c.ids == first + missed + later
            assert c.connects >= 2
        finally:
            proc.stop()


async def test_slow_client_is_told_to_reconnect_and_does_not_stall_others(own_redis, tmp_path):
    env = alert_env(own_redis.url, MLSTACK_ALERTS_CLIENT_QUEUE="4")
    proc, base = start_app(STANDALONE, tmp_path / "api.log", env)
    port = int(base.rsplit(":", 1)[1])
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: no autotuning
    slow.connect(("127.0.0.1", port))
    try:
        slow.sendall(b"GET /webhook HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        async with SSEClient(f"{base}/webhook") as fast:
            await until(lambda: _subs(base, 2), 10, "slow and fast subscribers")
            blob = "x" * 100_000  # fills the slow client's socket buffers quickly
            ids = await publish(base, 80, prefix="big", data={"blob": blob})
            await until(lambda: len(fast.alerts) >= 80, 30, "fast client gets everything")
            assert fast.ids == ids
            await until(lambda: _overflows(base), 10, "slow client dropped")
        # the slow client now reads: a prefix of the alerts, then `event: reconnect`, then the end
        text = read_chunked_response(slow)
        assert "event: reconnect" in text
        got = [line[4:] for line in text.split("\r\n") if line.startswith("id: ")]
        assert got == ids[: len(got)] and len(got) < len(ids)
        # reconnecting with the last id it saw replays the rest, in order
        async with SSEClient(f"{base}/webhook", last_event_id=got[-1] if got else "0") as again:
            await until(lambda: len(again.alerts) >= len(ids) - len(got), 20, "replay after overflow")
            assert got + again.ids == ids
    finally:
        slow.close()
        proc.stop()


async def test_stuck_client_is_closed_after_send_timeout(own_redis, tmp_path):
    env = alert_env(own_redis.url, MLSTACK_ALERTS_CLIENT_QUEUE="4", MLSTACK_ALERTS_SEND_TIMEOUT="1")
    proc, base = start_app(STANDALONE, tmp_path / "api.log", env)
    port = int(base.rsplit(":", 1)[1])
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    stuck.connect(("127.0.0.1", port))
    try:
        stuck.sendall(b"GET /webhook HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: _subs(base, 1), 10, "subscriber")
        await publish(base, 80, prefix="big", data={"blob": "x" * 100_000})
        await until(lambda: _overflows(base), 10, "stuck client dropped")
        # it never reads: its response is cancelled once send_timeout passes, freeing the task
        await until(lambda: _streams(base, 0), 15, "stuck response closed")
    finally:
        stuck.close()
        proc.stop()


async def test_replay_unavailable_while_redis_down_tells_client_to_retry(own_redis, tmp_path):
    env = alert_env(own_redis.url, MLSTACK_ALERTS_RING_SIZE="0")  # every replay must read Redis
    proc, base = start_app(STANDALONE, tmp_path / "api.log", env)
    try:
        ids = await publish(base, 3, prefix="r")
        own_redis.stop()
        async with SSEClient(f"{base}/webhook", last_event_id=ids[0]) as c:
            await until(lambda: c.controls, 15, "reconnect control event")
            assert c.controls[0][0] == "reconnect" and c.controls[0][1]["last_event_id"] == ids[0]
            own_redis.start()
            await until(lambda: len(c.alerts) >= 2, 30, "replay once Redis is back")
            assert c.ids == ids[1:]
    finally:
        proc.stop()


def read_chunked_response(sock: socket.socket, timeout: float = 20) -> str:
    """Read one HTTP/1.1 chunked response to its end; return the de-chunked body."""
    sock.settimeout(timeout)
    buf = bytearray()

    def need(n: int) -> None:
        while len(buf) < n:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise AssertionError("connection closed before the response ended")
            buf.extend(chunk)

    def line_end(start: int) -> int:
        while (i := buf.find(b"\r\n", start)) < 0:
            need(len(buf) + 1)
        return i

    need(1)
    while (head_end := buf.find(b"\r\n\r\n")) < 0:
        need(len(buf) + 1)
    assert buf.startswith(b"HTTP/1.1 200"), bytes(buf[:200])
    pos, body = head_end + 4, bytearray()
    while True:
        eol = line_end(pos)
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            return body.decode()
        need(eol + 2 + size + 2)
        body.extend(buf[eol + 2: eol + 2 + size])
        pos = eol + 2 + size + 2


async def _subs(base: str, n: int) -> bool:
    return (await status(base))["subscribers"] >= n


async def _streams(base: str, n: int) -> bool:
    return (await status(base))["streams"] == n


async def _reader(base: str, connected: bool) -> bool:
    return (await status(base))["reader_connected"] is connected


async def _overflows(base: str) -> bool:
    return (await status(base))["overflows"] >= 1



