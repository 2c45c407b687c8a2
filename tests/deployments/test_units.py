"""Pieces without servers: the API server's answers -> domain errors, and /inference endpoint matching."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from mlstack.deployments.kube import KubeDeployments, KubeEndpoints
from mlstack.deployments.settings import DeploymentSettings
from mlstack.errors import Conflict, InvalidInput, NotFound, Unavailable
from mlstack_operator.contract import ModelDeploymentSpec

SPEC = ModelDeploymentSpec.model_validate({"model": {"name": "iris_model", "alias": "champion"}})


class FakeApi:
    """Stands in for ``CustomObjectsApi``: raises the given ApiException or returns objects."""

    def __init__(self, status: int | None = None, message: str = "", items: list | None = None):
        self.status, self.message, self.items = status, message, items or []

    def _answer(self, *args, **kwargs):
        if self.status is not None:
            e = ApiException(status=self.status, reason="Failure")
            e.body = json.dumps({"kind": "Status", "code": self.status, "message": self.message})
            raise e
        return {"items": self.items}

    create_namespaced_custom_object = get_namespaced_custom_object = _answer
    list_namespaced_custom_object = delete_namespaced_custom_object = list_cluster_custom_object = _answer


def backend(api: FakeApi) -> KubeDeployments:
    b = KubeDeployments.__new__(KubeDeployments)
    b.api, b.api_client, b.ds, b.timeout = api, None, DeploymentSettings(), 10.0
    return b


@pytest.mark.parametrize(("status", "message", "error", "text"), [
    (409, "modeldeployments.mlstack.io \"iris\" already exists", Conflict, "already exists"),
    (422, "spec.vm: Invalid value: spec.vm is required with runtime: vm", InvalidInput, "spec.vm is required"),
    (404, "namespaces \"nope\" not found", NotFound, "namespaces"),
    (404, "the server could not find the requested resource", NotFound, "CRD"),
    (403, "forbidden", Unavailable, "may not"),
    (500, "etcd down", Unavailable, "etcd down"),
])
async def test_api_server_answers_map_to_domain_errors(status, message, error, text):
    with pytest.raises(error, match=text):
        await backend(FakeApi(status, message)).create("models", "iris", SPEC)


async def test_get_and_delete_unknown_are_404():
    b = backend(FakeApi(404, 'modeldeployments.mlstack.io "x" not found'))
    with pytest.raises(NotFound, match="ModelDeployment models/x not found"):
        await b.get("models", "x")
    with pytest.raises(NotFound, match="ModelDeployment models/x not found"):
        await b.delete("models", "x")


def md(name: str, model: str, phase: str, version: str, url: str | None, ready: int = 1, ns: str = "models") -> dict:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"model": {"name": model, "alias": "c"}},
            "status": {"phase": phase, "resolvedVersion": version, "url": url, "readyReplicas": ready}}


async def test_endpoint_picks_a_ready_deployment_of_that_version():
    items = [md("a", "iris", "Deploying", "3", "http://a"), md("b", "iris", "Ready", "2", "http://b"),
             md("c", "iris", "Ready", "3", "http://c/", 1), md("d", "iris", "Ready", "3", "http://d", 3),
             md("e", "other", "Ready", "3", "http://e", 9)]
    ep = KubeEndpoints(backend(FakeApi(items=items)), DeploymentSettings())
    assert await ep.endpoint("iris", "3") == "http://d"
    assert await ep.endpoint("iris", "2") == "http://b"
    with pytest.raises(Unavailable, match=r"no Ready ModelDeployment serves iris v4.*POST /deployments"):
        await ep.endpoint("iris", "4")


async def test_endpoint_prefers_the_callers_namespace_then_the_shared_one_never_another_orgs():
    items = [md("shared", "iris", "Ready", "3", "http://shared", 5),
             md("mine", "iris", "Ready", "3", "http://mine", 1, ns="org-a"),
             md("theirs", "iris", "Ready", "3", "http://theirs", 9, ns="org-b"),
             md("only-b", "iris", "Ready", "7", "http://only-b", 1, ns="org-b")]
    ep = KubeEndpoints(backend(FakeApi(items=items)), DeploymentSettings())
    assert await ep.endpoint("iris", "3", namespace="org-a") == "http://mine"
    assert await ep.endpoint("iris", "3", namespace="org-c") == "http://shared"
    assert await ep.endpoint("iris", "3") == "http://theirs"  # no caller (internal): any namespace, most replicas
    with pytest.raises(Unavailable, match="namespaces org-a, models"):
        await ep.endpoint("iris", "7", namespace="org-a")


class Recorder:
    """The alert hub's ``emit`` as PhaseAlerts calls it, recorded in this process."""

    def __init__(self):
        self.events: list[dict] = []

    async def emit(self, type_, severity, title, message, **fields):
        self.events.append({"type": type_, "severity": severity, "title": title, "message": message, **fields})


def rolled_md(version: str, phase: str = "Ready", uid: str = "u-1") -> dict:
    obj = md("iris", "iris_model", phase, version, "http://iris.models:8080")
    obj["metadata"]["uid"] = uid
    obj["spec"]["model"]["alias"] = "champion"
    return obj


async def test_resolved_version_change_becomes_one_rolled_alert_across_replicas(redis_url):
    """Cluster mode: the operator re-resolved @champion and rolled (status.resolvedVersion 3 -> 4): the API's
    watch says so once, even with two API replicas polling the same objects (real Redis dedups)."""
    import uuid

    import redis.asyncio as aioredis

    from mlstack.deployments.kube import PhaseAlerts

    redis = aioredis.from_url(redis_url, decode_responses=True)
    prefix = f"test:rolled:{uuid.uuid4().hex[:6]}"
    api = FakeApi(items=[rolled_md("3")])
    a, b = Recorder(), Recorder()
    watchers = [PhaseAlerts(backend(api), ["models"], redis, rec, 5.0, prefix) for rec in (a, b)]
    try:
        for w in watchers:
            await w.poll(alert=False)  # what exists at start is remembered, not alerted
        api.items = [rolled_md("4")]
        for w in watchers:
            await w.poll()
        events = a.events + b.events
        assert [e["type"] for e in events] == ["deployment.rolled"]  # phase stayed Ready: no phase alert
        e = events[0]
        assert e["data"] == {"from": "3", "to": "4", "alias": "champion", "mode": "cluster"}
        assert e["namespace"] == "models" and e["deployment"] == "iris" and e["model"] == "iris_model"
        assert e["version"] == "4" and "v3 -> v4" in e["title"] and e["message"].startswith("@champion moved")

        api.items = [rolled_md("4")]  # no change: nothing
        await watchers[0].poll()
        assert len(a.events + b.events) == 1
        api.items = [rolled_md("3")]  # moving the alias back rolls back: alerted too
        await watchers[0].poll()
        assert [(x["data"]["from"], x["data"]["to"]) for x in a.events if x["type"] == "deployment.rolled"][-1] \
            == ("4", "3")
        api.items = [rolled_md("5", phase="Deploying", uid="u-2")]  # a new object: its first version is no roll
        await watchers[0].poll()
        assert [x["type"] for x in a.events][-1] == "deployment.phase"
        pinned = rolled_md("6", phase="Deploying", uid="u-2")  # a pinned version changed (a promoted canary)
        del pinned["spec"]["model"]["alias"]
        pinned["spec"]["model"]["version"] = "6"
        api.items = [pinned]
        await watchers[0].poll()
        assert a.events[-1]["message"].startswith("the spec pins v6"), a.events[-1]  # not "@None moved"
    finally:
        await redis.aclose()
