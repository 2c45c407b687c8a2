"""The one process supervisor for what mlstack runs on one machine: the local stack (``mlstack up --local``), the
API's model servers and Ray head, the tests' real servers and the benches'.

A process is started in its own session (or not, for children that must die with their parent), logging to a
file; readiness is polled with a deadline and a process that exits first fails with its log's last lines; a stop
is SIGTERM, then SIGKILL of its process group after a deadline. Pid files (``Supervisor``) let another process
(``mlstack down``) stop exactly what this one started. Standard library only: ``./init.sh --local --dry-run``
runs it before any dependency is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StartFailed(RuntimeError):
    """A process exited during startup, or was not ready by its deadline (the message names its log)."""


# --- ports and probes --------------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """A server could listen on ``port`` now. Like uvicorn, with SO_REUSEADDR: the port of a killed server (its
    connections in TIME_WAIT) is free again at once."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def http_ok(url: str, timeout: float = 2) -> bool:
    """``GET url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except Exception:
        return False


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``check`` until it returns a truthy value (returned) or raise TimeoutError after ``timeout`` seconds."""
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


# --- processes ---------------------------------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    """The process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def started_at(pid: int) -> float | None:
    """When process ``pid`` started (unix seconds, to about a clock tick), None when unknown."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def pidfile_process(path: Path) -> int | None:
    """The running process a pid file names, None when there is none: no file, a dead process, or a pid the
    system gave to a later process (it started after the file was written: not the one recorded)."""
    try:
        pid, written = int(path.read_text().strip()), path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    start = started_at(pid)
    return None if start is not None and start > written + 2 else pid


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            try:
                os.killpg(pid, sig)
                return
            except ProcessLookupError:
                pass  # not a group leader (any more): the process alone
        os.kill(pid, sig)


def stop_pid(pid: int, timeout: float = 20.0, term_group: bool = True, kill_group: bool = True) -> None:
    """SIGTERM ``pid`` (its process group with ``term_group``), SIGKILL (its group with ``kill_group``) if it still
    runs after ``timeout``: for a pid read from a file (use ``Proc.stop`` for a Popen of ours). A child of ours is
    reaped; another's is only waited for."""
    stop_pids([pid], timeout, term_group, kill_group)


def stop_pids(pids: Sequence[int], timeout: float = 20.0, term_group: bool = True, kill_group: bool = True) -> None:
    """``stop_pid`` for several processes together: SIGTERM all, wait for all up to one ``timeout``, SIGKILL the
    rest; returns once every one is gone (or 5 s after the SIGKILL)."""

    def running() -> list[int]:
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # a child of ours: reaped (not a zombie that looks alive)
        return [pid for pid in pids if pid_alive(pid)]

    live = running()
    for pid in live:
        _signal(pid, signal.SIGTERM, term_group)
    for sig, limit in ((None, timeout), (signal.SIGKILL, 5.0)):
        if sig is not None:
            for pid in live:
                _signal(pid, sig, kill_group)
        deadline = time.monotonic() + limit
        while (live := running()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not live:
            return


def _poll_ready(ready: Callable[[], object], alive: Callable[[], bool], timeout: float,
                interval: float) -> str | None:
    """Poll ``ready()`` (exceptions count as not ready) until truthy: None; ``"exited"`` as soon as ``alive()``
    is false, ``"timeout"`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            return "exited"
        with contextlib.suppress(Exception):
            if ready():
                return None
        if time.monotonic() > deadline:
            return "timeout"
        time.sleep(interval)


def log_tail(path: Path, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def last_line(path: Path) -> str:
    lines = [ln for ln in log_tail(path, 2000).splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def rotate_log(path: Path, keep: int) -> None:
    """Keep the previous run's log (``path.1`` … ``path.<keep>``, newest first) instead of truncating it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    for i in range(keep, 1, -1):
        older = path.with_name(f"{path.name}.{i - 1}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{i}"))
    if keep > 0:
        path.replace(path.with_name(f"{path.name}.1"))


@dataclass
class Proc:
    """A process we started: its Popen and its log."""

    popen: subprocess.Popen
    log_path: Path
    what: str = ""
    session: bool = True  # in its own session: stop() signals its whole group
    # the loop of an exit watcher that has not fired (``watch_exit``)
    _watcher: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        watcher = self._watcher  # a loop that no longer runs sees no exit: then poll
        return (watcher is not None and watcher.is_running()) or self.popen.poll() is None

    def watch_exit(self) -> None:
        """Learn of the process's exit from the running event loop (a pidfd becomes readable when it ends), so
        that ``alive()`` makes no system call per check: a hot path asks it per request. Where pidfds do not
        exist (not Linux), ``alive()`` goes on polling. Its exit is seen when the loop next runs its callbacks,
        as a poll would see it on the next check; the process is reaped then."""
        try:
            fd = os.pidfd_open(self.popen.pid)
        except (AttributeError, OSError):
            return
        loop = asyncio.get_running_loop()

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._watcher = None
            self.popen.poll()

        loop.add_reader(fd, exited)
        self._watcher = loop

    def log_tail(self, n: int = 4000) -> str:
        return log_tail(self.log_path, n)

    def exited(self) -> StartFailed:
        return StartFailed(f"{self.what} exited with {self.popen.returncode} during startup (log: {self.log_path}):"
                           f"\n{self.log_tail()}")

    def wait_ready(self, ready: Callable[[], object], timeout: float, interval: float = 0.1) -> None:
        """Poll ``ready()`` (exceptions count as not ready) until truthy; StartFailed when the process exits first
        or after ``timeout`` seconds."""
        failed = _poll_ready(ready, self.alive, timeout, interval)
        if failed == "exited":
            raise self.exited()
        if failed == "timeout":
            raise StartFailed(f"{self.what} not ready within {timeout:.0f}s (log: {self.log_path}):\n"
                              f"{self.log_tail()}")

    async def wait_ready_async(self, ready: Callable[[], Awaitable[object]], timeout: float) -> None:
        """``wait_ready`` for an event loop: ``ready`` is a coroutine function, polled with a growing interval."""
        deadline, delay = time.monotonic() + timeout, 0.05
        while True:
            if not self.alive():
                raise StartFailed(f"{self.what} exited ({self.popen.returncode}): {last_line(self.log_path)} "
                                  f"(log: {self.log_path})")
            with contextlib.suppress(Exception):
                if await ready():
                    return
            if time.monotonic() > deadline:
                raise StartFailed(f"{self.what} not ready within {timeout:.0f}s (log: {self.log_path})")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def wait_exit(self, interval: float = 0.2) -> int:
        """Wait (on an event loop) until the process exits; its return code."""
        while (code := self.popen.poll()) is None:
            await asyncio.sleep(interval)
        return code

    def stop(self, timeout: float = 15, term_group: bool | None = None) -> None:
        """SIGTERM (the group of a process in its own session), SIGKILL after ``timeout``; reaped."""
        if self.popen.poll() is not None:
            return
        _signal(self.pid, signal.SIGTERM, self.session if term_group is None else term_group)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal(self.pid, signal.SIGKILL, self.session)
            self.popen.wait(5)

    def kill(self) -> None:
        """SIGKILL (its whole group in its own session) at once: a crash, no draining."""
        _signal(self.pid, signal.SIGKILL, self.session)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | str | None = None,
          session: bool = True, append: bool = False, preexec_fn: Callable[[], None] | None = None,
          what: str | None = None) -> Proc:
    """Start ``cmd`` (its own session unless ``session=False``), stdin from /dev/null, stdout and stderr to
    ``log_path``; ``env`` is the whole environment (default: ours)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab" if append else "wb") as fh:  # the child keeps its own descriptor
        popen = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=cwd, start_new_session=session, close_fds=True, preexec_fn=preexec_fn)
    return Proc(popen, log_path, what or Path(cmd[0]).name, session)


def start(cmd: Sequence[str], log_path: Path, ready: Callable[[], object], timeout: float = 60,
          env: dict[str, str] | None = None, cwd: Path | str | None = None, what: str | None = None) -> Proc:
    """Start ``cmd`` in its own session with ``env`` added to ours; return it once ``ready()``, else stop it and
    raise StartFailed."""
    proc = spawn(cmd, log_path, env={**os.environ, **(env or {})}, cwd=cwd, what=what)
    try:
        proc.wait_ready(ready, timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


# --- pid files ---------------------------------------------------------------------------------------------------

@dataclass
class Supervisor:
    """Long-lived services under one state directory: ``NAME.pid`` and ``NAME.log`` (the previous logs rotated to
    ``NAME.log.1`` …), so that a later process can see what runs and stop it (``stop_pidfile``)."""

    state: Path
    log_keep: int = 5
    procs: dict[str, Proc] = field(default_factory=dict)

    def pid_path(self, name: str) -> Path:
        return self.state / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.state / f"{name}.log"

    def pid(self, name: str) -> int | None:
        try:
            return int(self.pid_path(name).read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self, name: str) -> bool:
        return pidfile_process(self.pid_path(name)) is not None

    def spawn(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None,
              cwd: Path | str | None = None) -> Proc:
        """Start ``cmd`` as service ``name`` in its own session (``env``: the whole environment)."""
        self.state.mkdir(parents=True, exist_ok=True)
        rotate_log(self.log_path(name), self.log_keep)
        proc = spawn(cmd, self.log_path(name), env=env, cwd=cwd, what=name)
        self.pid_path(name).write_text(f"{proc.pid}\n")
        self.procs[name] = proc
        return proc

    def wait_ready(self, name: str, ready: Callable[[], object], timeout: float) -> None:
        """Poll ``ready()`` until truthy; StartFailed (with the log's last lines) when ``name`` is not running any
        more (its pid file removed) or after ``timeout``."""
        failed = _poll_ready(ready, lambda: self.alive(name), timeout, 0.2)
        if failed == "exited":
            self.pid_path(name).unlink(missing_ok=True)  # nothing half-started stays recorded
            raise StartFailed(f"{name} exited during startup (log: {self.log_path(name)}):\n"
                              f"{log_tail(self.log_path(name), 2000)}")
        if failed == "timeout":
            raise StartFailed(f"{name} not ready after {timeout:.0f}s (log: {self.log_path(name)}):\n"
                              f"{log_tail(self.log_path(name), 2000)}")


def stop_pidfile(path: Path, timeout: float = 20.0, term_group: bool = True, kill_group: bool | None = None) -> bool:
    """Stop the process a pid file names (SIGTERM, to its group with ``term_group``; SIGKILL after ``timeout``, to
    its group with ``kill_group``, by default as ``term_group``) and remove the file; whether there was a pid file.
    A pid now held by a later process is left alone."""
    if not path.exists():
        return False
    if (pid := pidfile_process(path)) is not None:
        stop_pid(pid, timeout, term_group=term_group, kill_group=term_group if kill_group is None else kill_group)
    path.unlink(missing_ok=True)
    return True
