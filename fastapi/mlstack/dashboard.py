"""Local-mode dashboard server (``mlstack dashboard``): the built single-page app plus ``/api/*`` → the API.

It does what ``frontend/nginx.conf`` does in the cluster: serves ``frontend/dist`` (hashed assets cached
for a year, ``index.html`` never, unknown paths fall back to the app) and proxies ``/api/<path>`` to
``<api_url>/<path>`` streaming both ways, so server-sent events (``/api/webhook``) reach the browser
unbuffered and ``Last-Event-ID`` reaches the API.
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from mlstack.local.stack import DIST_ENV, default_dist_dir

API_PREFIX = "/api"

# RFC 9110 §7.6.1 hop-by-hop headers, plus ones the proxy sets itself
_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}
_HOP_RESPONSE = _HOP - {"content-length"}


def _request_headers(request: Request) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
    client = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    headers += [
        ("x-forwarded-for", f"{prior}, {client}" if prior else client),
        ("x-forwarded-proto", request.url.scheme),
        ("x-forwarded-host", request.headers.get("host", "")),
        ("x-forwarded-prefix", API_PREFIX),
    ]
    return headers


def create_app(api_url: str, dist_dir: Path) -> Starlette:
    from mlstack.auth.redact import redact_access_logs

    redact_access_logs()  # the proxied alert stream's URL carries ?ticket=
    dist = dist_dir.resolve()
    index = dist / "index.html"
    upstream = api_url.rstrip("/")
    # no read timeout: an SSE stream is idle between alerts (the API sends heartbeats)
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None), follow_redirects=False)

    async def proxy(request: Request) -> Response:
        path = request.path_params["path"]
        url = f"{upstream}/{path}"
        if request.url.query:
            url += f"?{request.url.query}"
        body = request.stream() if request.method not in ("GET", "HEAD", "OPTIONS") else None
        req = client.build_request(request.method, url, headers=_request_headers(request), content=body)
        try:
            resp = await client.send(req, stream=True)
        except httpx.HTTPError as e:
            detail = f"the API at {upstream} is unreachable: {type(e).__name__}"
            return JSONResponse({"detail": detail}, status_code=502)
        out = StreamingResponse(resp.aiter_raw(), status_code=resp.status_code, background=BackgroundTask(resp.aclose))
        # pass headers through as they came (repeated ones such as set-cookie included)
        out.raw_headers = [(k, v) for k, v in resp.headers.raw if k.decode("latin-1").lower() not in _HOP_RESPONSE]
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            out.raw_headers.append((b"x-accel-buffering", b"no"))
        return out

    async def static(request: Request) -> Response:
        rel = request.path_params.get("path", "")
        target = (dist / rel).resolve()
        if rel and target.is_file() and target.is_relative_to(dist):
            cache = "public, max-age=31536000, immutable" if rel.startswith("assets/") else "no-cache"
            return FileResponse(target, headers={"cache-control": cache})
        if rel.startswith("assets/") or (Path(rel).suffix and Path(rel).suffix != ".html"):
            return PlainTextResponse("not found", status_code=404)
        # SPA fallback: any other path is a client-side route
        return FileResponse(index, headers={"cache-control": "no-cache"})

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    @asynccontextmanager
    async def lifespan(_: Starlette):
        yield
        await client.aclose()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/healthz", healthz),
            Route(API_PREFIX + "/{path:path}", proxy, methods=methods),
            Route("/{path:path}", static, methods=["GET", "HEAD"]),
        ],
    )
    return app


def run(
    host: str = "127.0.0.1", port: int = 5001, api_url: str | None = None, dist_dir: str | Path | None = None
) -> int:
    import uvicorn

    dist = Path(dist_dir) if dist_dir else default_dist_dir()
    if not (dist / "index.html").is_file():
        print(
            f"mlstack dashboard: no built dashboard at {dist} (index.html missing).\n"
            "Build it with: (cd frontend && npm ci && npm run build), "
            f"or point --dist / ${DIST_ENV} at a built copy.",
            file=sys.stderr,
        )
        return 2
    if not api_url:
        from mlstack.settings import Settings

        s = Settings()
        api_url = f"http://{s.api_host}:{s.api_port}"
    print(f"mlstack dashboard on http://{host}:{port}/ (dist {dist}, /api → {api_url})", flush=True)
    # a short graceful shutdown: open SSE streams never finish on their own
    uvicorn.run(create_app(api_url, dist), host=host, port=port, log_level="info", timeout_graceful_shutdown=2)
    return 0
