"""Local mode: tokens with roles from settings. A real API process; the 401/403/200 matrix over every route.

"Allowed" means the request got past auth: the route then answers on its own (a 404 for an unknown
name, a 422 for the deliberately bad bodies below, which keep the write routes from doing real work).
"""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from tests.utils.procs import start_api, wait_until

ROLE_ORDER = ["viewer", "deployer", "admin"]
TOKENS = {role: secrets.token_urlsafe(24) for role in ROLE_ORDER}

# (method, path, json body or None, the least role that may call it)
MATRIX = [
    ("GET", "/models", None, "viewer"),
    ("GET", "/models/auth_nope", None, "viewer"),
    ("PATCH", "/models/auth_nope", {"description": "x"}, "deployer"),
    ("PUT", "/models/auth_nope/aliases/champion", {"version": "not-a-number"}, "deployer"),
    ("DELETE", "/models/auth_nope/aliases/champion", None, "deployer"),
    ("POST", "/models/auth_nope/versions", None, "deployer"),
    ("POST", "/models/auth_nope/versions/1/copy", None, "deployer"),
    ("GET", "/get_metrics?model_name=auth_nope", None, "viewer"),
    ("POST", "/inference", {"data": "not rows"}, "viewer"),
    ("POST", "/predict", {"data": "not a form"}, "viewer"),
    ("POST", "/trigger_training", {"hyperparameters": {"n_estimators": -1}}, "deployer"),
    ("POST", "/train", None, "deployer"),
    ("GET", "/training", None, "viewer"),
    ("GET", "/training/nope", None, "viewer"),
    ("GET", "/training/nope/logs", None, "viewer"),
    ("DELETE", "/training/nope", None, "deployer"),
    ("POST", "/schedule_training", {"interval_seconds": -5}, "deployer"),
    ("POST", "/watch_model", {"interval_seconds": -5}, "deployer"),
    ("GET", "/schedules", None, "viewer"),
    ("GET", "/schedules/nope/runs", None, "viewer"),
    ("DELETE", "/kill_scheduled_job/nope", None, "deployer"),
    ("GET", "/alerts?limit=1", None, "viewer"),
    ("POST", "/alerts", {"severity": "nonsense"}, "deployer"),
    ("GET", "/alerts/status", None, "viewer"),
    ("POST", "/alerts/ticket", None, "viewer"),
    ("GET", "/deployments", None, "viewer"),
    ("GET", "/deployments/nope", None, "viewer"),
    # the namespace comes from the body, so it is authorised after validation: a valid body (of a model that
    # does not exist: the deployment is created, Failed/ModelNotFound, and deleted by the test)
    ("POST", "/deployments", {"name": "authz", "spec": {"model": {"name": "auth_nope", "version": "1"}}},
     "deployer"),
    ("DELETE", "/deployments/nope", None, "deployer"),
    ("POST", "/deployments/nope/canary/promote", None, "deployer"),
    ("POST", "/deployments/nope/canary/abort", None, "deployer"),
    ("POST", "/feedback", {"request_id": "nope", "label": 1}, "deployer"),
    ("GET", "/deployments/nope/quality", None, "viewer"),
    ("GET", "/deployments/nope/monitoring", None, "viewer"),
    ("GET", "/auth/me", None, "viewer"),
]
OPEN = ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"]


@pytest.fixture(scope="module")
def api_log(workdir):
    return workdir / "auth-local.log"


@pytest.fixture(scope="module")
def api(stack_env, api_log):
    tokens = [{"name": f"{role}-user", "role": role, "token": tok} for role, tok in TOKENS.items()]
    env = {**stack_env, "MLSTACK_AUTH_TOKENS": json.dumps(tokens), "MLSTACK_SERVE_PORT_RANGE": "[27600, 27699]"}
    proc, url = start_api(api_log, env)
    yield url
    proc.stop(timeout=30)


def call(api: str, method: str, path: str, body, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, api + path, json=body, headers=headers, timeout=60)


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.mark.parametrize(("method", "path", "body", "least"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_matrix(api, method, path, body, least):
    r = call(api, method, path, body, {})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["detail"]
    r = call(api, method, path, body, {"Authorization": "Bearer " + "x" * 30})
    assert r.status_code == 401 and "invalid token" in r.json()["detail"]

    for role in ROLE_ORDER:
        r = call(api, method, path, body, bearer(role))
        if ROLE_ORDER.index(role) < ROLE_ORDER.index(least):
            assert r.status_code == 403, (role, r.status_code, r.text)
            assert r.json()["detail"].startswith(f"{role}-user (role {role}) may not ")
        else:
            assert r.status_code not in (401, 403), (role, r.status_code, r.text)
            assert r.status_code < 500, (role, r.status_code, r.text)
    if (method, path) == ("POST", "/deployments"):
        assert call(api, "DELETE", "/deployments/authz", None, bearer("admin")).status_code == 204


def test_every_route_is_in_the_matrix_or_open(api):
    """A new route must be classified here: nothing is reachable without a decision about who may call it."""
    paths = httpx.get(api + "/openapi.json").json()["paths"]
    covered = {(m, p.split("?")[0]) for m, p, _, _ in MATRIX}
    templated = {"/models/{name}": "/models/auth_nope", "/models/{name}/aliases/{alias}":
                 "/models/auth_nope/aliases/champion", "/models/{name}/versions": "/models/auth_nope/versions",
                 "/models/{name}/versions/{version}/copy": "/models/auth_nope/versions/1/copy",
                 "/training/{job_id}": "/training/nope", "/training/{job_id}/logs": "/training/nope/logs",
                 "/schedules/{job_id}/runs": "/schedules/nope/runs",
                 "/kill_scheduled_job/{job_id}": "/kill_scheduled_job/nope",
                 "/models/{name}/versions/{version}": None, "/deployments/{name}": "/deployments/nope",
                 "/deployments/{name}/canary/promote": "/deployments/nope/canary/promote",
                 "/deployments/{name}/canary/abort": "/deployments/nope/canary/abort",
                 "/deployments/{name}/quality": "/deployments/nope/quality",
                 "/deployments/{name}/monitoring": "/deployments/nope/monitoring"}
    streams = {"/webhook", "/alerts/stream"}
    orgs = {p for p in paths if p.startswith("/orgs")}
    missing = []
    for path, ops in paths.items():
        if path in OPEN or path in streams or path in orgs:
            continue
        for method in ops:
            concrete = templated.get(path, path)
            if concrete is not None and (method.upper(), concrete) not in covered:
                missing.append(f"{method.upper()} {path}")
    assert not missing, missing


@pytest.mark.parametrize("path", OPEN)
def test_open_routes_need_no_token(api, path):
    assert httpx.get(api + path, timeout=30).status_code == 200


def test_wrong_scheme_is_401(api):
    r = httpx.get(api + "/models", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401 and "must be 'Bearer <token>'" in r.json()["detail"]


def test_me(api):
    r = httpx.get(api + "/auth/me", headers=bearer("deployer"))
    assert r.json() == {"name": "deployer-user", "kind": "token", "role": "deployer", "groups": [],
                        "namespace": "models", "org": None, "authMode": "tokens"}


def test_version_edit_needs_deployer(api):
    for role, code in (("viewer", 403), ("deployer", 404)):
        r = httpx.patch(api + "/models/auth_nope/versions/1", json={"description": "x"}, headers=bearer(role))
        assert r.status_code == code, r.text


def ticket(api: str, role: str) -> str:
    r = httpx.post(api + "/alerts/ticket", headers=bearer(role), timeout=30)
    assert r.status_code == 201, r.text
    assert 0 < r.json()["expires_in"] <= 30
    return r.json()["ticket"]


@pytest.mark.parametrize("path", ["/alerts/stream", "/webhook"])
def test_event_stream_takes_a_single_use_ticket_not_the_token(api, api_log, redis_url, path):
    import redis

    with httpx.stream("GET", api + path, timeout=30) as r:
        assert r.status_code == 401
    # the token itself in the URL no longer works (it would land in every proxy's log)
    with httpx.stream("GET", api + path, params={"access_token": TOKENS["viewer"]}, timeout=30) as r:
        assert r.status_code == 401
    assert httpx.post(api + "/alerts/ticket", timeout=30).status_code == 401
    assert httpx.post(api + "/alerts/ticket", params={"access_token": TOKENS["viewer"]}, timeout=30).status_code == 401
    with httpx.stream("GET", api + path, params={"ticket": "y" * 43}, timeout=30) as r:
        assert r.status_code == 401 and "ticket" in r.read().decode()
    t = ticket(api, "viewer")
    # it lives in Redis only as a hash, with a short expiry
    keys = redis.Redis.from_url(redis_url).keys("mlstack:alerts:ticket:*")
    assert keys and all(t.encode() not in k for k in keys)
    assert all(0 < redis.Redis.from_url(redis_url).ttl(k) <= 30 for k in keys)
    with httpx.stream("GET", api + path, params={"ticket": t}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    with httpx.stream("GET", api + path, params={"ticket": t}, timeout=30) as r:  # single use
        assert r.status_code == 401
    # a ticket is for the event streams only
    assert httpx.get(api + "/alerts", params={"ticket": ticket(api, "viewer")}, timeout=30).status_code == 401
    # and never lands in the access log
    wait_until(lambda: f"{path}?ticket=[redacted]" in api_log.read_text(), 10, what="the access log line")
    assert t not in api_log.read_text() and TOKENS["viewer"] not in api_log.read_text()


def test_a_ticket_carries_its_callers_rights(api):
    """A ticket opens the stream as the one who asked for it: the stream route's own check still runs."""
    for role in ROLE_ORDER:
        with httpx.stream("GET", api + "/webhook", params={"ticket": ticket(api, role)}, timeout=30) as r:
            assert r.status_code == 200


def test_orgs_need_cluster_mode(api):
    r = httpx.post(api + "/orgs", json={"name": "acme"}, headers=bearer("admin"))
    assert r.status_code == 404 and "cluster mode" in r.json()["detail"]
    assert httpx.post(api + "/orgs", json={"name": "acme"}).status_code == 401
    r = httpx.post(api + "/orgs/join", json={"code": "x" * 20, "name": "bob"})
    assert r.status_code == 404 and "cluster mode" in r.json()["detail"]
