"""``mlstack serve``: run the model server on its own HTTP/1.1 protocol (``http1``), or under uvicorn."""

from __future__ import annotations

import importlib.util
import logging
import sys

from mlstack.monitoring.payload import PayloadLog
from mlstack.serving.app import ServingApp
from mlstack.serving.canary import CanaryForwarder, GrpcCanary
from mlstack.serving.resolve import parse_model_uri
from mlstack.serving.service import ModelService
from mlstack.serving.shadow import ShadowMirror

log = logging.getLogger("mlstack.serving")


def build_app(
    model_uri: str,
    name: str | None = None,
    max_batch: int | None = None,
    canary_url: str | None = None,
    canary_percent: int | None = None,
    canary_grpc: str | None = None,
    shadow_url: str | None = None,
    shadow_percent: float | None = None,
) -> tuple[ServingApp, ModelService]:
    """The ASGI app for ``model_uri``, loading it in the background at startup (settings from env).

    ``canary_url`` + ``canary_percent`` (default: ``MLSTACK_SERVE_CANARY_URL``/``_PERCENT``): forward exactly
    that share of inference requests to the canary's server (``canary_grpc`` HOST:PORT: gRPC ModelInfer too).
    ``shadow_url`` + ``shadow_percent`` (``MLSTACK_SERVE_SHADOW_URL``/``_PERCENT``): mirror that share of HTTP
    inference requests to the shadow version's server (answers logged there, never returned).
    """
    from mlstack.settings import Settings

    s = Settings()
    canary_url = canary_url or s.serve_canary_url
    canary_percent = canary_percent if canary_percent is not None else s.serve_canary_percent
    canary_grpc = canary_grpc or s.serve_canary_grpc
    if bool(canary_url) != bool(canary_percent):
        raise ValueError("--canary-url and --canary-percent go together")
    if canary_grpc and not canary_url:
        raise ValueError("--canary-grpc needs --canary-url and --canary-percent")
    if canary_url and not canary_url.startswith(("http://", "https://")):
        raise ValueError(f"--canary-url must be an http(s) URL, got {canary_url!r}")
    shadow_url = shadow_url or s.serve_shadow_url
    shadow_percent = shadow_percent if shadow_percent is not None else s.serve_shadow_percent
    if bool(shadow_url) != (shadow_percent is not None):
        raise ValueError("--shadow-url and --shadow-percent go together")
    if shadow_url and not shadow_url.startswith(("http://", "https://")):
        raise ValueError(f"--shadow-url must be an http(s) URL, got {shadow_url!r}")
    if shadow_percent is not None and not 0 < shadow_percent <= 100:
        raise ValueError(f"--shadow-percent must be within (0, 100], got {shadow_percent:g}")
    ref = parse_model_uri(model_uri)
    service = ModelService(
        ref, name=name, max_batch=max_batch or s.serve_max_batch,
        window_s=s.serve_batch_window_ms / 1000.0,
        payloads=PayloadLog(s.serve_monitoring_sample_rate, s.serve_monitoring_capacity), track=s.serve_track,
    )
    threads = s.serve_intra_op_threads

    def loader() -> None:
        service.load(s.mlflow_tracking_uri, s.model_cache_dir, intra_op_threads=threads)

    app = ServingApp(service, loader=loader)
    app.grpc_impl = s.serve_grpc_server
    app.http_impl = s.serve_http_server
    if canary_url and canary_percent:
        app.canary = CanaryForwarder(canary_url, canary_percent, timeout_s=s.serve_canary_timeout_seconds)
        service.metrics.canary = app.canary
        if canary_grpc:
            app.canary_grpc = GrpcCanary(canary_grpc, timeout_s=s.serve_canary_timeout_seconds)
    if shadow_url and shadow_percent is not None:
        app.shadow = ShadowMirror(shadow_url, shadow_percent, timeout_s=s.serve_shadow_timeout_seconds,
                                  max_in_flight=s.serve_shadow_max_in_flight)
        service.metrics.shadow = app.shadow
    return app, service


def run(model_uri: str, host: str, port: int, name: str | None = None, max_batch: int | None = None,
        grpc_port: int = 0, canary_url: str | None = None, canary_percent: int | None = None,
        canary_grpc: str | None = None, shadow_url: str | None = None, shadow_percent: float | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns 1 if the model failed to load, 2 on a bad URI.

    ``grpc_port`` > 0 also serves Open Inference Protocol v2 over gRPC there (same model, same batcher).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app, service = build_app(model_uri, name=name, max_batch=max_batch, canary_url=canary_url,
                                 canary_percent=canary_percent, canary_grpc=canary_grpc, shadow_url=shadow_url,
                                 shadow_percent=shadow_percent)
    except ValueError as e:
        print(f"mlstack serve: {e}", file=sys.stderr)
        return 2
    app.grpc_host, app.grpc_port = host, grpc_port
    failed: list[BaseException] = []
    log.info("serving %r as %r on http://%s:%d (max batch %d, %s)", model_uri, service.name, host, port,
             service.max_batch, app.http_impl)
    if app.http_impl == "uvicorn":
        started = _run_uvicorn(app, host, port, failed)
    else:
        from mlstack.serving.http1 import Http1Server
        from mlstack.serving.http1 import run as run_http1

        server = Http1Server(app)

        def on_load_error(exc: BaseException) -> None:
            failed.append(exc)
            server.request_stop()

        app.on_load_error = on_load_error
        started = run_http1(server, host, port)
    if not started and not failed:
        return 1  # the port (HTTP or gRPC) could not be bound; logged why
    if failed:
        print(f"mlstack serve: could not load {model_uri!r}: {service.load_error}", file=sys.stderr)
        return 1
    return 0


def _run_uvicorn(app: ServingApp, host: str, port: int, failed: list[BaseException]) -> bool:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # no X-Forwarded-* rewriting middleware on the hot path
        server_header=False,
        date_header=False,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)

    def on_load_error(exc: BaseException) -> None:
        failed.append(exc)
        server.should_exit = True

    app.on_load_error = on_load_error
    server.run()
    return bool(server.started)
