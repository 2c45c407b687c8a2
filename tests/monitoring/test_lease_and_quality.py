"""The monitor's Redis lease (one drainer per Redis, taken over when the holder is gone) and feedback buckets,
on a real redis-server."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from mlstack.monitoring.monitor import Monitor, Profiles, slo_condition
from mlstack.monitoring.quality import Quality, same
from mlstack.monitoring.settings import MonitorSettings


def _settings(**kw) -> MonitorSettings:
    return MonitorSettings(key_prefix=f"mlstack:monitoring:{uuid.uuid4().hex[:6]}", **kw)


def test_one_monitor_holds_the_lease_and_another_takes_over(redis_url):
    async def run():
        r = aioredis.from_url(redis_url, decode_responses=True)
        ms = _settings(lease_seconds=1)

        async def none():
            return []

        a, b = (Monitor(r, ms, none, None, Profiles(None, ms), Quality(r, ms)) for _ in range(2))
        try:
            assert await a._hold_lease() and not await b._hold_lease()
            assert await a._hold_lease() and not await b._hold_lease()  # renewed by its holder only
            a.leader = True
            await a.stop()  # a stopping holder gives the lease back at once
            assert await b._hold_lease()
            # b dies without a word: c gets the lease once its TTL ran out (polled, within a deadline)
            c = Monitor(r, ms, none, None, Profiles(None, ms), Quality(r, ms))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            while not await c._hold_lease():
                assert loop.time() - t0 < 5, "the lease never expired"
                await asyncio.sleep(0.05)
            assert loop.time() - t0 > 0.5  # not before the holder's lease ran out
            await c.stop()
        finally:
            await b.stop()
            await r.aclose()

    asyncio.run(run())


def test_feedback_buckets_sum_over_windows_per_version(redis_url):
    async def run():
        r = aioredis.from_url(redis_url, decode_responses=True)
        q = Quality(r, _settings(bucket_seconds=10))
        now = 1_000_000.0
        await q.record("ns", "d", "1", [(0, 0), (1, 2), (2, 2), (1, 1)], ts=now - 5)  # 3/4 right
        await q.record("ns", "d", "2", [(1.5, 1.0), (2.0, 2.0)], ts=now - 100)  # regression-like pairs
        w = await q.window("ns", "d", 30, now=now)
        assert w["total"]["n"] == 4 and w["versions"]["1"]["accuracy"] == 0.75 and "2" not in w["versions"]
        w = await q.window("ns", "d", 300, now=now)
        assert w["total"]["n"] == 6 and w["versions"]["2"]["rmse"] == round((0.25 / 2) ** 0.5, 6)
        await r.aclose()

    asyncio.run(run())
    assert same(1, 1.0) and same("setosa", "setosa") and not same(1, "2") and not same(True, 1)


def test_slo_condition():
    met = {"minAccuracy": {"threshold": 0.9, "samples": 50, "value": 0.95, "met": True}}
    assert slo_condition(met)["status"] == "True"
    breached = {**met, "maxP99LatencyMs": {"threshold": 5, "samples": 40, "value": 9.5, "met": False}}
    c = slo_condition(breached)
    assert c["status"] == "False" and c["reason"] == "P99LatencyAboveMax" and "9.5 ms > 5 ms" in c["message"]
    assert slo_condition({"minAccuracy": {"threshold": 0.9, "samples": 3, "value": 1.0}})["status"] == "Unknown"


def test_a_monitor_that_cannot_reach_redis_is_not_the_leader(own_redis):
    """Redis away: the lease cannot be renewed (it may run out and go to another monitor), so ``leader`` (and the
    ``mlstack_monitor_leader`` gauge read from it) says False until Redis is back and the lease held again."""
    async def run():
        r = aioredis.from_url(own_redis.url, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)
        ms = _settings(lease_seconds=2, drain_seconds=0.05)

        async def none():
            return []

        m = Monitor(r, ms, none, None, Profiles(None, ms), Quality(r, ms))
        m.start()
        loop = asyncio.get_running_loop()

        async def until(what: str, check) -> None:
            t0 = loop.time()
            while not check():
                assert loop.time() - t0 < 15, what
                await asyncio.sleep(0.05)

        try:
            await until("leader", lambda: m.leader)
            own_redis.stop()
            await until("not leader while Redis is down", lambda: not m.leader and m.last_error)
            own_redis.start()
            await until("leader again", lambda: m.leader)
        finally:
            await m.stop()
            await r.aclose()

    asyncio.run(run())
