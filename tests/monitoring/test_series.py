"""The monitoring time series (``mlstack.monitoring.series``) on a real redis-server: the monitor drains real HTTP
model-server stand-ins (a real ``PayloadLog`` and ``ServingMetrics`` behind a real HTTP server), evaluates, and
records one point per deployment; points carry request/error counts, latency percentiles, feedback accuracy, PSI
and shadow agreement; retention is bounded; a deleted deployment's series goes with it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import redis.asyncio as aioredis

from mlstack.monitoring.monitor import Monitor, Profiles, Target
from mlstack.monitoring.quality import Quality
from mlstack.monitoring.series import (
    STATE_FIELD,
    Series,
    SeriesSettings,
    build_point,
    counter_delta,
    request_counts,
    shadow_agreement,
)
from mlstack.monitoring.settings import MonitorSettings
from mlstack.serving.metrics import ServingMetrics
from mlstack_operator.contract import ModelDeploymentSpec
from tests.utils.stand_in_server import stand_in_server

ROW = [[5.1, 3.5, 1.4, 0.2]]


def _ms(**kw) -> MonitorSettings:
    return MonitorSettings(key_prefix=f"mlstack:monitoring:{uuid.uuid4().hex[:6]}", **kw)


def _spec(**monitoring) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": {"name": "iris", "version": "3"},
                                               "monitoring": {"sampleRate": 1, "windowSeconds": 60, **monitoring}})


# -- pure parts ---------------------------------------------------------------------------------------------


def test_request_counts_read_a_model_servers_metrics():
    m = ServingMetrics("iris")
    for status, n in ((200, 7), (400, 2), (500, 1), (503, 2)):
        for _ in range(n):
            m.observe_request("predict", status, 0.001)
    for _ in range(3):
        m.observe_request("infer", 200, 0.001)
        m.observe_request("ready", 200, 0.001)  # probes are not traffic
    assert request_counts(m.render().decode()) == {"requests": 15, "errors": 3, "created": m.created}
    assert request_counts("") == {"requests": 0, "errors": 0, "created": None}


def test_counter_delta_handles_a_first_reading_and_a_restart():
    assert counter_delta(10, None) is None
    assert counter_delta(15, 10) == 5
    assert counter_delta(4, 10) == 4  # the server restarted: its counter began at 0
    # read for the first time: all of it when the server started within the interval, else unknown
    assert counter_delta(7, None, created=100.0, since=90.0) == 7
    assert counter_delta(7, None, created=80.0, since=90.0) is None
    assert counter_delta(7, None, created=None, since=90.0) is None


def test_shadow_agreement_takes_the_monitors_per_version_comparison():
    summary = {"shadow": {"5": {"requests": 40, "compared": 38, "rows": 38, "agreement": 0.947368, "kind": "x"},
                          "6": {"requests": 3, "compared": 0, "rows": 0, "agreement": None}}}
    assert shadow_agreement(summary) == {"5": {"agreement": 0.947368, "samples": 38}}
    assert shadow_agreement({"shadow": {"agreement": 0.5, "n": 4}}) == {"shadow": {"agreement": 0.5, "samples": 4}}
    assert shadow_agreement({"drift": {}}) == {} and shadow_agreement({"shadow": None}) == {}


def test_build_point():
    records = ([{"version": "3", "track": "stable", "latency_ms": float(x)} for x in range(1, 101)]
               + [{"version": "4", "track": "canary", "latency_ms": 50.0}] * 10
               + [{"version": "5", "track": "shadow", "latency_ms": 9.0}] * 5
               + [{"version": "3", "latency_ms": "bad"}])
    counts = {"stable": {"requests": 1000, "errors": 10}, "canary": {"requests": 100, "errors": 0},
              "shadow": {"requests": 50, "errors": 50}}
    feedback = {"versions": {"3": {"n": 40, "accuracy": 0.9, "rmse": None}, "4": {"n": 0, "accuracy": None}}}
    summary = {"drift": {"3": {"rows": 300, "judged": True, "drifted": ["petal_length"],
                               "features": [{"name": "petal_length", "psi": 0.81234567, "ks": 0.4, "rows": 300},
                                            {"name": "sepal_length", "psi": 0.01, "ks": 0.1, "rows": 300}]},
                         "4": {"rows": 10, "judged": False}},
               "shadow": {"5": {"agreement": 0.8, "compared": 5}}}
    p = build_point(1000.0, 10.0, 0.1, records, counts, feedback, summary)
    # totals: the live tracks only (a shadow's copies are not more traffic)
    assert (p["counted"], p["requests"], p["errors"], p["rate"], p["error_rate"]) == (True, 1100, 10, 110.0,
                                                                                       round(10 / 1100, 6))
    assert p["tracks"]["shadow"] == {"requests": 50, "errors": 50, "rate": 5.0, "error_rate": 1.0}
    v3, v4 = p["versions"]["3"], p["versions"]["4"]
    assert v3["sampled"] == 100 and v3["rate"] == 100.0  # 100 sampled at 10 % over 10 s
    assert v3["p50_ms"] == 50.5 and v3["p99_ms"] == 99.01
    assert (v3["accuracy"], v3["feedback"]) == (0.9, 40) and "accuracy" not in v4
    assert v3["psi"] == {"petal_length": 0.812346, "sepal_length": 0.01} and v3["drifted"] == ["petal_length"]
    assert "psi" not in v4 and v4["p99_ms"] == 50.0
    assert p["shadow"] == {"5": {"agreement": 0.8, "samples": 5}}
    # no server counted: the rate is estimated from the live sampled records
    p = build_point(1000.0, 10.0, 0.1, records, {}, {}, {})
    assert (p["counted"], p["requests"], p["error_rate"], p["rate"]) == (False, None, None, 111.0)


# -- on Redis, through the monitor ---------------------------------------------------------------------------


def test_the_monitor_records_a_point_per_evaluation_and_forgets_deleted_deployments(redis_url):
    async def run(stable, canary):
        r = aioredis.from_url(redis_url, decode_responses=True)
        ms = _ms(drain_seconds=0.1, evaluate_seconds=0.1)
        series = Series(r, ms.key_prefix, SeriesSettings(step_seconds=0))
        t = Target("models", "iris", _spec(), (("stable", stable.url), ("canary", canary.url)), canary_version="4")
        alive = {t.key}

        async def targets():
            return [t] if t.key in alive else []

        async def existing():
            return set(alive)

        quality = Quality(r, ms)
        monitor = Monitor(r, ms, targets, None, Profiles(None, ms), quality, existing=existing, series=series)
        try:
            # servers that have run for an hour: their first reading is a baseline, not an interval's requests
            stable.metrics.created = canary.metrics.created = time.time() - 3600
            for i in range(30):
                stable.serve(ROW, [0], latency_ms=1.0 + i)
            canary.serve(ROW, [1], latency_ms=5.0)
            await monitor.tick(evaluate=True)
            first = await series.read(t.key)
            assert len(first) == 1
            p = first[0]
            assert p["versions"]["3"]["sampled"] == 30 and p["versions"]["4"]["sampled"] == 1
            assert p["versions"]["3"]["p50_ms"] == 15.5
            assert p["counted"] is False  # the first reading of the servers' counters: no interval yet
            assert p["rate"] and p["rate"] > 0  # estimated from the sampled records

            # the next interval: 10 stable requests (2 failed) and 5 canary ones, feedback on v3
            for _ in range(8):
                stable.serve(ROW, [0], latency_ms=100.0)
            for _ in range(2):
                stable.serve(ROW, [0], latency_ms=1.0, status=500)
            for _ in range(5):
                canary.serve(ROW, [1], latency_ms=7.0)
            await quality.record("models", "iris", "3", [(0, 0)] * 9 + [(0, 1)])
            await monitor.tick(evaluate=True)
            points = await series.read(t.key)
            assert len(points) == 2
            p = points[1]
            assert p["counted"] is True and p["requests"] == 15 and p["errors"] == 2
            assert p["tracks"]["stable"]["requests"] == 10 and p["tracks"]["canary"]["requests"] == 5
            assert p["error_rate"] == round(2 / 15, 6) and p["seconds"] > 0 and p["rate"] > 0
            # only what was drained since the last point: the 8 slow stable requests and the 5 canary ones
            assert p["versions"]["3"]["sampled"] == 8 and p["versions"]["3"]["p50_ms"] == 100.0
            assert p["versions"]["4"]["sampled"] == 5
            assert p["versions"]["3"]["accuracy"] == 0.9 and p["versions"]["3"]["feedback"] == 10
            # nothing new: still a point (a quiet interval is data too), with zero requests
            await monitor.tick(evaluate=True)
            quiet = (await series.read(t.key))[-1]
            assert quiet["requests"] == 0 and list(quiet["versions"]) == ["3"]  # feedback only: no latencies
            assert "p99_ms" not in quiet["versions"]["3"] and quiet["versions"]["3"]["accuracy"] == 0.9
            # read from a time on: only the newer points
            assert await series.read(t.key, since=time.time() + 60) == []
            assert len(await series.read(t.key, limit=2)) == 2

            # the deployment is deleted: its series and series state go with the rest of its monitoring state
            alive.clear()
            await monitor.tick(evaluate=True)
            assert not await r.exists(series.key(t.key))
            assert not await r.hexists(monitor.k("state", t.key), STATE_FIELD)
        finally:
            await monitor.stop()
            await series.aclose()
            await r.aclose()

    with stand_in_server("3") as stable, stand_in_server("4", "canary") as canary:
        asyncio.run(run(stable, canary))


def test_points_are_spaced_by_the_step_and_bounded(redis_url):
    async def run(server):
        r = aioredis.from_url(redis_url, decode_responses=True)
        ms = _ms()
        t = Target("models", "bounded", _spec(), (("stable", server.url),))

        async def targets():
            return [t]

        monitor = Monitor(r, ms, targets, None, Profiles(None, ms), Quality(r, ms))
        try:
            spaced = Series(r, ms.key_prefix, SeriesSettings(step_seconds=3600, scrape_metrics=False))
            now = time.time()
            assert await spaced.record(monitor, t, {}, now=now) is not None
            assert await spaced.record(monitor, t, {}, now=now + 10) is None  # within the step: no point
            assert await spaced.record(monitor, t, {}, now=now + 3601) is not None
            assert len(await spaced.read(t.key)) == 2

            capped = Series(r, ms.key_prefix, SeriesSettings(step_seconds=0, max_points=10, scrape_metrics=False))
            for _ in range(25):
                await capped.record(monitor, t, {})
            points = await capped.read(t.key)
            assert len(points) == 10 and await r.xlen(capped.key(t.key)) == 10
            assert points == sorted(points, key=lambda p: p["ts"])  # oldest first, the newest kept

            # retention: a point older than retention_seconds is trimmed by the next write
            await r.delete(capped.key(t.key))
            await r.xadd(capped.key(t.key), {"p": json.dumps({"ts": 1.0})}, id=f"{int((time.time() - 7200) * 1000)}-0")
            short = Series(r, ms.key_prefix, SeriesSettings(step_seconds=0, retention_seconds=3600,
                                                            scrape_metrics=False))
            await short.record(monitor, t, {})
            assert [p["ts"] for p in await short.read(t.key)] != [1.0] and await r.xlen(short.key(t.key)) == 1
        finally:
            await monitor.stop()
            await r.aclose()

    with stand_in_server("3") as server:
        asyncio.run(run(server))


def test_a_server_started_within_the_first_interval_is_counted_from_its_start(redis_url):
    """The first point of a new deployment counts the requests its servers got since they started (their counters'
    ``_created``), instead of taking them as a baseline: traffic sent right after a deployment is not lost."""
    async def run(server):
        r = aioredis.from_url(redis_url, decode_responses=True)
        ms = _ms(drain_seconds=0.1, evaluate_seconds=0.1)
        series = Series(r, ms.key_prefix, SeriesSettings(step_seconds=0))
        t = Target("models", "fresh", _spec(), (("stable", server.url),))

        async def targets():
            return [t]

        monitor = Monitor(r, ms, targets, None, Profiles(None, ms), Quality(r, ms), series=series)
        try:
            server.metrics.created = time.time() - 5  # started 5 s ago
            for _ in range(12):
                server.serve(ROW, [0], latency_ms=2.0)
            server.serve(ROW, [0], latency_ms=2.0, status=500)
            await monitor.tick(evaluate=True)
            [p] = await series.read(t.key)
            assert p["counted"] is True and p["requests"] == 13 and p["errors"] == 1, p
            assert p["seconds"] >= 5 - 0.5  # the interval reaches back to the server's start
        finally:
            await monitor.stop()
            await series.aclose()
            await r.aclose()

    with stand_in_server("3") as server:
        asyncio.run(run(server))
