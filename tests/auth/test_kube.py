"""Cluster mode on a real control plane: the API (MLSTACK_MODE=cluster, as its own ServiceAccount
``mlstack/mlstack-api`` with the RBAC of manifests/fastapi) authenticates callers with TokenReview and authorises
them with SubjectAccessReview against the ClusterRoles of manifests/auth. (Organisations: tests/orgs/test_kube.py.)

The people are ServiceAccounts in ``mlstack-test-users`` (``user_token``): pat is bound to mlstack-platform-admin,
root to cluster-admin, olga to nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.k8s.controlplane import Cluster
from tests.k8s.fixtures import TEST_USERS_NS, user_name, user_token
from tests.utils.kube_api import As, start_cluster_api

pytestmark = pytest.mark.slow
PAT, OLGA = user_name("pat"), user_name("olga")


@pytest.fixture(scope="module")
def users(k8s: Cluster) -> dict[str, str]:
    return {"pat": user_token(k8s, "pat", "mlstack-platform-admin"),
            "root": user_token(k8s, "root", "cluster-admin"),
            "olga": user_token(k8s, "olga")}


@pytest.fixture(scope="module")
def api(stack_env, api_kubeconfig, workdir) -> Iterator[str]:
    proc, url = start_cluster_api(stack_env, api_kubeconfig, workdir / "auth-kube", "api")
    yield url
    proc.stop(timeout=30)


@pytest.fixture(scope="module")
def pat(api, users) -> As:
    return As(api, users["pat"])


def test_401_403_200(api, users, pat):
    assert As(api, None).get("/deployments").status_code == 401
    r = As(api, "not-a-token-at-all").get("/deployments")
    assert r.status_code == 401 and "invalid token" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    # a well-formed ServiceAccount token signed by someone else: the real TokenReview refuses it
    forged = users["olga"].rsplit(".", 1)[0] + "." + secrets.token_urlsafe(256)
    assert As(api, forged).get("/deployments").status_code == 401
    r = As(api, users["olga"]).get("/deployments")
    assert r.status_code == 403
    assert r.json()["detail"].startswith(f"{OLGA} may not list modeldeployments in namespace models")
    assert As(api, users["olga"]).get("/models").status_code == 403
    assert As(api, users["root"]).get("/deployments").status_code == 200  # cluster-admin: RBAC allows all
    assert pat.get("/models").status_code == 200  # ClusterRoleBinding: everywhere
    me = pat.get("/auth/me").json()
    assert me["name"] == PAT and me["kind"] == "kubernetes" and me["authMode"] == "kubernetes"
    # the real TokenReview's groups and extra (the bound token's credential id) come through
    assert {"system:authenticated", "system:serviceaccounts", f"system:serviceaccounts:{TEST_USERS_NS}"} <= set(
        me["groups"])
    assert me["org"] is None and me["namespace"] == "models"  # not an organisation's ServiceAccount
    assert As(api, None).get("/healthz").status_code == 200
