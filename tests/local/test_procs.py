"""The process supervisor (``mlstack.local.procs``) with real processes: startup failures name the log, stops
escalate to SIGKILL of the whole group, pid files let another process stop what this one started."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from mlstack.local import procs
from tests.utils.procs import wait_until

PY = sys.executable
# a process that ignores SIGTERM and starts a child (same group) that ignores it too; prints both pids
STUBBORN = ("import os, signal, subprocess, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "c = subprocess.Popen([sys.executable, '-c', 'import signal; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.pause()']); "
            "print(os.getpid(), c.pid, flush=True); signal.pause()")


def _pids(log) -> list[int]:
    text = log.read_text().split()
    return [int(t) for t in text[:2]] if len(text) >= 2 else []


def test_a_process_exiting_during_startup_fails_with_its_log(tmp_path):
    log = tmp_path / "boom.log"
    with pytest.raises(procs.StartFailed) as e:
        procs.start([PY, "-c", "print('cannot bind: address in use'); raise SystemExit(3)"], log,
                    ready=lambda: False, timeout=30, what="boom")
    assert "boom exited with 3" in str(e.value) and "cannot bind: address in use" in str(e.value)
    assert str(log) in str(e.value)


def test_not_ready_by_the_deadline_is_stopped(tmp_path):
    marker = f"slow-{time.monotonic_ns()}"
    t0 = time.monotonic()
    with pytest.raises(procs.StartFailed, match="slow not ready within 1s"):
        procs.start([PY, "-c", f"import signal; print('{marker}', flush=True); signal.pause()"], tmp_path / "slow.log",
                    ready=lambda: False, timeout=1, what="slow")
    assert time.monotonic() - t0 < 20
    assert not [p for p in _all_pids() if marker in _cmdline(p)]  # stopped, not left behind


def test_stop_escalates_to_sigkill_of_the_whole_group(tmp_path):
    log = tmp_path / "stubborn.log"
    proc = procs.start([PY, "-c", STUBBORN], log, ready=lambda: len(_pids(log)) == 2, timeout=30)
    parent, child = _pids(log)
    t0 = time.monotonic()
    proc.stop(timeout=1)
    assert 1 <= time.monotonic() - t0 < 10
    assert proc.popen.returncode == -9
    wait_until(lambda: not procs.pid_alive(child), 10, what="the child killed with its group")
    assert not procs.pid_alive(parent)


def test_pid_files_let_another_process_stop_a_service(tmp_path):
    sup = procs.Supervisor(tmp_path / "state", log_keep=2)
    first = sup.spawn("svc", [PY, "-c", "print('first run', flush=True); import signal; signal.pause()"])
    sup.wait_ready("svc", lambda: "first run" in sup.log_path("svc").read_text(), 30)
    assert sup.pid("svc") == first.pid and sup.alive("svc")
    # another process (as `mlstack down` is) stops it by its pid file: SIGTERM to its group, the file removed
    out = subprocess.run([PY, "-c", "import sys; from pathlib import Path; from mlstack.local.procs import "
                          "stop_pidfile; print(stop_pidfile(Path(sys.argv[1]), timeout=10))",
                          str(sup.pid_path("svc"))], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
    first.popen.wait(10)
    assert not sup.pid_path("svc").exists() and not sup.alive("svc")
    # a second start keeps the first run's log as svc.log.1
    sup.spawn("svc", [PY, "-c", "print('second run', flush=True)"])
    wait_until(lambda: not sup.procs["svc"].alive(), 30, what="second run done")
    assert "first run" in (tmp_path / "state" / "svc.log.1").read_text()
    assert "second run" in sup.log_path("svc").read_text()
    # a pid file whose process is gone (or a zombie not yet reaped) is not "running"
    assert not sup.alive("svc")
    assert procs.stop_pidfile(sup.pid_path("svc")) and not sup.pid_path("svc").exists()
    assert not procs.stop_pidfile(sup.pid_path("svc"))


def test_a_zombie_is_not_alive(tmp_path):
    p = subprocess.Popen([PY, "-c", "pass"])
    wait_until(lambda: _state(p.pid) == "Z", 30, what="the child exited, not reaped")
    assert not procs.pid_alive(p.pid)
    p.wait()


def test_async_readiness_reports_the_last_line_of_a_crash(tmp_path):
    proc = procs.spawn([PY, "-c", "print('loading model'); print('ValueError: bad model', flush=True); "
                        "raise SystemExit(1)"], tmp_path / "srv.log", session=False, what="model server for m v1")

    async def ready() -> bool:
        return False

    with pytest.raises(procs.StartFailed) as e:
        asyncio.run(proc.wait_ready_async(ready, 30))
    assert str(e.value).startswith("model server for m v1 exited (1): ValueError: bad model (log: ")


def test_a_watched_process_is_alive_without_a_poll_until_it_exits(tmp_path):
    """``watch_exit``: the loop learns of the exit (pidfd) and reaps the process; no ``waitpid`` per ``alive()``."""
    proc = procs.spawn([PY, "-c", "import signal; signal.pause()"], tmp_path / "w.log", session=False, what="w")
    polls = []
    real_poll = proc.popen.poll

    def counted_poll():
        polls.append(1)
        return real_poll()

    async def watch_then_kill() -> None:
        proc.watch_exit()
        proc.popen.poll = counted_poll
        assert all(proc.alive() for _ in range(100)) and not polls
        os.kill(proc.pid, 9)
        deadline = time.monotonic() + 30
        while proc.alive():
            assert time.monotonic() < deadline, "the exit was not seen within 30 s"
            await asyncio.sleep(0.01)

    try:
        asyncio.run(watch_then_kill())
        assert proc.popen.returncode == -9 and _state(proc.pid) == ""  # reaped, not a zombie
        assert not proc.alive()  # with the loop gone it polls again
    finally:
        proc.stop(5)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_pid_file_whose_pid_a_later_process_got_is_not_that_process(tmp_path):
    """After a crash and a reboot-free while, the pid in a stale file can belong to another process: it is not
    "running" as the service, and stopping the service leaves it alone."""
    other = subprocess.Popen([PY, "-c", "import signal; signal.pause()"], start_new_session=True)
    try:
        sup = procs.Supervisor(tmp_path / "state")
        sup.state.mkdir()
        stale = sup.pid_path("redis")
        stale.write_text(f"{other.pid}\n")
        assert sup.alive("redis")  # written after the process started: it is the one recorded
        old = time.time() - 3600
        os.utime(stale, (old, old))  # written an hour before that process started: another process's pid now
        assert not sup.alive("redis")
        assert procs.stop_pidfile(stale, timeout=5) and not stale.exists()
        assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait()
