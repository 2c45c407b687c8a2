"""The organisations' builders (pure; no services): RBAC subjects and bindings, the namespace."""

from __future__ import annotations

from mlstack.orgs import builders


def test_org_builders():
    assert builders.subject("system:serviceaccount:org-a:bob") == {"kind": "ServiceAccount", "name": "bob",
                                                                  "namespace": "org-a"}
    assert builders.subject("alice@example.com")["kind"] == "User"
    rb = builders.role_binding("org-a", "a", "m", "deployer", builders.subject("alice"))
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": "mlstack-deployer"}
    assert rb["metadata"]["labels"][builders.ORG_LABEL] == "a"


def test_org_namespace_is_labelled_like_the_shared_models_namespace():
    ns = builders.namespace("org-a", "a", None, "pat")
    assert ns["metadata"]["labels"][builders.ORG_LABEL] == "a"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"
    assert "mlstack.io/display-name" not in ns["metadata"]["annotations"]
