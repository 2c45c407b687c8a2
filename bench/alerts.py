"""Alert fan-out benchmark: N concurrent SSE clients on ONE API process, M alerts through Redis.

Starts its own redis-server and one API process (``--app full``: ``mlstack api``, the whole API;
``--app standalone``: only the alert router + lifespan, ``mlstack.api.alerts_app``), connects N
SSE clients to ``GET /webhook`` (raw asyncio sockets in this process), then appends M alerts to the
Redis Stream exactly as producers do (``RedisStreamSink``), one every ``--interval`` seconds, and
measures for every (alert, client) pair the time from just before XADD to the client parsing the
frame. Reports the Redis connections the API holds (``CLIENT LIST``), p50/p99/max latency and the
alerts lost (deliveries missing after a drain deadline). Prints a markdown table.

    .venv/bin/python bench/alerts.py [--clients 1000] [--alerts 100] [--interval 0.1] [--app full]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "fastapi"))

from mlstack.local.procs import Proc, free_port, spawn  # noqa: E402 - after the path


def http_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Client:
    __slots__ = ("got", "reader", "writer")

    def __init__(self):
        self.got: dict[int, float] = {}


async def connect(port: int) -> Client:
    c = Client()
    c.reader, c.writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    c.writer.write(b"GET /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    await c.writer.drain()
    head = await c.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return c


async def consume(c: Client, tag: str) -> None:
    seq_re = re.compile(rb'"bench":"' + tag.encode() + rb'","seq":(\d+)')  # cheaper than json.loads
    while True:
        try:
            piece = await c.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        now = time.monotonic()
        for m in seq_re.finditer(piece):
            c.got[int(m.group(1))] = now


def redis_connections(rc, own_names: set[str]) -> tuple[int, int, list[str]]:
    clients = [c for c in rc.client_list() if c.get("name") not in own_names]
    names = sorted(c.get("name") or "(unnamed)" for c in clients)
    readers = sum(1 for c in clients if c.get("name") == "mlstack-alerts-reader")
    return len(clients), readers, names


async def run(args) -> dict:
    import redis
    import redis.asyncio as aioredis

    from mlstack.alerts.settings import AlertSettings
    from mlstack.alerts.sink import RedisStreamSink

    raise_fd_limit(args.clients * 2 + 1000)
    work = Path(tempfile.mkdtemp(prefix="mlstack-bench-alerts-"))
    procs: list[Proc] = []
    try:
        rport, aport = free_port(), free_port()
        exe = shutil.which("redis-server") or "redis-server"
        procs.append(spawn([exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                            "--dir", str(work), "--maxclients", "20000"], work / "redis.log"))
        redis_url = f"redis://127.0.0.1:{rport}/0"
        rc = redis.Redis.from_url(redis_url, decode_responses=True, client_name="bench")
        procs[-1].wait_ready(rc.ping, 20)
        env = {**os.environ, "MLSTACK_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1",
               "MLSTACK_STATE_DIR": str(work / "state"), "MLSTACK_RAY_TEMP_DIR": str(work / "ray")}
        if args.app == "full":
            cmd = [str(BIN / "mlstack"), "api", "--host", "127.0.0.1", "--port", str(aport), "--log-level", "warning"]
        else:
            cmd = [str(BIN / "python"), "-m", "uvicorn", "--factory", "mlstack.api.alerts_app:create_app",
                   "--host", "127.0.0.1", "--port", str(aport), "--log-level", "warning"]
        procs.append(spawn(cmd, work / "api.log", env=env, cwd=ROOT,
                           preexec_fn=lambda: raise_fd_limit(args.clients * 2 + 1000)))
        base = f"http://127.0.0.1:{aport}"
        procs[-1].wait_ready(lambda: http_json(f"{base}/alerts/status")["reader_connected"], 120)

        idle = redis_connections(rc, {"bench"})
        t0 = time.monotonic()
        clients: list[Client] = []
        for i in range(0, args.clients, 100):
            clients += await asyncio.gather(*(connect(aport) for _ in range(min(100, args.clients - i))))
        tag = os.urandom(4).hex()
        readers = [asyncio.create_task(consume(c, tag)) for c in clients]
        deadline = time.monotonic() + 60
        while http_json(f"{base}/alerts/status")["subscribers"] < args.clients:
            if time.monotonic() > deadline:
                raise TimeoutError("not all clients subscribed")
            await asyncio.sleep(0.1)
        connect_s = time.monotonic() - t0
        busy = redis_connections(rc, {"bench"})

        r = aioredis.from_url(redis_url, decode_responses=True, client_name="bench")
        sink = RedisStreamSink(r, AlertSettings())
        sent: dict[int, float] = {}
        for seq in range(args.alerts):
            sent[seq] = time.monotonic()
            await sink.emit("alert.manual", "info", f"bench {seq}", data={"bench": tag, "seq": seq})
            await asyncio.sleep(args.interval)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and any(len(c.got) < args.alerts for c in clients):
            await asyncio.sleep(0.05)
        after = redis_connections(rc, {"bench"})
        status = http_json(f"{base}/alerts/status")

        lat = sorted((c.got[s] - sent[s]) * 1000 for c in clients for s in c.got)
        lost = args.clients * args.alerts - len(lat)
        per_alert_last = sorted(max(c.got.get(s, float("inf")) for c in clients) - sent[s] for s in sent)
        for t in readers:
            t.cancel()
        for c in clients:
            c.writer.close()
        await sink.aclose()
        await r.aclose()

        def pct(xs, p):
            return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")

        return {
            "app": args.app, "clients": args.clients, "alerts": args.alerts, "interval_ms": args.interval * 1000,
            "connect_s": connect_s, "redis_conns_idle": idle[0], "redis_conns_busy": busy[0],
            "redis_conns_after": after[0], "reader_conns": busy[1], "conn_names": busy[2],
            "p50": pct(lat, 50), "p99": pct(lat, 99), "max": lat[-1] if lat else float("nan"),
            "mean": statistics.fmean(lat) if lat else float("nan"),
            "fanout_p50": pct(per_alert_last, 50) * 1000, "fanout_p99": pct(per_alert_last, 99) * 1000,
            "deliveries": len(lat), "lost": lost, "overflows": status["overflows"],
        }
    finally:
        for p in reversed(procs):
            p.stop(15)
        shutil.rmtree(work, ignore_errors=True)


def table(res: dict) -> str:
    goal_conn = "✅" if res["reader_conns"] == 1 else "❌"
    goal_p99 = "✅" if res["p99"] <= 100 else "❌"
    goal_lost = "✅" if res["lost"] == 0 else "❌"
    rows = [
        ("API process", f"`{res['app']}` (one uvicorn worker)", ""),
        ("SSE clients", f"{res['clients']} (connected + subscribed in {res['connect_s']:.1f} s)", ""),
        ("alerts", f"{res['alerts']}, one every {res['interval_ms']:.0f} ms", ""),
        ("Redis connections held by the API (idle / 1,000 clients / after)",
         f"{res['redis_conns_idle']} / {res['redis_conns_busy']} / {res['redis_conns_after']}: "
         f"{', '.join(res['conn_names'])}", ""),
        ("XREAD reader connections", str(res["reader_conns"]), f"goal 1 {goal_conn}"),
        ("publish→receive p50", f"{res['p50']:.1f} ms", ""),
        ("publish→receive p99", f"{res['p99']:.1f} ms", f"goal ≤ 100 ms {goal_p99}"),
        ("publish→receive max", f"{res['max']:.1f} ms", ""),
        ("publish→last client p50 / p99", f"{res['fanout_p50']:.1f} / {res['fanout_p99']:.1f} ms", ""),
        ("deliveries", f"{res['deliveries']:,} of {res['clients'] * res['alerts']:,}", ""),
        ("alerts lost", str(res["lost"]), f"goal 0 {goal_lost}"),
        ("slow-client overflows", str(res["overflows"]), ""),
    ]
    out = ["| metric | value | goal |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--alerts", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.1, help="seconds between alerts")
    p.add_argument("--drain", type=float, default=30, help="seconds to wait for the last deliveries")
    p.add_argument("--app", choices=["full", "standalone"], default="full")
    p.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    args = p.parse_args()
    res = asyncio.run(run(args))
    print(table(res))
    if args.json:
        print(json.dumps(res, indent=1))
    return 0 if res["reader_conns"] == 1 and res["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
