"""Session fixtures of the cluster-mode API tests (a pytest plugin, loaded by tests/conftest.py): one ``mlstack api``
in cluster mode on the real control plane, shared by tests/auth/test_kube.py and tests/orgs/test_kube.py, and the
people who call it.

``kube_users``: ServiceAccounts in ``mlstack-test-users`` (``user_token``), as tokens: pat is bound to
mlstack-platform-admin, root to cluster-admin, olga to nothing. ``cluster_api``: the API's URL (``start_cluster_api``:
as its own ServiceAccount ``mlstack/mlstack-api`` with the RBAC of manifests/fastapi). ``pat``: a client of it as pat.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.k8s.controlplane import Cluster
from tests.k8s.fixtures import user_token
from tests.utils.kube_api import As, start_cluster_api


@pytest.fixture(scope="session")
def kube_users(k8s: Cluster) -> dict[str, str]:
    return {"pat": user_token(k8s, "pat", "mlstack-platform-admin"),
            "root": user_token(k8s, "root", "cluster-admin"),
            "olga": user_token(k8s, "olga")}


@pytest.fixture(scope="session")
def cluster_api(stack_env, api_kubeconfig, workdir) -> Iterator[str]:
    proc, url = start_cluster_api(stack_env, api_kubeconfig, workdir / "cluster-api", "api")
    yield url
    proc.stop(timeout=30)


@pytest.fixture(scope="session")
def pat(cluster_api, kube_users) -> Iterator[As]:
    client = As(cluster_api, kube_users["pat"])
    yield client
    client.close()
