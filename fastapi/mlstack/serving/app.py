"""The model server's HTTP side: ``ServingApp.dispatch`` turns one whole request into (status, headers, body).

Two transports call it: ``http1`` (the default: its own HTTP/1.1 protocol, no ASGI) and uvicorn through the
ASGI adapter here (``MLSTACK_SERVE_HTTP_SERVER=uvicorn``). No framework routing on the hot path. The model loads
in a background thread at startup, so ``/v2/health/live`` answers at once and ``/v2/health/ready`` turns 200
once loading is done.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from mlstack.monitoring.payload import PageError, RequestIds, page_args
from mlstack.serving.canary import CANARY, STABLE, TRACK_HEADER, VERSION_HEADER, CanaryForwarder, GrpcCanary, splits
from mlstack.serving.service import ModelService, Response, error
from mlstack.serving.shadow import ShadowMirror

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers (no Content-Length), body

_HEADER_LENGTH = b"inference-header-content-length"
_CONTENT_LENGTH = b"content-length"
_REQUEST_ID = b"x-request-id"
PAYLOADS_PATH = "/v2/monitoring/payloads"
MAX_BODY_BYTES = 64 * 1024 * 1024


class ServingApp:
    """ASGI callable serving one ``ModelService``.

    ``loader`` (blocking) runs in a daemon thread at startup; if it raises, the service reports the
    error on its readiness endpoints and ``on_load_error`` is called on the event loop.
    """

    def __init__(
        self,
        service: ModelService,
        loader: Callable[[], None] | None = None,
        on_load_error: Callable[[BaseException], None] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ):
        self.service = service
        self._loader = loader
        self.on_load_error = on_load_error
        self._max_body = max_body_bytes
        self.loaded = threading.Event()  # set when loading finished (either way)
        # Open Inference Protocol v2 over gRPC on this port (0: off), on the same loop and batcher
        self.grpc_host = "127.0.0.1"
        self.grpc_port = 0
        self.grpc_impl = "h2"  # or "grpcio" (grpc.aio.server)
        self.http_impl = "http1"  # or "uvicorn" (this object as an ASGI app)
        self._grpc: Any = None
        # exact canary split (mlstack serve --canary-url/--canary-percent): forwards the canary's share of
        # /predict and v2 infer (and gRPC ModelInfer with canary_grpc) to the canary's own server
        self.canary: CanaryForwarder | None = None
        self.canary_grpc: GrpcCanary | None = None
        # shadow traffic (mlstack serve --shadow-url/--shadow-percent): a copy of that share of HTTP inference
        # requests goes to the shadow version's server in the background; its answers are never returned
        self.shadow: ShadowMirror | None = None
        self.request_ids = RequestIds()  # every response carries X-Request-ID (the caller's, or a new one)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI (``MLSTACK_SERVE_HTTP_SERVER=uvicorn``); the default transport, ``http1``, calls ``dispatch`` itself."""
        kind = scope["type"]
        if kind == "http":
            await self._asgi_http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _asgi_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = 0
        for k, v in scope["headers"]:
            if k == _CONTENT_LENGTH:
                try:
                    declared = int(v)
                except ValueError:
                    declared = 0
        if declared > self._max_body:
            await _asgi_send(send, self.too_large())
            return
        msg = await receive()
        body: bytes = msg.get("body", b"")
        if msg.get("more_body", False):
            chunks = [body]
            size = len(body)
            while msg.get("more_body", False):
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > self._max_body:
                    await _asgi_send(send, self.too_large())
                    return
                chunks.append(chunk)
            body = b"".join(chunks)
        elif msg["type"] == "http.disconnect":
            return
        await _asgi_send(send, await self.dispatch(scope["method"], scope["path"], scope.get("query_string", b""),
                                                   scope["headers"], body))

    @property
    def max_body_bytes(self) -> int:
        return self._max_body

    def too_large(self) -> Reply:
        return as_reply(error(413, f"request body over {self._max_body} bytes"))

    async def dispatch(self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
                       body: bytes) -> Reply:
        """One whole request (header names in lower case, the body read) -> (status, headers, body); the transport
        adds the framing (Content-Length)."""
        header_length: int | None = None
        given_id: str | None = None
        pinned: bytes | None = None
        for k, v in headers:
            if k == _REQUEST_ID:
                given_id = v.decode("latin-1")
            elif k == VERSION_HEADER:
                pinned = v
            elif k == _HEADER_LENGTH:
                try:
                    header_length = int(v)
                except ValueError:
                    return as_reply(error(400, f"Inference-Header-Content-Length {v!r} is not an integer"))
        request_id = self.request_ids.accept(given_id)
        rid = request_id.encode("latin-1")
        extra: list[tuple[bytes, bytes]] = [(_REQUEST_ID, rid)]
        if path == PAYLOADS_PATH:
            return as_reply(self._payloads(method, query), extra)
        if pinned is not None and self.service.version is not None and pinned.decode("latin-1") != self.service.version:
            return as_reply(error(404, f"version {pinned.decode('latin-1')!r} of model {self.service.name!r} is not "
                                     f"served here (this server serves version {self.service.version})"), extra)
        mirrored = False
        if self.shadow is not None and pinned is None and splits(method, path) and self.shadow.take():
            # a copy under the same id, in the background; this server logs its own answer to compare with
            sent = headers if given_id == request_id else [*headers, (_REQUEST_ID, rid)]
            mirrored = self.shadow.mirror(method, path, body, sent)
        if self.canary is not None and splits(method, path):
            # a pinned version is not split (nor counted); the canary logs a request under the same id
            if pinned is None and self.canary.take():
                sent = headers if given_id == request_id else [*headers, (_REQUEST_ID, rid)]
                fwd = await self.canary.forward(method, path, body, sent)
                if fwd is not None:
                    status, fwd_headers, content = fwd
                    fwd_headers += [(TRACK_HEADER, CANARY), (_REQUEST_ID, rid)]
                    return status, fwd_headers, content
            extra.append((TRACK_HEADER, STABLE))
        resp = await self.service.handle(method, path, body, header_length, request_id, force_log=mirrored)
        version = self.service.version
        if version is not None:
            extra.append((VERSION_HEADER, version.encode()))
        return as_reply(resp, extra)

    def _payloads(self, method: str, query: bytes) -> Response:
        """``GET /v2/monitoring/payloads?after=N&limit=M``: the sampled requests after cursor N, for the monitor."""
        try:
            after, limit = page_args(method, query.decode("latin-1"))
        except PageError as e:
            return error(e.status, e.message)
        page = self.service.payloads.read(after, limit)
        return Response(200, orjson.dumps({"model": self.service.name, "track": self.service.track, **page}))

    async def startup(self) -> None:
        """Open the canary/shadow sessions and the gRPC port, and start loading the model (in a thread).

        Raises if the gRPC port cannot be bound."""
        if self.canary is not None:  # one pooled keep-alive session for the life of the server
            await self.canary.start()
            log.info("canary: %d%% of inference requests forwarded to %s", self.canary.percent, self.canary.url)
        if self.canary_grpc is not None:
            await self.canary_grpc.start()
        if self.shadow is not None:
            await self.shadow.start()
            log.info("shadow: %g%% of inference requests mirrored to %s", self.shadow.percent, self.shadow.url)
        if self.grpc_port:
            from mlstack.serving.grpc_server import start_grpc_server

            self._grpc = await start_grpc_server(self.service, self.grpc_host, self.grpc_port,
                                                 canary=self.canary if self.canary_grpc else None,
                                                 canary_grpc=self.canary_grpc, impl=self.grpc_impl,
                                                 shadow=self.shadow)
            log.info("Open Inference Protocol v2 over gRPC on %s:%d", self.grpc_host, self.grpc_port)
        if self._loader is not None:
            self._start_loading(asyncio.get_running_loop())
        else:
            self.loaded.set()

    async def shutdown(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
            self._grpc = None
        if self.canary is not None:
            await self.canary.close()
        if self.canary_grpc is not None:
            await self.canary_grpc.close()
        if self.shadow is not None:
            await self.shadow.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:
                    # whatever failed (the gRPC port, a canary or shadow session), said as http1 says it
                    await send({"type": "lifespan.startup.failed", "message": f"{type(e).__name__}: {e}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start_loading(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._loader is not None
        loader = self._loader

        def work() -> None:
            try:
                loader()
            except BaseException as e:
                log.error("loading model %r failed: %s: %s", self.service.name, type(e).__name__, e)
                self.service.set_failed(f"{type(e).__name__}: {e}")
                if self.on_load_error is not None:
                    loop.call_soon_threadsafe(self.on_load_error, e)
            finally:
                self.loaded.set()

        # a daemon thread, not the loop's executor: a hung download must not block shutdown
        threading.Thread(target=work, name="model-loader", daemon=True).start()


def as_reply(resp: Response, extra: list[tuple[bytes, bytes]] | None = None) -> Reply:
    headers = [(b"content-type", resp.content_type)]
    if resp.header_length is not None:
        headers.append((_HEADER_LENGTH, b"%d" % resp.header_length))
    if extra:
        headers += extra
    return resp.status, headers, resp.body


async def _asgi_send(send: Send, reply: Reply) -> None:
    status, headers, body = reply
    headers.append((_CONTENT_LENGTH, b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
