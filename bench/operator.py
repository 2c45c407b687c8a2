"""Benchmark: N ModelDeployments against the emulated API server; the operator's CPU per create.

    .venv/bin/python bench/operator.py [--n 200] [--quiet]

The emulator (tests/operator/emulator.py, which also answers the MLflow registry lookups) and
the operator (`python -m mlstack_operator.cli run --standalone`) run as separate processes;
only the operator process is measured (psutil cpu_times before and after). Reports operator CPU
per create, the time until every child exists, the time until every status is written, and RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.utils.procs import free_port, http_ok, start, wait_until  # noqa: E402

MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def idle(p: psutil.Process, window: float = 1.0, threshold: float = 0.02) -> bool:
    before = cpu(p)
    time.sleep(window)
    return cpu(p) - before < threshold * window


def run(n: int, namespaces: int, quiet: bool) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="mlstack-bench-"))
    port, health = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    emu = start([sys.executable, "-m", "tests.operator.emulator", "--port", str(port), "--fake-mlflow"],
                workdir / "emulator.log", ready=lambda: http_ok(url + "/version"), timeout=60, cwd=REPO)
    env = {"MLSTACK_OPERATOR_KUBE_SERVER": url, "MLSTACK_OPERATOR_KUBE_INSECURE": "true",
           "MLSTACK_OPERATOR_REGISTRY_URI": url, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")])}
    profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
    cmd = [sys.executable, *profile, "-m", "mlstack_operator.cli", "run", "--standalone",
           f"--liveness=http://127.0.0.1:{health}/healthz"] + (["--quiet"] if quiet else [])
    op = start(cmd, workdir / "operator.log", ready=lambda: http_ok(f"http://127.0.0.1:{health}/healthz"),
               timeout=90, env=env, cwd=REPO, what="operator")
    try:
        proc, emu_proc = psutil.Process(op.pid), psutil.Process(emu.pid)
        http = httpx.Client(base_url=url, timeout=30)
        # Warm up (imports, first MLflow lookup, connection pools), then wait for quiet.
        http.post(MDS.format(ns="warmup"), json=md("warmup", "warmup")).raise_for_status()
        wait_until(lambda: (http.get(MDS.format(ns="warmup") + "/warmup").json().get("status") or {}).get("phase"),
                   60, what="warm-up reconciled")
        wait_until(lambda: idle(proc), 60, interval=0, what="operator idle")

        cpu0, emu0, t0 = cpu(proc), cpu(emu_proc), time.monotonic()
        for i in range(n):
            ns = f"bench-{i % namespaces}"
            http.post(MDS.format(ns=ns), json=md(f"m{i}", ns)).raise_for_status()
        t_posted = time.monotonic() - t0

        def count(path: str) -> int:
            items = http.get(path, params={"labelSelector": "app.kubernetes.io/managed-by=mlstack-operator"}).json()
            return sum(1 for o in items["items"] if o["metadata"]["namespace"].startswith("bench-"))

        wait_until(lambda: count("/apis/apps/v1/deployments") >= n and count("/api/v1/services") >= n, 600,
                   interval=0.2, what="all children")
        t_children = time.monotonic() - t0

        def all_status() -> bool:
            items = http.get("/apis/mlstack.io/v1alpha1/modeldeployments").json()["items"]
            return sum(1 for o in items if (o.get("status") or {}).get("phase") == "Deploying") >= n

        wait_until(all_status, 600, interval=0.2, what="all statuses")
        t_status = time.monotonic() - t0
        wait_until(lambda: idle(proc), 120, interval=0, what="operator idle")
        cpu_used = cpu(proc) - cpu0
        return {
            "n": n, "posted_s": t_posted, "children_s": t_children, "status_s": t_status,
            "cpu_s": cpu_used, "cpu_ms_per_create": 1000 * cpu_used / n,
            "emulator_cpu_s": cpu(emu_proc) - emu0,
            "rss_mib": proc.memory_info().rss / (1 << 20),
        }
    finally:
        op.stop()
        emu.stop()
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(workdir, ignore_errors=True)


def md(name: str, ns: str) -> dict:
    return {"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"model": {"name": "bench", "version": "1"}, "resources": {"cpu": "100m", "memory": "128Mi"}}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--namespaces", type=int, default=4)
    p.add_argument("--quiet", action="store_true", help="run kopf with --quiet (no per-handler INFO logs)")
    p.add_argument("--goal-ms", type=float, default=10.0)
    args = p.parse_args()
    r = run(args.n, args.namespaces, args.quiet)
    print(f"| N | operator CPU / create | operator CPU total | all children exist | all statuses written "
          f"| operator RSS | emulator CPU |\n|---|---|---|---|---|---|---|\n"
          f"| {r['n']} | {r['cpu_ms_per_create']:.1f} ms | {r['cpu_s']:.2f} s | {r['children_s']:.1f} s "
          f"| {r['status_s']:.1f} s | {r['rss_mib']:.0f} MiB | {r['emulator_cpu_s']:.1f} s |")
    ok = r["cpu_ms_per_create"] <= args.goal_ms
    print(f"\ngoal <= {args.goal_ms:.0f} ms operator CPU per create: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
