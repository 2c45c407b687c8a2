"""``POST /inference`` without FastAPI's per-request machinery: a raw ASGI handler ahead of the app's middlewares.

FastAPI spends most of the API's CPU per ``/inference`` on machinery (middlewares, routing over every route,
``Request`` objects, dependency solving, stdlib ``json`` then pydantic): several times what the route's own work
costs. ``InferenceFirst`` (the API's app class) hands ``POST /inference`` to ``FastInference`` before any of it;
the route (``mlstack.api.routes.inference``) stays, for the OpenAPI document and for every request this path leaves
to it. No logic of its own: each step calls what the normal path calls, in the normal path's order:

1. the bearer token (``limits.bearer_token``) and the authority's ``authenticate`` before a byte of the body is
   read, a failure answered as ``BodyGuard`` answers it (``limits.refusal``: 401, ``WWW-Authenticate``, close);
2. the body, at most the route's limit (``limits.body_limits``), then one ``InferenceRequest.model_validate_json``;
3. ``Caller.require`` of the route's ``PERMISSION`` in the caller's home namespace, then the route's ``answer``;
   a domain error is answered by the app's own exception handlers.

What it does not take goes to the app untouched: no or a chunked body, a declared length over the limit, a
content type other than JSON, headers over the limit, the services not started. A body that fails validation
(or that pydantic's parser refuses and stdlib ``json`` might not: a BOM, lone surrogates) goes to the app with
the body replayed, so FastAPI's own 422 (and its order of checks: 403 before a bad field) is the only one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import Counter
from pydantic import ValidationError
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from mlstack.api.http import send_whole
from mlstack.api.limits import bearer_token, refusal
from mlstack.api.routes.inference import PERMISSION, answer
from mlstack.auth import HOME, Caller
from mlstack.errors import MlstackError
from mlstack.inference import InferenceRequest

if TYPE_CHECKING:
    from mlstack.settings import Settings

PATH = "/inference"
KEY = f"POST {PATH}"  # BodyGuard's key of the route's body limit
JSON_HEADERS = [(b"content-type", b"application/json")]
TAKEN = Counter("mlstack_api_inference_fast_path_total", "POST /inference requests by who answered them: the fast "
                "path (fast), FastAPI with the body replayed after it failed validation (replayed), FastAPI (app)",
                ["how"])
FAST, REPLAYED, APP = (TAKEN.labels(how) for how in ("fast", "replayed", "app"))


class InferenceFirst(FastAPI):
    """The API's app: ``POST /inference`` goes to ``fast`` (when set) before FastAPI sees it."""

    fast: FastInference | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast is not None and scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            return await self.fast(scope, receive, send)
        await super().__call__(scope, receive, send)

    async def route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request through FastAPI (middlewares, router, the route), as if there were no fast path."""
        await super().__call__(scope, receive, send)


class FastInference:
    def __init__(self, app: InferenceFirst, settings: Settings, limits: dict[str, int]):
        """``limits``: the API's per-route body limits (``limits.body_limits``), as ``BodyGuard`` has them."""
        self.app = app
        self.limit = limits.get(KEY, settings.api_max_body_bytes)
        self.max_header = settings.api_max_header_bytes
        # an unexpected error: the 500 the app's outermost middleware would give (and the error raised for the log)
        self.handle = ServerErrorMiddleware(self._handle, debug=app.debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        svc = getattr(self.app.state, "services", None)
        length = _taken(scope, self.max_header) if svc is not None and svc.auth and svc.inference else None
        if length is None or length > self.limit:
            APP.inc()
            return await self.app.route(scope, receive, send)
        await self.handle(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        svc = self.app.state.services
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            token = bearer_token(authorization.decode("latin-1") if authorization is not None else None)
            caller = Caller(await svc.auth.authenticate(token), svc.auth)
        except MlstackError as e:
            FAST.inc()
            return await refusal(e).response()(scope, receive, send)
        body = await _read(receive)
        if body is None:
            return  # the client went away
        try:
            req = InferenceRequest.model_validate_json(body)
        except ValidationError:
            REPLAYED.inc()
            return await self.app.route(scope, _replay(body, receive), send)
        FAST.inc()
        try:
            await caller.require(*PERMISSION, HOME)
            out = await answer(req, svc, caller)
        except Exception as e:
            handler = _handler(self.app, e)
            if handler is None:
                raise
            return await (await handler(Request(scope, receive), e))(scope, receive, send)
        await send_whole(receive, send, 200, JSON_HEADERS, out)


def _taken(scope: Scope, max_header: int) -> int | None:
    """The declared body length of a request this path takes, else None (the app answers it)."""
    length, json, size = None, False, len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"content-type":
            json = value.split(b";", 1)[0].strip().lower() == b"application/json"
        elif name == b"transfer-encoding":
            return None
    if not json or not length or size > max_header:
        return None
    return length


async def _read(receive: Receive) -> bytes | None:
    """The whole body (the server stops at its Content-Length, checked against the limit); None: disconnected."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the body already read, then the connection's own messages (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _handler(app: FastAPI, e: Exception):
    """The app's exception handler for ``e`` (by its class, nearest first), as Starlette picks it."""
    for cls in type(e).__mro__:
        if cls in app.exception_handlers and cls is not Exception:
            return app.exception_handlers[cls]
    return None
