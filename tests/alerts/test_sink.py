"""The Redis Streams sink in-process against a real redis-server: fields, cap, buffering, clear failure."""

from __future__ import annotations

import json

import pydantic
import pytest
import redis.asyncio as aioredis

from mlstack.alerts.settings import AlertSettings
from mlstack.alerts.sink import AlertsUnavailable, RedisStreamSink


def _settings(**kw) -> AlertSettings:
    return AlertSettings(alerts_stream="t:alerts", alerts_maxlen=100, alerts_redis_timeout=1, **kw)


async def test_emit_appends_typed_event_and_caps_the_stream(own_redis):
    r = aioredis.from_url(own_redis.url, decode_responses=True)
    sink = RedisStreamSink(r, _settings())
    try:
        eid = await sink.emit("training.finished", "info", "Training finished", "acc 0.97", model="iris_model",
                              version=4, data={"accuracy": 0.97}, job_id="j1")
        [(stored_id, fields)] = await r.xrange("t:alerts")
        assert stored_id == eid and fields["type"] == "training.finished"
        event = json.loads(fields["event"])
        assert event["version"] == "4" and event["model"] == "iris_model"
        assert event["data"] == {"accuracy": 0.97, "job_id": "j1"}  # unknown keywords land in data
        assert "id" not in event and event["ts"].endswith("Z")
        for i in range(400):
            await sink.emit("alert.manual", "info", f"n{i}")
        assert await r.xlen("t:alerts") < 400  # MAXLEN ~ 100 trims
        with pytest.raises(pydantic.ValidationError):
            await sink.emit("training.finished", "loud", "bad severity")
    finally:
        await sink.aclose()
        await r.aclose()


async def test_redis_down_buffers_in_order_then_fails_clearly_when_full(own_redis):
    r = aioredis.from_url(own_redis.url, decode_responses=True)
    sink = RedisStreamSink(r, _settings(alerts_buffer_max=3))
    try:
        own_redis.stop()
        assert [await sink.emit("alert.manual", "info", f"b{i}") for i in range(3)] == [None, None, None]
        with pytest.raises(AlertsUnavailable) as e:
            await sink.emit("alert.manual", "error", "one too many")
        assert e.value.status_code == 503 and "Redis is unreachable" in e.value.message
        own_redis.start()
        assert await sink.drain(timeout=20)
        titles = [json.loads(f["event"])["title"] for _, f in await r.xrange("t:alerts")]
        assert titles == ["b0", "b1", "b2"]
        assert await sink.emit("alert.manual", "info", "after") is not None
    finally:
        await sink.aclose()
        await r.aclose()
