"""The ``mlstack`` command: ``up --local`` / ``down`` (the local stack), ``serve`` (model server), ``api`` (the
FastAPI service), ``dashboard``, ``predict``, ``monitor``, ``operator``."""

from __future__ import annotations

import argparse
import os
import sys


def _serve(args: argparse.Namespace) -> int:
    from mlstack.serving.server import run
    from mlstack.settings import Settings

    host = args.host or Settings().serve_host
    return run(model_uri=args.model, host=host, port=args.port, name=args.name, max_batch=args.max_batch,
               grpc_port=args.grpc_port, canary_url=args.canary_url, canary_percent=args.canary_percent,
               canary_grpc=args.canary_grpc, shadow_url=args.shadow_url, shadow_percent=args.shadow_percent)


def _api(args: argparse.Namespace) -> int:
    import importlib.util

    import uvicorn

    from mlstack.api.http import bounded_protocol
    from mlstack.settings import Settings

    s = Settings()
    uvicorn.run(
        "mlstack.api.main:create_app",
        factory=True,
        host=args.host or s.api_host,
        port=args.port or s.api_port,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
        # httptools (C parser; h11 cost ~10 % of the CPU per /inference) with the request line + headers
        # bounded as h11 did (httptools alone buffers any size): more is a 431
        http=bounded_protocol(s.api_max_header_bytes),
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    )
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from mlstack.dashboard import run
    from mlstack.settings import Settings

    s = Settings()
    return run(host=args.host or s.api_host, port=args.port,
               api_url=args.api_url or f"http://{s.api_host}:{s.api_port}", dist_dir=args.dist)


def _monitor(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from mlstack.monitoring.cluster import serve
    from mlstack.monitoring.settings import MonitorSettings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ms = MonitorSettings()
    asyncio.run(serve(ms, args.metrics_host or ms.metrics_host, args.metrics_port or ms.metrics_port))
    return 0


def _up(args: argparse.Namespace) -> int:
    from mlstack.local import stack

    if not args.local:
        print("mlstack up: only local mode is in Python (mlstack up --local); cluster mode is ./init.sh --cluster",
              file=sys.stderr)
        return 2
    return stack.main("up", dry_run=args.dry_run)


def _down(args: argparse.Namespace) -> int:
    from mlstack.local import stack

    return stack.main("down", dry_run=args.dry_run)


def _operator(argv: list[str]) -> int:
    """``mlstack operator ...`` runs the operator's own command (``mlstack-operator``) in this process's place: the
    API's CLI imports nothing of the operator (its image does not need the API's dependencies)."""
    os.execv(sys.executable, [sys.executable, "-m", "mlstack_operator.cli", *argv])
    return 1  # not reached


def _predict(args: argparse.Namespace) -> int:
    from mlstack.settings import Settings

    return predict_file(args.model, args.input, args.output, args.api_url or _default_api_url(Settings()),
                        args.token or os.environ.get("MLSTACK_TOKEN"), args.format)


def _default_api_url(s) -> str:
    return os.environ.get("MLSTACK_API_URL") or f"http://{s.api_host}:{s.api_port}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, version, alias)."""
    if not uri.startswith("models:/"):
        raise ValueError(f"--model must be models:/NAME@ALIAS or models:/NAME/VERSION, not {uri[:80]!r}")
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, None, alias
    name, _, version = rest.partition("/")
    if not version.isdigit():
        raise ValueError(f"--model must be models:/NAME@ALIAS or models:/NAME/VERSION, not {uri[:80]!r}")
    return name, version, None


def predict_file(model_uri: str, input_path: str, output_path: str, api_url: str, token: str | None,
                 fmt: str = "csv") -> int:
    """Score a CSV through the API's ``POST /predict``: the file is uploaded and the answer written to
    ``output_path`` as it streams in (neither is held in memory)."""
    import httpx

    try:
        name, version, alias = parse_model_uri(model_uri)
    except ValueError as e:
        print(f"mlstack predict: {e}", file=sys.stderr)
        return 2
    data = {"model": name, **({"version": version} if version else {}), **({"alias": alias} if alias else {})}
    headers = {"Accept": "application/json" if fmt == "json" else "text/csv"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    tmp = output_path + ".part"
    with open(input_path, "rb") as fh, httpx.Client(timeout=httpx.Timeout(600, connect=10)) as client:
        files = {"file": (os.path.basename(input_path), fh, "text/csv")}
        with client.stream("POST", api_url.rstrip("/") + "/predict", data=data, files=files,
                           headers=headers) as r:
            if r.status_code != 200:
                r.read()
                print(f"mlstack predict: {r.status_code}: {r.text[:2000]}", file=sys.stderr)
                return 1
            with open(tmp, "wb") as out:
                for chunk in r.iter_bytes():
                    out.write(chunk)
    if fmt == "csv":
        with open(tmp, "rb") as f:  # a model server that failed mid-stream leaves a last "# error:" line
            f.seek(max(0, os.path.getsize(tmp) - 400))
            tail = f.read().decode(errors="replace")
        if "# error:" in tail:
            print(f"mlstack predict: {tail[tail.index('# error:'):].strip()}", file=sys.stderr)
            os.unlink(tmp)
            return 1
    os.replace(tmp, output_path)
    print(f"{r.headers.get('x-model-name')} v{r.headers.get('x-model-version')}: predictions in {output_path}",
          file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlstack", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    u = sub.add_parser("up", help="start the local stack: Redis, MLflow, Ray, the API and the dashboard as processes "
                       "on this machine (pid files and logs in $MLSTACK_OUTPUTS/local); a second run keeps what runs")
    u.add_argument("--local", action="store_true", help="local mode (the only mode here; cluster mode: ./init.sh)")
    u.add_argument("--dry-run", action="store_true", help="print every command it would run, in order; touch nothing")
    u.set_defaults(func=_up)
    dn = sub.add_parser("down", help="stop what `mlstack up --local` started (and the API's model servers)")
    dn.add_argument("--local", action="store_true", help="accepted for symmetry with up")
    dn.add_argument("--dry-run", action="store_true", help="print what it would stop; touch nothing")
    dn.set_defaults(func=_down)

    s = sub.add_parser("serve", help="serve one model over Open Inference Protocol v2 and /predict")
    s.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., or a local dir")
    s.add_argument("--host", default=None, help="default: MLSTACK_SERVE_HOST")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--name", default=None, help="model name in v2 URLs (default: the registered name)")
    s.add_argument("--max-batch", type=int, default=64, help="largest dynamic batch in rows")
    s.add_argument("--grpc-port", type=int, default=0, help="also serve v2 over gRPC on this port (0: off)")
    s.add_argument("--canary-url", default=None, help="forward --canary-percent of inference requests to the "
                   "canary's model server at this URL (default: MLSTACK_SERVE_CANARY_URL)")
    s.add_argument("--canary-percent", type=int, default=None, choices=range(1, 100), metavar="1..99",
                   help="exactly this many of every 100 requests go to the canary (MLSTACK_SERVE_CANARY_PERCENT)")
    s.add_argument("--canary-grpc", default=None, help="HOST:PORT of the canary's gRPC v2 port: gRPC ModelInfer "
                   "splits too (MLSTACK_SERVE_CANARY_GRPC)")
    s.add_argument("--shadow-url", default=None, help="mirror --shadow-percent of HTTP inference requests to the "
                   "shadow version's model server at this URL: its answers are logged, never returned "
                   "(MLSTACK_SERVE_SHADOW_URL)")
    s.add_argument("--shadow-percent", type=float, default=None, metavar="(0,100]",
                   help="exactly this share of requests is mirrored (MLSTACK_SERVE_SHADOW_PERCENT)")
    s.set_defaults(func=_serve)

    a = sub.add_parser("api", help="run the FastAPI service (Swagger at /docs)")
    a.add_argument("--host", default=None)
    a.add_argument("--port", type=int, default=None)
    a.add_argument("--log-level", default="info")
    a.set_defaults(func=_api)

    d = sub.add_parser("dashboard", help="serve the built dashboard with /api/ proxied to the API (local mode)")
    d.add_argument("--host", default=None, help="default: MLSTACK_API_HOST")
    d.add_argument("--port", type=int, default=5001)
    d.add_argument("--api-url", default=None, help="default: http://MLSTACK_API_HOST:MLSTACK_API_PORT")
    d.add_argument("--dist", default=None, help="built dashboard directory (default: frontend/dist)")
    d.set_defaults(func=_dashboard)

    pr = sub.add_parser("predict", help="score a CSV file through the API's POST /predict (batch scoring)")
    pr.add_argument("--model", required=True, help="models:/NAME@ALIAS or models:/NAME/VERSION")
    pr.add_argument("--input", required=True, help="CSV: a header naming the model's features, one row per line")
    pr.add_argument("--output", required=True, help="where to write the predictions")
    pr.add_argument("--format", choices=("csv", "json"), default="csv")
    pr.add_argument("--api-url", default=None, help="default: MLSTACK_API_URL, else http://MLSTACK_API_HOST:PORT")
    pr.add_argument("--token", default=None, help="bearer token (default: MLSTACK_TOKEN)")
    pr.set_defaults(func=_predict)

    m = sub.add_parser("monitor", help="the cluster monitor: drains every monitored ModelDeployment's model server "
                       "pods, judges drift and SLOs, writes SLOMet (one active per Redis)")
    m.add_argument("--metrics-host", default=None, help="default: MLSTACK_MONITOR_METRICS_HOST")
    m.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics (MLSTACK_MONITOR_METRICS_PORT)")
    m.add_argument("--log-level", default="info")
    m.set_defaults(func=_monitor)

    sub.add_parser("operator", help="the ModelDeployment operator: 'render FILE' or 'run' (= mlstack-operator)",
                   add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "operator":
        return _operator(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
