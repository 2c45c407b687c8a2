"""The emulator's contract (see tests/operator/emulator.py): what the operator's e2e tests rely on."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest

from tests.operator.emulator import ApiServerEmulator, main, parse_selector, parse_user, selector_matches

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


# --- authentication and authorization -------------------------------------------------------------

SAS = "/api/v1/namespaces/{ns}/serviceaccounts"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
TOKENREVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SARS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


async def make_sa(s: aiohttp.ClientSession, ns: str, name: str) -> dict[str, Any]:
    code, sa = await call(s, "POST", SAS.format(ns=ns), {"apiVersion": "v1", "kind": "ServiceAccount",
                                                           "metadata": {"name": name}})
    assert code == 201
    return sa


async def mint(s: aiohttp.ClientSession, ns: str, name: str, **spec: Any) -> tuple[int, dict[str, Any]]:
    return await call(s, "POST", f"{SAS.format(ns=ns)}/{name}/token",
                      {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})


async def review(s: aiohttp.ClientSession, token: str, **spec: Any) -> dict[str, Any]:
    code, body = await call(s, "POST", TOKENREVIEWS, {"apiVersion": "authentication.k8s.io/v1",
                                                       "kind": "TokenReview", "spec": {"token": token, **spec}})
    assert code == 201 and body["kind"] == "TokenReview"
    return body["status"]


async def sar(s: aiohttp.ClientSession, user: str = "", groups: tuple[str, ...] = (), **attrs: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"user": user, "groups": list(groups)}
    if "path" in attrs:
        spec["nonResourceAttributes"] = attrs
    else:
        spec["resourceAttributes"] = {"group": "", **attrs}
    code, body = await call(s, "POST", SARS, {"apiVersion": "authorization.k8s.io/v1",
                                              "kind": "SubjectAccessReview", "spec": spec})
    assert code == 201 and body["kind"] == "SubjectAccessReview", body
    return body["status"]


def rule(groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None
         ) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs, **({"resourceNames": names} if names else {})}


async def cluster_role(s: aiohttp.ClientSession, name: str, *rules: dict[str, Any]) -> None:
    code, _ = await call(s, "POST", f"{RBAC}/clusterroles", {"metadata": {"name": name}, "rules": list(rules)})
    assert code == 201


async def bind(s: aiohttp.ClientSession, name: str, role_kind: str, role: str, *subjects: dict[str, Any],
               ns: str | None = None) -> None:
    path = f"{RBAC}/namespaces/{ns}/rolebindings" if ns else f"{RBAC}/clusterrolebindings"
    body = {"metadata": {"name": name}, "subjects": list(subjects),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}}
    assert (await call(s, "POST", path, body))[0] == 201


async def test_rbac_and_service_accounts_are_stored_resources(api):
    emu, s = api
    await make_sa(s, "t1", "bot")
    async with s.get("/api/v1/serviceaccounts", params={"labelSelector": "!x"}) as r:
        assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["bot"]
    await cluster_role(s, "reader", rule([""], ["pods"], ["get"]))
    code, obj = await call(s, "PATCH", f"{RBAC}/clusterroles/reader", {"metadata": {"labels": {"a": "b"}}}, MERGE)
    assert code == 200 and obj["metadata"]["labels"] == {"a": "b"} and obj["kind"] == "ClusterRole"
    assert (await call(s, "POST", f"{RBAC}/namespaces/t1/roles", {"metadata": {"name": "r"}, "rules": []}))[0] == 201
    assert emu.get("rbac.authorization.k8s.io/v1/roles", "t1", "r")["kind"] == "Role"
    async with s.get("/apis/rbac.authorization.k8s.io/v1") as r:
        names = {x["name"]: x["namespaced"] for x in (await r.json())["resources"]}
    assert names == {"roles": True, "rolebindings": True, "clusterroles": False, "clusterrolebindings": False}
    async with s.get("/apis/authentication.k8s.io/v1") as r:
        assert [(x["name"], x["verbs"]) for x in (await r.json())["resources"]] == [("tokenreviews", ["create"])]
    assert (await call(s, "DELETE", f"{RBAC}/clusterroles/reader"))[0] == 200


async def test_namespaces_are_served(api):
    _, s = api  # KMock 0.8 cannot parse /api/v1/namespaces[/name]: the emulator does
    code, ns = await call(s, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": "n1", "labels": {"team": "a"}}})
    assert code == 201 and ns["status"] == {"phase": "Active"} and ns["metadata"]["uid"]
    assert (await call(s, "POST", "/api/v1/namespaces", {"metadata": {"name": "n1"}}))[0] == 409
    await call(s, "POST", "/api/v1/namespaces/", {"metadata": {"name": "n2"}})
    assert (await call(s, "GET", "/api/v1/namespaces/n1"))[1]["metadata"]["labels"] == {"team": "a"}
    assert (await call(s, "GET", "/api/v1/namespaces/zzz"))[0] == 404
    async with s.get("/api/v1/namespaces", params={"labelSelector": "team=a"}) as r:
        assert [o["metadata"]["name"] for o in (await r.json())["items"]] == ["n1"]
    code, ns = await call(s, "PATCH", "/api/v1/namespaces/n2", {"metadata": {"labels": {"x": "1"}}}, MERGE)
    assert code == 200 and ns["metadata"]["labels"] == {"x": "1"}
    params = {"watch": "true", "resourceVersion": ns["metadata"]["resourceVersion"], "timeoutSeconds": "5"}
    async with s.get("/api/v1/namespaces", params=params) as r:
        assert (await call(s, "DELETE", "/api/v1/namespaces/n2"))[0] == 200
        event = json.loads(await asyncio.wait_for(r.content.readline(), 5))
        assert event["type"] == "DELETED" and event["object"]["metadata"]["name"] == "n2"
    assert (await call(s, "DELETE", "/api/v1/namespaces/n2"))[0] == 404


async def test_token_request_needs_the_service_account(api):
    _, s = api
    code, body = await mint(s, "t2", "nobody")
    assert code == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"
    await make_sa(s, "t2", "bot")
    assert (await mint(s, "t2", "bot", expirationSeconds=60))[0] == 422  # Kubernetes' minimum: 10 minutes
    async with s.get(f"{SAS.format(ns='t2')}/bot/token") as r:
        assert r.status == 405
    assert (await call(s, "POST", f"{SAS.format(ns='t2')}/bot/other", {}))[0] == 404


async def test_minted_token_reviews_as_the_service_account(api):
    _, s = api
    sa = await make_sa(s, "t3", "bot")
    code, tr = await mint(s, "t3", "bot", expirationSeconds=1200)
    assert code == 201 and tr["kind"] == "TokenRequest" and tr["spec"]["expirationSeconds"] == 1200
    token = tr["status"]["token"]
    expiry = dt.datetime.fromisoformat(tr["status"]["expirationTimestamp"].replace("Z", "+00:00"))
    assert abs(expiry.timestamp() - time.time() - 1200) < 5
    status = await review(s, token)
    assert status["authenticated"] is True
    assert status["user"] == {"username": "system:serviceaccount:t3:bot", "uid": sa["metadata"]["uid"],
                              "groups": ["system:serviceaccounts", "system:serviceaccounts:t3", "system:authenticated"]}
    # a second token for the same SA is independent; the default expiry is an hour
    code, tr2 = await mint(s, "t3", "bot")
    assert code == 201 and tr2["spec"]["expirationSeconds"] == 3600 and tr2["status"]["token"] != token
    # audiences: minted for "vault" only, so not for the API server's own audience
    _, tr3 = await mint(s, "t3", "bot", audiences=["vault"])
    assert (await review(s, tr3["status"]["token"], audiences=["vault"]))["audiences"] == ["vault"]
    assert (await review(s, tr3["status"]["token"]))["authenticated"] is False


async def test_unknown_deleted_recreated_and_expired_tokens_are_not_authenticated(api):
    emu, s = api
    status = await review(s, "no-such-token")
    assert status["authenticated"] is False and status["error"]
    assert (await call(s, "POST", TOKENREVIEWS, {"kind": "TokenReview", "spec": {}}))[0] == 400

    await make_sa(s, "t4", "gone")
    _, tr = await mint(s, "t4", "gone")
    assert (await call(s, "DELETE", f"{SAS.format(ns='t4')}/gone"))[0] == 200
    assert (await review(s, tr["status"]["token"]))["authenticated"] is False
    await make_sa(s, "t4", "gone")  # same name, new uid: the old token stays invalid
    assert (await review(s, tr["status"]["token"]))["authenticated"] is False

    await make_sa(s, "t4", "short")
    emu.min_token_seconds = 1
    _, tr = await mint(s, "t4", "short", expirationSeconds=30)
    assert (await review(s, tr["status"]["token"]))["authenticated"] is True
    emu.clock = lambda: time.time() + 31
    status = await review(s, tr["status"]["token"])
    assert status["authenticated"] is False and "expired" in status["error"]


async def test_static_users(api):
    emu, s = api
    emu.add_user("admin-token", "alice", ["system:masters"])
    emu.add_user("plain-token", "bob")
    status = await review(s, "admin-token")
    assert status["authenticated"] is True
    assert status["user"] == {"username": "alice", "groups": ["system:masters", "system:authenticated"]}
    assert (await review(s, "plain-token"))["user"]["groups"] == ["system:authenticated"]
    with pytest.raises(ValueError):
        emu.add_user("", "x")


async def test_user_flag_parsing():
    assert parse_user("tok=alice") == ("tok", "alice", ())
    assert parse_user("tok=admin:system:masters, devs") == ("tok", "admin", ("system:masters", "devs"))
    for bad in ("tok", "=alice", "tok=", "tok=:g"):
        with pytest.raises(ValueError):
            parse_user(bad)
    with pytest.raises(SystemExit):
        main(["--port", "1", "--user", "no-username"])


async def test_sar_without_bindings_is_denied_and_validated(api):
    _, s = api
    status = await sar(s, "alice", verb="get", resource="pods", namespace="t5")
    assert status["allowed"] is False and "no rule allows" in status["reason"]
    code, body = await call(s, "POST", SARS, {"kind": "SubjectAccessReview", "spec": {"user": "alice"}})
    assert code == 422 and body["reason"] == "Invalid"
    code, _ = await call(s, "POST", SARS, {"kind": "SubjectAccessReview",
                                           "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}})
    assert code == 422


async def test_role_binding_of_cluster_role_to_service_account_allows_in_its_namespace_only(api):
    _, s = api
    await cluster_role(s, "md-editor", rule(["mlstack.io"], ["modeldeployments"], ["get", "list", "create"]))
    await bind(s, "team", "ClusterRole", "md-editor", {"kind": "ServiceAccount", "name": "bot", "namespace": "t6"},
               ns="t6")
    sa_user = "system:serviceaccount:t6:bot"
    md = {"group": "mlstack.io", "resource": "modeldeployments"}
    status = await sar(s, sa_user, verb="create", namespace="t6", **md)
    assert status["allowed"] is True
    assert status["reason"] == ('RBAC: allowed by RoleBinding "team/t6" of ClusterRole "md-editor" '
                                'to ServiceAccount "bot/t6"')
    assert not (await sar(s, sa_user, verb="create", namespace="other", **md))["allowed"]
    assert not (await sar(s, sa_user, verb="list", **md))["allowed"]  # cluster-wide: RoleBindings do not count
    assert not (await sar(s, sa_user, verb="delete", namespace="t6", **md))["allowed"]
    assert not (await sar(s, sa_user, verb="get", namespace="t6", group="mlstack.io",
                          resource="modeldeployments", subresource="status"))["allowed"]
    assert not (await sar(s, "system:serviceaccount:t6:other", verb="get", namespace="t6", **md))["allowed"]
    # a Role in the binding's namespace, and a ServiceAccount subject without a namespace (defaults to the binding's)
    await call(s, "POST", f"{RBAC}/namespaces/t6/roles", {"metadata": {"name": "q"},
                                                          "rules": [rule([""], ["resourcequotas"], ["get"])]})
    await bind(s, "quota", "Role", "q", {"kind": "ServiceAccount", "name": "bot2"}, ns="t6")
    assert (await sar(s, "system:serviceaccount:t6:bot2", verb="get", namespace="t6", resource="resourcequotas"))[
        "allowed"]
    await bind(s, "quota", "Role", "q", {"kind": "User", "name": "carol"}, ns="t7")  # no Role "q" in t7
    assert not (await sar(s, "carol", verb="get", namespace="t7", resource="resourcequotas"))["allowed"]


async def test_cluster_role_binding_to_group_allows_everywhere(api):
    _, s = api
    await cluster_role(s, "ns-reader", rule([""], ["namespaces"], ["get", "list"]),
                       {"nonResourceURLs": ["/healthz", "/metrics/*"], "verbs": ["get"]})
    await bind(s, "readers", "ClusterRole", "ns-reader", {"kind": "Group", "name": "auditors"})
    status = await sar(s, "dave", ("auditors",), verb="list", resource="namespaces")
    assert status["allowed"]
    assert 'ClusterRoleBinding "readers" of ClusterRole "ns-reader" to Group "auditors"' in status["reason"]
    assert (await sar(s, "dave", ("auditors",), verb="get", resource="namespaces", namespace="any"))["allowed"]
    assert not (await sar(s, "dave", ("others",), verb="list", resource="namespaces"))["allowed"]
    assert (await sar(s, "dave", ("auditors",), verb="get", path="/metrics/cpu"))["allowed"]
    assert (await sar(s, "dave", ("auditors",), verb="get", path="/healthz"))["allowed"]
    assert not (await sar(s, "dave", ("auditors",), verb="get", path="/healthz/ready"))["allowed"]
    assert not (await sar(s, "dave", ("auditors",), verb="post", path="/metrics/cpu"))["allowed"]


async def test_resource_names_restrict_and_wildcards_match(api):
    _, s = api
    await cluster_role(s, "one-quota", rule([""], ["resourcequotas"], ["get", "patch"], names=["mlstack"]))
    await cluster_role(s, "all-apps", rule(["apps"], ["*"], ["*"]), rule(["*"], ["*/status"], ["get"]))
    await bind(s, "q", "ClusterRole", "one-quota", {"kind": "User", "name": "erin"}, ns="t8")
    await bind(s, "a", "ClusterRole", "all-apps", {"kind": "User", "name": "erin"})
    quota = {"namespace": "t8", "resource": "resourcequotas"}
    assert (await sar(s, "erin", verb="patch", name="mlstack", **quota))["allowed"]
    assert not (await sar(s, "erin", verb="patch", name="other", **quota))["allowed"]
    assert not (await sar(s, "erin", verb="get", **quota))["allowed"]  # a list/get without a name
    assert (await sar(s, "erin", verb="delete", group="apps", resource="deployments", namespace="x"))["allowed"]
    assert (await sar(s, "erin", verb="deletecollection", group="apps", resource="deployments",
                      subresource="scale", namespace="x"))["allowed"]  # "*" covers subresources
    assert not (await sar(s, "erin", verb="get", group="batch", resource="jobs", namespace="x"))["allowed"]
    assert (await sar(s, "erin", verb="get", group="batch", resource="jobs", subresource="status",
                      namespace="x"))["allowed"]  # "*/status"
    assert (await sar(s, "anyone", ("system:masters",), verb="delete", resource="namespaces"))["allowed"]
    assert (await sar(s, "anyone", ("system:masters",), verb="get", path="/anything"))["allowed"]


async def test_deleting_a_namespace_deletes_its_contents_and_access(api):
    emu, s = api
    assert (await call(s, "POST", "/api/v1/namespaces", {"metadata": {"name": "t9"}}))[1]["status"] == {
        "phase": "Active"}
    await make_sa(s, "t9", "bot")
    _, tr = await mint(s, "t9", "bot")
    await cluster_role(s, "edit", rule(["*"], ["*"], ["*"]))
    await bind(s, "team", "ClusterRole", "edit", {"kind": "ServiceAccount", "name": "bot", "namespace": "t9"},
               ns="t9")
    await call(s, "POST", "/api/v1/namespaces/t9/resourcequotas", {"metadata": {"name": "q"}})
    await call(s, "POST", "/api/v1/namespaces/t10/resourcequotas", {"metadata": {"name": "q"}})
    await call(s, "POST", "/apis/mlstack.io/v1alpha1/namespaces/t9/modeldeployments",
               {"metadata": {"name": "held", "finalizers": ["kopf"]}, "spec": {}})
    user = "system:serviceaccount:t9:bot"
    assert (await sar(s, user, verb="get", resource="pods", namespace="t9"))["allowed"]

    code, ns = await call(s, "DELETE", "/api/v1/namespaces/t9")
    assert code == 202 and ns["status"]["phase"] == "Terminating"  # the finalizer holds the ModelDeployment
    assert emu.list("v1/serviceaccounts", "t9") == [] and emu.list("v1/resourcequotas", "t9") == []
    assert emu.list("rbac.authorization.k8s.io/v1/rolebindings", "t9") == []
    assert len(emu.list("v1/resourcequotas", "t10")) == 1  # other namespaces untouched
    assert not (await sar(s, user, verb="get", resource="pods", namespace="t9"))["allowed"]
    assert (await review(s, tr["status"]["token"]))["authenticated"] is False
    code, body = await call(s, "POST", SAS.format(ns="t9"), {"metadata": {"name": "late"}})
    assert code == 403 and body["reason"] == "Forbidden"

    md = emu.get("mlstack.io/v1alpha1/modeldeployments", "t9", "held")
    assert md["metadata"]["deletionTimestamp"]
    await call(s, "PATCH", "/apis/mlstack.io/v1alpha1/namespaces/t9/modeldeployments/held",
               {"metadata": {"finalizers": None}}, MERGE)
    assert emu.get("v1/namespaces", None, "t9") is None  # gone with its last object

    await call(s, "POST", "/api/v1/namespaces", {"metadata": {"name": "t11"}})
    await call(s, "POST", "/api/v1/namespaces/t11/resourcequotas", {"metadata": {"name": "q"}})
    assert (await call(s, "DELETE", "/api/v1/namespaces/t11"))[0] == 200  # nothing holds it: gone at once
    assert emu.get("v1/namespaces", None, "t11") is None and emu.list("v1/resourcequotas", "t11") == []
