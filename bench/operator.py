"""Benchmark: N ModelDeployments on a real control plane; the operator's CPU per create and create -> Ready.

    .venv/bin/python bench/operator.py [--n 200] [--namespaces 4] [--kcm-qps 200]
    .venv/bin/python bench/operator.py --baseline DIR [--rounds 2]   # DIR: another checkout (git worktree add)

``--baseline``: interleaved rounds of DIR's operator (its operator/ package and manifests/operator RBAC) and this
tree's, each on a fresh control plane, in one run; the medians side by side and their ratio.

Starts a real Kubernetes control plane (tests/k8s/controlplane.py: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, fake nodes that make pods Ready), a real `mlflow server` with the model registered, and the
operator (`mlstack operator run`) as its own ServiceAccount. Creates N ModelDeployments spread over namespaces and
reports: operator CPU per create (psutil, operator process only, from the first create until it is idle again),
watch events the operator gets per object (counted on the same streams) and its writes per object (from the API
server's audit log),
create -> Ready p50/p99/max (the time from each POST to the first poll that sees it Ready; polled every 0.2 s),
time until all are Ready, and RSS of the operator and the API server. Time to Ready is bounded by the controllers'
client rate (kube-controller-manager --kube-api-qps, default 20 in Kubernetes; --kcm-qps sets it here).
BENCH_PYSPY=FILE samples the operator with py-spy over the measured window (collapsed stacks; `--top FILE`
summarises them: self and inclusive share per frame; BENCH_PYSPY_ARGS adds py-spy options, e.g. "--native --idle");
BENCH_PROFILE=FILE runs it under cProfile instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.k8s import controlplane  # noqa: E402
from tests.k8s.fixtures import register  # noqa: E402
from tests.utils.procs import BIN, free_port, http_ok, start, wait_until  # noqa: E402

MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def idle(p: psutil.Process, window: float = 1.0, threshold: float = 0.02) -> bool:
    before = cpu(p)
    time.sleep(window)
    return cpu(p) - before < threshold * window


def md(name: str, ns: str) -> dict:
    return {"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"model": {"name": "bench", "version": "1"}, "resources": {"cpu": "100m", "memory": "128Mi"}}}


WATCHED = [("/apis/mlstack.io/v1alpha1/modeldeployments", None),
           ("/apis/apps/v1/deployments", "app.kubernetes.io/managed-by=mlstack-operator"),
           ("/api/v1/services", "app.kubernetes.io/managed-by=mlstack-operator"),
           ("/apis/autoscaling/v2/horizontalpodautoscalers", "app.kubernetes.io/managed-by=mlstack-operator")]


class EventCounter:
    """Counts the watch events of the bench namespaces on the streams the operator watches (same selectors)."""

    def __init__(self, kube: controlplane.Kube) -> None:
        import threading

        self.count = 0
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._watch, args=(kube, path, sel), daemon=True)
                        for path, sel in WATCHED]
        for t in self.threads:
            t.start()

    def _watch(self, kube: controlplane.Kube, path: str, selector: str | None) -> None:
        import urllib.request
        from urllib.parse import urlencode

        rv = kube.request("GET", path, params={"limit": "1"})["metadata"]["resourceVersion"]
        params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "1800"}
        if selector:
            params["labelSelector"] = selector
        req = urllib.request.Request(f"{kube.server}{path}?{urlencode(params)}")
        with urllib.request.urlopen(req, context=kube._context(), timeout=1900) as r:
            for line in r:
                if self.stopped.is_set():
                    return
                ev = json.loads(line)
                if ev["object"].get("metadata", {}).get("namespace", "").startswith("bench-"):
                    with self.lock:
                        self.count += 1

    def stop(self) -> int:
        self.stopped.set()
        return self.count


def count_writes(audit: Path, offset: int) -> int:
    """The operator's write requests (create, patch, update, delete) in the bench namespaces, from the audit log."""
    if not audit.exists():
        return 0
    n = 0
    with open(audit) as f:
        f.seek(offset)
        for line in f:
            e = json.loads(line)
            ns = (e.get("objectRef") or {}).get("namespace", "")
            if e.get("stage") == "ResponseComplete" and ns.startswith("bench-") and \
                    e.get("verb") in ("create", "patch", "update", "delete"):
                n += 1
    return n


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def mlflow_with_model(workdir: Path):
    """A real `mlflow server` (sqlite) with registered model ``bench`` version 1."""
    port = free_port()
    proc = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                  "--backend-store-uri", f"sqlite:///{workdir}/mlflow.db",
                  "--artifacts-destination", str(workdir / "artifacts")],
                 workdir / "mlflow.log", ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"), timeout=180,
                 env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, what="mlflow server")
    uri = f"http://127.0.0.1:{port}"
    register(uri, "bench")
    return proc, uri


def run(n: int, namespaces: int, kcm_qps: int, src: Path = REPO) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="mlstack-bench-"))
    cluster = controlplane.up(workdir / "k8s", kcm_qps=kcm_qps)  # audited: the operator's writes are counted
    mlflow_proc = op = None
    try:
        mlflow_proc, mlflow_uri = mlflow_with_model(workdir)
        cluster.kubectl("apply", "--server-side", "-k", str(src / "manifests" / "operator"))
        kubeconfig = cluster.token_kubeconfig("mlstack-system", "mlstack-operator", workdir / "operator.kubeconfig")
        health = free_port()
        env = {"KUBECONFIG": str(kubeconfig), "MLSTACK_OPERATOR_REGISTRY_URI": mlflow_uri, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([str(src / "operator"), os.environ.get("PYTHONPATH", "")])}
        profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        op = start([sys.executable, *profile, "-m", "mlstack_operator.cli", "run", "--standalone", "--quiet",
                    f"--liveness=http://127.0.0.1:{health}/healthz"], workdir / "operator.log",
                   ready=lambda: http_ok(f"http://127.0.0.1:{health}/healthz"), timeout=90, env=env, cwd=src,
                   what="operator")
        kube = cluster.admin()
        pids = dict(controlplane._read_pids(cluster.dir))
        proc, apiserver = psutil.Process(op.pid), psutil.Process(pids["kube-apiserver"])
        for i in range(namespaces):
            kube.ensure_namespace(f"bench-{i}")
        # warm up (imports, the first registry lookup, connection pools), then wait for quiet
        kube.ensure_namespace("warmup")
        kube.create(MDS.format(ns="warmup"), md("warmup", "warmup"))
        wait_until(lambda: (kube.get(MDS.format(ns="warmup") + "/warmup").get("status") or {}).get("phase") == "Ready",
                   120, what="warm-up Ready")
        wait_until(lambda: idle(proc), 60, interval=0, what="operator idle")

        counter = EventCounter(kube)  # the same watch streams the operator gets: events it handles per object
        audit = cluster.dir / "logs" / "audit.log"
        audit_mark = audit.stat().st_size if audit.exists() else 0
        created: dict[tuple[str, str], float] = {}
        ready: dict[tuple[str, str], float] = {}
        spy = None
        if os.environ.get("BENCH_PYSPY"):  # sample the operator over the measured window (collapsed stacks)
            import subprocess

            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(op.pid),
                                    "--format", "raw", "--rate", "250", "--nonblocking",
                                    *os.environ.get("BENCH_PYSPY_ARGS", "").split(),
                                    "-o", os.environ["BENCH_PYSPY"]], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu0, t0 = cpu(proc), time.monotonic()
        for i in range(n):
            ns = f"bench-{i % namespaces}"
            kube.create(MDS.format(ns=ns), md(f"m{i}", ns))
            created[(ns, f"m{i}")] = time.monotonic()
        t_posted = time.monotonic() - t0

        def all_ready() -> bool:
            now = time.monotonic()
            for o in kube.items("/apis/mlstack.io/v1alpha1/modeldeployments"):
                key = (o["metadata"]["namespace"], o["metadata"]["name"])
                if key in created and key not in ready and (o.get("status") or {}).get("phase") == "Ready":
                    ready[key] = now
            return len(ready) >= n

        wait_until(all_ready, 900, interval=0.2, what="all Ready")
        t_ready = time.monotonic() - t0
        wait_until(lambda: idle(proc), 120, interval=0, what="operator idle")
        cpu_used = cpu(proc) - cpu0
        if spy is not None:
            import signal

            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        events = counter.stop()
        writes = count_writes(audit, audit_mark)
        latencies = [ready[k] - created[k] for k in created]
        return {
            "n": n, "namespaces": namespaces, "kcm_qps": kcm_qps, "posted_s": t_posted, "all_ready_s": t_ready,
            "ready_p50_s": statistics.median(latencies), "ready_p99_s": pct(latencies, 0.99),
            "ready_max_s": max(latencies), "cpu_s": cpu_used, "cpu_ms_per_create": 1000 * cpu_used / n,
            "events_per_object": events / n, "writes_per_object": writes / n,
            "operator_rss_mib": proc.memory_info().rss / (1 << 20),
            "apiserver_rss_mib": apiserver.memory_info().rss / (1 << 20),
        }
    finally:
        if op is not None:
            op.stop()
        if mlflow_proc is not None:
            mlflow_proc.stop()
        controlplane.down(cluster.dir)
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(workdir, ignore_errors=True)


def top(path: str, n: int = 40) -> None:
    """The frames of a py-spy raw profile with the largest self and inclusive share (idle loop frames included)."""
    from collections import Counter

    total, own, incl = 0, Counter(), Counter()
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        frames, k = stack.split(";"), int(count)
        total += k
        own[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    print(f"{total} samples\n-- self")
    for f, k in own.most_common(n // 2):
        print(f"{100 * k / total:5.1f}% {f[:140]}")
    print("-- inclusive")
    for f, k in incl.most_common(n):
        print(f"{100 * k / total:5.1f}% {f[:140]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", metavar="FILE", help="summarise a BENCH_PYSPY profile and exit")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--namespaces", type=int, default=4)
    p.add_argument("--kcm-qps", type=int, default=200, help="kube-controller-manager/scheduler --kube-api-qps")
    p.add_argument("--goal-ms", type=float, default=10.0)
    p.add_argument("--json", action="store_true", help="also print the raw numbers as JSON")
    p.add_argument("--baseline", metavar="DIR", help="another checkout whose operator runs in interleaved rounds")
    p.add_argument("--rounds", type=int, default=2, help="rounds per tree with --baseline")
    args = p.parse_args()
    if args.top:
        top(args.top)
        return 0
    trees = [("this tree", REPO)]
    if args.baseline:
        trees.insert(0, (f"baseline {args.baseline}", Path(args.baseline).resolve()))
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for _ in range(args.rounds if args.baseline else 1):
        for label, src in trees:
            results[label].append(run(args.n, args.namespaces, args.kcm_qps, src))
            print(f"{label}: {results[label][-1]['cpu_ms_per_create']:.1f} ms CPU per create", file=sys.stderr)
    med = {label: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for label, rs in results.items()}
    print("| operator | N (namespaces) | operator CPU / create | create -> Ready p50 / p99 / max | all Ready "
          "| events / object | writes / object | operator RSS | apiserver RSS | kcm qps |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for label, r in med.items():
        print(f"| {label} | {r['n']:.0f} ({r['namespaces']:.0f}) | {r['cpu_ms_per_create']:.1f} ms "
              f"| {r['ready_p50_s']:.1f} / {r['ready_p99_s']:.1f} / {r['ready_max_s']:.1f} s "
              f"| {r['all_ready_s']:.1f} s "
              f"| {r['events_per_object']:.1f} | {r['writes_per_object']:.1f} "
              f"| {r['operator_rss_mib']:.0f} MiB | {r['apiserver_rss_mib']:.0f} MiB | {r['kcm_qps']:.0f} |")
    if args.json:
        print(json.dumps(results))
    r = med["this tree"]
    if args.baseline:
        base = med[trees[0][0]]
        print(f"\nthis tree / baseline, CPU per create: {r['cpu_ms_per_create'] / base['cpu_ms_per_create']:.2f}x "
              f"(medians of {args.rounds} interleaved rounds each: "
              f"{[round(x['cpu_ms_per_create'], 1) for x in results['this tree']]} vs "
              f"{[round(x['cpu_ms_per_create'], 1) for x in results[trees[0][0]]]})")
    ok = r["cpu_ms_per_create"] <= args.goal_ms
    print(f"\ngoal <= {args.goal_ms:.0f} ms operator CPU per create: {'met' if ok else 'NOT met'}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
