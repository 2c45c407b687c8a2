"""gRPC v2 vs HTTP v2 JSON on one ``mlstack serve --grpc-port`` process, in one run.

The same server answers both: ``POST /v2/models/NAME/infer`` (JSON body, one iris row) under ``wrk`` and
``inference.GRPCInferenceService/ModelInfer`` (the same row as ``raw_input_contents``, and as typed
``contents``) under ``ghz`` (https://ghz.sh; not Python, which would measure itself). Same concurrency
for both (16 in flight over 16 connections by default), interleaved rounds, medians.

    go install github.com/bojand/ghz/cmd/ghz@latest    # GOTOOLCHAIN=local works with Go >= 1.21
    .venv/bin/python bench/serving_grpc.py [--ghz PATH] [--duration 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
    # is closing"): at most one per worker; everything else is a failure
    cut = sum(n for e, n in errors.items() if "is closing" in e)
    if set(dist) - {"OK", "Unavailable", "Canceled"} or sum(errors.values()) != cut or cut > concurrency:
        raise RuntimeError(f"ghz: non-OK responses {dist} {errors}")
    lat = {p["percentage"]: p["latency"] / 1e6 for p in r.get("latencyDistribution") or []}
    return base.WrkResult(dist.get("OK", 0) / (r["total"] / 1e9), lat.get(50, 0.0), lat.get(99, 0.0))


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
        port, grpc_port = base._free_port(), base._free_port()
        http = base.Target("HTTP v2 JSON (wrk)", f"http://127.0.0.1:{port}/v2/models/iris/infer", json.dumps(
            {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": base.ROW}]}).encode())
        ctx = base.Context(model, "iris", workdir, {"MLSTACK_MODEL_CACHE_DIR": str(workdir / "cache")})
        base._launch(ctx, stack, "mlstack-serve", [
            str(base.BIN / "mlstack"), "serve", "--model", model, "--name", "iris", "--host", "127.0.0.1",
            "--port", str(port), "--grpc-port", str(grpc_port)], http)
        row = base64.b64encode(struct.pack("<4f", *base.ROW)).decode()
        tensor = {"name": "X", "datatype": "FP32", "shape": [1, 4]}
        grpc_cases = {
            "gRPC v2 raw (ghz)": {"model_name": "iris", "inputs": [tensor], "raw_input_contents": [row]},
            "gRPC v2 typed (ghz)": {"model_name": "iris",
                                    "inputs": [{**tensor, "contents": {"fp32_contents": base.ROW}}]},
        }
        target = f"127.0.0.1:{grpc_port}"
        results: dict[str, list[base.WrkResult]] = {}
        for _ in range(args.rounds):
            results.setdefault(http.label, []).append(
                base.run_wrk(http, args.connections, 2, args.duration, workdir))
            for label, data in grpc_cases.items():
                results.setdefault(label, []).append(
                    run_ghz(args.ghz, target, data, args.connections, args.connections, args.duration))
    http_rps = base._median([r.rps for r in results[http.label]])
    print(f"\n{args.rounds} interleaved rounds of {args.duration:g}s, {args.connections} in flight; medians\n")
    print("| target | req/s | p50 ms | p99 ms | vs HTTP v2 JSON |")
    print("|---|---:|---:|---:|---:|")
    for label, rs in results.items():
        rps = base._median([r.rps for r in rs])
        print(f"| {label} | {rps:,.0f} | {base._median([r.p50_ms for r in rs]):.2f} | "
              f"{base._median([r.p99_ms for r in rs]):.2f} | {base._fmt_ratio(rps, http_rps)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
