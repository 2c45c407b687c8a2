"""gRPC v2 vs HTTP v2 JSON on one ``mlstack serve --grpc-port`` process, in one run.

The same server answers both: ``POST /v2/models/NAME/infer`` (JSON body, one iris row) under ``wrk`` and
``inference.GRPCInferenceService/ModelInfer`` (the same row as ``raw_input_contents``, and as typed
``contents``) under ``ghz`` (https://ghz.sh; not Python, which would measure itself). Same concurrency
for both (16 in flight over 16 connections by default), interleaved rounds, medians. A second server with
``MLSTACK_SERVE_GRPC_SERVER=grpcio`` (grpc.aio.server instead of the loop's own HTTP/2 server) is measured in
the same rounds, and each server's CPU time per answered call is shown (stable on a shared machine, where
req/s is not).

    go install github.com/bojand/ghz/cmd/ghz@latest    # GOTOOLCHAIN=local works with Go >= 1.21
    apt-get install -y nghttp2-client                   # h2load: a C load generator, as light as wrk
    .venv/bin/python bench/serving_grpc.py [--ghz PATH] [--duration 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fastapi"))
import serving as base  # bench/serving.py: wrk runner, model builder, launcher

PROTO = base.ROOT / "fastapi" / "mlstack" / "serving" / "grpc_v2" / "grpc_predict_v2.proto"


def run_ghz(ghz: str, target: str, data: dict, concurrency: int, connections: int, duration: float) -> base.WrkResult:
    cmd = [ghz, "--insecure", "--proto", str(PROTO), "--import-paths", str(PROTO.parent),
           "--call", "inference.GRPCInferenceService.ModelInfer", "-d", json.dumps(data),
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


def run_h2load(target: str, message: bytes, connections: int, duration: float, workdir: Path,
               metrics_url: str) -> base.WrkResult:
    """ModelInfer from ``h2load`` (nghttp2's HTTP/2 load generator, C: ~20 µs of CPU per call where ghz spends
    ~100 on this machine, as wrk does for HTTP). h2load sees HTTP statuses, not grpc-status: the server's own
    count of grpc_infer answers with status 200 must grow by every call h2load finished."""
    body = workdir / "grpc-request.bin"
    body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    before = _grpc_ok(metrics_url)
    cmd = ["h2load", "-c", str(connections), "-m", "1", "-t", "1", "-D", str(max(1, round(duration))),
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
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args(argv)
    if shutil.which("wrk") is None or not Path(args.ghz).exists():
        print("needs wrk (apt-get install -y wrk) and ghz (go install github.com/bojand/ghz/cmd/ghz@latest)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mlstack-bench-grpc-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        model = args.model or str(base.build_model(workdir / "model", args.n_estimators))
        port, grpc_port, old_port, old_grpc = (base._free_port() for _ in range(4))
        http = base.Target("HTTP v2 JSON (wrk)", f"http://127.0.0.1:{port}/v2/models/iris/infer", json.dumps(
            {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": base.ROW}]}).encode())
        old_http = base.Target("grpcio probe", f"http://127.0.0.1:{old_port}/v2/models/iris/infer", http.body)
        env = {"MLSTACK_MODEL_CACHE_DIR": str(workdir / "cache")}
        servers = {"mlstack-serve": (port, grpc_port, http, {}),
                   "mlstack-serve-grpcio": (old_port, old_grpc, old_http, {"MLSTACK_SERVE_GRPC_SERVER": "grpcio"})}
        for label, (p_http, p_grpc, probe, extra) in servers.items():
            base._launch(base.Context(model, "iris", workdir, {**env, **extra}), stack, label, [
                str(base.BIN / "mlstack"), "serve", "--model", model, "--name", "iris", "--host", "127.0.0.1",
                "--port", str(p_http), "--grpc-port", str(p_grpc)], probe)
        pid, old_pid = _server_pid(port), _server_pid(old_port)
        row = base64.b64encode(struct.pack("<4f", *base.ROW)).decode()
        tensor = {"name": "X", "datatype": "FP32", "shape": [1, 4]}
        raw = {"model_name": "iris", "inputs": [tensor], "raw_input_contents": [row]}
        typed = {"model_name": "iris", "inputs": [{**tensor, "contents": {"fp32_contents": base.ROW}}]}
        grpc_cases = {
            "gRPC v2 raw (ghz)": (grpc_port, raw, pid),
            "gRPC v2 typed (ghz)": (grpc_port, typed, pid),
            "gRPC v2 raw, grpcio server (ghz)": (old_grpc, raw, old_pid),
            "gRPC v2 typed, grpcio server (ghz)": (old_grpc, typed, old_pid),
        }
        results: dict[str, list[base.WrkResult]] = {}
        cpu: dict[str, list[float]] = {}

        def measure(label: str, server_pid: int, run) -> None:
            c0 = _cpu_seconds(server_pid)
            r = run()
            cpu.setdefault(label, []).append((_cpu_seconds(server_pid) - c0) * 1e6 / max(r.rps * args.duration, 1))
            results.setdefault(label, []).append(r)

        from mlstack.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

        msg = pb.ModelInferRequest(model_name="iris")
        msg.inputs.add(name="X", datatype="FP32", shape=[1, 4])
        msg.raw_input_contents.append(struct.pack("<4f", *base.ROW))
        h2 = {"gRPC v2 raw (h2load)": (grpc_port, pid, port),
              "gRPC v2 raw, grpcio server (h2load)": (old_grpc, old_pid, old_port)} if shutil.which("h2load") else {}
        for _ in range(args.rounds):
            measure(http.label, pid, lambda: base.run_wrk(http, args.connections, 2, args.duration, workdir))
            for label, (gport, server_pid, hport) in h2.items():
                measure(label, server_pid, lambda gport=gport, hport=hport: run_h2load(
                    f"127.0.0.1:{gport}", msg.SerializeToString(), args.connections, args.duration, workdir,
                    f"http://127.0.0.1:{hport}/metrics"))
            for label, (gport, data, server_pid) in grpc_cases.items():
                measure(label, server_pid, lambda gport=gport, data=data: run_ghz(
                    args.ghz, f"127.0.0.1:{gport}", data, args.connections, args.connections, args.duration))
    http_rps = base._median([r.rps for r in results[http.label]])
    print(f"\n{args.rounds} interleaved rounds of {args.duration:g}s, {args.connections} in flight; medians\n")
    print("| target | req/s | p50 ms (h2load: mean) | p99 ms (h2load: max) | vs HTTP v2 JSON | server CPU µs/call |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, rs in results.items():
        rps = base._median([r.rps for r in rs])
        print(f"| {label} | {rps:,.0f} | {base._median([r.p50_ms for r in rs]):.2f} | "
              f"{base._median([r.p99_ms for r in rs]):.2f} | {base._fmt_ratio(rps, http_rps)} | "
              f"{base._median(cpu[label]):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
