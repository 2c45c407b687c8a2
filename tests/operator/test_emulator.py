"""The emulator's contract (see tests/operator/emulator.py): what the operator's e2e tests rely on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest

from tests.operator.emulator import ApiServerEmulator, parse_selector, selector_matches

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEPS = "/apis/apps/v1/namespaces/ns/deployments"
MDS = "/apis/mlstack.io/v1alpha1/namespaces/ns/modeldeployments"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
async def api() -> AsyncIterator[tuple[ApiServerEmulator, aiohttp.ClientSession]]:
    async with (ApiServerEmulator(max_requests=50) as emu, kmock.Server(emu) as server,
                aiohttp.ClientSession(base_url=str(server.url)) as session):
        yield emu, session


async def call(session: aiohttp.ClientSession, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with session.request(method, path, data=None if body is None else json.dumps(body),
                               headers=headers or {"Content-Type": "application/json"}) as r:
        return r.status, await r.json()


def dep(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"replicas": 1}}


async def test_create_sets_identity_and_answers_201(api):
    emu, s = api
    code, obj = await call(s, "POST", DEPS, dep("a"))
    assert code == 201
    meta = obj["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["generation"] == 1 and meta["namespace"] == "ns"
    assert (await call(s, "POST", DEPS, dep("a")))[0] == 409
    code, ev = await call(s, "POST", "/api/v1/namespaces/ns/events",
                          {"metadata": {"generateName": "ev-"}, "reason": "x"})
    assert code == 201 and ev["metadata"]["name"].startswith("ev-") and len(ev["metadata"]["name"]) == 8
    assert emu.get("apps/v1/deployments", "ns", "a")["metadata"]["uid"] == meta["uid"]


async def test_patch_bumps_versions_and_generation_only_for_spec(api):
    _, s = api
    _, obj = await call(s, "POST", DEPS, dep("a"))
    rv0 = int(obj["metadata"]["resourceVersion"])
    _, obj = await call(s, "PATCH", f"{DEPS}/a", {"metadata": {"labels": {"x": "1"}}}, MERGE)
    assert obj["metadata"]["generation"] == 1 and int(obj["metadata"]["resourceVersion"]) > rv0
    _, obj = await call(s, "PATCH", f"{DEPS}/a", {"spec": {"replicas": 3}}, MERGE)
    assert obj["metadata"]["generation"] == 2 and obj["spec"]["replicas"] == 3
    # status goes only through /status; the main endpoint ignores it
    _, obj = await call(s, "PATCH", f"{DEPS}/a", {"status": {"readyReplicas": 3}}, MERGE)
    assert "status" not in obj
    _, obj = await call(s, "PATCH", f"{DEPS}/a/status", {"status": {"readyReplicas": 3}, "spec": {"replicas": 9}},
                        MERGE)
    assert obj["status"] == {"readyReplicas": 3} and obj["spec"]["replicas"] == 3
    assert obj["metadata"]["generation"] == 2
    assert (await call(s, "PATCH", f"{DEPS}/zzz", {"spec": {}}, MERGE))[0] == 404


async def test_stale_patch_is_409_and_failed_test_op_is_422(api):
    _, s = api
    _, obj = await call(s, "POST", DEPS, dep("a"))
    rv = obj["metadata"]["resourceVersion"]
    await call(s, "PATCH", f"{DEPS}/a", {"spec": {"replicas": 2}}, MERGE)
    code, _ = await call(s, "PATCH", f"{DEPS}/a", {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 5}},
                         MERGE)
    assert code == 409
    code, _ = await call(s, "PATCH", f"{DEPS}/a", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}], JSONPATCH)
    assert code == 422
    _, cur = await call(s, "GET", f"{DEPS}/a")
    code, obj = await call(s, "PATCH", f"{DEPS}/a", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": cur["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}], JSONPATCH)
    assert code == 200 and obj["metadata"]["finalizers"] == ["x"]


async def test_delete_with_and_without_finalizers(api):
    emu, s = api
    await call(s, "POST", DEPS, {**dep("a"), "metadata": {"name": "a", "finalizers": ["f"]}})
    code, obj = await call(s, "DELETE", f"{DEPS}/a")
    assert code == 202 and obj["metadata"]["deletionTimestamp"]
    assert emu.get("apps/v1/deployments", "ns", "a") is not None
    await call(s, "PATCH", f"{DEPS}/a", {"metadata": {"finalizers": None}}, MERGE)
    assert emu.get("apps/v1/deployments", "ns", "a") is None
    await call(s, "POST", DEPS, dep("b"))
    assert (await call(s, "DELETE", f"{DEPS}/b"))[0] == 200
    assert (await call(s, "DELETE", f"{DEPS}/b"))[0] == 404


async def test_list_filters_by_equality_label_selectors(api):
    _, s = api
    await call(s, "POST", DEPS, dep("a", {"app": "x", "tier": "web"}))
    await call(s, "POST", DEPS, dep("b", {"app": "y"}))
    await call(s, "POST", "/apis/apps/v1/namespaces/other/deployments", dep("c", {"app": "x"}))
    async with s.get(DEPS, params={"labelSelector": "app=x"}) as r:
        assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["a"]
    async with s.get("/apis/apps/v1/deployments", params={"labelSelector": "app==x"}) as r:
        assert sorted(o["metadata"]["name"] for o in (await r.json())["items"]) == ["a", "c"]
    async with s.get("/apis/apps/v1/deployments", params={"labelSelector": "app!=x,!tier"}) as r:
        assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["b"]


async def test_selector_parsing():
    reqs = parse_selector("a=1,b==2,c!=3,d,!e")
    assert reqs == [("=", "a", "1"), ("=", "b", "2"), ("!=", "c", "3"), ("exists", "d", None),
                    ("!exists", "e", None)]
    assert selector_matches(reqs, {"a": "1", "b": "2", "d": ""})
    assert not selector_matches(reqs, {"a": "1", "b": "2", "d": "", "e": "x"})


async def test_watch_continues_from_resource_version(api):
    _, s = api
    async with s.get(DEPS) as r:
        rv = (await r.json())["metadata"]["resourceVersion"]
    await call(s, "POST", DEPS, dep("a", {"app": "x"}))
    await call(s, "POST", DEPS, dep("b", {"app": "y"}))
    params = {"watch": "true", "resourceVersion": rv, "labelSelector": "app=x", "timeoutSeconds": "5"}
    async with s.get(DEPS, params=params) as r:
        first = json.loads(await asyncio.wait_for(r.content.readline(), 5))
        assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "a"
        await call(s, "PATCH", f"{DEPS}/b", {"spec": {"replicas": 2}}, MERGE)  # filtered out
        await call(s, "PATCH", f"{DEPS}/a", {"spec": {"replicas": 2}}, MERGE)
        second = json.loads(await asyncio.wait_for(r.content.readline(), 5))
        assert second["type"] == "MODIFIED" and second["object"]["metadata"]["name"] == "a"


async def test_discovery_serves_declared_resources(api):
    _, s = api
    async with s.get("/apis/mlstack.io/v1alpha1") as r:
        names = {x["name"] for x in (await r.json())["resources"]}
    assert {"modeldeployments", "modeldeployments/status"} <= names
    async with s.get(MDS) as r:
        assert r.status == 200


async def test_request_log_is_bounded(api):
    emu, s = api
    for _ in range(150):
        async with s.get(DEPS) as r:
            assert r.status == 200
    assert len(emu._requests) <= 2 * emu.max_requests
