"""``mlstack serve`` against the serving stacks users compare it with, side by side, in one run.

Every server runs the same compute: the iris RandomForest (100 trees) exported to ONNX once (skl2onnx, input
``X``, zipmap off, as training registers it) and run through onnxruntime with mlstack serve's session options
(bench/peers/onnx_model.py); peers without an ONNX runtime of their own run it through their documented
custom-runtime mechanism (MLServer ``MLModel``, KServe ``kserve.Model``, a BentoML service, a PyTriton
``@batch`` function, a Ray Serve deployment). So the ratios measure the servers, not sklearn vs onnxruntime.

Each peer lives in its own virtual environment (their pins conflict), created on first use under
``~/.cache/mlstack/bench-venvs/<peer>-<version>`` (``MLSTACK_BENCH_VENVS`` to move it) and reused after; the
pins are in ``PINS`` below. One peer runs at a time: each round starts a peer, measures each of its targets
(a 1 s warm-up, then ``wrk``/``ghz`` at ``--connections``, then 1 connection for sequential latency), stops it
and moves on to the next, round-robin for ``--rounds`` rounds; the table shows medians. HTTP load is ``wrk``
(a Lua script POSTs the body), gRPC load is ``ghz`` (bench/serving_grpc.py), neither of them Python.

    .venv/bin/python bench/peers.py [--peers mlstack,floor,mlserver,...] [--rounds 3] [--duration 4]
        [--connections 16] [--workers 1] [--mlstack-src DIR] [--no-seq] [--out table.md]
    .venv/bin/python bench/peers.py --quick --out /tmp/t.md   # floor + mlstack, 1 round of 1 s (the smoke test)

Peers: mlstack (/predict, v2 JSON, v2 binary, v2 gRPC), floor (bare uvicorn constant), granian (the same
constant app under granian), mlserver, kserve, bentoml, pytriton, rayserve, mlflow (``mlflow models serve``),
api (``POST /inference`` through the mlstack API, bench/serving.py's (d): a real mlflow server and Redis).
A peer that cannot run here is a row with its error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serving as base  # noqa: E402  bench/serving.py: launcher, model builder, floor app, registry
import serving_grpc  # noqa: E402  bench/serving_grpc.py: ghz runner

PEER_DIR = HERE / "peers"
VENVS = Path(os.environ.get("MLSTACK_BENCH_VENVS") or Path.home() / ".cache" / "mlstack" / "bench-venvs")
NAME = "iris"
ROW = base.ROW
CONNECTIONS = 16

# peer -> (version, pip requirements of its own virtual environment)
PINS: dict[str, tuple[str, list[str]]] = {
    "granian": ("2.8.7", ["granian==2.8.7", "uvloop==0.23.0"]),
    # uvloop < 0.22: MLServer 1.7.1's inference-pool workers call asyncio.get_event_loop() before a loop exists,
    # which uvloop 0.22+ refuses ("There is no current event loop"): the pool then never starts
    "mlserver": ("1.7.1", ["mlserver==1.7.1", "uvloop==0.21.0", "onnxruntime>=1.20"]),
    "kserve": ("0.21.0", ["kserve==0.21.0", "onnxruntime>=1.20"]),
    "bentoml": ("1.4.40", ["bentoml==1.4.40", "onnxruntime>=1.20"]),
    "pytriton": ("0.7.0", ["nvidia-pytriton==0.7.0", "onnxruntime>=1.20"]),
    "rayserve": ("2.60.0", ["ray[serve]==2.60.0", "onnxruntime>=1.20"]),
}


def venv_python(peer: str) -> Path:
    """The peer's interpreter; builds its virtual environment first if missing or pinned differently."""
    version, reqs = PINS[peer]
    d = VENVS / f"{peer}-{version}"
    marker, want = d / ".complete", "\n".join(reqs) + "\n"
    if not (marker.exists() and marker.read_text() == want):
        print(f"building {d} (once): pip install {' '.join(reqs)}", file=sys.stderr)
        d.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(d)], check=True)
        subprocess.run([str(d / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *reqs], check=True)
        marker.write_text(want)
    return d / "bin" / "python"


# -- targets ------------------------------------------------------------------------------------------

# comparison groups: a peer's target is compared with mlstack serve's target of the same group
GROUP_MLSTACK = {"json": "/predict JSON", "v2": "v2 JSON", "bin": "v2 binary", "grpc": "v2 gRPC",
                 "api": "/predict JSON"}


@dataclass
class Target:
    server: str
    protocol: str
    group: str  # json (a server's own JSON route), v2, bin, grpc, floor, api
    settings: str
    url: str = ""  # HTTP: wrk
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    grpc: str = ""  # gRPC: host:port for ghz
    grpc_data: dict | None = None

    @property
    def label(self) -> str:
        return f"{self.server} | {self.protocol}"


@dataclass
class Ctx:
    workdir: Path
    model_dir: Path  # the MLflow model dir (ONNX flavour)
    onnx: Path  # its model.onnx
    env: dict[str, str]
    connections: int
    workers: int = 1  # processes/replicas/instances for the peers that have such a setting
    mlstack_env: dict[str, str] = field(default_factory=dict)  # PYTHONPATH of --mlstack-src
    start_timeout: float = 240.0
    api_env: dict[str, str] | None = None  # the registry for "api", started once
    outer: contextlib.ExitStack | None = None


PeerFn = Callable[[Ctx, contextlib.ExitStack], list[Target]]


def _v2_json() -> bytes:
    return json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}).encode()


def _v2_binary() -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    return header + struct.pack("<4f", *ROW), {"Content-Type": "application/octet-stream",
                                                 "Inference-Header-Content-Length": str(len(header))}


def _grpc_typed() -> dict:
    return {"model_name": NAME, "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4],
                                            "contents": {"fp32_contents": ROW}}]}


def _launch(ctx: Ctx, stack: contextlib.ExitStack, name: str, cmd: list[str], ready: Callable[[], bool],
            env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    sctx = base.Context(str(ctx.model_dir), NAME, ctx.workdir, {**ctx.env, **(env or {})}, ctx.start_timeout)
    base._launch_until(sctx, stack, name, cmd, ready, cwd)


def _post_ready(t: Target) -> Callable[[], bool]:
    return lambda: base._post_ok(t.url, t.body, t.headers)


def peer_mlstack(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    port, gport = base.procs.free_port(), base.procs.free_port()
    url = f"http://127.0.0.1:{port}"
    s = "1 process (its only mode), dynamic batching (≤64 rows), HTTP and gRPC in one process"
    predict = Target("mlstack serve", "/predict JSON", "json", s, f"{url}/predict",
                     json.dumps({"instances": [ROW]}).encode())
    body, headers = _v2_binary()
    targets = [predict, Target("mlstack serve", "v2 JSON", "v2", s, f"{url}/v2/models/{NAME}/infer", _v2_json()),
               Target("mlstack serve", "v2 binary", "bin", s, f"{url}/v2/models/{NAME}/infer", body, headers),
               Target("mlstack serve", "v2 gRPC", "grpc", s, grpc=f"127.0.0.1:{gport}", grpc_data=_grpc_typed())]
    _launch(ctx, stack, "mlstack", [str(base.BIN / "mlstack"), "serve", "--model", str(ctx.model_dir), "--name",
                                    NAME, "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(gport)],
            _post_ready(predict), env=ctx.mlstack_env)
    return targets


def peer_floor(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    port = base.procs.free_port()
    t = Target("floor: bare uvicorn", "constant", "floor", "1 process, httptools, uvloop, raw ASGI",
               f"http://127.0.0.1:{port}/predict", json.dumps({"instances": [ROW]}).encode())
    _launch(ctx, stack, "floor", [
        sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "serving:floor_app", "--host", "127.0.0.1",
        "--port", str(port), "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--no-proxy-headers",
        "--no-server-header", "--no-date-header", "--log-level", "warning"], _post_ready(t))
    return [t]


def peer_granian(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    py = venv_python("granian")
    port = base.procs.free_port()
    t = Target("floor: granian", "constant", "floor", "1 worker, uvloop, the same raw ASGI app",
               f"http://127.0.0.1:{port}/predict", json.dumps({"instances": [ROW]}).encode())
    _launch(ctx, stack, "granian", [
        str(py), "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--loop", "uvloop", "--no-ws", "--log-level", "warning", "--working-dir", str(HERE),
        "serving:floor_app"], _post_ready(t))
    return [t]


def peer_mlflow(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    port = base.procs.free_port()
    t = Target("mlflow models serve", "/invocations JSON", "json", f"--workers {ctx.workers}, pyfunc of the "
               "ONNX flavour (onnxruntime)", f"http://127.0.0.1:{port}/invocations",
               json.dumps({"inputs": {"X": [ROW]}}).encode())
    _launch(ctx, stack, "mlflow", [str(base.BIN / "mlflow"), "models", "serve", "-m", str(ctx.model_dir),
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
                                   "--workers", str(ctx.workers)], _post_ready(t))
    return [t]


def peer_mlserver(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    py = venv_python("mlserver")
    port, gport, mport = base.procs.free_port(), base.procs.free_port(), base.procs.free_port()
    repo = ctx.workdir / "mlserver-repo"
    (repo / NAME).mkdir(parents=True, exist_ok=True)
    (repo / "settings.json").write_text(json.dumps({
        "debug": False, "host": "127.0.0.1", "http_port": port, "grpc_port": gport, "metrics_port": mport,
        "parallel_workers": ctx.workers, "load_models_at_startup": True}))
    (repo / NAME / "model-settings.json").write_text(json.dumps({
        "name": NAME, "implementation": "mlserver_runtime.OnnxIrisRuntime", "parameters": {"uri": str(ctx.onnx)},
        "max_batch_size": ctx.connections, "max_batch_time": 0.001}))
    s = (f"parallel_workers {ctx.workers}{' (the default)' if ctx.workers == 1 else ''}: inference in a worker "
         f"process, debug off, adaptive batching max_batch_size {ctx.connections} / max_batch_time 1 ms")
    rest = Target("MLServer 1.7.1", "v2 JSON", "v2", s, f"http://127.0.0.1:{port}/v2/models/{NAME}/infer",
                  _v2_json())
    _launch(ctx, stack, "mlserver", [str(py.parent / "mlserver"), "start", str(repo)], _post_ready(rest),
            env={"PYTHONPATH": str(PEER_DIR)})
    return [rest, Target("MLServer 1.7.1", "v2 gRPC", "grpc", s, grpc=f"127.0.0.1:{gport}",
                         grpc_data=_grpc_typed())]


def peer_kserve(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    py = venv_python("kserve")
    port, gport = base.procs.free_port(), base.procs.free_port()
    s = (f"ModelServer workers {ctx.workers}{' (the default)' if ctx.workers == 1 else ''}, latency logging off; "
         "ModelServer has no batching")
    url = f"http://127.0.0.1:{port}"
    v1 = Target("KServe 0.21.0", "v1 JSON", "json", s, f"{url}/v1/models/{NAME}:predict",
                json.dumps({"instances": [ROW]}).encode())
    _launch(ctx, stack, "kserve", [str(py), str(PEER_DIR / "kserve_server.py"), "--model_name", NAME,
                                   "--http_port", str(port), "--grpc_port", str(gport), "--workers", str(ctx.workers),
                                   "--enable_latency_logging", "false"], _post_ready(v1),
            env={"PYTHONPATH": str(PEER_DIR)})
    return [v1, Target("KServe 0.21.0", "v2 JSON", "v2", s, f"{url}/v2/models/{NAME}/infer", _v2_json()),
            Target("KServe 0.21.0", "v2 gRPC", "grpc", s, grpc=f"127.0.0.1:{gport}", grpc_data=_grpc_typed())]


def peer_bentoml(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    py = venv_python("bentoml")
    port = base.procs.free_port()
    s = (f"workers {ctx.workers}{' (the default)' if ctx.workers == 1 else ''}, adaptive batching (batchable, "
         f"max_batch_size {ctx.connections})")
    t = Target("BentoML 1.4.40", "/predict JSON", "json", s, f"http://127.0.0.1:{port}/predict",
               json.dumps({"X": [ROW]}).encode())
    _launch(ctx, stack, "bentoml", [str(py.parent / "bentoml"), "serve", "bentoml_service:Iris", "--working-dir",
                                    str(PEER_DIR), "--host", "127.0.0.1", "--port", str(port)], _post_ready(t),
            env={"PYTHONPATH": str(PEER_DIR), "BENCH_MAX_BATCH": str(ctx.connections),
                 "BENCH_WORKERS": str(ctx.workers), "BENTOML_HOME": str(ctx.workdir / "bentoml-home"),
                 "BENTOML_DO_NOT_TRACK": "true"})
    return [t]


def peer_pytriton(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    py = venv_python("pytriton")
    port, gport, mport = base.procs.free_port(), base.procs.free_port(), base.procs.free_port()
    s = (f"Triton's C++ front ends, {ctx.workers} model instance(s), dynamic batching (DynamicBatcher defaults, "
         f"max_batch_size {ctx.connections})")
    url = f"http://127.0.0.1:{port}/v2/models/{NAME}/infer"
    rest = Target("PyTriton 0.7.0", "v2 JSON", "v2", s, url, _v2_json())
    body, headers = _v2_binary()
    _launch(ctx, stack, "pytriton", [str(py), str(PEER_DIR / "pytriton_server.py"), str(port), str(gport),
                                     str(mport)], _post_ready(rest),
            env={"PYTHONPATH": str(PEER_DIR), "BENCH_MAX_BATCH": str(ctx.connections),
                 "BENCH_WORKERS": str(ctx.workers), "BENCH_WORKSPACE": str(ctx.workdir / f"pytriton-{port}"),
                 # Triton's Python stub links libpython3.11.so.1.0: the loader finds the OS's first (Debian's 3.11.2
                 # when installed), whose C RLock lacks what this interpreter's stdlib calls ("'_thread.RLock'
                 # object has no attribute '_recursion_count'"); the venv's own interpreter's library goes first
                 "LD_LIBRARY_PATH": os.pathsep.join(filter(None, (sysconfig.get_config_var("LIBDIR"),
                                                                   os.environ.get("LD_LIBRARY_PATH"))))})
    return [rest, Target("PyTriton 0.7.0", "v2 binary", "bin", s, url, body, headers),
            Target("PyTriton 0.7.0", "v2 gRPC", "grpc", s, grpc=f"127.0.0.1:{gport}", grpc_data=_grpc_typed())]


def peer_rayserve(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    py = venv_python("rayserve")
    port = base.procs.free_port()
    s = (f"{ctx.workers} replica(s) of 0.5 CPU, @serve.batch (max_batch_size {ctx.connections}, 1 ms wait); "
         "ray.init num_cpus 2, object store 256 MB")
    t = Target("Ray Serve 2.60.0", "/predict JSON", "json", s, f"http://127.0.0.1:{port}/predict",
               json.dumps({"instances": [ROW]}).encode())
    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay short
    stack.callback(shutil.rmtree, tmp, True)
    _launch(ctx, stack, "rayserve", [str(py), str(PEER_DIR / "rayserve_app.py"), str(port), str(tmp)],
            _post_ready(t), env={"PYTHONPATH": str(PEER_DIR), "BENCH_MAX_BATCH": str(ctx.connections),
                                 "BENCH_WORKERS": str(ctx.workers),
                                 "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
    return [t]


def peer_api(ctx: Ctx, stack: contextlib.ExitStack) -> list[Target]:
    """bench/serving.py's (d): ``POST /inference`` through the API, auth off, to its own local mlstack serve."""
    if ctx.api_env is None:  # a real mlflow server and Redis, once for the whole run
        assert ctx.outer is not None
        ctx.api_env = base.start_registry(ctx.workdir, ctx.outer, ctx.model_dir, NAME)
    env = dict(ctx.api_env)
    sctx = base.Context(env.pop("model_uri"), NAME, ctx.workdir, {**ctx.env, **env, **ctx.mlstack_env},
                        ctx.start_timeout)
    t = base._api(sctx, stack, "api", f"api-{base.procs.free_port()}", "[25000, 25499]", {})
    return [Target("mlstack API", "POST /inference", "api", "1 API process, auth off, forwarding to its own "
                   "local mlstack serve (started on the first call)", t.url, t.body, t.headers)]


PEERS: dict[str, PeerFn] = {
    "floor": peer_floor, "granian": peer_granian, "mlstack": peer_mlstack, "mlserver": peer_mlserver,
    "kserve": peer_kserve, "bentoml": peer_bentoml, "pytriton": peer_pytriton, "rayserve": peer_rayserve,
    "mlflow": peer_mlflow, "api": peer_api,
}


# -- load ---------------------------------------------------------------------------------------------


def _lua_bytes(b: bytes) -> str:
    """A Lua string literal of any bytes (decimal escapes outside printable ASCII)."""
    return '"' + "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else f"\\{c:03d}" for c in b) + '"'


def run_wrk(t: Target, connections: int, duration: float, workdir: Path) -> base.WrkResult:
    script = workdir / "wrk.lua"
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in t.headers.items())
    script.write_text(base._LUA.format(body=_lua_bytes(t.body), headers=headers))
    threads = min(2, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--timeout",
           "5s", "-s", str(script), t.url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}")
    r = json.loads(line[len("WRKJSON "):])
    if r["non2xx"] or r["errors"]:
        raise RuntimeError(f"{r['non2xx']} non-2xx responses, {r['errors']} socket errors")
    return base.WrkResult(r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1000, r["p99_us"] / 1000)


def measure(t: Target, connections: int, duration: float, workdir: Path, ghz: str | None) -> base.WrkResult:
    if t.grpc:
        if ghz is None:
            raise RuntimeError("ghz not installed (GOTOOLCHAIN=local go install github.com/bojand/ghz/cmd/ghz@v0.93.0)")
        return serving_grpc.run_ghz(ghz, t.grpc, serving_grpc.message_file(t.grpc_data or {}, workdir / "ghz.bin"),
                                    connections, connections, duration)
    return run_wrk(t, connections, duration, workdir)


def _revision(src: Path) -> str:
    """The commit mlstack serve ran from, and whether the serving code had uncommitted changes then."""
    git = ["git", "-C", str(src)]
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "fastapi"], capture_output=True, text=True,
                           check=False)
    return (rev.stdout.strip() or "(no git)") + (" + uncommitted changes in fastapi/" if dirty.stdout.strip() else "")


def _error_line(e: Exception) -> str:
    """The line of a failed start that names the error (the launcher's message ends with the log's tail)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    named = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", ln)]
    return (named or lines or [type(e).__name__])[-1]


def _answer(t: Target) -> str:
    req = urllib.request.Request(t.url, data=t.body, headers=t.headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return f"{type(e).__name__}: {e}"


def _check_grpc_ready(t: Target, ghz: str | None, workdir: Path) -> None:
    """gRPC targets come up with their HTTP sibling; one call proves the model answers there too."""
    if t.grpc and ghz is not None:
        deadline = time.monotonic() + 30
        while True:
            try:
                serving_grpc.run_ghz(ghz, t.grpc, serving_grpc.message_file(t.grpc_data or {}, workdir / "ghz.bin"),
                                     1, 1, 1)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


# -- main ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    target: Target
    thr: list[base.WrkResult] = field(default_factory=list)
    seq: list[base.WrkResult] = field(default_factory=list)
    error: str = ""


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(rows: list[Row], args: argparse.Namespace) -> str:
    rps = {r.target.label: _med([x.rps for x in r.thr]) for r in rows if r.thr}
    ml = {r.target.protocol: rps.get(r.target.label) for r in rows if r.target.server == "mlstack serve"}
    floor = max((rps[r.target.label] for r in rows if r.target.group == "floor" and r.thr), default=None)
    out = [f"| server | protocol | req/s ({args.connections} conn) | p50 ms | p99 ms | seq p50 ms | seq p99 ms "
           f"| vs mlstack serve (same protocol) | vs floor (the faster) | settings |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        t = r.target
        if not r.thr:
            out.append(f"| {t.server} | {t.protocol} | could not run: {r.error[:300].replace('|', '/')} "
                       f"| | | | | | | {t.settings} |")
            continue
        v = rps[t.label]
        seq50 = f"{_med([x.p50_ms for x in r.seq]):.3f}" if r.seq else "-"
        seq99 = f"{_med([x.p99_ms for x in r.seq]):.3f}" if r.seq else "-"
        mine = ml.get(GROUP_MLSTACK.get(t.group, ""))
        vs_ml = "-" if t.server == "mlstack serve" or t.group == "floor" else _ratio(v, mine)
        out.append(f"| {t.server} | {t.protocol} | {v:,.0f} | {_med([x.p50_ms for x in r.thr]):.3f} | "
                   f"{_med([x.p99_ms for x in r.thr]):.3f} | {seq50} | {seq99} | {vs_ml} | {_ratio(v, floor)} | "
                   f"{t.settings}{' (' + r.error[:120] + ')' if r.error else ''} |")
    return "\n".join(out) + "\n"


def goals(rows: list[Row]) -> str:
    rps = {(r.target.server, r.target.protocol): _med([x.rps for x in r.thr]) for r in rows if r.thr}
    seq = {(r.target.server, r.target.protocol): _med([x.p50_ms for x in r.seq]) for r in rows if r.seq}
    seq99 = {(r.target.server, r.target.protocol): _med([x.p99_ms for x in r.seq]) for r in rows if r.seq}
    lines = []
    for group, mine in (("json", "/predict JSON"), ("v2", "v2 JSON"), ("bin", "v2 binary"), ("grpc", "v2 gRPC")):
        m = rps.get(("mlstack serve", mine))
        peers = [(rps[(r.target.server, r.target.protocol)], r.target.label) for r in rows
                 if r.thr and r.target.group == group and r.target.server != "mlstack serve"]
        if m and peers:
            best, who = max(peers)
            lines.append(f"- mlstack serve {mine} ≥ 1.5x the best peer on the same protocol ({who}): "
                         f"{m / best:.2f}x {'**met**' if m / best >= 1.5 else '**missed**'}")
    m = rps.get(("mlstack serve", "/predict JSON"))
    f = max((rps[(r.target.server, r.target.protocol)] for r in rows if r.target.group == "floor" and r.thr),
            default=None)
    if m and f:
        lines.append(f"- mlstack serve /predict ≥ 0.6x the floor: {m / f:.2f}x "
                     f"{'**met**' if m / f >= 0.6 else '**missed**'}")
    s50, s99 = seq.get(("mlstack serve", "/predict JSON")), seq99.get(("mlstack serve", "/predict JSON"))
    if s50 is not None and s99 is not None:
        ok = s50 <= 0.2 and s99 <= 1
        lines.append(f"- mlstack serve sequential p50 ≤ 0.2 ms and p99 ≤ 1 ms: {s50:.3f} / {s99:.3f} ms "
                     f"{'**met**' if ok else '**missed**'}")
    g, j = rps.get(("mlstack serve", "v2 gRPC")), rps.get(("mlstack serve", "v2 JSON"))
    if g and j:
        lines.append(f"- gRPC v2 ≥ HTTP v2 JSON: {g / j:.2f}x {'**met**' if g >= j else '**missed**'}")
    a = rps.get(("mlstack API", "POST /inference"))
    if a and m:
        lines.append(f"- API /inference ≥ 0.4x mlstack serve /predict: {a / m:.2f}x "
                     f"{'**met**' if a / m >= 0.4 else '**missed**'}")
        sa = seq.get(("mlstack API", "POST /inference"))
        if sa is not None and s50 is not None:
            lines.append(f"- API p50 overhead ≤ 0.3 ms: +{sa - s50:.3f} ms "
                         f"{'**met**' if sa - s50 <= 0.3 else '**missed**'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, in order (default: {','.join(PEERS)})")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per load run")
    p.add_argument("--connections", type=int, default=CONNECTIONS)
    p.add_argument("--workers", type=int, default=1, help="processes/replicas/model instances of the peers that "
                   "have that setting (KServe, BentoML, PyTriton, Ray Serve, mlflow); mlstack serve is one process")
    p.add_argument("--mlstack-src", type=Path, help="run mlstack serve and the API from this checkout's fastapi/ "
                   "(e.g. a `git worktree add /tmp/m HEAD`: measure a commit while the work tree moves)")
    p.add_argument("--no-seq", action="store_true", help="skip the 1-connection latency runs")
    p.add_argument("--quick", action="store_true", help="floor and mlstack, 1 round of 1 s, no sequential runs")
    p.add_argument("--n-estimators", type=int, default=100)
    p.add_argument("--ghz", default=shutil.which("ghz") or str(Path.home() / "go" / "bin" / "ghz"))
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    args = p.parse_args(argv)
    if args.quick:
        args.peers, args.rounds, args.duration, args.no_seq = "floor,mlstack", 1, 1.0, True
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    keys = [k.strip() for k in args.peers.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PEERS]
    if unknown:
        print(f"unknown peers {unknown}; known: {', '.join(PEERS)}", file=sys.stderr)
        return 2
    ghz = args.ghz if Path(args.ghz).exists() else None
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    model_dir = base.build_model(workdir / "model", args.n_estimators)
    onnx = next(model_dir.glob("*.onnx"))
    env = {"MLSTACK_MODEL_CACHE_DIR": str(workdir / "cache"), "PYTHONUNBUFFERED": "1", "BENCH_ONNX": str(onnx),
           "RAY_AUTH_MODE": "disabled", "PATH": f"{base.BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    ctx = Ctx(workdir, model_dir, onnx, env, args.connections, args.workers)
    if args.mlstack_src:
        ctx.mlstack_env = {"PYTHONPATH": str(args.mlstack_src.resolve() / "fastapi")}
    print(f"peers {keys}; {args.rounds} rounds of {args.duration:g}s runs, {args.connections} connections; "
          f"logs in {workdir}", file=sys.stderr)
    rows: dict[str, list[Row]] = {k: [] for k in keys}
    failed: dict[str, str] = {}
    started, revision = time.monotonic(), _revision(args.mlstack_src or base.ROOT)
    with contextlib.ExitStack() as outer:
        ctx.outer = outer  # what lives for the whole run (the API's registry)
        for rnd in range(args.rounds):
            for key in keys:
                if key in failed:
                    continue
                with contextlib.ExitStack() as stack:
                    try:
                        targets = PEERS[key](ctx, stack)
                    except Exception as e:  # a peer that cannot run is a row with its error
                        failed[key] = _error_line(e)
                        print(f"round {rnd + 1}: {key} could not start: {e}", file=sys.stderr)
                        if not rows[key]:
                            rows[key].append(Row(Target(key, "-", "none", ""), error=failed[key]))
                        continue
                    if not rows[key]:
                        rows[key] = [Row(t) for t in targets]
                    for row, t in zip(rows[key], targets, strict=True):
                        row.target = t  # the same target on this round's ports
                        if rnd == 0 and t.url:  # what each server answers, for the log
                            print(f"{t.label} answers: {_answer(t)[:200]}", file=sys.stderr)
                        try:
                            _check_grpc_ready(t, ghz, workdir)
                            measure(t, args.connections, 1, workdir, ghz)  # warm-up
                            row.thr.append(measure(t, args.connections, args.duration, workdir, ghz))
                            if not args.no_seq:
                                row.seq.append(measure(t, 1, args.duration, workdir, ghz))
                            print(f"round {rnd + 1}: {t.label}: {row.thr[-1].rps:,.0f} req/s"
                                  + (f", seq p50 {row.seq[-1].p50_ms:.3f} ms" if row.seq else ""), file=sys.stderr)
                        except Exception as e:
                            row.error = f"{type(e).__name__}: {e}"
                            print(f"round {rnd + 1}: {t.label}: {row.error}", file=sys.stderr)
    all_rows = [r for k in keys for r in rows[k]]
    head = (f"{datetime.date.today().isoformat()}, mlstack {revision} at the start, {os.cpu_count()} cores, "
            "load average "
            f"{os.getloadavg()[0]:.1f} at the end; {args.rounds} interleaved rounds, {args.duration:g} s per run, "
            f"{args.connections} connections (wrk 2 threads / ghz {args.connections} in flight), peers' --workers "
            f"{args.workers}, medians; "
            f"{time.monotonic() - started:.0f} s in all\n\n")
    text = head + table(all_rows, args) + "\n" + goals(all_rows)
    print(text)
    if args.out:
        args.out.write_text(text)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
