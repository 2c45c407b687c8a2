"""Test helpers for alerts and schedules: a restartable redis-server, API processes, an SSE client.

Everything is real: redis-server processes, uvicorn processes, HTTP over sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from tests.utils.procs import BIN, Proc, free_port, http_ok, port_open, redis_server_bin, start

ROOT = Path(__file__).resolve().parents[2]
STANDALONE = "mlstack.api.alerts_app:create_app"  # the alerts-only API (the alert router + lifespan)


class RedisServer:
    """A redis-server with an append-only file, restartable on the same port (the stream survives)."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> RedisServer:
        self.starts += 1
        self.proc = start(
            [redis_server_bin(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            self.dir / f"redis-{self.starts}.log", ready=lambda: port_open(self.port), timeout=20,
            what="redis-server",
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


def start_app(factory: str, log: Path, env: dict[str, str], port: int | None = None,
              ready_path: str = "/alerts/status", timeout: float = 60) -> tuple[Proc, str]:
    """Run ``uvicorn --factory <factory>`` on a free (or the given) port; returns (proc, base URL)."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(
        [str(BIN / "python"), "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(port),
         "--timeout-graceful-shutdown", "3", "--log-level", "info"],
        log, ready=lambda: http_ok(base + ready_path), timeout=timeout, env={"PYTHONUNBUFFERED": "1", **env},
        cwd=ROOT, what=factory,
    )
    return proc, base


def alert_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {"MLSTACK_REDIS_URL": redis_url, "MLSTACK_ALERTS_HEARTBEAT_SECONDS": "0.5",
            "MLSTACK_ALERTS_RETRY_MS": "100", **extra}


async def until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.02):
    """Poll ``check`` (sync or async) until truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def holds_for(check: Callable[[], object], seconds: float, what: str, interval: float = 0.05) -> None:
    """Assert ``check`` stays truthy for ``seconds`` (used to show something does NOT happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        await asyncio.sleep(interval)


class SSEClient:
    """An EventSource look-alike: parses frames, remembers the last id, reconnects with Last-Event-ID."""

    def __init__(self, url: str, last_event_id: str | None = None, reconnect: bool = True,
                 params: dict | None = None, header_id: bool = True):
        self.url = url
        self.last_id = last_event_id
        self.reconnect = reconnect
        self.params = params or {}
        self.header_id = header_id
        self.alerts: list[dict] = []
        self.controls: list[tuple[str, dict]] = []
        self.comments = 0
        self.connects = 0
        self.retry_ms = 100
        self.errors: list[str] = []
        self.status: int | None = None
        self.body: str | None = None
        self._task: asyncio.Task | None = None

    @property
    def ids(self) -> list[str]:
        return [a["id"] for a in self.alerts]

    async def __aenter__(self) -> SSEClient:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5)) as client:
            while True:
                headers = {"Accept": "text/event-stream"}
                if self.last_id is not None and self.header_id:
                    headers["Last-Event-ID"] = self.last_id
                try:
                    async with client.stream("GET", self.url, headers=headers, params=self.params) as r:
                        self.status = r.status_code
                        if r.status_code != 200:
                            self.body = (await r.aread()).decode()
                            return
                        self.connects += 1
                        await self._consume(r)
                except (httpx.HTTPError, OSError) as e:
                    self.errors.append(repr(e))
                if not self.reconnect:
                    return
                await asyncio.sleep(self.retry_ms / 1000)  # EventSource's reconnection delay

    async def _consume(self, r: httpx.Response) -> None:
        event, data, eid = None, [], None
        async for line in r.aiter_lines():
            if line == "":
                if data:
                    payload = json.loads("\n".join(data))
                    if (event or "message") == "alert":
                        assert eid == payload["id"], (eid, payload)
                        self.alerts.append(payload)
                    else:
                        self.controls.append((event, payload))
                if eid is not None:
                    self.last_id = eid
                event, data, eid = None, [], None
            elif line.startswith(":"):
                self.comments += 1
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
                elif name == "id":
                    eid = value
                elif name == "retry":
                    self.retry_ms = int(value)


async def publish(base: str, n: int, prefix: str = "alert", **body) -> list[str]:
    """POST ``n`` alerts; returns their stream ids (None for buffered ones)."""
    ids = []
    async with httpx.AsyncClient(timeout=10) as c:
        for i in range(n):
            r = await c.post(f"{base}/alerts", json={"title": f"{prefix} {i}", **body})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
    return ids


async def status(base: str) -> dict:
    async with httpx.AsyncClient(timeout=5) as c:
        return (await c.get(f"{base}/alerts/status")).json()
