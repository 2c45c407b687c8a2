"""Local mode: one ``mlstack serve`` process per model version, started on first use and reused.

Each server runs in its own process (so a crash or a slow model cannot take the API down), is
killed with the API (PR_SET_PDEATHSIG) and leaves a pid file under ``state_dir/servers`` so that
``./init.sh --down`` can stop it even after an unclean API exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlstack.errors import Unavailable
from mlstack.local import procs
from mlstack.local.procs import port_free
from mlstack.local.sandbox import Sandbox, make_sandbox
from mlstack.settings import Settings

log = logging.getLogger(__name__)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class LocalServer:
    name: str
    version: str
    port: int
    url: str
    proc: procs.Proc
    log_path: Path
    pid_path: Path
    started_at: float

    def alive(self) -> bool:
        return self.proc.alive()


class ServerPool:
    def __init__(self, settings: Settings, reserved_ports: set[int] | None = None,
                 extra_args: tuple[str, ...] = (), subdir: str = "servers", extra_env: dict[str, str] | None = None):
        self.settings = settings
        # shared with other pools on this machine so that two never pick the same free port at once
        self.reserved_ports = reserved_ports if reserved_ports is not None else set()
        self.extra_args = extra_args  # appended to every server's `mlstack serve` (e.g. a canary split)
        self.extra_env = dict(extra_env or {})  # added to every server's environment (e.g. the payload log's rate)
        self.dir = settings.state_dir / subdir
        self._servers: dict[tuple[str, str], LocalServer] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._http = httpx.AsyncClient(timeout=2.0)
        self._sandbox: Sandbox | None = None

    def servers(self) -> list[LocalServer]:
        return list(self._servers.values())

    def get(self, name: str, version: str) -> LocalServer | None:
        srv = self._servers.get((name, version))
        return srv if srv is not None and srv.alive() else None

    async def endpoint(self, name: str, version: str, timeout: float | None = None,
                       namespace: str | None = None) -> str:
        """Base URL of a ready server for ``name``/``version``, starting one if needed."""
        if (srv := self.get(name, version)) is not None:
            return srv.url
        lock = self._locks.setdefault((name, version), asyncio.Lock())
        async with lock:
            if (srv := self.get(name, version)) is not None:
                return srv.url
            old_port = self._release_dead(name, version)
            srv = await self._start(name, version, timeout or self.settings.serve_start_timeout, old_port)
            self._servers[(name, version)] = srv
            return srv.url

    def _release_dead(self, name: str, version: str) -> int | None:
        """A server that died (crashed, killed) gives back its port and pid file; returns the port, which its
        restart reuses (same URL), or None when there was no dead server."""
        srv = self._servers.get((name, version))
        if srv is None or srv.alive():
            return None
        del self._servers[(name, version)]
        self.reserved_ports.discard(srv.port)
        srv.pid_path.unlink(missing_ok=True)
        log.warning("model server %s v%s (pid %d, port %d) died with %s; restarting it", name, version,
                    srv.proc.pid, srv.port, srv.proc.popen.returncode)
        return srv.port

    def _pick_port(self, prefer: int | None = None) -> int:
        lo, hi = self.settings.serve_port_range
        used = {s.port for s in self._servers.values()} | self.reserved_ports
        candidates = range(lo, hi + 1)
        if prefer is not None and lo <= prefer <= hi:  # a restarted server keeps its URL when it can
            candidates = [prefer, *candidates]
        for port in candidates:
            if port not in used and port_free(self.settings.serve_host, port):
                self.reserved_ports.add(port)
                return port
        raise Unavailable(f"no free port for a model server in {lo}-{hi}")

    async def _start(self, name: str, version: str, timeout: float, prefer_port: int | None = None) -> LocalServer:
        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        port = self._pick_port(prefer_port)
        stem = f"{name}-v{version}"
        log_path, pid_path = self.dir / f"{stem}.log", self.dir / f"{stem}.pid"
        if self._sandbox is None:  # uploaded packages' code runs in here: none of the platform's secrets
            self._sandbox = await asyncio.to_thread(make_sandbox, s)
        sandbox = self._sandbox
        # not in its own session: it dies with the API (PDEATHSIG, set after dropping privileges)
        proc = procs.spawn([sys.executable, "-m", "mlstack", "serve", "--model", f"models:/{name}/{version}",
                            "--host", s.serve_host, "--port", str(port), "--name", name,
                            "--max-batch", str(s.serve_max_batch), *self.extra_args],
                           log_path, env={**sandbox.env(s), **self.extra_env}, cwd=sandbox.dir, session=False,
                           append=True, preexec_fn=lambda: (sandbox.drop_privileges(), _die_with_parent()),
                           what=f"model server for {name} v{version}")
        pid_path.write_text(str(proc.pid))
        proc.watch_exit()  # /inference asks if it is alive per request
        srv = LocalServer(name, version, port, f"http://{s.serve_host}:{port}", proc, log_path, pid_path,
                          time.time())
        log.info("started model server %s v%s on :%d (pid %d)", name, version, port, proc.pid)

        async def ready() -> bool:
            return (await self._http.get(f"{srv.url}/v2/health/ready")).status_code == 200

        try:
            await proc.wait_ready_async(ready, timeout)
        except procs.StartFailed as e:
            await self._terminate(srv)
            raise Unavailable(str(e)) from None
        return srv

    async def _terminate(self, srv: LocalServer) -> None:
        self.reserved_ports.discard(srv.port)
        if srv.alive():  # SIGTERM (uvicorn finishes in-flight requests), SIGKILL after 10 s
            await asyncio.to_thread(srv.proc.stop, 10)
        srv.pid_path.unlink(missing_ok=True)

    async def stop(self, name: str, version: str) -> bool:
        srv = self._servers.pop((name, version), None)
        if srv is None:
            return False
        await self._terminate(srv)
        return True

    async def stop_all(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        await asyncio.gather(*(self._terminate(s) for s in servers), return_exceptions=True)
        await self._http.aclose()
        if self._sandbox is not None:  # the models' copies and temp files the servers left: nothing outlives them
            await asyncio.to_thread(shutil.rmtree, self._sandbox.dir, True)
            self._sandbox = None
