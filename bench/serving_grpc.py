"""gRPC v2 vs HTTP v2 JSON on one ``mlstack serve --grpc-port`` process, in one run.

The same server answers both: ``POST /v2/models/NAME/infer`` (JSON body, one iris row) and
``inference.GRPCInferenceService/ModelInfer`` (the same row as ``raw_input_contents``, and as typed ``contents``).
Each protocol is driven by two load generators, paired by weight so that the ratio measures the server, not
the client (both run on the same 2 cores as the server):

- C, event loop, ~10 µs of CPU per call: ``wrk`` (HTTP/1.1) against ``h2load`` (nghttp2's HTTP/2 load
  generator; it checks HTTP statuses only, so the server's own count of grpc-status OK answers must grow by
  every call it finished);
- Go: ``vegeta`` (net/http, closed loop: ``-rate=0 -max-workers=N``) against ``ghz`` (grpc-go, the usual gRPC
  benchmark tool; ~50-100 µs of CPU per call, which on 2 cores caps what any server behind it can show).

Same concurrency for all (16 in flight over 16 connections by default; for gRPC also over one connection, as one
gRPC channel multiplexes its calls), interleaved rounds, medians. Each row
shows the server's CPU time per answered call and the load generator's own (read around each run): on a shared
machine the steadier numbers. ``--baseline DIR`` (the ``fastapi/`` directory of another checkout, e.g. a
``git worktree`` of an older commit) runs a second server on that code in the same rounds (its gRPC rows);
``--grpcio`` a third with ``MLSTACK_SERVE_GRPC_SERVER=grpcio`` (the grpc.aio server the own HTTP/2 one replaced).

    go install github.com/bojand/ghz/cmd/ghz@latest          # GOTOOLCHAIN=local works with Go >= 1.21
    go install github.com/tsenart/vegeta/v12@v12.13.0
    apt-get install -y wrk nghttp2-client                     # wrk, h2load
    .venv/bin/python bench/serving_grpc.py [--duration 3] [--rounds 3] [--baseline DIR] [--grpcio]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fastapi"))
import serving as base  # bench/serving.py: wrk runner, model builder, launcher

PROTO = base.ROOT / "fastapi" / "mlstack" / "serving" / "grpc_v2" / "grpc_predict_v2.proto"


def message_file(request: dict, path: Path) -> Path:
    """A ModelInferRequest given as its JSON form, serialized into ``path`` for ``run_ghz``."""
    from google.protobuf import json_format

    from mlstack.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

    path.write_bytes(json_format.ParseDict(request, pb.ModelInferRequest()).SerializeToString())
    return path


def run_ghz(ghz: str, target: str, message: Path, concurrency: int, connections: int,
            duration: float) -> base.WrkResult:
    """ModelInfer from ``ghz``; ``message``: the serialized request (``-B``: no JSON or template work per call)."""
    cmd = [ghz, "--insecure", "--proto", str(PROTO), "--import-paths", str(PROTO.parent),
           "--call", "inference.GRPCInferenceService.ModelInfer", "-B", str(message),
           "-c", str(concurrency), "--connections", str(connections), "-z", f"{max(1, round(duration))}s",
           "-O", "json", target]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ghz failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    r = json.loads(proc.stdout)
    dist = r.get("statusCodeDistribution") or {}
    errors = r.get("errorDistribution") or {}
    # with -z, ghz cancels the calls in flight at the deadline ("transport is closing", "client connection
    # is closing"): about one per worker (a worker may start one more call as the connection closes); everything
    # else is a failure
    cut = sum(n for e, n in errors.items() if "is closing" in e)
    if set(dist) - {"OK", "Unavailable", "Canceled"} or sum(errors.values()) != cut or cut > 2 * concurrency:
        raise RuntimeError(f"ghz: non-OK responses {dist} {errors}")
    lat = {p["percentage"]: p["latency"] / 1e6 for p in r.get("latencyDistribution") or []}
    return base.WrkResult(dist.get("OK", 0) / (r["total"] / 1e9), lat.get(50, 0.0), lat.get(99, 0.0))


def run_vegeta(vegeta: str, t: base.Target, workers: int, duration: float, workdir: Path) -> base.WrkResult:
    """HTTP from ``vegeta`` (Go's net/http client, kept-alive connections), closed loop: ``workers`` requests
    in flight, each sent when the one before it was answered (``-rate=0 -max-workers``): ghz's HTTP twin."""
    body = workdir / "vegeta-body.json"
    body.write_bytes(t.body)
    attack = [vegeta, "attack", "-rate=0", f"-workers={workers}", f"-max-workers={workers}",
              f"-duration={max(1, round(duration))}s", f"-body={body}", "-header=Content-Type: application/json",
              "-timeout=5s"]
    report = subprocess.run(
        [vegeta, "report", "-type=json"], input=subprocess.run(
            attack, input=f"POST {t.url}\n".encode(), capture_output=True, timeout=duration + 60, check=True).stdout,
        capture_output=True, timeout=60, check=True)
    r = json.loads(report.stdout)
    codes = r.get("status_codes") or {}
    if set(codes) != {"200"} or r.get("errors"):
        raise RuntimeError(f"vegeta: non-200 answers {codes} {r.get('errors')}")
    lat = r["latencies"]
    return base.WrkResult(r["requests"] * r["success"] / (r["duration"] / 1e9), lat["50th"] / 1e6, lat["99th"] / 1e6)


def run_h2load(target: str, message: bytes, connections: int, duration: float, workdir: Path,
               metrics_url: str, streams: int = 1) -> base.WrkResult:
    """ModelInfer from ``h2load`` (nghttp2's HTTP/2 load generator, C: ~20 µs of CPU per call where ghz spends
    ~100 on this machine, as wrk does for HTTP). h2load sees HTTP statuses, not grpc-status: the server's own
    count of grpc_infer answers with status 200 must grow by every call h2load finished."""
    body = workdir / "grpc-request.bin"
    body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    before = _grpc_ok(metrics_url)
    cmd = ["h2load", "-c", str(connections), "-m", str(streams), "-t", "1", "-D", str(max(1, round(duration))),
           "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://{target}/inference.GRPCInferenceService/ModelInfer"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    out = proc.stdout
    done = next((ln for ln in out.splitlines() if ln.startswith("requests:")), "")
    finished = next((ln for ln in out.splitlines() if ln.startswith("finished in")), "")
    if proc.returncode != 0 or not done or not finished:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stderr or out}")
    succeeded = int(done.split(" succeeded")[0].rsplit(" ", 1)[1])
    ok = _grpc_ok(metrics_url) - before
    if ok < succeeded:
        raise RuntimeError(f"h2load: {succeeded} calls answered, only {ok} with grpc-status OK")
    rps = float(finished.split(",")[1].split()[0])
    lat = next((ln for ln in out.splitlines() if ln.startswith("time for request:")), "").split()
    # h2load gives min/max/mean/sd, not percentiles: its rows show the mean and the max in the p50/p99 columns
    return base.WrkResult(rps, _ms(lat[5]) if len(lat) > 5 else 0.0, _ms(lat[4]) if len(lat) > 5 else 0.0)


def _ms(v: str) -> float:
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)


def _grpc_ok(metrics_url: str) -> float:
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("mlstack_serve_requests_total{") and 'endpoint="grpc_infer"' in line \
                    and 'status="200"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children so far (all threads)."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children_cpu() -> float:
    """User + system CPU of this process's finished children (the load generators) so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _server_pid(port: int) -> int:
    """The pid listening on 127.0.0.1:``port`` (the bench started it; found through /proc/net/tcp)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1].endswith(f":{port:04X}") and f[3] == "0A":
            inode = f[9]
            break
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                for fd in (d / "fd").iterdir():
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return int(d.name)
    raise RuntimeError(f"no process listens on {port}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="MLflow model dir (default: build an iris RandomForest)")
    p.add_argument("--n-estimators", type=int, default=100)
    p.add_argument("--ghz", default=shutil.which("ghz") or str(Path.home() / "go" / "bin" / "ghz"))
    p.add_argument("--vegeta", default=shutil.which("vegeta") or str(Path.home() / "go" / "bin" / "vegeta"))
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--baseline", help="fastapi/ directory of another checkout: its gRPC rows in the same rounds")
    p.add_argument("--grpcio", action="store_true", help="also the grpc.aio server (MLSTACK_SERVE_GRPC_SERVER=grpcio)")
    args = p.parse_args(argv)
    tools = {"wrk": shutil.which("wrk"), "h2load": shutil.which("h2load"), "ghz": Path(args.ghz).exists(),
             "vegeta": Path(args.vegeta).exists()}
    missing = [name for name, ok in tools.items() if not ok]
    if missing:
        print(f"needs {', '.join(missing)} (see the module's docstring)", file=sys.stderr)
        return 2
    from mlstack.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

    with tempfile.TemporaryDirectory(prefix="mlstack-bench-grpc-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        model = args.model or str(base.build_model(workdir / "model", args.n_estimators))
        env = {"MLSTACK_MODEL_CACHE_DIR": str(workdir / "cache")}
        http_body = json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32",
                                            "data": base.ROW}]}).encode()
        servers: dict[str, tuple[int, int, int]] = {}  # label suffix -> (HTTP port, gRPC port, pid)
        variants = {"": {}}
        if args.baseline:
            variants[", before (--baseline)"] = {"PYTHONPATH": str(Path(args.baseline).resolve())}
        if args.grpcio:
            variants[", grpcio server"] = {"MLSTACK_SERVE_GRPC_SERVER": "grpcio"}
        for i, (suffix, extra) in enumerate(variants.items()):
            port, grpc_port = base.procs.free_port(), base.procs.free_port()
            probe = base.Target("probe", f"http://127.0.0.1:{port}/v2/models/iris/infer", http_body)
            base._launch(base.Context(model, "iris", workdir, {**env, **extra}), stack, f"mlstack-serve-{i}", [
                str(base.BIN / "mlstack"), "serve", "--model", model, "--name", "iris", "--host", "127.0.0.1",
                "--port", str(port), "--grpc-port", str(grpc_port)], probe)
            servers[suffix] = (port, grpc_port, _server_pid(port))
        port, _, pid = servers[""]
        http = base.Target("HTTP v2 JSON", f"http://127.0.0.1:{port}/v2/models/iris/infer", http_body)
        raw = pb.ModelInferRequest(model_name="iris")
        raw.inputs.add(name="X", datatype="FP32", shape=[1, 4])
        raw.raw_input_contents.append(struct.pack("<4f", *base.ROW))
        typed = pb.ModelInferRequest(model_name="iris")
        typed.inputs.add(name="X", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(base.ROW)
        (workdir / "raw.bin").write_bytes(raw.SerializeToString())
        (workdir / "typed.bin").write_bytes(typed.SerializeToString())
        n, d = args.connections, args.duration
        # label -> (the HTTP row it is compared with: same kind of client, server pid, run)
        cases: dict[str, tuple[str, int, Callable[[], base.WrkResult]]] = {
            "HTTP v2 JSON (wrk)": ("HTTP v2 JSON (wrk)", pid, lambda: base.run_wrk(http, n, 2, d, workdir)),
            "HTTP v2 JSON (vegeta)": ("HTTP v2 JSON (vegeta)", pid,
                                      lambda: run_vegeta(args.vegeta, http, n, d, workdir)),
        }
        for suffix, (hport, gport, spid) in servers.items():
            target = f"127.0.0.1:{gport}"
            cases[f"gRPC v2 raw{suffix} (h2load)"] = ("HTTP v2 JSON (wrk)", spid, lambda t=target, h=hport: run_h2load(
                t, raw.SerializeToString(), n, d, workdir, f"http://127.0.0.1:{h}/metrics"))
            for kind in ("raw", "typed"):
                cases[f"gRPC v2 {kind}{suffix} (ghz)"] = ("HTTP v2 JSON (vegeta)", spid, lambda t=target, k=kind:
                                                          run_ghz(args.ghz, t, workdir / f"{k}.bin", n, n, d))
            if not suffix:  # gRPC's own way to have N calls in flight: N streams on one connection (one channel)
                cases[f"gRPC v2 raw (h2load, 1 connection x {n} streams)"] = (
                    "HTTP v2 JSON (wrk)", spid, lambda t=target, h=hport: run_h2load(
                        t, raw.SerializeToString(), 1, d, workdir, f"http://127.0.0.1:{h}/metrics", streams=n))
                cases[f"gRPC v2 raw (ghz, 1 connection x {n} streams)"] = (
                    "HTTP v2 JSON (vegeta)", spid, lambda t=target: run_ghz(args.ghz, t, workdir / "raw.bin", n, 1, d))
        results: dict[str, list[base.WrkResult]] = {}
        cpu: dict[str, list[float]] = {}
        client: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for label, (_, server_pid, run) in cases.items():
                c0, u0 = _cpu_seconds(server_pid), _children_cpu()
                res = run()
                calls = max(res.rps * d, 1)
                cpu.setdefault(label, []).append((_cpu_seconds(server_pid) - c0) * 1e6 / calls)
                client.setdefault(label, []).append((_children_cpu() - u0) * 1e6 / calls)
                results.setdefault(label, []).append(res)
                print(f"round {r + 1}: {label}: {res.rps:,.0f} req/s", file=sys.stderr)
    med = {label: base._median([x.rps for x in rs]) for label, rs in results.items()}
    print(f"\n{args.rounds} interleaved rounds of {d:g}s, {n} in flight over {n} connections; medians\n")
    print("| target (load generator) | req/s | p50 ms (h2load: mean) | p99 ms (h2load: max) | vs HTTP v2 JSON (wrk) "
          "| vs HTTP v2 JSON, same kind of client | server CPU µs/call | client CPU µs/call |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, rs in results.items():
        twin = cases[label][0]
        print(f"| {label} | {med[label]:,.0f} | {base._median([x.p50_ms for x in rs]):.2f} | "
              f"{base._median([x.p99_ms for x in rs]):.2f} | {base._fmt_ratio(med[label], med['HTTP v2 JSON (wrk)'])} "
              f"| {base._fmt_ratio(med[label], med[twin])} | {base._median(cpu[label]):.0f} "
              f"| {base._median(client[label]):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
