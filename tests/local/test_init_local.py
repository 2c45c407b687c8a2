"""``./init.sh --local`` brings up the real local stack with bearer tokens (admin, deployer, viewer); a second run
is a no-op; a restart of the API reuses the same tokens; ``--down`` frees everything."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import httpx

from tests.utils.local import read_credentials, run_init
from tests.utils.procs import BIN, free_port, port_open, wait_until


def _env_file(state: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (state / "env").read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_local_up_is_idempotent_and_down_frees_ports(tmp_path):
    ports = {name: free_port() for name in ("API", "DASHBOARD", "MLFLOW", "REDIS", "RAY", "RAY_DASHBOARD", "RAY_AGENT")}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLSTACK_AUTH")},
           "MLSTACK_OUTPUTS": str(tmp_path / "out"), "MLSTACK_VENV": str(BIN.parent),
           "MLSTACK_RAY_MIN_WORKER_PORT": "28000", "MLSTACK_RAY_MAX_WORKER_PORT": "28999",
           **{f"MLSTACK_{k}_PORT": str(v) for k, v in ports.items()}}
    out, state = tmp_path / "out", tmp_path / "out" / "local"
    api = f"http://127.0.0.1:{ports['API']}"
    pids: dict[str, int] = {}
    try:
        up = run_init(["--local"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "[8/8]" in up.stdout
        urls = (out / "urls.txt").read_text()
        assert api in urls
        creds = read_credentials(out)
        password = creds["redis password"]
        assert len(password) >= 32 and password in (state / "env").read_text()
        assert _mode(out / "credentials.txt") == 0o600

        # the tokens: one per role in the file the API reads (mode 600), the same in credentials.txt, the
        # admin's as MLSTACK_TOKEN in the environment file
        tokens_file = state / "auth-tokens.json"
        assert _mode(tokens_file) == 0o600 and _mode(state / "env") == 0o600
        tokens = {t["name"]: t for t in json.loads(tokens_file.read_text())}
        assert {n: t["role"] for n, t in tokens.items()} == {"admin": "admin", "deployer": "deployer",
                                                               "viewer": "viewer"}
        assert len({t["token"] for t in tokens.values()}) == 3
        for name, t in tokens.items():
            assert len(t["token"]) >= 32 and creds[f"{name} token"] == t["token"]
        env_file = _env_file(state)
        assert env_file["MLSTACK_TOKEN"] == tokens["admin"]["token"]
        assert env_file["MLSTACK_AUTH_TOKENS_FILE"] == str(tokens_file)

        ready = httpx.get(f"{api}/readyz", timeout=10).json()
        assert {"redis", "mlflow", "ray"} <= set(ready["checks"])
        assert all(v == "ok" for v in ready["checks"].values()), ready
        assert httpx.get(f"{api}/docs", timeout=10).status_code == 200
        pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
        assert {"redis", "mlflow", "ray", "api"} <= set(pids)

        again = run_init(["--local"], env, timeout=60)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert {p.stem: int(p.read_text()) for p in state.glob("*.pid")} == pids

        # a crashed API: ./init.sh starts it again with the same tokens (the file is reused, not remade) and keeps
        # the crashed process's log as api.log.1 (rotated, not truncated)
        crashed = pids["api"]
        assert f"[{crashed}]" in (state / "api.log").read_text()  # uvicorn's "Started server process [PID]"
        crashed_log = (state / "api.log").read_bytes()
        os.killpg(crashed, signal.SIGKILL)
        wait_until(lambda: _gone(crashed), 60, interval=0.2, what="the API process exited")
        restart = run_init(["--local"], env, timeout=300)
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert (state / "api.log.1").read_bytes() == crashed_log
        assert f"[{crashed}]" not in (state / "api.log").read_text()
        assert not (state / "redis.log.1").exists()  # services that kept running keep their log
        assert {t["name"]: t for t in json.loads(tokens_file.read_text())} == tokens
        assert read_credentials(out) == creds and _env_file(state)["MLSTACK_TOKEN"] == tokens["admin"]["token"]
        pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}

        # the API enforces them: no token or a wrong one is a 401; the open routes stay open
        for path in ("/auth/me", "/deployments"):
            assert httpx.get(f"{api}{path}", timeout=10).status_code == 401, path
        wrong = {"Authorization": "Bearer " + "x" * 43}
        assert httpx.get(f"{api}/auth/me", headers=wrong, timeout=10).status_code == 401
        for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
            assert httpx.get(f"{api}{path}", timeout=10).status_code == 200, path
        admin = {"Authorization": f"Bearer {env_file['MLSTACK_TOKEN']}"}
        me = httpx.get(f"{api}/auth/me", headers=admin, timeout=10)
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "admin" and me.json()["role"] == "admin" and me.json()["authMode"] == "tokens"
        assert httpx.get(f"{api}/deployments", headers=admin, timeout=10).status_code == 200
        viewer = {"Authorization": f"Bearer {creds['viewer token']}"}
        assert httpx.get(f"{api}/auth/me", headers=viewer, timeout=10).json()["role"] == "viewer"
    finally:
        down = run_init(["--local", "--down"], env, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not list(state.glob("*.pid"))
    for pid in pids.values():
        assert _gone(pid), f"pid {pid} still running"
    for name, port in ports.items():
        assert not port_open(port), f"{name} port {port} still open"


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_dry_run_local_touches_nothing(tmp_path):
    env = {**os.environ, "MLSTACK_OUTPUTS": str(tmp_path / "out")}
    r = run_init(["--local", "--dry-run"], env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "mlflow server" in r.stdout and "ray start --head" in r.stdout and "mlstack api" in r.stdout
    assert "auth-tokens.json" in r.stdout and "MLSTACK_TOKEN" in r.stdout
    assert not (tmp_path / "out").exists()
