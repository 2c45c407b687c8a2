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
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from mlstack.serving.canary import canary_turn
from mlstack.serving.resolve import parse_model_uri
from mlstack.serving.service import ModelService


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

    @model_validator(mode="after")
    def _canary_pair(self):
        if (self.canary_model_uri is None) != (self.canary_traffic_percent is None):
            raise ValueError("canary_model_uri and canary_traffic_percent go together")
        return self


@serve.deployment(name="ModelServer", ray_actor_options={"num_cpus": 0.5}, health_check_period_s=10)
class ModelDeployment:
    def __init__(self, model_uri: str, name: str | None = None, max_batch: int | None = None):
        from mlstack.settings import get_settings

        s = get_settings()
        self.service = ModelService(
            parse_model_uri(model_uri), name=name, max_batch=max_batch or s.serve_max_batch,
            window_s=s.serve_batch_window_ms / 1000.0,
        )
        # blocking on purpose: Ray Serve marks the replica ready once the constructor returns
        self.service.load(s.mlflow_tracking_uri, s.model_cache_dir,
                          intra_op_threads=s.serve_intra_op_threads)

    async def handle_raw(self, method: str, path: str, body: bytes, header_length: int | None) -> tuple:
        """(status, body, content type, header length): what a router forwards through a handle."""
        resp = await self.service.handle(method, path, body, header_length)
        return resp.status, resp.body, resp.content_type.decode(), resp.header_length, self.service.version

    async def __call__(self, request: Request) -> Response:
        parsed = await _parse(request)
        if isinstance(parsed, Response):
            return parsed
        return _response(await self.handle_raw(*parsed))

    def check_health(self) -> None:
        if not self.service.ready:
            raise RuntimeError(f"model {self.service.name!r} is not loaded")


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
    status, body, content_type, header_length, version = result
    headers = {} if header_length is None else {"Inference-Header-Content-Length": str(header_length)}
    if track:
        headers["X-Model-Track"] = track
    if version:
        headers["X-Model-Version"] = version
    return Response(body, status, headers=headers, media_type=content_type)


@serve.deployment(name="CanaryRouter", ray_actor_options={"num_cpus": 0.1})
class CanaryRouter:
    def __init__(self, stable, canary, percent: int):
        self.stable, self.canary, self.percent, self.n = stable, canary, percent, 0

    async def __call__(self, request: Request) -> Response:
        parsed = await _parse(request)
        if isinstance(parsed, Response):
            return parsed
        to_canary = canary_turn(self.n, self.percent)
        self.n += 1
        handle = self.canary if to_canary else self.stable
        return _response(await handle.handle_raw.remote(*parsed), "canary" if to_canary else "stable")


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve application builder: ``{"model_uri": ..., "name": ...}`` -> the bound deployment."""
    try:
        a = AppArgs.model_validate(args)
    except ValidationError as e:
        raise ValueError(f"invalid args for mlstack.serving.rayserve:build_app: {e}") from None
    parse_model_uri(a.model_uri)  # fail fast on a malformed URI
    stable = ModelDeployment.options(
        num_replicas=a.num_replicas, ray_actor_options={"num_cpus": a.num_cpus},
    ).bind(a.model_uri, a.name, a.max_batch)
    if a.canary_model_uri is None:
        return stable
    parse_model_uri(a.canary_model_uri)
    canary = ModelDeployment.options(
        name="ModelServerCanary", num_replicas=1, ray_actor_options={"num_cpus": a.num_cpus},
    ).bind(a.canary_model_uri, a.name, a.max_batch)
    return CanaryRouter.bind(stable, canary, a.canary_traffic_percent)
