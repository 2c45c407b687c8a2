"""Cluster mode: the API (MLSTACK_MODE=cluster) authenticates with TokenReview and authorises with
SubjectAccessReview against the Kubernetes API emulator, whose RBAC holds the ClusterRoles rendered
from ``mlstack.auth.roles``. Organisations: create, invite, join, members, budget, delete; and the
budget enforced by the operator's admission (a real operator process on the same emulator).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from mlstack.auth.roles import cluster_roles
from tests.operator.test_e2e import MODEL, Operator, register
from tests.utils.procs import free_port, http_ok, start, start_api, wait_until

REPO = Path(__file__).resolve().parents[2]
RBAC = "/apis/rbac.authorization.k8s.io/v1"
USERS = {"pat": secrets.token_urlsafe(24), "olga": secrets.token_urlsafe(24), "root": secrets.token_urlsafe(24)}
MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"


@pytest.fixture(scope="module")
def emulator(workdir) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    users = [f"--user={USERS['pat']}=pat", f"--user={USERS['olga']}=olga",
             f"--user={USERS['root']}=root:system:masters"]
    proc = start([sys.executable, "-m", "tests.operator.emulator", "--port", str(port), *users],
                 workdir / "auth" / f"emulator-{port}.log", ready=lambda: http_ok(url + "/version"),
                 timeout=60, cwd=REPO, what="API emulator")
    with httpx.Client(base_url=url) as kube:
        for role in cluster_roles():  # what manifests/auth/ installs
            assert kube.post(f"{RBAC}/clusterroles", json=role).status_code == 201
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "pat-platform-admin"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "mlstack-platform-admin"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "pat"}]}
        assert kube.post(f"{RBAC}/clusterrolebindings", json=binding).status_code == 201
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def api(stack_env, emulator, workdir) -> Iterator[str]:
    env = {**stack_env, "MLSTACK_MODE": "cluster", "MLSTACK_KUBE_SERVER": emulator,
           "MLSTACK_AUTH_CACHE_SECONDS": "0",  # RBAC changes take effect at once (tests)
           "MLSTACK_STATE_DIR": str(workdir / "auth-kube-state"), "MLSTACK_DEPLOYMENTS_WATCH_SECONDS": "0.5"}
    proc, url = start_api(workdir / "auth" / "api-kube.log", env)
    yield url
    proc.stop(timeout=30)


@pytest.fixture(scope="module")
def kube(emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator, timeout=10) as c:
        yield c


class As:
    """An API client holding one bearer token."""

    def __init__(self, api: str, token: str | None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.c = httpx.Client(base_url=api, headers=headers, timeout=30)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.c, name)


def deployment(name: str, cpu: str = "500m", priority: int = 100, **extra: Any) -> dict[str, Any]:
    return {"name": name, "spec": {"model": {"name": MODEL, "alias": "champion"}, "priority": priority,
                                   "resources": {"cpu": cpu, "memory": "256Mi"}}, **extra}


def new_org(api: str, name: str, cpu: str = "2") -> dict[str, Any]:
    r = As(api, USERS["pat"]).post("/orgs", json={"name": name, "displayName": name.title(),
                                                 "budget": {"cpu": cpu, "memory": "4Gi"}})
    assert r.status_code == 201, r.text
    return r.json()


def join(api: str, org: str, role: str, name: str) -> str:
    r = As(api, USERS["pat"]).post(f"/orgs/{org}/invites", json={"role": role})
    assert r.status_code == 201, r.text
    r = httpx.post(api + "/orgs/join", json={"code": r.json()["code"], "name": name})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def test_401_403_200(api):
    assert As(api, None).get("/deployments").status_code == 401
    r = As(api, "not-a-token-at-all").get("/deployments")
    assert r.status_code == 401 and "invalid token" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = As(api, USERS["olga"]).get("/deployments")
    assert r.status_code == 403
    assert r.json()["detail"].startswith("olga may not list modeldeployments in namespace models")
    assert As(api, USERS["olga"]).get("/models").status_code == 403
    assert As(api, USERS["root"]).get("/deployments").status_code == 200  # system:masters
    assert As(api, USERS["pat"]).get("/models").status_code == 200  # ClusterRoleBinding: everywhere
    me = As(api, USERS["pat"]).get("/auth/me").json()
    assert me["name"] == "pat" and me["kind"] == "kubernetes" and me["authMode"] == "kubernetes"
    assert "system:authenticated" in me["groups"] and me["org"] is None and me["namespace"] == "models"
    assert As(api, None).get("/healthz").status_code == 200


def test_create_org_makes_namespace_quota_and_admin_binding(api, kube):
    assert As(api, USERS["olga"]).post("/orgs", json={"name": "nope"}).status_code == 403
    org = new_org(api, "acme", cpu="1500m")
    assert org["namespace"] == "org-acme" and org["budget"]["requests.cpu"] == "1500m"
    assert org["createdBy"] == "pat" and org["displayName"] == "Acme"
    assert {"kind": "User", "name": "pat", "role": "admin"} in org["members"]
    ns = kube.get("/api/v1/namespaces/org-acme").json()
    assert ns["metadata"]["labels"]["mlstack.io/org"] == "acme"
    quota = kube.get("/api/v1/namespaces/org-acme/resourcequotas/mlstack-budget").json()
    assert quota["spec"]["hard"] == {"requests.cpu": "1500m", "requests.memory": "4Gi",
                                     "requests.nvidia.com/gpu": "0"}
    r = As(api, USERS["pat"]).post("/orgs", json={"name": "acme"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = As(api, USERS["pat"]).post("/orgs", json={"name": "bad", "budget": {"cpu": "lots"}})
    assert r.status_code == 422


def test_invite_join_and_roles_in_the_org(api, kube):
    new_org(api, "beta")
    pat = As(api, USERS["pat"])
    r = pat.post("/orgs/beta/invites", json={"role": "deployer", "expiresInSeconds": 600})
    assert r.status_code == 201 and r.json()["role"] == "deployer"
    code = r.json()["code"]
    r = httpx.post(api + "/orgs/join", json={"code": code, "name": "dana"})
    assert r.status_code == 201, r.text
    joined = r.json()
    assert joined["namespace"] == "org-beta" and joined["serviceAccount"] == "dana" and joined["token"]
    r = httpx.post(api + "/orgs/join", json={"code": code, "name": "dana-again"})
    assert r.status_code == 410 and "already used" in r.json()["detail"]
    r = httpx.post(api + "/orgs/join", json={"code": "x" * 32, "name": "eve"})
    assert r.status_code == 404 and "unknown invite code" in r.json()["detail"]
    assert kube.get("/api/v1/namespaces/org-beta/serviceaccounts/dana-again").status_code == 404

    dana = As(api, joined["token"])
    me = dana.get("/auth/me").json()
    assert me["name"] == "system:serviceaccount:org-beta:dana"
    assert me["org"] == "beta" and me["namespace"] == "org-beta"
    r = dana.post("/deployments", json=deployment("d1"))  # no namespace: the caller's organisation
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["namespace"] == "org-beta"
    assert kube.get(MDS.format(ns="org-beta") + "/d1").status_code == 200
    assert [d["metadata"]["name"] for d in dana.get("/deployments").json()] == ["d1"]
    r = dana.post("/deployments", json=deployment("d2", namespace="models"))
    assert r.status_code == 403 and "in namespace models" in r.json()["detail"]
    r = dana.post("/orgs/beta/invites", json={"role": "admin"})
    assert r.status_code == 403 and "may not create invites in namespace org-beta" in r.json()["detail"]
    assert dana.patch("/orgs/beta", json={"budget": {"cpu": "64"}}).status_code == 403
    assert [o["name"] for o in dana.get("/orgs").json()] == ["beta"]  # not cluster-wide: just their own
    members = dana.get("/orgs/beta").json()["members"]
    assert {"kind": "ServiceAccount", "name": "dana", "role": "deployer"} in members

    vic = As(api, join(api, "beta", "viewer", "vic"))
    assert vic.get("/deployments").status_code == 200
    assert vic.post("/deployments", json=deployment("v1")).status_code == 403
    assert vic.delete("/deployments/d1").status_code == 403
    assert dana.delete("/deployments/d1").status_code == 204

    assert dana.delete("/orgs/beta/members/vic").status_code == 403  # the org's admins remove members
    assert pat.delete("/orgs/beta/members/vic").status_code == 204
    assert vic.get("/deployments").status_code == 401  # the ServiceAccount is gone, so are its tokens
    assert pat.delete("/orgs/beta/members/vic").status_code == 404
    assert pat.delete("/orgs/beta/members/default").status_code == 404  # not a member who joined

    r = pat.patch("/orgs/beta", json={"budget": {"cpu": "3", "memory": "6Gi", "gpu": 1}})
    assert r.status_code == 200 and r.json()["budget"]["requests.nvidia.com/gpu"] == "1"
    listed = {o["name"]: o for o in pat.get("/orgs").json()}  # a platform admin lists them all, in full
    assert listed["beta"]["budget"]["requests.cpu"] == "3"
    assert {"kind": "ServiceAccount", "name": "dana", "role": "deployer"} in listed["beta"]["members"]


def test_a_refused_join_keeps_the_code_and_leaves_nothing(api, kube):
    new_org(api, "gamma")
    join(api, "gamma", "viewer", "taken")
    code = As(api, USERS["pat"]).post("/orgs/gamma/invites", json={"role": "deployer"}).json()["code"]
    r = httpx.post(api + "/orgs/join", json={"code": code, "name": "taken"})
    assert r.status_code == 409 and "taken" in r.json()["detail"]
    sa = kube.get("/api/v1/namespaces/org-gamma/serviceaccounts/taken").json()
    assert sa["metadata"]["labels"]["mlstack.io/role"] == "viewer"  # the first member's, untouched
    rb = kube.get(f"{RBAC}/namespaces/org-gamma/rolebindings/mlstack-member-taken").json()
    assert rb["metadata"]["labels"]["mlstack.io/role"] == "viewer"  # the first member's binding untouched
    r = httpx.post(api + "/orgs/join", json={"code": code, "name": "second"})  # the code still works
    assert r.status_code == 201 and r.json()["role"] == "deployer"


def test_expired_and_overlong_invites(api, redis_url):
    new_org(api, "delta")
    pat = As(api, USERS["pat"])
    r = pat.post("/orgs/delta/invites", json={"role": "viewer", "expiresInSeconds": 30 * 24 * 3600})
    assert r.status_code == 422 and "MLSTACK_ORG_INVITE_MAX_SECONDS" in r.json()["detail"]
    assert pat.post("/orgs/delta/invites", json={"expiresInSeconds": 5}).status_code == 422
    assert pat.post("/orgs/nope/invites", json={}).status_code == 404
    code = pat.post("/orgs/delta/invites", json={"role": "viewer", "expiresInSeconds": 60}).json()["code"]
    # age the stored invite instead of waiting a minute (only the code's SHA-256 is stored)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    key = "mlstack:orgs:invite:" + hashlib.sha256(code.encode()).hexdigest()
    record = json.loads(r.get(key))
    assert code not in r.get(key)
    r.set(key, json.dumps({**record, "expires": record["expires"] - 120}), keepttl=True)
    resp = httpx.post(api + "/orgs/join", json={"code": code, "name": "late"})
    assert resp.status_code == 410 and "expired" in resp.json()["detail"]


def test_members_see_only_their_organisations_deployment_alerts(api):
    new_org(api, "eps")
    pat = As(api, USERS["pat"])
    mark = secrets.token_hex(4)
    for ns in ("org-eps", "org-other", None):
        r = pat.post("/alerts", json={"title": f"{mark} {ns}", "namespace": ns})
        assert r.status_code == 201, r.text
    erin = As(api, join(api, "eps", "viewer", "erin"))

    def titles(client: As) -> list[str]:
        return [a["title"] for a in client.get("/alerts", params={"limit": 50}).json() if mark in a["title"]]

    assert titles(pat) == [f"{mark} org-eps", f"{mark} org-other", f"{mark} None"]  # platform admin: all
    assert titles(erin) == [f"{mark} org-eps", f"{mark} None"]
    # the stream's replay too (from the start of the stream: Last-Event-ID 0)
    seen: list[str] = []
    with erin.stream("GET", "/alerts/stream", params={"last_event_id": "0"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:") and mark in line:
                seen.append(json.loads(line[5:])["title"])
            if f"{mark} None" in seen:
                break
    assert seen == [f"{mark} org-eps", f"{mark} None"]


def test_delete_org_revokes_its_members(api, kube):
    new_org(api, "omega")
    token = join(api, "omega", "admin", "ada")
    ada = As(api, token)
    assert ada.get("/deployments").status_code == 200
    assert ada.delete("/orgs/omega").status_code == 403  # deleting is the platform admin's
    assert As(api, USERS["pat"]).delete("/orgs/omega").status_code == 204
    assert kube.get("/api/v1/namespaces/org-omega").status_code == 404
    r = ada.get("/deployments")
    assert r.status_code == 401  # the ServiceAccount went with the namespace
    assert As(api, USERS["pat"]).get("/orgs/omega").status_code == 404


@pytest.fixture(scope="module")
def operator(emulator, mlflow_uri, workdir) -> Iterator[Operator]:
    from mlflow import MlflowClient

    register(mlflow_uri, MODEL)
    client = MlflowClient(mlflow_uri)
    client.set_registered_model_alias(MODEL, "champion", client.search_model_versions(f"name='{MODEL}'")[0].version)
    op = Operator(emulator, mlflow_uri, workdir / "auth")
    op.start()
    yield op
    op.stop()


def test_org_budget_is_enforced_by_the_operators_admission(api, kube, operator):
    new_org(api, "quota", cpu="1")
    dana = As(api, join(api, "quota", "deployer", "dana"))
    for name, priority in (("first", 10), ("second", 5)):
        r = dana.post("/deployments", json=deployment(name, cpu="750m", priority=priority))
        assert r.status_code == 201, r.text

    def phase(name: str) -> dict[str, Any]:
        return dana.get(f"/deployments/{name}").json()["status"]

    wait_until(lambda: phase("first").get("phase") in ("Deploying", "Ready"), 60, what="first admitted")
    st = wait_until(lambda: (s := phase("second")).get("phase") == "Queued" and s, 60, what="second queued")
    assert st["queuePosition"] == 1
    admitted = next(c for c in st["conditions"] if c["type"] == "Admitted")
    assert "waiting for quota" in admitted["message"]
    assert kube.get("/apis/apps/v1/namespaces/org-quota/deployments/second").status_code == 404

    # the org's admin raises the budget: the queued one is admitted
    r = As(api, USERS["pat"]).patch("/orgs/quota", json={"budget": {"cpu": "2", "memory": "4Gi"}})
    assert r.status_code == 200
    wait_until(lambda: phase("second").get("phase") in ("Deploying", "Ready"), 60, what="second admitted")
