"""Monitoring time series: one point per deployment after an evaluation, for the dashboard's deployment page.

Storage (Redis): a capped Stream per deployment, ``<prefix>:series:<ns>/<name>``, one entry per point (field ``p``,
the point's JSON; the entry id is its time), trimmed to ``retention_seconds`` (``XTRIM MINID``) and to at most
``max_points`` entries (``XADD MAXLEN``). Points are at least ``step_seconds`` apart (an evaluation closer to the
last point adds none: the next point covers the whole interval), so 24 h at the default 30 s step is 2,880 points.
What a point was computed from (payload stream cursor, the servers' request counters) is kept in the deployment's
monitor state hash (field ``series:last``), so a monitor that takes over the lease continues the series, and
``Monitor.forget_deleted`` drops it with the rest; the series stream itself is dropped by ``forget``.

A point covers the interval since the previous point:

- ``requests``, ``errors`` (status >= 500), ``rate`` (requests/s), ``error_rate``: from each model server's own
  ``mlstack_serve_requests_total`` (``GET /metrics`` of every drained server, inference endpoints only; a counter
  that went down is a restarted server and counts from 0), per track in ``tracks``; the totals are the live
  tracks' (stable + canary: the canary's share is what stable forwarded), a shadow's copies are not more traffic.
  ``counted`` is False when no live server answered, and ``rate`` is then estimated from the sampled live records
  and ``spec.monitoring.sampleRate`` (always so for ``server: rayserve``: through Serve's proxy ``/metrics`` is a
  random replica's);
- per version, from the sampled payload records drained in the interval: ``sampled``, estimated ``rate``,
  ``p50_ms`` and ``p99_ms`` of the logged latencies;
- per version, over the deployment's window (``spec.monitoring.windowSeconds``, as the evaluation judges it):
  online ``accuracy`` / ``rmse`` and ``feedback`` (labelled predictions), and ``psi`` per feature plus ``drifted``
  when the evaluation judged drift;
- ``shadow``: the shadow agreement of the evaluation's summary, when it has one.

Settings: env prefix ``MLSTACK_MONITOR_SERIES_``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import defaultdict
from typing import Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlstack.monitoring.monitor import state_hash, stream_records
from mlstack_operator.contract import Server

log = logging.getLogger(__name__)

STATE_FIELD = "series:last"
SHADOW = "shadow"  # the track of a shadow version: copies of live requests, not more traffic
INFERENCE_ENDPOINTS = frozenset(("predict", "infer"))  # what mlstack serve's payload log samples, too


class SeriesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_MONITOR_SERIES_", env_file=None, extra="ignore")

    enabled: bool = Field(True, description="record a monitoring time series per deployment")
    step_seconds: float = Field(30.0, ge=0, le=3600, description="least time between two points of a deployment "
                                "(0: one point per evaluation)")
    retention_seconds: int = Field(86_400, ge=60, le=30 * 86_400, description="how long points are kept")
    max_points: int = Field(5000, ge=10, le=100_000, description="most points kept per deployment (approx.)")
    scrape_metrics: bool = Field(True, description="read each model server's /metrics for exact request and "
                                 "error counts")
    scrape_timeout_seconds: float = Field(2.0, gt=0, le=30)
    max_records: int = Field(20_000, ge=100, description="most payload records read for one point's latencies")



def series_key(prefix: str, key: str) -> str:
    return f"{prefix}:series:{key}"


def request_counts(text: str) -> dict[str, Any]:
    """``{"requests", "errors", "created"}`` of inference requests from a model server's Prometheus text: the counts,
    and when its counters started (their ``_created`` samples; None when it sends none) (pure)."""
    from prometheus_client.parser import text_string_to_metric_families

    requests = errors = 0
    created: float | None = None
    for fam in text_string_to_metric_families(text):  # the classic text format: ``_created`` is its own family
        if fam.name not in ("mlstack_serve_requests", "mlstack_serve_requests_created"):
            continue
        for s in fam.samples:
            if s.labels.get("endpoint") not in INFERENCE_ENDPOINTS:
                continue
            if s.name.endswith("_created"):
                created = s.value if created is None else min(created, s.value)
                continue
            if not s.name.endswith("_total"):
                continue
            n = int(s.value)
            requests += n
            if str(s.labels.get("status", "")).startswith("5"):
                errors += n
    return {"requests": requests, "errors": errors, "created": created}


def counter_delta(now: int, before: int | None, created: float | None = None, since: float | None = None
                  ) -> int | None:
    """What a counter gained since ``since`` (None: not known); a counter that went down restarted from 0. With no
    earlier reading, a counter created at or after ``since`` (its server started within the interval) gained all
    it holds."""
    if before is None:
        return now if created is not None and since is not None and created >= since else None
    return now - before if now >= before else now


def shadow_agreement(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The evaluation's shadow agreement as ``{key: {"agreement", "samples"}}``: ``summary["shadow"]`` may carry
    ``agreement`` itself (key ``shadow``) or one such dict per shadow version (pure)."""
    raw = summary.get("shadow")
    if not isinstance(raw, dict):
        return {}

    def one(d: dict[str, Any]) -> dict[str, Any] | None:
        value = next((d[k] for k in ("agreement", "agreement_rate", "rate") if _finite(d.get(k))), None)
        if value is None:
            return None
        samples = next((d[k] for k in ("samples", "n", "compared", "rows") if isinstance(d.get(k), int)), None)
        return {"agreement": round(float(value), 6), "samples": samples}

    top = one(raw)
    if top is not None:
        return {str(raw.get("version") or "shadow"): top}
    return {str(k): p for k, v in raw.items() if isinstance(v, dict) and (p := one(v)) is not None}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def _rate(n: int | float | None, seconds: float | None) -> float | None:
    return round(n / seconds, 6) if n is not None and seconds else None


def build_point(ts: float, seconds: float | None, sample_rate: float, records: list[dict[str, Any]],
                counts: dict[str, dict[str, int | None]], feedback: dict[str, Any],
                summary: dict[str, Any]) -> dict[str, Any]:
    """One point (pure). ``records``: the sampled payload records of the interval; ``counts``: per track, the
    requests/errors the servers answered in it (None: unknown); ``feedback``: ``Quality.window`` of the window;
    ``summary``: ``Monitor.evaluate``'s answer."""
    lat: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        try:
            lat[str(rec.get("version") or "")].append(float(rec["latency_ms"]))
        except (KeyError, TypeError, ValueError):
            continue
    versions: dict[str, dict[str, Any]] = {}
    for v, xs in lat.items():
        p50, p99 = (float(x) for x in np.percentile(xs, [50, 99]))
        versions[v] = {"sampled": len(xs), "rate": _rate(len(xs) / sample_rate if sample_rate else None, seconds),
                       "p50_ms": round(p50, 3), "p99_ms": round(p99, 3)}
    for v, q in (feedback.get("versions") or {}).items():
        if q.get("n"):
            versions.setdefault(str(v), {}).update(feedback=q["n"], accuracy=q.get("accuracy"), rmse=q.get("rmse"))
    for v, d in (summary.get("drift") or {}).items():
        if isinstance(d, dict) and d.get("judged"):
            versions.setdefault(str(v), {}).update(
                psi={f["name"]: round(float(f["psi"]), 6) for f in d.get("features") or [] if _finite(f.get("psi"))},
                drifted=list(d.get("drifted") or []))
    tracks = {tr: {"requests": c["requests"], "errors": c["errors"], "rate": _rate(c["requests"], seconds),
                   "error_rate": round(c["errors"] / c["requests"], 6) if c["requests"] else None}
              for tr, c in sorted(counts.items()) if c.get("requests") is not None}
    point: dict[str, Any] = {"ts": round(ts, 3), "seconds": round(seconds, 3) if seconds else None,
                             "counted": any(tr != SHADOW for tr in tracks), "tracks": tracks, "versions": versions,
                             "shadow": shadow_agreement(summary)}
    live = {tr: c for tr, c in tracks.items() if tr != SHADOW}  # a shadow answers copies of live requests
    if live:
        n, e = sum(t["requests"] for t in live.values()), sum(t["errors"] for t in live.values())
        point.update(requests=n, errors=e, rate=_rate(n, seconds), error_rate=round(e / n, 6) if n else None)
    else:
        sampled = sum(1 for r in records if r.get("track") != SHADOW)
        est = sampled / sample_rate if sample_rate and seconds else None
        point.update(requests=None, errors=None, rate=_rate(est, seconds), error_rate=None)
    return point


class Series:
    """Writes points (the monitor's side) and reads them (the API's side)."""

    def __init__(self, redis: Any, prefix: str, ss: SeriesSettings):
        self.redis = redis
        self.prefix = prefix
        self.ss = ss
        self._http: Any = None

    def key(self, key: str) -> str:
        return series_key(self.prefix, key)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- write ---------------------------------------------------------------------------------------
    async def record(self, monitor: Any, t: Any, summary: dict[str, Any], now: float | None = None
                     ) -> dict[str, Any] | None:
        """Append the point of ``t`` after an evaluation (None: too soon after the last one)."""
        if not self.ss.enabled:
            return None
        now = now or time.time()
        state_key = state_hash(monitor.ms, t.key)
        raw = await self.redis.hget(state_key, STATE_FIELD)
        last = json.loads(raw) if raw else {}
        elapsed = now - float(last["ts"]) if last.get("ts") else None
        if elapsed is not None and 0 <= elapsed < self.ss.step_seconds:
            return None
        if elapsed is not None and elapsed <= 0:  # the clock went back (another host took the lease): start anew
            last, elapsed = {"cursor": last.get("cursor")}, None
        mon = t.spec.effective_monitoring
        seconds = elapsed
        # the records drained since the last point (entry ids are drain times, so each is counted once)
        stream = monitor.stream_key(t)
        start = f"({last['cursor']}" if last.get("cursor") else str(int((now - mon.window_seconds) * 1000))
        entries = await self.redis.xrevrange(stream, max="+", min=start, count=self.ss.max_records)
        records = stream_records(entries)
        if seconds is None and records:  # the first point: what the stream holds of the last window
            first_ms = int(entries[-1][0].split("-")[0])
            seconds = max(now - first_ms / 1000, 1.0)
        cursor = entries[0][0] if entries else last.get("cursor")
        # a Ray Serve application's /metrics is one replica's, a different one each time: its rate is estimated
        exact = self.ss.scrape_metrics and t.spec.server != Server.rayserve
        readings = await self._scrape(t.servers) if exact else {}
        before = last.get("counters") or {}
        counts: dict[str, dict[str, int | None]] = {}
        # a server read for the first time counts from its start when it started within the interval; the first
        # point's interval reaches back to the start of servers started within the window (traffic right after a
        # deployment is counted, not lost into a baseline)
        if elapsed is None:
            starts = [c["created"] for c in readings.values()
                      if c.get("created") is not None and c["created"] >= now - mon.window_seconds]
            if starts:
                seconds = max(seconds or 0.0, now - min(starts), 1.0)
        since = now - seconds if seconds is not None else None
        for track, url in t.servers:
            now_c = readings.get(url)
            if now_c is None:
                continue
            was = before.get(url) or {}
            created = now_c.get("created")
            req = counter_delta(now_c["requests"], was.get("requests"), created, since)
            err = counter_delta(now_c["errors"], was.get("errors"), created, since)
            if req is None:
                continue
            c = counts.setdefault(track, {"requests": 0, "errors": 0})
            c["requests"] = (c["requests"] or 0) + req
            c["errors"] = (c["errors"] or 0) + (err or 0)
        feedback = await monitor.quality.window(t.namespace, t.name, mon.window_seconds, now)
        point = build_point(now, seconds, mon.sample_rate, records, counts, feedback, summary)
        key = self.key(t.key)
        pipe = self.redis.pipeline(transaction=False)
        # exact trims: a point every step_seconds makes them one or two entries each
        pipe.xadd(key, {"p": json.dumps(point, separators=(",", ":"))}, maxlen=self.ss.max_points, approximate=False)
        pipe.xtrim(key, minid=str(int((now - self.ss.retention_seconds) * 1000)), approximate=False)
        counters = {url: c for _, url in t.servers if (c := readings.get(url) or before.get(url))}
        pipe.hset(state_key, STATE_FIELD, json.dumps({"ts": now, "cursor": cursor, "counters": counters}))
        await pipe.execute()
        return point

    async def _scrape(self, servers: tuple[tuple[str, str], ...]) -> dict[str, dict[str, int]]:
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.ss.scrape_timeout_seconds)

        async def one(url: str) -> tuple[str, dict[str, int] | None]:
            try:
                r = await self._http.get(f"{url}/metrics")
                r.raise_for_status()
                return url, request_counts(r.text)
            except Exception as e:  # a server away (or not mlstack serve): this point has no exact counts
                log.debug("series: %s/metrics not read: %s", url, e)
                return url, None

        got = await asyncio.gather(*(one(url) for _, url in servers))
        return {url: c for url, c in got if c is not None}

    async def forget(self, keys: list[str]) -> None:
        """Drop the series of deleted deployments ("ns/name")."""
        if keys:
            await self.redis.delete(*(self.key(k) for k in keys))

    # -- read ----------------------------------------------------------------------------------------
    async def read(self, key: str, since: float | None = None, limit: int = 5000) -> list[dict[str, Any]]:
        """Points of ``key`` ("ns/name") from ``since`` (unix seconds) on, oldest first, at most the newest
        ``limit``."""
        start = str(int(since * 1000)) if since else "-"
        entries = await self.redis.xrevrange(self.key(key), max="+", min=start, count=limit)
        out = []
        for _, fields in reversed(entries):
            try:
                out.append(json.loads(fields["p"]))
            except (KeyError, ValueError):
                continue
        return out
