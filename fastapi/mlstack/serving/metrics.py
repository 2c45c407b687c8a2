"""Prometheus metrics of one model server, exposed with ``prometheus_client``.

The hot path only bumps plain Python counters (a dict lookup and a ``bisect``); the Prometheus
metric families are built when ``/metrics`` is scraped. ``prometheus_client``'s own Counter and
Histogram take a lock per update, which cost several microseconds per request here. Each server
has its own registry, so several can live in one process (tests, Ray Serve replicas).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, exposition, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = exposition.CONTENT_TYPE_LATEST.encode()

LATENCY_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class FastHistogram:
    """Non-cumulative bucket counts + sum; rendered cumulatively at scrape time."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # last: +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), acc))
        return out


class ServingMetrics(Collector):
    def __init__(self, model: str) -> None:
        self.model = model
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, FastHistogram] = {}
        self.batch_rows = FastHistogram(BATCH_BUCKETS)
        self.batch_requests = FastHistogram(BATCH_BUCKETS)
        self.ready = False
        self.canary: Any = None  # a CanaryForwarder when this server splits traffic with a canary
        self.shadow: Any = None  # a ShadowMirror when this server mirrors requests to a shadow version
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.created = time.time()  # the counters' ``_created``: a reader's zero point for a server it never read

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.latency.get(endpoint)
        if h is None:
            h = self.latency[endpoint] = FastHistogram(LATENCY_BUCKETS)
        h.observe(seconds)

    def observe_batch(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready

    def collect(self) -> Iterator[Metric]:
        m = self.model
        c = CounterMetricFamily("mlstack_serve_requests", "HTTP requests by endpoint and status",
                                labels=["model", "endpoint", "status"])
        for (endpoint, status), n in sorted(self.requests.items()):
            c.add_metric([m, endpoint, str(status)], n, created=self.created)
        yield c
        lat = HistogramMetricFamily("mlstack_serve_request_duration_seconds",
                                    "time to handle a request, excluding network I/O", labels=["model", "endpoint"])
        for endpoint, h in sorted(self.latency.items()):
            lat.add_metric([m, endpoint], h.buckets(), h.total)
        yield lat
        for name, doc, h in (
            ("mlstack_serve_batch_size", "rows per predictor call (dynamic batching)", self.batch_rows),
            ("mlstack_serve_batch_requests", "requests merged into one predictor call", self.batch_requests),
        ):
            fam = HistogramMetricFamily(name, doc, labels=["model"])
            fam.add_metric([m], h.buckets(), h.total)
            yield fam
        if self.canary is not None:
            cf = CounterMetricFamily("mlstack_serve_canary_requests", "inference requests whose turn was the "
                                     "canary's: forwarded (the canary answered) or fallback (stable answered)",
                                     labels=["model", "result"])
            cf.add_metric([m, "forwarded"], self.canary.forwarded)
            cf.add_metric([m, "fallback"], self.canary.fallbacks)
            yield cf
        if self.shadow is not None:
            sf = CounterMetricFamily("mlstack_serve_shadow_requests", "inference requests mirrored to the shadow "
                                     "version: mirrored (it answered), failed (it did not), dropped (not sent: too "
                                     "many mirrors in flight)", labels=["model", "result"])
            for result, n in self.shadow.metrics().items():
                sf.add_metric([m, result], n)
            yield sf
        g = GaugeMetricFamily("mlstack_serve_model_ready", "1 once the model is loaded", labels=["model"])
        g.add_metric([m], 1.0 if self.ready else 0.0)
        yield g

    def render(self) -> bytes:
        return generate_latest(self.registry)
