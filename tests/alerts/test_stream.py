"""SSE fan-out, replay, heartbeats and JSON endpoints against a real alerts API process and real Redis."""

from __future__ import annotations

import httpx

from tests.utils.alerts import SSEClient, publish, status, until


async def subscribers(base: str) -> int:
    return (await status(base))["subscribers"]


async def test_two_clients_receive_every_alert(alerts_api):
    async with SSEClient(f"{alerts_api}/webhook") as a, SSEClient(f"{alerts_api}/alerts/stream") as b:
        await until(lambda: _ge(subscribers(alerts_api), 2), 10, "two subscribers")
        ids = await publish(alerts_api, 3, prefix="fanout", severity="warning", model="iris_model", version=3)
        await until(lambda: len(a.alerts) >= 3 and len(b.alerts) >= 3, 10, "both clients get 3 alerts")
        assert a.ids == ids and b.ids == ids
        first = a.alerts[0]
        assert first == b.alerts[0]
        assert first["type"] == "alert.manual" and first["severity"] == "warning"
        assert first["title"] == "fanout 0" and first["model"] == "iris_model" and first["version"] == "3"
        assert set(first) == {"id", "type", "severity", "title", "message", "model", "version", "namespace",
                              "deployment", "data", "ts"}
        assert first["ts"].endswith("Z")
        # one reader in the process, however many clients
        st = await status(alerts_api)
        assert st["reader_connected"] is True and st["cursor"] == ids[-1]


async def _ge(coro, n):
    return (await coro) >= n


async def test_reconnect_with_last_event_id_replays_exactly_the_missed_alerts(alerts_api):
    async with SSEClient(f"{alerts_api}/webhook", reconnect=False) as first:
        await until(lambda: _ge(subscribers(alerts_api), 1), 10, "subscriber")
        seen = await publish(alerts_api, 2, prefix="before")
        await until(lambda: first.ids == seen, 10, "first client has both")
    missed = await publish(alerts_api, 4, prefix="missed")
    # header (what EventSource sends on reconnect)
    async with SSEClient(f"{alerts_api}/webhook", last_event_id=seen[-1]) as again:
        await until(lambda: len(again.alerts) >= 4, 10, "replay of 4")
        later = await publish(alerts_api, 1, prefix="live")
        await until(lambda: len(again.alerts) >= 5, 10, "live alert after replay")
        assert again.ids == missed + later  # in order, nothing twice, nothing older
        assert [a["title"] for a in again.alerts[:4]] == [f"missed {i}" for i in range(4)]
    # query parameter, for clients that cannot set headers
    async with SSEClient(f"{alerts_api}/alerts/stream", params={"last_event_id": missed[1]},
                         header_id=False) as q:
        await until(lambda: len(q.alerts) >= 3, 10, "query replay")
        assert q.ids[:3] == missed[2:] + later


async def test_header_wins_over_stale_query_parameter(alerts_api):
    ids = await publish(alerts_api, 3, prefix="hdr")
    async with SSEClient(f"{alerts_api}/webhook", last_event_id=ids[1], params={"last_event_id": ids[0]}) as c:
        await until(lambda: len(c.alerts) >= 1, 10, "replay")
        assert c.ids[0] == ids[2]


async def test_heartbeats_keep_idle_streams_alive(alerts_api):
    async with SSEClient(f"{alerts_api}/webhook") as c:
        await until(lambda: c.comments >= 2, 10, "two heartbeat comments (interval 0.5 s)")
        assert c.alerts == [] and c.retry_ms == 100


async def test_recent_alerts_newest_last_and_bad_input_is_4xx(alerts_api):
    ids = await publish(alerts_api, 5, prefix="recent", data={"k": 1})
    async with httpx.AsyncClient(base_url=alerts_api, timeout=10) as c:
        r = await c.get("/alerts", params={"limit": 3})
        assert r.status_code == 200
        assert [a["id"] for a in r.json()] == ids[-3:]
        assert r.json()[-1]["data"] == {"k": 1}
        assert len((await c.get("/alerts")).json()) >= 5
        for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}):
            assert (await c.get("/alerts", params=bad)).status_code == 422
        assert (await c.get("/webhook", params={"last_event_id": "abc"})).status_code == 422
        assert (await c.get("/webhook", headers={"Last-Event-ID": "1-2-3"})).status_code == 422
        for body in ({"title": "x", "severity": "fatal"}, {"title": ""}, {"title": "x", "type": "Bad Type"},
                     {"title": "x", "colour": "red"}, {}):
            r = await c.post("/alerts", json=body)
            assert r.status_code == 422, body
            assert r.json()["detail"]


async def test_replay_from_zero_returns_whole_stream_in_order(alerts_api):
    async with httpx.AsyncClient(base_url=alerts_api, timeout=10) as c:
        everything = [a["id"] for a in (await c.get("/alerts", params={"limit": 1000})).json()]
    async with SSEClient(f"{alerts_api}/webhook", last_event_id="0") as z:
        await until(lambda: len(z.alerts) >= len(everything), 10, "full replay")
        assert z.ids[: len(everything)] == everything
