"""Exact canary splits: the stable model server forwards exactly P of every 100 requests to the canary.

One counter rule (``canary_turn``) for every runtime: Ray Serve's ``CanaryRouter`` (``rayserve``) and
``mlstack serve --canary-url URL --canary-percent P`` (``onnx`` pods, VMs, local mode). Each stable replica
splits exactly over every 100 requests it answers, so the aggregate over any number of replicas (and
whatever an HPA does to them) is exact to within one request per replica.

Forwarded: ``POST /predict`` and ``POST /v2/models/{name}/infer`` over HTTP (a request naming a version,
``/v2/models/{name}/versions/{v}/infer`` or the ``X-Model-Version`` request header, is answered by the server
that has that version: 404 elsewhere; the API's ``/inference`` for a model version sends it), and gRPC
``ModelInfer`` when ``--canary-grpc HOST:PORT`` is given. The answer is the canary's own, with the
``X-Model-Track: canary`` header (``stable`` otherwise) and ``X-Model-Version``. A canary that cannot answer
(connection refused, timeout, a 5xx) is answered by stable instead and counted in
``mlstack_serve_canary_requests{result="fallback"}``: the request never fails because of the canary.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

TRACK_HEADER = b"x-model-track"
VERSION_HEADER = b"x-model-version"
STABLE = b"stable"
CANARY = b"canary"
_FORWARDED_REQUEST_HEADERS = ("content-type", "inference-header-content-length", "accept", "x-request-id")
_FORWARDED_RESPONSE_HEADERS = ("content-type", "inference-header-content-length", "x-model-version")


def canary_turn(n: int, percent: int) -> bool:
    """Whether request number ``n`` (0-based) goes to the canary: exactly ``percent`` of every 100, spread
    evenly (Bresenham: the canary's turns are as far apart as they can be)."""
    return (n + 1) * percent // 100 > n * percent // 100


def splits(method: str, path: str) -> bool:
    """Whether a request takes part in the split (inference, not health, metadata or metrics)."""
    if method != "POST":
        return False
    if path == "/predict":
        return True
    return path.startswith("/v2/models/") and path.endswith("/infer") and "/versions/" not in path


class CanaryCounter:
    """``canary_turn`` over a running count (one event loop: no lock needed)."""

    def __init__(self, percent: int):
        if not 1 <= percent <= 99:
            raise ValueError(f"canary percent must be 1..99, got {percent}")
        self.percent = percent
        self.n = 0

    def take(self) -> bool:
        turn = canary_turn(self.n, self.percent)
        self.n += 1
        return turn


class CanaryForwarder:
    """Forwards the canary's share of HTTP inference requests to ``url`` through one pooled keep-alive session.

    ``start`` (at the server's startup) creates the session; ``forward`` returns ``(status, headers, body)``, or
    None when the canary could not answer (the caller answers from stable; counted in ``fallbacks``).
    """

    def __init__(self, url: str, percent: int, timeout_s: float = 2.0, connect_timeout_s: float = 0.5):
        self.url = url.rstrip("/")
        self.counter = CanaryCounter(percent)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self.session: aiohttp.ClientSession | None = None
        self.forwarded = 0
        self.fallbacks = 0
        self.last_error = ""

    @property
    def percent(self) -> int:
        return self.counter.percent

    async def start(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30, ttl_dns_cache=30),
                timeout=self.timeout, auto_decompress=False, skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def take(self) -> bool:
        return self.counter.take()

    def fell_back(self, why: str) -> None:
        self.fallbacks += 1
        if why != self.last_error or self.fallbacks % 100 == 1:  # say it once, not once per request
            log.warning("canary %s did not answer (%s); stable answered (%d fallbacks so far)",
                        self.url, why, self.fallbacks)
        self.last_error = why

    async def forward(self, method: str, path: str, body: bytes,
                      headers: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        assert self.session is not None, "CanaryForwarder.start() was not called"
        send = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers
                if k.decode("latin-1") in _FORWARDED_REQUEST_HEADERS}
        try:
            async with self.session.request(method, self.url + path, data=body, headers=send) as resp:
                content = await resp.read()
                if resp.status >= 500:
                    self.fell_back(f"HTTP {resp.status}")
                    return None
                out = [(k.encode("latin-1"), resp.headers[k].encode("latin-1"))
                       for k in _FORWARDED_RESPONSE_HEADERS if k in resp.headers]
                self.forwarded += 1
                return resp.status, out, content
        except (aiohttp.ClientError, TimeoutError) as e:
            self.fell_back(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
            return None

    def metrics(self) -> dict[str, Any]:
        return {"forwarded": self.forwarded, "fallback": self.fallbacks}


class GrpcCanary:
    """gRPC ``ModelInfer`` to the canary's v2 gRPC port through one channel (created on the running loop)."""

    def __init__(self, target: str, timeout_s: float = 2.0):
        self.target = target
        self.timeout_s = timeout_s
        self._channel: Any = None
        self._stub: Any = None

    async def start(self) -> None:
        import grpc

        from mlstack.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc

        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
            self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def infer(self, request: Any) -> Any:
        """The canary's response; raises ``grpc.aio.AioRpcError`` when it cannot answer."""
        return await self._stub.ModelInfer(request, timeout=self.timeout_s)
