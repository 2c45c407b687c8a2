"""Before a byte of a request body is read: who is calling (401), and whether the body fits its route (413).

FastAPI reads and parses a body before it resolves a route's dependencies, so without this an anonymous
client could make the API read and parse hundreds of megabytes before the token check said no. This pure
ASGI middleware guards every request that carries a body; on the route's first ``receive()`` (the route is
known by then, and not a byte of the body has been read) it

1. authenticates the bearer token (unless the route is open, e.g. ``POST /orgs/join``) and keeps the answer
   in the scope for the route's own check (``mlstack.api.deps``), so a request costs one lookup;
2. refuses a declared ``Content-Length`` above the route's limit with 413 without reading anything;
3. counts what a chunked (or lying) client sends and stops at the limit with 413.

Limits are per route (``"METHOD /path/{template}"``) from settings: ``api_body_limits`` over the uploads'
own limits over ``api_max_body_bytes``. Header size (``api_max_header_bytes``) is bounded twice: the HTTP server
(``mlstack.api.http``) stops buffering an unfinished header block past it (431), and this middleware answers
431 to a request whose headers, arriving in one piece, are larger.
A 422 carries at most a short excerpt of what was refused (``validation_response``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlstack.errors import MlstackError, Unauthorized
from mlstack.packages.limits import PackageLimits
from mlstack.settings import Settings

PRINCIPAL_KEY = "mlstack.principal"  # scope key: (token, Principal) authenticated before the body was read
OPEN_WITH_BODY = frozenset({"POST /orgs/join"})  # routes with a body that need no token
MiB = 1024 * 1024


class Refused(HTTPException):
    """A request refused before its body was read. An HTTPException, because FastAPI passes those through from
    its body read (anything else becomes a 400) and answers them as ``{"detail": ...}``, like domain errors."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        # close: the rest of the body is never read (else the server would go on reading it to discard it)
        super().__init__(status, message, {**(headers or {}), "Connection": "close"})

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status_code, headers=self.headers)


def body_limits(settings: Settings, pkg: PackageLimits) -> dict[str, int]:
    """Per-route body limits: the uploads' own (CSV, model package), then ``api_body_limits`` over them."""
    from mlstack.training.data import MAX_CSV_BYTES

    return {"POST /train": MAX_CSV_BYTES + MiB,
            "POST /models/{name}/versions": pkg.max_upload_bytes + pkg.form_overhead_bytes,
            "POST /predict": settings.predict_max_upload_bytes + MiB,
            **settings.api_body_limits}


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without the header; 401 for another scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def refusal(e: MlstackError) -> Refused:
    """How ``BodyGuard`` answers a token it cannot accept (401 with ``WWW-Authenticate``) before the body is read."""
    headers = {"WWW-Authenticate": 'Bearer realm="mlstack"'} if e.status_code == 401 else None
    return Refused(e.status_code, e.message, headers)


def _declared(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise Refused(400, "Content-Length is not a number") from None
    if n < 0:
        raise Refused(400, "Content-Length is negative")
    return n


class BodyGuard:
    def __init__(self, app: ASGIApp, settings: Settings, limits: dict[str, int]):
        """``limits``: ``body_limits`` of the settings (per route)."""
        self.app = app
        self.default = settings.api_max_body_bytes
        self.limits = limits
        self.max_header = settings.api_max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        authorization, declared_raw, chunked = None, None, False
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
            if name == b"content-length":
                declared_raw = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        if size > self.max_header:  # the server bounds what it buffers; this bounds what a route sees
            return await Refused(431, f"request headers larger than {self.max_header} bytes").response()(
                scope, receive, send)
        if not chunked and declared_raw in (None, b"0"):
            return await self.app(scope, receive, send)  # no body: the route's own auth check is enough

        checked, received, started, limit, what = False, 0, False, self.default, "this path"

        async def guarded() -> Message:
            nonlocal checked, received, limit, what
            if not checked:
                route = scope.get("route")
                path = getattr(route, "path", None)
                key = f"{scope['method']} {path}" if path else None
                limit, what = self.limits.get(key, self.default), key or what
                if key not in OPEN_WITH_BODY:
                    await self._authenticate(scope, authorization)
                declared = _declared(declared_raw)
                if declared is not None and declared > limit:
                    raise Refused(413, f"request body of {declared} bytes is larger than the limit of {limit} bytes "
                                       f"for {what}")
                checked = True
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise Refused(413, f"request body larger than the limit of {limit} bytes for {what}")
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded, tracked)
        except BaseException as e:
            refused = _find(e)
            if refused is None or started:
                raise
            await refused.response()(scope, receive, send)

    async def _authenticate(self, scope: Scope, authorization: str | None) -> None:
        services = getattr(scope["app"].state, "services", None)
        if services is None or services.auth is None:
            return  # not started (the route answers 503 on its own)
        try:
            token = bearer_token(authorization)
            scope[PRINCIPAL_KEY] = (token, await services.auth.authenticate(token))
        except MlstackError as e:
            raise refusal(e) from None


def _find(e: BaseException | None) -> Refused | None:
    """Our refusal, if the app let it escape (perhaps wrapped in an ExceptionGroup or as a cause)."""
    for _ in range(10):
        if e is None:
            return None
        if isinstance(e, Refused):
            return e
        if isinstance(e, BaseExceptionGroup):
            return next((hit for sub in e.exceptions if (hit := _find(sub)) is not None), None)
        e = e.__cause__ or e.__context__
    return None


EXCERPT = 80
MAX_ERRORS = 20


def excerpt(value: Any, n: int = EXCERPT) -> Any:
    """A short, JSON-safe stand-in for a rejected input: never the whole body back."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if not isinstance(value, str):
        try:
            value = json.dumps(value, default=str, separators=(",", ":"))
        except (TypeError, ValueError):
            value = f"<{type(value).__name__}>"
    return value if len(value) <= n else value[:n] + f"... ({len(value)} characters)"


def validation_response(errors: list[dict]) -> JSONResponse:
    """422 for a request that failed validation: where and why, with at most a short excerpt of the input."""
    out = []
    for err in errors[:MAX_ERRORS]:
        item: dict[str, Any] = {"type": err.get("type"), "loc": [excerpt(x, 64) for x in err.get("loc", ())],
                                "msg": excerpt(err.get("msg", ""), 300)}
        if "input" in err:
            item["input"] = excerpt(err["input"])
        if isinstance(err.get("ctx"), dict):
            item["ctx"] = {str(k)[:40]: excerpt(v) for k, v in list(err["ctx"].items())[:5]}
        out.append(item)
    if len(errors) > MAX_ERRORS:
        out.append({"type": "more", "loc": [], "msg": f"{len(errors) - MAX_ERRORS} more errors not shown"})
    return JSONResponse({"detail": out}, status_code=422)
