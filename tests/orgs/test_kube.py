"""Organisations on a real control plane, through the API in cluster mode (MLSTACK_MODE=cluster, as its own
ServiceAccount ``mlstack/mlstack-api`` with the RBAC of manifests/fastapi): create, invite, join, members, budget,
delete; the budget enforced by the operator's admission (the shared operator process, as its ServiceAccount); and
the ValidatingAdmissionPolicy that confines the API's cluster-wide RBAC to organisation namespaces, under
impersonation of the API's ServiceAccount. (Authentication and authorisation themselves: tests/auth/test_kube.py.)

The API (``cluster_api``) and the people who call it (``kube_users``, ``pat``) are the session's, shared by both
modules (tests/utils/kube_fixtures.py): pat is bound to mlstack-platform-admin, root to cluster-admin, olga to nothing.
"""
from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import yaml

from mlstack.orgs.builders import model_servers_policy_spec
from tests.k8s.controlplane import Cluster, Kube
from tests.k8s.fixtures import MODEL, TEST_USERS_NS, user_name
from tests.utils.kube_api import As, unique
from tests.utils.procs import wait_until

pytestmark = pytest.mark.slow
RBAC = "/apis/rbac.authorization.k8s.io/v1"
MDS = "/apis/mlstack.io/v1alpha1/namespaces/{ns}/modeldeployments"
API_SA = "system:serviceaccount:mlstack:mlstack-api"
POLICY = "mlstack-api-org-scope"
DEADLINE = 60.0
PAT = user_name("pat")


def deployment(name: str, cpu: str = "500m", priority: int = 100, **extra: Any) -> dict[str, Any]:
    return {"name": name, "spec": {"model": {"name": MODEL, "alias": "champion"}, "priority": priority,
                                   "resources": {"cpu": cpu, "memory": "256Mi"}}, **extra}


def new_org(pat: As, prefix: str, cpu: str = "2") -> tuple[str, str]:
    """A new organisation (unique name per run); returns (name, namespace)."""
    name = unique(prefix)
    r = pat.post("/orgs", json={"name": name, "displayName": prefix.title(), "budget": {"cpu": cpu, "memory": "4Gi"}})
    assert r.status_code == 201, r.text
    return name, r.json()["namespace"]


def join(api: str, pat: As, org: str, role: str, name: str) -> str:
    r = pat.post(f"/orgs/{org}/invites", json={"role": role})
    assert r.status_code == 201, r.text
    r = httpx.post(api + "/orgs/join", json={"code": r.json()["code"], "name": name})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def test_create_org_makes_namespace_quota_and_admin_binding(cluster_api, kube_users, pat, k8s_admin: Kube):
    assert As(cluster_api, kube_users["olga"]).post("/orgs", json={"name": unique("nope")}).status_code == 403
    name = unique("acme")
    r = pat.post("/orgs", json={"name": name, "displayName": "Acme", "budget": {"cpu": "1500m", "memory": "4Gi"}})
    assert r.status_code == 201, r.text
    org = r.json()
    ns = f"org-{name}"
    assert org["namespace"] == ns and org["budget"]["requests.cpu"] == "1500m"
    assert org["createdBy"] == PAT and org["displayName"] == "Acme"
    # the creator is a ServiceAccount of another namespace: listed with it, and not a removable (joined) member
    assert org["members"] == [{"kind": "ServiceAccount", "name": "pat", "role": "admin",
                               "namespace": TEST_USERS_NS, "joined": False}]
    obj = k8s_admin.get(f"/api/v1/namespaces/{ns}")
    assert obj["metadata"]["labels"]["mlstack.io/org"] == name
    assert obj["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"
    quota = k8s_admin.get(f"/api/v1/namespaces/{ns}/resourcequotas/mlstack-budget")
    assert quota["spec"]["hard"] == {"requests.cpu": "1500m", "requests.memory": "4Gi",
                                     "requests.nvidia.com/gpu": "0"}
    # the real quota controller fills in usage; the API reports it
    wait_until(lambda: pat.get(f"/orgs/{name}").json()["used"].get("requests.cpu") == "0", DEADLINE,
               what="quota usage counted")
    (binding,) = k8s_admin.items(f"{RBAC}/namespaces/{ns}/rolebindings", labelSelector="mlstack.io/role")
    assert binding["roleRef"]["name"] == "mlstack-admin"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pat", "namespace": TEST_USERS_NS}]
    # the organisation's model servers get what the shared namespace's get (created as the API, admitted)
    policy = k8s_admin.get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/mlstack-model-servers")
    assert policy["spec"] == model_servers_policy_spec()

    r = pat.post("/orgs", json={"name": name})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = pat.post("/orgs", json={"name": unique("bad"), "budget": {"cpu": "lots"}})
    assert r.status_code == 422


def test_invite_join_and_roles_in_the_org(cluster_api, pat, k8s_admin: Kube):
    org, ns = new_org(pat, "beta")
    r = pat.post(f"/orgs/{org}/invites", json={"role": "deployer", "expiresInSeconds": 600})
    assert r.status_code == 201 and r.json()["role"] == "deployer"
    code = r.json()["code"]
    r = httpx.post(cluster_api + "/orgs/join", json={"code": code, "name": "dana"})
    assert r.status_code == 201, r.text
    joined = r.json()
    assert joined["namespace"] == ns and joined["serviceAccount"] == "dana" and joined["token"]
    r = httpx.post(cluster_api + "/orgs/join", json={"code": code, "name": "dana-again"})
    assert r.status_code == 410 and "already used" in r.json()["detail"]
    r = httpx.post(cluster_api + "/orgs/join", json={"code": "x" * 32, "name": "eve"})
    assert r.status_code == 404 and "unknown invite code" in r.json()["detail"]
    # the ServiceAccount the namespace's pods run as is never a member's (422 before the code is spent)
    code2 = pat.post(f"/orgs/{org}/invites", json={"role": "admin"}).json()["code"]
    r = httpx.post(cluster_api + "/orgs/join", json={"code": code2, "name": "default"})
    assert r.status_code == 422 and "pods run as" in r.text, r.text
    assert "mlstack.io/role" not in (k8s_admin.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default") or {
        "metadata": {}})["metadata"].get("labels", {})
    assert httpx.post(cluster_api + "/orgs/join", json={"code": code2, "name": "admin2"}).status_code == 201
    assert k8s_admin.get(f"/api/v1/namespaces/{ns}/serviceaccounts/dana-again") is None

    dana = As(cluster_api, joined["token"])
    me = dana.get("/auth/me").json()
    assert me["name"] == f"system:serviceaccount:{ns}:dana"
    assert me["org"] == org and me["namespace"] == ns
    r = dana.post("/deployments", json=deployment("d1"))  # no namespace: the caller's organisation
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["namespace"] == ns
    assert k8s_admin.get(MDS.format(ns=ns) + "/d1")["spec"]["model"]["name"] == MODEL
    assert [d["metadata"]["name"] for d in dana.get("/deployments").json()] == ["d1"]
    r = dana.post("/deployments", json=deployment("d2", namespace="models"))
    assert r.status_code == 403 and "in namespace models" in r.json()["detail"]
    r = dana.post(f"/orgs/{org}/invites", json={"role": "admin"})
    assert r.status_code == 403 and f"may not create invites in namespace {ns}" in r.json()["detail"]
    assert dana.patch(f"/orgs/{org}", json={"budget": {"cpu": "64"}}).status_code == 403
    assert [o["name"] for o in dana.get("/orgs").json()] == [org]  # not cluster-wide: just their own
    members = dana.get(f"/orgs/{org}").json()["members"]
    assert {"kind": "ServiceAccount", "name": "dana", "role": "deployer", "namespace": ns, "joined": True} in members

    vic = As(cluster_api, join(cluster_api, pat, org, "viewer", "vic"))
    assert vic.get("/deployments").status_code == 200
    assert vic.post("/deployments", json=deployment("v1")).status_code == 403
    assert vic.delete("/deployments/d1").status_code == 403
    assert dana.delete("/deployments/d1").status_code == 204

    assert dana.delete(f"/orgs/{org}/members/vic").status_code == 403  # the org's admins remove members
    assert pat.delete(f"/orgs/{org}/members/vic").status_code == 204
    # refused at once: the RoleBinding went first (403); the ServiceAccount with it, so its tokens stop
    # authenticating (401) as soon as the API server's ServiceAccount cache sees the deletion
    assert vic.get("/deployments").status_code in (401, 403)
    r = wait_until(lambda: (r := vic.get("/deployments")).status_code == 401 and r, DEADLINE, interval=0.1,
                   what="the removed member's token refused by TokenReview")
    assert "invalid token" in r.json()["detail"]
    assert pat.delete(f"/orgs/{org}/members/vic").status_code == 404
    assert pat.delete(f"/orgs/{org}/members/default").status_code == 404  # not a member who joined
    assert k8s_admin.get(f"{RBAC}/namespaces/{ns}/rolebindings/mlstack-member-vic") is None

    r = pat.patch(f"/orgs/{org}", json={"budget": {"cpu": "3", "memory": "6Gi", "gpu": 1}})
    assert r.status_code == 200 and r.json()["budget"]["requests.nvidia.com/gpu"] == "1"
    listed = {o["name"]: o for o in pat.get("/orgs").json()}  # a platform admin lists them all, in full
    assert listed[org]["budget"]["requests.cpu"] == "3"
    assert {"kind": "ServiceAccount", "name": "dana", "role": "deployer", "namespace": ns,
            "joined": True} in listed[org]["members"]
    # a member who joined with the creator's name is a different ServiceAccount: both listed, only one removable
    join(cluster_api, pat, org, "viewer", "pat")
    pats = [m for m in pat.get(f"/orgs/{org}").json()["members"] if m["name"] == "pat"]
    assert sorted((m["namespace"], m["joined"], m["role"]) for m in pats) == sorted([
        (ns, True, "viewer"), (TEST_USERS_NS, False, "admin")])
    assert pat.delete(f"/orgs/{org}/members/pat").status_code == 204
    assert [(m["namespace"], m["role"]) for m in pat.get(f"/orgs/{org}").json()["members"] if m["name"] == "pat"] == [
        (TEST_USERS_NS, "admin")]  # the creator's binding untouched
    assert pat.get(f"/orgs/{org}").status_code == 200


def test_a_refused_join_keeps_the_code_and_leaves_nothing(cluster_api, pat, k8s_admin: Kube):
    org, ns = new_org(pat, "gamma")
    join(cluster_api, pat, org, "viewer", "taken")
    code = pat.post(f"/orgs/{org}/invites", json={"role": "deployer"}).json()["code"]
    r = httpx.post(cluster_api + "/orgs/join", json={"code": code, "name": "taken"})
    assert r.status_code == 409 and "taken" in r.json()["detail"]
    sa = k8s_admin.get(f"/api/v1/namespaces/{ns}/serviceaccounts/taken")
    assert sa["metadata"]["labels"]["mlstack.io/role"] == "viewer"  # the first member's, untouched
    rb = k8s_admin.get(f"{RBAC}/namespaces/{ns}/rolebindings/mlstack-member-taken")
    assert rb["metadata"]["labels"]["mlstack.io/role"] == "viewer"  # the first member's binding untouched
    r = httpx.post(cluster_api + "/orgs/join", json={"code": code, "name": "second"})  # the code still works
    assert r.status_code == 201 and r.json()["role"] == "deployer"


def test_expired_and_overlong_invites(cluster_api, pat, redis_url):
    org, _ = new_org(pat, "delta")
    r = pat.post(f"/orgs/{org}/invites", json={"role": "viewer", "expiresInSeconds": 30 * 24 * 3600})
    assert r.status_code == 422 and "MLSTACK_ORG_INVITE_MAX_SECONDS" in r.json()["detail"]
    assert pat.post(f"/orgs/{org}/invites", json={"expiresInSeconds": 5}).status_code == 422
    assert pat.post(f"/orgs/{unique('nope')}/invites", json={}).status_code == 404
    code = pat.post(f"/orgs/{org}/invites", json={"role": "viewer", "expiresInSeconds": 60}).json()["code"]
    # age the stored invite instead of waiting a minute (only the code's SHA-256 is stored)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    key = "mlstack:orgs:invite:" + hashlib.sha256(code.encode()).hexdigest()
    record = json.loads(r.get(key))
    assert code not in r.get(key)
    r.set(key, json.dumps({**record, "expires": record["expires"] - 120}), keepttl=True)
    resp = httpx.post(cluster_api + "/orgs/join", json={"code": code, "name": "late"})
    assert resp.status_code == 410 and "expired" in resp.json()["detail"]


def test_members_see_only_their_organisations_deployment_alerts(cluster_api, pat):
    org, ns = new_org(pat, "eps")
    mark = secrets.token_hex(4)
    for where in (ns, "org-other", None):
        r = pat.post("/alerts", json={"title": f"{mark} {where}", "namespace": where})
        assert r.status_code == 201, r.text
    erin = As(cluster_api, join(cluster_api, pat, org, "viewer", "erin"))

    def titles(client: As) -> list[str]:
        return [a["title"] for a in client.get("/alerts", params={"limit": 50}).json() if mark in a["title"]]

    assert titles(pat) == [f"{mark} {ns}", f"{mark} org-other", f"{mark} None"]  # platform admin: all
    assert titles(erin) == [f"{mark} {ns}", f"{mark} None"]
    # the stream's replay too (from the start of the stream: Last-Event-ID 0)
    seen: list[str] = []
    with erin.stream("GET", "/alerts/stream", params={"last_event_id": "0"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:") and mark in line:
                seen.append(json.loads(line[5:])["title"])
            if f"{mark} None" in seen:
                break
    assert seen == [f"{mark} {ns}", f"{mark} None"]


HOLD = "mlstack.io/test-hold"


def test_delete_org_revokes_its_members(cluster_api, pat, k8s_admin: Kube):
    org, ns = new_org(pat, "omega")
    ada = As(cluster_api, join(cluster_api, pat, org, "admin", "ada"))
    assert ada.get("/deployments").status_code == 200
    # a finalizer the test holds keeps the namespace Terminating (the real namespace controller deletes
    # everything else in it first), so what the API says meanwhile is checked, not raced
    k8s_admin.create(f"/api/v1/namespaces/{ns}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hold", "finalizers": [HOLD]}})
    assert ada.delete(f"/orgs/{org}").status_code == 403  # deleting is the platform admin's
    assert pat.delete(f"/orgs/{org}").status_code == 204

    assert k8s_admin.get(f"/api/v1/namespaces/{ns}")["status"]["phase"] == "Terminating"
    r = pat.get(f"/orgs/{org}")  # gone for the API at once, while the namespace lingers
    assert r.status_code == 404 and "being deleted" in r.json()["detail"], r.text
    assert org not in [o["name"] for o in pat.get("/orgs").json()]
    assert pat.post(f"/orgs/{org}/invites", json={"role": "viewer"}).status_code == 404
    assert pat.delete(f"/orgs/{org}").status_code == 404
    r = pat.post("/orgs", json={"name": org})  # a new one of that name: not yet, and why
    assert r.status_code == 409 and "still being deleted" in r.json()["detail"], r.text
    # the API server refuses new content in a terminating namespace (403 NamespaceTerminating): a 409 that
    # says so, not a 503 blaming the API's own rights
    r = pat.post("/deployments", json=deployment("late", namespace=ns))
    assert r.status_code == 409 and "being deleted" in r.json()["detail"], r.text
    # the member's ServiceAccount goes with the namespace's content: its token stops working
    wait_until(lambda: ada.get("/deployments").status_code == 401, DEADLINE, interval=0.2,
               what="the deleted organisation's member refused")
    assert k8s_admin.get(f"/api/v1/namespaces/{ns}") is not None  # still held

    k8s_admin.patch(f"/api/v1/namespaces/{ns}/configmaps/hold", {"metadata": {"finalizers": None}})
    wait_until(lambda: k8s_admin.get(f"/api/v1/namespaces/{ns}") is None, DEADLINE, interval=0.2,
               what=f"namespace {ns} deleted")
    assert pat.get(f"/orgs/{org}").status_code == 404
    r = pat.post("/orgs", json={"name": org})  # the name is free again
    assert r.status_code == 201, r.text
    assert pat.delete(f"/orgs/{org}").status_code == 204


def test_org_budget_is_enforced_by_the_operators_admission(cluster_api, pat, k8s_admin: Kube, mlstack_operator):
    org, ns = new_org(pat, "quota", cpu="1")
    dana = As(cluster_api, join(cluster_api, pat, org, "deployer", "dana"))
    for name, priority in (("first", 10), ("second", 5)):
        r = dana.post("/deployments", json=deployment(name, cpu="750m", priority=priority))
        assert r.status_code == 201, r.text

    def status(name: str) -> dict[str, Any]:
        return dana.get(f"/deployments/{name}").json()["status"]

    def phase_in(name: str, phases: tuple[str, ...]) -> dict[str, Any]:
        try:
            return wait_until(lambda: (s := status(name)).get("phase") in phases and s, DEADLINE,
                              what=f"{name} in {phases}")
        except TimeoutError:
            raise AssertionError(f"{name}: {status(name)}\n{mlstack_operator.log()[-4000:]}") from None

    phase_in("first", ("Ready",))  # admitted; the real scheduler and fake nodes run its pod
    st = phase_in("second", ("Queued",))
    assert st["queuePosition"] == 1
    admitted = next(c for c in st["conditions"] if c["type"] == "Admitted")
    assert "waiting for quota" in admitted["message"]
    assert k8s_admin.get(f"/apis/apps/v1/namespaces/{ns}/deployments/second") is None
    # the real quota controller counted first's pod; the organisation view reports it
    wait_until(lambda: pat.get(f"/orgs/{org}").json()["used"].get("requests.cpu") == "750m", DEADLINE,
               what="usage 750m")

    # the platform admin raises the budget: the queued one is admitted
    r = pat.patch(f"/orgs/{org}", json={"budget": {"cpu": "2", "memory": "4Gi"}})
    assert r.status_code == 200
    phase_in("second", ("Ready",))
    wait_until(lambda: pat.get(f"/orgs/{org}").json()["used"].get("requests.cpu") == "1500m", DEADLINE,
               what="usage 1500m")


# --- the ValidatingAdmissionPolicy, under impersonation of the API's ServiceAccount ------------------------


def as_api(k8s: Cluster, verb: str, obj: dict[str, Any] | None = None, *args: str,
           dry_run: bool = False) -> tuple[bool, str]:
    """``kubectl --as`` the API's ServiceAccount (the admin impersonates it; the policy sees the API's username).
    Returns (succeeded, stderr)."""
    extra = ["--dry-run=server"] if dry_run else []
    if obj is not None:
        out = k8s.kubectl(f"--as={API_SA}", verb, *extra, "-f", "-", *args, input=yaml.safe_dump(obj), check=False)
    else:
        out = k8s.kubectl(f"--as={API_SA}", verb, *extra, *args, check=False)
    return out.returncode == 0, out.stderr


def rolebinding(ns: str, role: str = "mlstack-viewer") -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": unique("vap"), "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}


def quota(ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": unique("vap"), "namespace": ns},
            "spec": {"hard": {"requests.cpu": "1"}}}


@pytest.fixture
def namespaces(k8s_admin: Kube) -> Iterator[tuple[str, str]]:
    """(a plain namespace, an organisation namespace), made by the admin; deleted after."""
    plain, org = unique("vap-plain"), unique("vap-org")
    k8s_admin.ensure_namespace(plain)
    k8s_admin.ensure_namespace(f"org-{org}", labels={"mlstack.io/org": org})
    yield plain, f"org-{org}"
    for ns in (plain, f"org-{org}"):
        k8s_admin.delete(f"/api/v1/namespaces/{ns}")


def test_admission_policy_confines_the_apis_rbac_to_organisation_namespaces(k8s, k8s_admin, api_kubeconfig,
                                                                            namespaces):
    plain, org_ns = namespaces
    assert k8s_admin.get(f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{POLICY}")
    # RBAC alone would allow it (cluster-wide rules): the API's ServiceAccount may create RoleBindings anywhere
    out = k8s.kubectl("auth", "can-i", "create", "rolebindings", "-n", plain, f"--as={API_SA}", check=False)
    assert out.stdout.strip() == "yes", out.stdout + out.stderr

    # the policy is compiled and enforced a moment after it is created: poll for the first refusal
    def refused() -> str | None:
        ok, err = as_api(k8s, "create", rolebinding(plain), dry_run=True)
        return None if ok else err

    err = wait_until(refused, DEADLINE, interval=0.2, what="the policy refuses a RoleBinding outside organisations")
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in err and "may only create or delete organisation" in err, err

    # outside an organisation namespace: RoleBindings, ResourceQuotas, ServiceAccounts, tokens, namespaces
    for what, (verb, obj, args) in {
        "RoleBinding": ("create", rolebinding(plain), ()),
        "ResourceQuota": ("create", quota(plain), ()),
        "ServiceAccount": ("create", {"apiVersion": "v1", "kind": "ServiceAccount",
                                      "metadata": {"name": "intruder", "namespace": plain}}, ()),
        "unlabelled Namespace": ("create", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": unique("vap-nolabel")}}, ()),
        "delete a plain Namespace": ("delete", None, ("namespace", plain)),
        # a token for someone else's ServiceAccount (here a test user's; in a cluster Argo CD's or the operator's)
        "token of another namespace's ServiceAccount": ("create", None, ("token", "olga", "-n", TEST_USERS_NS)),
    }.items():
        ok, err = as_api(k8s, verb, obj, *args)
        assert not ok and f"ValidatingAdmissionPolicy '{POLICY}'" in err, f"{what}: {err}"
    assert k8s_admin.get(f"/api/v1/namespaces/{plain}") is not None

    # inside one: allowed (what POST /orgs and /orgs/join do)
    for what, obj in {"RoleBinding": rolebinding(org_ns), "ResourceQuota": quota(org_ns),
                      "ServiceAccount": {"apiVersion": "v1", "kind": "ServiceAccount",
                                         "metadata": {"name": "member", "namespace": org_ns}}}.items():
        ok, err = as_api(k8s, "create", obj)
        assert ok, f"{what}: {err}"
    ok, err = as_api(k8s, "create", None, "token", "member", "-n", org_ns)
    assert ok, err
    labelled = unique("org-vap")
    ok, err = as_api(k8s, "create", {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": labelled, "labels": {"mlstack.io/org": labelled[4:]}}})
    assert ok, err
    ok, err = as_api(k8s, "delete", None, "namespace", labelled, "--wait=false")
    assert ok, err

    # RBAC still applies inside: the API may bind only the three organisation roles (escalation check)
    ok, err = as_api(k8s, "create", rolebinding(org_ns, "mlstack-platform-admin"))
    assert not ok and ("escalat" in err.lower() or "bind" in err.lower()), err
    # and the policy matches the API only: the admin (everyone else) is not confined by it
    k8s_admin.create(f"{RBAC}/namespaces/{plain}/rolebindings", rolebinding(plain))
