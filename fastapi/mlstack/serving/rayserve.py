"""The same model server inside Ray Serve.

``build_app`` is the application builder named in a RayService's ``serveConfigV2``
(``import_path: mlstack.serving.rayserve:build_app``, ``args: {model_uri, name}``) and used by local
mode. With ``canary_model_uri`` and ``canary_traffic_percent`` a ``CanaryRouter`` ingress sends exactly
that share of requests (smooth weighted round-robin, exact over every 100 requests per router
replica, the same ``canary_turn`` rule as ``mlstack serve --canary-url``) to a second ``ModelServerCanary``
deployment; the response headers ``X-Model-Track`` and ``X-Model-Version`` say which track and version
answered. Each replica loads the model once (``ModelService.load``) and answers the same routes as
``mlstack serve``: ``/predict``, the v2 endpoints (JSON and binary tensors) and ``/metrics``; dynamic
batching happens per replica with the same ``Batcher``.

Payload log (``sample_rate`` > 0): each replica samples into its own ring (the same ``PayloadLog`` as
``mlstack serve``) and a background task sends what it sampled every ``FLUSH_SECONDS`` to one
``PayloadCollector`` per application (fire and forget: a collector that is away costs the requests nothing; what
could not be sent is counted as dropped). Serve's proxy spreads requests over replicas, so the monitor cannot
drain replicas one by one as it drains pods; ``GET /v2/monitoring/payloads`` on any replica (through any proxy)
reads the collector's ring instead: one cursor per application. Records are logged under Serve's own request id,
the ``X-Request-ID`` its proxy answers with (the caller's, else one it made).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from mlstack.monitoring.payload import MAX_READ, PageError, PayloadLog, RequestIds, page_args
from mlstack.serving.canary import canary_turn
from mlstack.serving.resolve import parse_model_uri
from mlstack.serving.service import ModelService

log = logging.getLogger(__name__)
PAYLOADS_PATH = "/v2/monitoring/payloads"
FLUSH_SECONDS = 0.5  # how often a replica sends its sampled requests to the collector
SEND_TIMEOUT = 5.0


class AppArgs(BaseModel):
    """Arguments of ``build_app`` (serveConfigV2 ``args``)."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str = Field(min_length=1, description="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/... or a dir")
    name: str | None = Field(None, description="model name in v2 URLs (default: the registered name)")
    max_batch: int | None = Field(None, ge=1, description="largest dynamic batch (default: settings)")
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per replica")
    canary_model_uri: str | None = Field(None, min_length=1, description="second model for a canary split")
    canary_traffic_percent: int | None = Field(None, ge=1, le=99, description="share of requests to the canary")
    sample_rate: float = Field(0.0, ge=0, le=1, description="share of requests in the payload log (0: off)")

    @model_validator(mode="after")
    def _canary_pair(self):
        if (self.canary_model_uri is None) != (self.canary_traffic_percent is None):
            raise ValueError("canary_model_uri and canary_traffic_percent go together")
        return self


@serve.deployment(name="PayloadCollector", num_replicas=1, ray_actor_options={"num_cpus": 0.01})
class PayloadCollector:
    """The application's payload ring: what its replicas sampled, read by the monitor with one cursor."""

    def __init__(self, sample_rate: float):
        self.log = PayloadLog(sample_rate=sample_rate)

    def append(self, records: list[dict[str, Any]], lost: int) -> None:
        self.log.extend(records, lost)

    def read(self, after: int, limit: int) -> dict[str, Any]:
        return self.log.read(after, limit)


@serve.deployment(name="ModelServer", ray_actor_options={"num_cpus": 0.5}, health_check_period_s=10)
class ModelDeployment:
    def __init__(self, model_uri: str, name: str | None = None, max_batch: int | None = None,
                 collector: Any = None, sample_rate: float = 0.0, track: str = "stable"):
        from mlstack.settings import Settings

        s = Settings()
        self.collector, self.ids = collector, RequestIds()
        self.service = ModelService(
            parse_model_uri(model_uri), name=name, max_batch=max_batch or s.serve_max_batch,
            window_s=s.serve_batch_window_ms / 1000.0, track=track,
            payloads=PayloadLog(sample_rate=sample_rate if collector is not None else 0.0),
        )
        self._cursor, self._unsent, self._flusher = 0, 0, None
        # blocking on purpose: Ray Serve marks the replica ready once the constructor returns
        self.service.load(s.mlflow_tracking_uri, s.model_cache_dir,
                          intra_op_threads=s.serve_intra_op_threads)

    async def handle_raw(self, method: str, path: str, body: bytes, header_length: int | None,
                         request_id: str | None = None) -> tuple:
        """(status, body, content type, header length, version, request id): what a router forwards."""
        if self._flusher is None and self.service.payloads.enabled:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        request_id = request_id or self.ids.next()
        resp = await self.service.handle(method, path, body, header_length, request_id)
        return resp.status, resp.body, resp.content_type.decode(), resp.header_length, self.service.version, \
            request_id

    async def __call__(self, request: Request) -> Response:
        parsed = await _parse(request)
        if isinstance(parsed, Response):
            return parsed
        if parsed[1] == PAYLOADS_PATH:
            return await _payloads(request, self.collector, self.service.name)
        return _response(await self.handle_raw(*parsed, _request_id(self.ids)))

    def check_health(self) -> None:
        if not self.service.ready:
            raise RuntimeError(f"model {self.service.name!r} is not loaded")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def flush(self) -> int:
        """Send what this replica sampled since the last flush to the collector; what cannot be sent (collector
        away) is dropped and counted, never retried into the next requests' way. Returns the records sent."""
        page = self.service.payloads.read(self._cursor, MAX_READ)
        self._cursor = page["next"]
        records, lost = page["records"], self._unsent + page["missed"]
        if not records and not lost:
            return 0
        try:
            await asyncio.wait_for(self.collector.append.remote(records, lost), SEND_TIMEOUT)
        except Exception as e:  # the collector restarting, or gone: drop, count, carry on
            self._unsent = lost + len(records)
            log.warning("payload log: %d records not sent to the collector (%s)", len(records), e)
            return 0
        self._unsent = 0
        return len(records)


def _request_id(ids: RequestIds) -> str:
    """The id Serve's proxy gave this request (and answers with as ``X-Request-ID``): the caller's or its own."""
    from ray.serve.context import _get_serve_request_context

    return ids.accept(_get_serve_request_context().request_id)


async def _payloads(request: Request, collector: Any, name: str | None) -> Response:
    """``GET /v2/monitoring/payloads?after=N&limit=M`` answered from the application's collector (the same page as
    ``mlstack serve``'s own ring)."""
    def err(status: int, message: str) -> Response:
        return Response(orjson.dumps({"error": message}), status, media_type="application/json")

    try:
        after, limit = page_args(request.method, request.url.query)
    except PageError as e:
        return err(e.status, e.message)
    if collector is None:
        return err(404, "the payload log is off for this deployment (sample rate 0)")
    try:
        page = await asyncio.wait_for(collector.read.remote(after, limit), SEND_TIMEOUT)
    except Exception as e:
        return err(503, f"the payload collector did not answer: {type(e).__name__}")
    return Response(orjson.dumps({"model": name, "track": None, **page}), 200, media_type="application/json")


async def _parse(request: Request) -> tuple[str, str, bytes, int | None] | Response:
    path = request.url.path
    root = request.scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    header_length: int | None = None
    raw = request.headers.get("inference-header-content-length")
    if raw is not None:
        try:
            header_length = int(raw)
        except ValueError:
            return Response(b'{"error":"Inference-Header-Content-Length is not an integer"}', 400,
                            media_type="application/json")
    return request.method, path, await request.body(), header_length


def _response(result: tuple, track: str | None = None) -> Response:
    status, body, content_type, header_length, version, _ = result  # X-Request-ID: Serve's proxy adds it
    headers = {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    if track:
        headers["X-Model-Track"] = track
    if version:
        headers["X-Model-Version"] = version
    return Response(body, status, headers=headers, media_type=content_type)


@serve.deployment(name="CanaryRouter", ray_actor_options={"num_cpus": 0.1})
class CanaryRouter:
    def __init__(self, stable, canary, percent: int, collector: Any = None):
        self.stable, self.canary, self.percent, self.n = stable, canary, percent, 0
        self.collector, self.ids = collector, RequestIds()

    async def __call__(self, request: Request) -> Response:
        parsed = await _parse(request)
        if isinstance(parsed, Response):
            return parsed
        if parsed[1] == PAYLOADS_PATH:
            return await _payloads(request, self.collector, None)
        to_canary = canary_turn(self.n, self.percent)
        self.n += 1
        handle = self.canary if to_canary else self.stable
        return _response(await handle.handle_raw.remote(*parsed, _request_id(self.ids)),
                         "canary" if to_canary else "stable")


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve application builder: ``{"model_uri": ..., "name": ...}`` -> the bound deployment."""
    try:
        a = AppArgs.model_validate(args)
    except ValidationError as e:
        raise ValueError(f"invalid args for mlstack.serving.rayserve:build_app: {e}") from None
    parse_model_uri(a.model_uri)  # fail fast on a malformed URI
    collector = PayloadCollector.bind(a.sample_rate) if a.sample_rate > 0 else None
    stable = ModelDeployment.options(
        num_replicas=a.num_replicas, ray_actor_options={"num_cpus": a.num_cpus},
    ).bind(a.model_uri, a.name, a.max_batch, collector, a.sample_rate, "stable")
    if a.canary_model_uri is None:
        return stable
    parse_model_uri(a.canary_model_uri)
    canary = ModelDeployment.options(
        name="ModelServerCanary", num_replicas=1, ray_actor_options={"num_cpus": a.num_cpus},
    ).bind(a.canary_model_uri, a.name, a.max_batch, collector, a.sample_rate, "canary")
    return CanaryRouter.bind(stable, canary, a.canary_traffic_percent, collector)
