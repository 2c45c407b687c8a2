"""Start real servers for tests, wait for them with a deadline, stop them by PID: the product's own process
supervisor (``mlstack.local.procs``), plus the tests' ``mlstack api`` starter."""

from __future__ import annotations

import sys
from pathlib import Path

from mlstack.local.procs import Proc, StartFailed, free_port, http_ok, port_open, start, wait_until
from mlstack.local.stack import redis_server_bin

BIN = Path(sys.executable).parent

__all__ = ["BIN", "Proc", "StartFailed", "free_port", "http_ok", "port_open", "redis_server_bin", "start",
           "start_api", "wait_until"]


def start_api(log_path: Path, env: dict[str, str], port: int | None = None, ready_path: str = "/healthz",
              timeout: float = 120, what: str = "mlstack api", args: tuple[str, ...] = ()) -> tuple[Proc, str]:
    """A real ``mlstack api`` process on ``port`` (default: a free one); returns it and its base URL."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "mlstack", "api", "--host", "127.0.0.1", "--port", str(port), *args],
                 log_path, ready=lambda: http_ok(f"{base}{ready_path}"), timeout=timeout, env=env, what=what)
    return proc, base
