"""``spec.shadow.minAgreement``: the monitor (real Redis, real alert stream) raises one ``deployment.shadow`` alert
when a shadow version answers unlike the live one on too many rows, one when it agrees again, none for too few rows,
and closes the episode silently when the threshold goes away."""

from __future__ import annotations

import asyncio
import json
import uuid

import redis.asyncio as aioredis

from mlstack.alerts.settings import AlertSettings
from mlstack.alerts.sink import RedisStreamSink
from mlstack.monitoring.monitor import Monitor, Profiles, Target
from mlstack.monitoring.quality import Quality
from mlstack.monitoring.settings import MonitorSettings
from mlstack_operator.contract import ModelDeploymentSpec


def _target(min_agreement: float | None) -> Target:
    shadow = {"version": "5", "percent": 100, **({"minAgreement": min_agreement} if min_agreement is not None else {})}
    spec = ModelDeploymentSpec.model_validate({"model": {"name": "iris", "version": "3"}, "shadow": shadow,
                                               "monitoring": {"windowSeconds": 60}})
    return Target("models", "iris-shadowed", spec, servers=())


async def _pairs(r, m: Monitor, t: Target, n: int, agree: int) -> None:
    """``n`` mirrored requests (one row each) whose shadow answer equals the live one for the first ``agree``."""
    for i in range(n):
        rid = uuid.uuid4().hex
        live = {"id": rid, "track": "stable", "version": "3", "inputs": [[5.1, 3.5, 1.4, 0.2]], "outputs": [0],
                "latency_ms": 1.0}
        shadow = {**live, "track": "shadow", "version": "5", "outputs": [0 if i < agree else 2]}
        for rec in (live, shadow):
            await r.xadd(m.stream_key(t), {"r": json.dumps(rec)})


def test_one_alert_per_disagreement_episode_and_its_recovery(redis_url):
    async def run():
        r = aioredis.from_url(redis_url, decode_responses=True)
        ms = MonitorSettings(key_prefix=f"mlstack:monitoring:{uuid.uuid4().hex[:6]}", min_shadow_rows=20)
        alerts = AlertSettings(alerts_stream=f"mlstack:alerts:test-{uuid.uuid4().hex[:6]}")
        sink = RedisStreamSink(r, alerts)
        m = Monitor(r, ms, None, sink, Profiles(None, ms), Quality(r, ms))

        async def shadow_alerts() -> list[dict]:
            return [json.loads(f["event"]) for _, f in await r.xrange(alerts.alerts_stream)
                    if json.loads(f["event"])["type"] == "deployment.shadow"]

        try:
            t = _target(0.9)
            await _pairs(r, m, t, 10, agree=0)  # too few rows to judge
            await m.evaluate(t)
            assert await shadow_alerts() == []
            await _pairs(r, m, t, 30, agree=20)  # 20 of 40 rows agree: 50 % < 90 %
            summary = await m.evaluate(t)
            assert summary["shadow"]["5"]["agreement"] == 0.5
            await m.evaluate(t)  # the same episode: no second alert
            [alert] = await shadow_alerts()
            assert alert["severity"] == "warning" and alert["deployment"] == "iris-shadowed"
            assert alert["version"] == "5" and "50.0% of 40 rows (min 90.0%)" in alert["title"]
            assert alert["data"]["state"] == "disagrees" and alert["data"]["live_versions"] == ["3"]

            await _pairs(r, m, t, 400, agree=400)  # 420 of 440 agree: 95.5 %
            await m.evaluate(t)
            alerts_now = await shadow_alerts()
            assert [a["data"]["state"] for a in alerts_now] == ["disagrees", "agrees"]
            assert alerts_now[1]["severity"] == "info" and "95.5% of 440 rows" in alerts_now[1]["title"]

            # disagreeing again opens a new episode; removing the threshold closes it without an alert
            await _pairs(r, m, t, 800, agree=0)
            await m.evaluate(t)
            assert [a["data"]["state"] for a in await shadow_alerts()] == ["disagrees", "agrees", "disagrees"]
            assert await r.hexists(m.k("state", t.key), "shadow|5")
            await m.evaluate(_target(None))
            assert not await r.hexists(m.k("state", t.key), "shadow|5")
            assert len(await shadow_alerts()) == 3
        finally:
            await sink.aclose()
            await m.http.aclose()
            keys = [k async for k in r.scan_iter(match=f"{ms.key_prefix}:*")]
            if keys:
                await r.delete(*keys, alerts.alerts_stream)
            await r.aclose()

    asyncio.run(run())
