"""The cluster monitor's pure parts (EndpointSlices -> pod URLs, the SLOMet merge patch) and the Redis cleanup of
deleted deployments (real Redis). The whole path, ``mlstack monitor`` as its ServiceAccount against a real control
plane: tests/monitoring/test_monitor_cluster.py."""

from __future__ import annotations

import asyncio
import json
import uuid

import redis.asyncio as aioredis

from mlstack.monitoring.cluster import condition_patch, pod_urls
from mlstack.monitoring.monitor import Monitor, Profiles
from mlstack.monitoring.quality import Quality
from mlstack.monitoring.settings import MonitorSettings


def _slice(service, endpoints, ports=(("http", 8080), ("grpc", 8081)), family="IPv4"):
    return {"metadata": {"labels": {"kubernetes.io/service-name": service}}, "addressType": family,
            "ports": [{"name": n, "port": p} for n, p in ports],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in endpoints]}


def test_pod_urls_per_service_ready_endpoints_on_the_http_port():
    urls = pod_urls([
        _slice("iris", [("10.0.0.2", True), ("10.0.0.1", True), ("10.0.0.3", False)]),
        _slice("iris", [("10.0.1.9", None)]),  # a second slice of the same Service; ready unknown counts as ready
        _slice("iris-canary", [("10.0.0.7", True)], ports=(("", 9000),)),  # one unnamed port: that one
        _slice("iris-shadow", [("fd00::5", True)], family="IPv6"),
        _slice("other", [("10.0.0.8", True)], ports=(("metrics", 9100), ("x", 1))),  # no http port: skipped
        _slice("rs-serve-svc", [("10.0.2.1", True)], ports=(("dashboard", 8265), ("serve", 8000))),  # KubeRay's
        {"metadata": {"labels": {}}, "addressType": "IPv4", "endpoints": []},
        _slice("fqdn", [("a.example", True)], family="FQDN"),
    ])
    assert urls == {"iris": ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.1.9:8080"],
                    "iris-canary": ["http://10.0.0.7:9000"], "iris-shadow": ["http://[fd00::5]:8080"],
                    "rs-serve-svc": ["http://10.0.2.1:8000"]}


def test_condition_patch_replaces_only_slomet_with_a_resource_version_precondition():
    ready = {"type": "Ready", "status": "True", "reason": "Ready", "message": "m", "lastTransitionTime": "T0"}
    obj = {"metadata": {"resourceVersion": "42"}, "status": {"phase": "Ready", "conditions": [ready]}}
    cond = {"type": "SLOMet", "status": "False", "reason": "P99LatencyAboveMax", "message": "p99 9.0 ms > 5 ms"}
    patch = condition_patch(obj, cond, "T1")
    assert patch == {"metadata": {"resourceVersion": "42"},
                     "status": {"conditions": [ready, {**cond, "lastTransitionTime": "T1"}]}}
    obj["status"]["conditions"] = patch["status"]["conditions"]
    assert condition_patch(obj, cond, "T2") is None  # already so: no write
    changed = condition_patch(obj, {**cond, "message": "p99 8.0 ms > 5 ms"}, "T2")
    assert changed["status"]["conditions"][1]["lastTransitionTime"] == "T1"  # same status: the time stays
    flipped = condition_patch(obj, {**cond, "status": "True", "reason": "ObjectivesMet"}, "T3")
    assert flipped["status"]["conditions"][1]["lastTransitionTime"] == "T3"
    assert flipped["status"]["conditions"][0] == ready


def test_redis_state_of_a_deleted_deployment_is_dropped_and_only_its(redis_url):
    async def run():
        r = aioredis.from_url(redis_url, decode_responses=True)
        ms = MonitorSettings(key_prefix=f"mlstack:monitoring:{uuid.uuid4().hex[:6]}")
        m = Monitor(r, ms, None, None, Profiles(None, ms), Quality(r, ms))
        try:
            for key in ("ns/gone", "ns/kept"):
                await r.sadd(m.k("watched"), key)
                await r.xadd(m.stream_key(key), {"r": json.dumps({"latency_ms": 1})})
                await r.hset(m.k("state", key), "slo|maxP99LatencyMs", "9")
                await r.hset(m.k("stats", key), "records", 1)
                await r.hset(m.k("cursors"), mapping={f"{key}|http://10.0.0.1:8080": 3,
                                                      f"{key}|http://10.0.0.2:8080": 5})
                await r.hset(m.k("conditions"), key, "{}")
                ns, name = key.split("/")
                await m.quality.record(ns, name, "1", [(0, 0)])
            assert await m.forget_deleted({"ns/kept", "ns/never-watched"}) == ["ns/gone"]
            left = {k async for k in r.scan_iter(match=f"{ms.key_prefix}:*")}
            assert not [k for k in left if "ns/gone" in k], left
            assert {m.stream_key("ns/kept"), m.k("state", "ns/kept"), m.k("stats", "ns/kept")} <= left
            assert sorted(await r.hkeys(m.k("cursors"))) == ["ns/kept|http://10.0.0.1:8080",
                                                             "ns/kept|http://10.0.0.2:8080"]
            assert await r.hkeys(m.k("conditions")) == ["ns/kept"]
            assert await r.smembers(m.k("watched")) == {"ns/kept"}
            assert any(":quality:ns/kept:" in k for k in left)
            assert await m.forget_deleted({"ns/kept"}) == []
        finally:
            for k in [k async for k in r.scan_iter(match=f"{ms.key_prefix}:*")]:
                await r.delete(k)
            await m.stop()
            await r.aclose()

    asyncio.run(run())
