"""What the local stack (``./init.sh --local``) exposes to the network and to other users of the machine (issue 13,
items 2 and 3), checked as an attacker on the same network would: every socket any process of the stack listens
on (Redis, MLflow, Ray and its workers, the API, the dashboard, a model server) is on the loopback interface,
except the Ray servers that this Ray version binds to every interface whatever ``--node-ip-address`` says; those
must refuse a caller without the Ray token (no job submission, no driver connection). No command line on the
machine carries a secret (``/proc/PID/cmdline`` is world-readable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.utils.local import read_credentials, run_init
from tests.utils.procs import BIN, free_port, wait_until

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _listening(procs: list[psutil.Process]) -> list[tuple[str, int, str, int]]:
    """(address, port, process name, pid) of every TCP socket these processes listen on."""
    pids = {p.pid: p for p in procs}
    out = []
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            with_name = pids[c.pid]
            try:
                name = with_name.name()
            except psutil.NoSuchProcess:
                continue
            out.append((c.laddr.ip, c.laddr.port, name, c.pid))
    return out


def _external_ip() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET" and not a.address.startswith("127."):
                return a.address
    return None


def test_local_stack_listens_on_loopback_and_ray_wants_its_token(tmp_path):
    ports = {name: free_port() for name in ("API", "DASHBOARD", "MLFLOW", "REDIS", "RAY", "RAY_CLIENT",
                                            "RAY_DASHBOARD", "RAY_AGENT")}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLSTACK_AUTH", "RAY_AUTH"))},
           "MLSTACK_OUTPUTS": str(tmp_path / "out"), "MLSTACK_VENV": str(BIN.parent),
           "MLSTACK_RAY_MIN_WORKER_PORT": "28000", "MLSTACK_RAY_MAX_WORKER_PORT": "28999",
           "MLSTACK_RAY_TEMP_DIR": f"/tmp/mlx-{ports['RAY']}",
           **{f"MLSTACK_{k}_PORT": str(v) for k, v in ports.items()}}
    out, state = tmp_path / "out", tmp_path / "out" / "local"
    api = f"http://127.0.0.1:{ports['API']}"
    try:
        up = run_init(["--local"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        creds = read_credentials(out)
        tokens = json.loads((state / "auth-tokens.json").read_text())
        deployer = next(t["token"] for t in tokens if t["role"] == "deployer")
        ray_token = (state / "ray-token").read_text().strip()
        secrets = [creds["redis password"], ray_token, *(t["token"] for t in tokens)]
        assert oct((state / "ray-token").stat().st_mode & 0o777) == "0o600"
        assert oct((state / "redis" / "auth.conf").stat().st_mode & 0o777) == "0o600"

        # exercise everything: a training job on Ray (the API connects with the token), then a model server
        with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {deployer}"}, timeout=300) as c:
            r = c.post("/trigger_training", json={"hyperparameters": {"n_estimators": 5}})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]

            def done():
                job = c.get(f"/training/{job_id}").json()
                return job if job["status"] in ("succeeded", "failed") else None

            job = wait_until(done, 400, interval=0.5, what="the training job")
            assert job["status"] == "succeeded", job
            r = c.post("/inference", json={"input_data": [5.1, 3.5, 1.4, 0.2], "sla_seconds": 180})
            assert r.status_code == 200, r.text

        roots = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
        roots |= {f"server:{p.stem}": int(p.read_text()) for p in (state / "api" / "servers").glob("*.pid")}
        assert {"redis", "mlflow", "ray", "api"} <= set(roots), roots
        assert any(k.startswith("server:") for k in roots), roots
        ray_procs = _tree(roots["ray"])
        ray_pids = {p.pid for p in ray_procs}
        others = [p for name, pid in roots.items() if name != "ray" for p in _tree(pid) if p.pid not in ray_pids]
        listening_other = _listening(others)
        listening_ray = _listening(ray_procs)
        print("not Ray:", sorted(listening_other))
        print("Ray:", sorted(listening_ray))
        assert listening_other and listening_ray
        # the API is a Ray driver: its core worker's gRPC server (a port of the Ray worker range) is Ray's too
        ray_range = range(28000, 29000)
        assert [s for s in listening_other if s[0] not in LOOPBACK and s[1] not in ray_range] == []
        exposed = sorted({port for ip, port, _, _ in listening_ray + listening_other if ip not in LOOPBACK})
        print("Ray ports on more than the loopback:", exposed)

        # an attacker on the network: no Ray port lets them submit a job without the token ...
        host = _external_ip() or "127.0.0.1"
        marker = tmp_path / "pwned"
        for port in exposed:
            try:
                r = httpx.post(f"http://{host}:{port}/api/job_agent/jobs/", timeout=5,
                               json={"entrypoint": f"touch {marker}", "submission_id": f"x{port}"})
                assert not r.is_success, (port, r.status_code, r.text[:200])
            except httpx.HTTPError:
                pass  # not HTTP (gRPC) or closed: nothing submitted either
        # ... nor connect a driver to the GCS
        probe = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='{host}:{ports['RAY']}', log_to_driver=False); "
                                   "print('CONNECTED', ray.get(ray.remote(lambda: 1).remote()))"],
            env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "RAY_AUTH_MODE": "disabled"},
            capture_output=True, text=True, timeout=120)
        assert "CONNECTED" not in probe.stdout, probe.stdout
        assert not marker.exists()

        # no secret on any command line of the machine
        leaks = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            line = " ".join(p.info["cmdline"] or [])
            if any(s in line for s in secrets):
                leaks.append((p.info["pid"], line[:80]))
        assert leaks == []
    finally:
        down = run_init(["--local", "--down"], env, timeout=180)
        assert down.returncode == 0, down.stdout + down.stderr
        subprocess.run(["rm", "-rf", f"/tmp/mlx-{ports['RAY']}"], check=False)


def test_ray_token_and_redis_config_are_in_the_dry_run(tmp_path):
    env = {**os.environ, "MLSTACK_OUTPUTS": str(tmp_path / "out"), "MLSTACK_VENV": str(BIN.parent)}
    r = run_init(["--local", "--dry-run"], env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "RAY_AUTH_MODE=token" in r.stdout or "--dashboard-host 127.0.0.1" in r.stdout
    assert "--requirepass" not in r.stdout
    assert not Path(tmp_path / "out").exists() or not any(Path(tmp_path / "out").rglob("ray-token"))
