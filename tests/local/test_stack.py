"""``mlstack up --local`` / ``mlstack down`` failing clearly (the whole stack's up, idempotence and down are in
test_init_local.py, through ``./init.sh --local``, which calls them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.utils.local import ROOT, run_init
from tests.utils.procs import BIN, free_port


def _mlstack(args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "mlstack", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _env(tmp_path: Path, **extra) -> dict[str, str]:
    ports = {f"MLSTACK_{n}_PORT": str(free_port()) for n in ("API", "DASHBOARD", "MLFLOW", "REDIS", "RAY",
                                                            "RAY_CLIENT", "RAY_DASHBOARD", "RAY_AGENT")}
    return {**os.environ, "MLSTACK_OUTPUTS": str(tmp_path / "out"), "MLSTACK_VENV": str(BIN.parent), **ports, **extra}


def test_up_needs_local_and_down_with_nothing_running(tmp_path):
    r = _mlstack(["up"], _env(tmp_path))
    assert r.returncode == 2 and "mlstack up --local" in r.stderr and "./init.sh" in r.stderr
    r = _mlstack(["down"], _env(tmp_path))
    assert r.returncode == 0 and "nothing to stop" in r.stdout
    assert not (tmp_path / "out").exists()


def test_a_port_held_by_another_process_is_refused_by_name(tmp_path):
    env = _env(tmp_path)
    with socket.socket() as held:
        held.bind(("127.0.0.1", int(env["MLSTACK_REDIS_PORT"])))
        held.listen()
        r = _mlstack(["up", "--local"], env)
    assert r.returncode == 1
    assert f"error: port {env['MLSTACK_REDIS_PORT']} for redis is in use by another process (set " \
           "MLSTACK_REDIS_PORT to move it)" in r.stderr
    assert "[3/8] Redis" in r.stdout
    assert not list((tmp_path / "out" / "local").glob("*.pid"))


def test_a_service_exiting_at_start_fails_with_its_log_and_leaves_no_pid_file(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "redis-server").write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR: bad directive' >&2\nexit 1\n")
    (fake / "redis-server").chmod(0o755)
    env = _env(tmp_path, PATH=f"{fake}:{os.environ['PATH']}")
    r = _mlstack(["up", "--local"], env)
    assert r.returncode == 1, r.stdout + r.stderr
    state = tmp_path / "out" / "local"
    assert f"error: redis exited during startup (log: {state / 'redis.log'})" in r.stderr
    assert "FATAL CONFIG FILE ERROR: bad directive" in r.stderr
    assert not list(state.glob("*.pid"))
    assert (state / "redis" / "auth.conf").stat().st_mode & 0o077 == 0  # the password file: owner only
    assert (state / "redis.password").read_text().strip() not in r.stdout + r.stderr


def test_dry_run_before_the_environment_exists_runs_on_the_standard_library(tmp_path):
    """./init.sh --local --dry-run with no virtual environment yet: the stack's code runs from the source tree on
    a bare python3 (its step 1 would make the environment) and prints every command, touching nothing."""
    env = {**os.environ, "MLSTACK_OUTPUTS": str(tmp_path / "out"), "MLSTACK_VENV": str(tmp_path / "venv"),
           "PATH": f"{Path(sys.base_prefix) / 'bin'}:/usr/bin:/bin"}
    r = run_init(["--local", "--dry-run"], env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("+ ") and "-m venv" in ln and str(tmp_path / "venv") in ln for ln in lines)
    assert any("pip install -q -e" in ln and f"{ROOT}[api]" in ln for ln in lines)
    steps = [ln for ln in lines if ln.startswith("[")]
    assert [s.split("]")[0] + "]" for s in steps] == [f"[{i}/8]" for i in range(1, 9)]
    assert "mlflow server" in r.stdout and "ray start --head" in r.stdout and "mlstack api" in r.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "venv").exists()
    # without any site-packages at all (-S), from the source tree: the same commands
    bare = subprocess.run([sys.executable, "-S", "-m", "mlstack", "up", "--local", "--dry-run"],
                          env={**env, "PYTHONPATH": str(ROOT / "fastapi")}, capture_output=True, text=True,
                          timeout=60)
    assert bare.returncode == 0, bare.stderr
    assert [ln for ln in bare.stdout.splitlines() if "-m venv" not in ln] == \
           [ln for ln in lines if "-m venv" not in ln]
