"""Session fixtures of the real-Kubernetes tier (a pytest plugin, loaded by tests/conftest.py).

``k8s``: one real control plane for the whole session (``tests/k8s/controlplane.py``), or the cluster
``MLSTACK_TEST_KUBECONFIG`` points at (kind, k3d, a real one) instead; the test itself is its admin.
``operator_kubeconfig`` / ``api_kubeconfig``: the manifests that install the operator and the API applied for real,
and a kubeconfig holding a TokenRequest token of each one's own ServiceAccount: that is all they run with.
``mlstack_operator``: ``mlstack operator run`` as its ServiceAccount, shared by every test that needs one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s import controlplane
from tests.k8s.controlplane import Cluster, Kube
from tests.utils.procs import Proc, free_port, http_ok, start

REPO = Path(__file__).resolve().parents[2]
TEST_USERS_NS = "mlstack-test-users"
MODEL = "e2e_iris"  # the model the operator tests deploy (registered by ``registered_model``)


@pytest.fixture(scope="session")
def k8s(tmp_path_factory) -> Iterator[Cluster]:
    external = os.environ.get("MLSTACK_TEST_KUBECONFIG")
    d = tmp_path_factory.mktemp("k8s")
    if external:
        kube = controlplane._kube_from_kubeconfig(Path(external), d)
        cluster = Cluster(d, kube.server, Path(external), external=True)
        controlplane.install_crds(cluster)
        yield cluster
        return
    cluster = controlplane.up(d)
    try:
        yield cluster
    finally:
        controlplane.down(d)


@pytest.fixture(scope="session")
def k8s_admin(k8s: Cluster) -> Kube:
    return k8s.admin()


def apply(k8s: Cluster, *kustomizations: str) -> None:
    """``kubectl apply --server-side -k`` of the repository's kustomizations, in order (what Argo CD syncs)."""
    for path in kustomizations:
        k8s.kubectl("apply", "--server-side", "--field-manager=mlstack-tests", "--force-conflicts", "-k", path)


@pytest.fixture(scope="session")
def operator_kubeconfig(k8s: Cluster) -> Path:
    """manifests/operator applied; a kubeconfig with the operator ServiceAccount's token (nothing more)."""
    apply(k8s, "manifests/operator")
    return k8s.token_kubeconfig("mlstack-system", "mlstack-operator", k8s.dir / "operator.kubeconfig")


@pytest.fixture(scope="session")
def api_kubeconfig(k8s: Cluster) -> Path:
    """The API's namespaces, roles and RBAC applied; a kubeconfig with its ServiceAccount's token."""
    apply(k8s, "manifests/namespaces", "manifests/auth", "manifests/fastapi")
    return k8s.token_kubeconfig("mlstack", "mlstack-api", k8s.dir / "api.kubeconfig")


def user_token(k8s: Cluster, name: str, cluster_role: str | None = None) -> str:
    """A person for the auth tests: a ServiceAccount ``mlstack-test-users/NAME`` (works on any cluster, unlike
    static tokens), bound cluster-wide to ``cluster_role`` when given; returns a TokenRequest token."""
    kube = k8s.admin()
    kube.ensure_namespace(TEST_USERS_NS)
    try:
        kube.create(f"/api/v1/namespaces/{TEST_USERS_NS}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
    except controlplane.KubeError as e:
        if e.status != 409:
            raise
    if cluster_role:
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": f"test-{name}-{cluster_role}"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
                   "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": TEST_USERS_NS}]}
        try:
            kube.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
        except controlplane.KubeError as e:
            if e.status != 409:
                raise
    return kube.token_for(TEST_USERS_NS, name, 86400)


def user_name(name: str) -> str:
    return f"system:serviceaccount:{TEST_USERS_NS}:{name}"


def register(tracking_uri: str, name: str) -> str:
    """Log a tiny sklearn model and register it as a new version of ``name``; returns the version."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking_uri)
    model = LogisticRegression(max_iter=200).fit([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]], [0, 1, 0, 1])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name,
                                        serialization_format="cloudpickle")
    return str(info.registered_model_version)


@pytest.fixture(scope="session")
def registered_model(mlflow_uri: str) -> str:
    """``MODEL`` version 1 with alias ``champion`` in the session's MLflow; returns the tracking URI."""
    from mlflow import MlflowClient

    version = register(mlflow_uri, MODEL)
    MlflowClient(mlflow_uri).set_registered_model_alias(MODEL, "champion", version)
    return mlflow_uri


class Operator:
    """``mlstack operator run`` out of cluster, with only its ServiceAccount's token."""

    def __init__(self, kubeconfig: Path, registry: str, logdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.kubeconfig, self.registry, self.logdir = kubeconfig, registry, logdir
        self.extra_env = extra_env or {}
        self.proc: Proc | None = None
        self.starts = 0

    def start(self, *args: str) -> None:
        port = free_port()
        self.starts += 1
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "MLSTACK_OPERATOR_REGISTRY_URI": self.registry,
            "MLSTACK_OPERATOR_FAILED_RETRY_SECONDS": "3",
            "MLSTACK_OPERATOR_RESOLVE_CACHE_SECONDS": "0",
            "MLSTACK_OPERATOR_ALIAS_POLL_SECONDS": "2",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]),
            **self.extra_env,
        }
        self.proc = start([sys.executable, "-m", "mlstack_operator.cli", "run", "--standalone",
                           f"--liveness=http://127.0.0.1:{port}/healthz", *args],
                          self.logdir / f"operator-{self.starts}.log",
                          ready=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=90, env=env,
                          cwd=REPO, what="operator")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def log(self) -> str:
        return self.proc.log_tail(200_000) if self.proc else ""


@pytest.fixture(scope="session")
def mlstack_operator(operator_kubeconfig: Path, registered_model: str, tmp_path_factory) -> Iterator[Operator]:
    op = Operator(operator_kubeconfig, registered_model, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()
