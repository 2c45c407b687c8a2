"""Batch scoring benchmark: ``POST /predict`` with one CSV vs calling the model server row by row.

One run, one registered model (an iris RandomForest, ONNX, as training registers it, in a real ``mlflow
server`` with a Redis, both started here), one API (``mlstack api``, auth off) and one ``mlstack serve`` of
the same version. Measured:

  (1) ``POST /predict`` through the API: one CSV of ``--rows`` rows uploaded, the CSV answer read to the end
      (wall time on the client: upload, the API's checking pass, scoring, download);
  (2) the model server's ``POST /predict`` row by row from Python, one keep-alive connection, sequential;
  (3) the same with ``--concurrency`` requests in flight (aiohttp, one pooled session);
  (4) the same row-by-row request with ``wrk`` (16 connections, 2 threads): the server's ceiling for one-row
      requests, with no Python client in the way.

Prints a markdown table with rows/s and the ratio of (1) to each.

    .venv/bin/python bench/batch.py [--rows 100000] [--row-seconds 8] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as sv  # bench/serving.py: the same servers and registry helpers

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = ["5.1,3.5,1.4,0.2", "6.9,3.1,5.4,2.1", "5.9,3.0,4.2,1.5"]


def write_csv(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write(",".join(FEATURES) + "\n")
        for i in range(n):
            f.write(ROWS[i % 3] + "\n")


def batch_predict(api: str, path: Path, model: str) -> tuple[float, int]:
    import httpx

    t0 = time.perf_counter()
    lines = 0
    with open(path, "rb") as fh, httpx.Client(timeout=600) as c, c.stream(
            "POST", f"{api}/predict", files={"file": ("in.csv", fh, "text/csv")}, data={"model": model},
            headers={"Accept": "text/csv"}) as r:
        if r.status_code != 200:
            r.read()
            raise RuntimeError(f"POST /predict: {r.status_code} {r.text[:500]}")
        for chunk in r.iter_bytes():
            lines += chunk.count(b"\n")
    return time.perf_counter() - t0, lines - 1


async def row_by_row(url: str, seconds: float, concurrency: int) -> tuple[float, int]:
    import aiohttp

    bodies = [json.dumps({"instances": [[float(v) for v in r.split(",")]]}).encode() for r in ROWS]
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     headers={"content-type": "application/json"}) as s:
        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < deadline:
                async with s.post(url, data=bodies[i % 3]) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
                    await resp.read()
                done += 1
                i += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return time.perf_counter() - t0, done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--row-seconds", type=float, default=8.0, help="how long each row-by-row client runs")
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args(argv)
    name = "bench_batch"
    with tempfile.TemporaryDirectory(prefix="mlstack-bench-batch-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        model_dir = sv.build_model(work / "model", n_estimators=50)
        reg = sv.start_registry(work, stack, model_dir, name)
        from mlflow.tracking import MlflowClient

        version = reg["model_uri"].rsplit("/", 1)[1]
        # as training and uploads do: the features, so the API checks the CSV header against them
        MlflowClient(reg["MLFLOW_TRACKING_URI"]).set_model_version_tag(name, version, "mlstack.features",
                                                                       ",".join(FEATURES))
        env = {k: v for k, v in reg.items() if k != "model_uri"}
        ctx = sv.Context(reg["model_uri"], name, work, env)
        api = sv._api(ctx, stack, "API", "api", "[25900, 25999]", {}).url.rsplit("/", 1)[0]
        serve = sv.target_mlstack(ctx, stack)[0]
        csv_path = work / "in.csv"
        write_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1e6
        batch_predict(api, csv_path, name)  # warm
        took, n = batch_predict(api, csv_path, name)
        assert n == args.rows, (n, args.rows)
        batch_rps = n / took
        seq_t, seq_n = asyncio.run(row_by_row(serve.url, args.row_seconds, 1))
        con_t, con_n = asyncio.run(row_by_row(serve.url, args.row_seconds, args.concurrency))
        wrk = sv.run_wrk(serve, 16, 2, args.row_seconds, work)
    rows = [
        (f"(1) API `POST /predict`, one CSV of {args.rows:,} rows (~{size_mb:.1f} MB), CSV back", batch_rps),
        ("(2) model server `POST /predict` row by row, 1 connection (Python, aiohttp)", seq_n / seq_t),
        (f"(3) the same, {args.concurrency} in flight (Python, aiohttp)", con_n / con_t),
        ("(4) the same, `wrk` 16 connections / 2 threads (no Python client)", wrk.rps),
    ]
    print("\n| client | rows/s | (1) vs this |\n|---|---:|---:|")
    for label, rps in rows:
        print(f"| {label} | {rps:,.0f} | {batch_rps / rps:,.1f} |")
    print(f"\n(1) took {took:.2f} s for {n:,} rows on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
