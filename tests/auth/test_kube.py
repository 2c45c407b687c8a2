"""Cluster mode on a real control plane: the API (MLSTACK_MODE=cluster, as its own ServiceAccount
``mlstack/mlstack-api`` with the RBAC of manifests/fastapi) authenticates callers with TokenReview and authorises
them with SubjectAccessReview against the ClusterRoles of manifests/auth. (Organisations: tests/orgs/test_kube.py.)

The API (``cluster_api``) and the people who call it (``kube_users``, ``pat``) are the session's, shared by both
modules (tests/utils/kube_fixtures.py): pat is bound to mlstack-platform-admin, root to cluster-admin, olga to nothing.
"""

from __future__ import annotations

import secrets

import pytest

from tests.k8s.fixtures import TEST_USERS_NS, user_name
from tests.utils.kube_api import As

pytestmark = pytest.mark.slow
PAT, OLGA = user_name("pat"), user_name("olga")


def test_401_403_200(cluster_api, kube_users, pat):
    assert As(cluster_api, None).get("/deployments").status_code == 401
    r = As(cluster_api, "not-a-token-at-all").get("/deployments")
    assert r.status_code == 401 and "invalid token" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    # a well-formed ServiceAccount token signed by someone else: the real TokenReview refuses it
    forged = kube_users["olga"].rsplit(".", 1)[0] + "." + secrets.token_urlsafe(256)
    assert As(cluster_api, forged).get("/deployments").status_code == 401
    r = As(cluster_api, kube_users["olga"]).get("/deployments")
    assert r.status_code == 403
    assert r.json()["detail"].startswith(f"{OLGA} may not list modeldeployments in namespace models")
    assert As(cluster_api, kube_users["olga"]).get("/models").status_code == 403
    assert As(cluster_api, kube_users["root"]).get("/deployments").status_code == 200  # cluster-admin: RBAC allows all
    assert pat.get("/models").status_code == 200  # ClusterRoleBinding: everywhere
    me = pat.get("/auth/me").json()
    assert me["name"] == PAT and me["kind"] == "kubernetes" and me["authMode"] == "kubernetes"
    # the real TokenReview's groups and extra (the bound token's credential id) come through
    assert {"system:authenticated", "system:serviceaccounts", f"system:serviceaccounts:{TEST_USERS_NS}"} <= set(
        me["groups"])
    assert me["org"] is None and me["namespace"] == "models"  # not an organisation's ServiceAccount
    assert As(cluster_api, None).get("/healthz").status_code == 200
