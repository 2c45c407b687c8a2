"""A stand-in model server for monitor tests: a real HTTP server answering what the monitor reads of ``mlstack
serve`` (``GET /v2/monitoring/payloads`` from a real ``PayloadLog``, ``GET /metrics`` from a real
``ServingMetrics``), with requests recorded straight into both (no model, no ONNX, starts in milliseconds)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from mlstack.monitoring.payload import PayloadLog
from mlstack.serving.metrics import ServingMetrics


@dataclass
class StandInServer:
    url: str
    version: str
    track: str = "stable"
    payloads: PayloadLog = field(default_factory=lambda: PayloadLog(sample_rate=1.0))
    metrics: ServingMetrics = field(default_factory=lambda: ServingMetrics("iris"))
    lock: threading.Lock = field(default_factory=threading.Lock)
    n: int = 0

    def serve(self, rows: list[list[float]], outputs: list, latency_ms: float, status: int = 200) -> str:
        """One inference request answered (and logged when it succeeded, like ``mlstack serve``)."""
        with self.lock:
            self.n += 1
            rid = f"{self.track}-{self.version}-{self.n}"
            self.metrics.observe_request("predict", status, latency_ms / 1000)
            if status == 200:
                self.payloads.record(rid, "iris", self.version, self.track, rows, outputs, latency_ms)
        return rid


@contextmanager
def stand_in_server(version: str, track: str = "stable") -> Iterator[StandInServer]:
    holder: dict[str, StandInServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            s = holder["s"]
            u = urlparse(self.path)
            if u.path == "/metrics":
                with s.lock:
                    body, ctype = s.metrics.render(), "text/plain; version=0.0.4"
            elif u.path == "/v2/monitoring/payloads":
                q = parse_qs(u.query)
                with s.lock:
                    page = s.payloads.read(int(q.get("after", ["0"])[0]), int(q.get("limit", ["5000"])[0]))
                body, ctype = json.dumps(page).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["s"] = StandInServer(f"http://127.0.0.1:{httpd.server_address[1]}", version, track)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["s"]
    finally:
        httpd.shutdown()
        httpd.server_close()
