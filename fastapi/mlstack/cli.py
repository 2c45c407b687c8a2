"""The ``mlstack`` command: ``serve`` (model server), ``api`` (the FastAPI service), ``operator``."""

from __future__ import annotations

import argparse
import sys


def _serve(args: argparse.Namespace) -> int:
    from mlstack.serving.server import run
    from mlstack.settings import get_settings

    host = args.host or get_settings().serve_host
    return run(model_uri=args.model, host=host, port=args.port, name=args.name, max_batch=args.max_batch,
               grpc_port=args.grpc_port)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from mlstack.settings import get_settings

    s = get_settings()
    uvicorn.run(
        "mlstack.api.main:create_app",
        factory=True,
        host=args.host or s.api_host,
        port=args.port or s.api_port,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
        # h11, not httptools: it bounds the request line + headers (httptools buffers any size); more is a 400
        http="h11",
        h11_max_incomplete_event_size=s.api_max_header_bytes,
    )
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from mlstack.dashboard import run
    from mlstack.settings import get_settings

    s = get_settings()
    return run(host=args.host or s.api_host, port=args.port,
               api_url=args.api_url or f"http://{s.api_host}:{s.api_port}", dist_dir=args.dist)


def _operator(argv: list[str]) -> int:
    from mlstack_operator.cli import main as operator_main

    return operator_main(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlstack", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve one model over Open Inference Protocol v2 and /predict")
    s.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., or a local dir")
    s.add_argument("--host", default=None, help="default: MLSTACK_SERVE_HOST")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--name", default=None, help="model name in v2 URLs (default: the registered name)")
    s.add_argument("--max-batch", type=int, default=64, help="largest dynamic batch in rows")
    s.add_argument("--grpc-port", type=int, default=0, help="also serve v2 over gRPC on this port (0: off)")
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

    sub.add_parser("operator", help="the ModelDeployment operator: 'render FILE' or 'run'", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "operator":
        return _operator(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
