"""``./init.sh --local`` brings up the real local stack; a second run is a no-op; ``--down`` frees everything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.utils.procs import BIN, free_port, port_open

ROOT = Path(__file__).resolve().parents[1]


def _run(args, env, timeout=600):
    return subprocess.run([str(ROOT / "init.sh"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_local_up_is_idempotent_and_down_frees_ports(tmp_path):
    ports = {name: free_port() for name in ("API", "DASHBOARD", "MLFLOW", "REDIS", "RAY")}
    env = {**os.environ, "MLSTACK_OUTPUTS": str(tmp_path / "out"), "MLSTACK_VENV": str(BIN.parent),
           "MLSTACK_RAY_MIN_WORKER_PORT": "28000", "MLSTACK_RAY_MAX_WORKER_PORT": "28999",
           **{f"MLSTACK_{k}_PORT": str(v) for k, v in ports.items()}}
    state = tmp_path / "out" / "local"
    try:
        up = _run(["--local"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "[8/8]" in up.stdout
        urls = (tmp_path / "out" / "urls.txt").read_text()
        assert f"http://127.0.0.1:{ports['API']}" in urls
        creds = (tmp_path / "out" / "credentials.txt").read_text()
        password = creds.split()[2]
        assert len(password) >= 32 and password in (state / "env").read_text()
        ready = httpx.get(f"http://127.0.0.1:{ports['API']}/readyz", timeout=10).json()
        assert {"redis", "mlflow", "ray"} <= set(ready["checks"])
        assert all(v == "ok" for v in ready["checks"].values()), ready
        assert httpx.get(f"http://127.0.0.1:{ports['API']}/docs", timeout=10).status_code == 200
        pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
        assert {"redis", "mlflow", "ray", "api"} <= set(pids)

        again = _run(["--local"], env, timeout=60)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert {p.stem: int(p.read_text()) for p in state.glob("*.pid")} == pids
    finally:
        down = _run(["--local", "--down"], env, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not list(state.glob("*.pid"))
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), f"pid {pid} still running"
    for name, port in ports.items():
        assert not port_open(port), f"{name} port {port} still open"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_dry_run_local_touches_nothing(tmp_path):
    env = {**os.environ, "MLSTACK_OUTPUTS": str(tmp_path / "out")}
    r = _run(["--local", "--dry-run"], env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "mlflow server" in r.stdout and "ray start --head" in r.stdout and "mlstack api" in r.stdout
    assert not (tmp_path / "out").exists()
