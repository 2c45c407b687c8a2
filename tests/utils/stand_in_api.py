"""A stand-in for the API (a real HTTP server in a thread) to test the two front proxies against."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tests.utils.procs import free_port, wait_until


class Upstream:
    """An API stand-in: /echo reflects the request; /stream sends one event, then a second only once released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.port = free_port()

        async def echo(request: Request):
            body = await request.body()
            return JSONResponse(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": request.url.query,
                    "body": body.decode(),
                    "headers": dict(request.headers),
                },
                status_code=int(request.query_params.get("status", "200")),
                headers={"x-upstream": "1"},
            )

        async def stream(request: Request):
            last = request.headers.get("last-event-id", "")

            async def gen():
                yield f"event: alert\nid: 1-0\ndata: {json.dumps({'last': last})}\n\n"
                while not self.release.is_set():
                    await asyncio.sleep(0.02)
                yield "event: alert\nid: 2-0\ndata: {}\n\n"

            return StreamingResponse(gen(), media_type="text/event-stream")

        app = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
                                Route("/stream", stream)])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        wait_until(lambda: self.server.started, 20, what="upstream stand-in")
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.should_exit = True
        self.thread.join(10)


def make_dist(d: Path) -> Path:
    """A minimal built app: index.html and one hashed asset."""
    (d / "assets").mkdir(parents=True, exist_ok=True)
    (d / "index.html").write_text("<!doctype html><title>app</title>")
    (d / "assets" / "app-abc123.js").write_text("console.log(1)")
    return d
