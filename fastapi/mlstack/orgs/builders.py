"""Pure builders: an organisation's Kubernetes objects (Namespace, ResourceQuota, the model servers'
NetworkPolicy, RoleBindings, ServiceAccount)."""

from __future__ import annotations

from typing import Any

from mlstack.auth.roles import cluster_role_name
from mlstack.orgs.schemas import Budget

ORG_LABEL = "mlstack.io/org"
ROLE_LABEL = "mlstack.io/role"
MANAGED = {"app.kubernetes.io/managed-by": "mlstack-api", "app.kubernetes.io/part-of": "mlstack"}
# like the shared `models` namespace (manifests/namespaces/): warn, not enforce, `restricted`, because
# KubeVirt's virt-launcher pods (runtime: vm) do not meet it
POD_SECURITY = {"pod-security.kubernetes.io/warn": "restricted"}
QUOTA_NAME = "mlstack-budget"
MODEL_SERVERS_POLICY = "mlstack-model-servers"
MODEL_SERVER_APP = "mlstack-model-server"  # app.kubernetes.io/name of every pod the operator's builders make
SA_PREFIX = "system:serviceaccount:"


def namespace(ns: str, org: str, display_name: str | None, created_by: str) -> dict[str, Any]:
    annotations = {"mlstack.io/created-by": created_by}
    if display_name:
        annotations["mlstack.io/display-name"] = display_name
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {ORG_LABEL: org, **MANAGED, **POD_SECURITY},
                         "annotations": annotations}}


def quota_hard(budget: Budget) -> dict[str, str]:
    return {"requests.cpu": budget.cpu, "requests.memory": budget.memory,
            "requests.nvidia.com/gpu": str(budget.gpu)}


def quota(ns: str, org: str, budget: Budget) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": QUOTA_NAME, "namespace": ns, "labels": {ORG_LABEL: org, **MANAGED}},
            "spec": {"hard": quota_hard(budget)}}


def model_servers_policy_spec() -> dict[str, Any]:
    """What model-server pods (running uploaded package code) may reach, in every namespace that holds them: the
    shared ``models`` namespace (manifests/namespaces/model-servers-networkpolicy.yaml, the same spec: a test
    keeps them equal) and each organisation's. Ingress: the mlstack API, the monitor (payload logs), the
    namespace's other model-server pods (a RayService's head and workers; a stable track forwarding its canary
    share), KubeRay's operator. Egress: DNS, MLflow (the model's artifacts), the namespace's other model-server
    pods. Not Redis, MinIO, the Kubernetes API or the internet. KubeVirt's virt-launcher pods are left out (the
    VM pulls its image)."""
    server = {"matchLabels": {"app.kubernetes.io/name": MODEL_SERVER_APP}}
    api = "mlstack-api"

    def ns(name: str) -> dict[str, Any]:
        return {"matchLabels": {"kubernetes.io/metadata.name": name}}

    return {
        "podSelector": {**server, "matchExpressions": [{"key": "kubevirt.io", "operator": "DoesNotExist"}]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [
            {"namespaceSelector": ns("mlstack"), "podSelector": {"matchLabels": {"app.kubernetes.io/name": api}}},
            {"namespaceSelector": ns("mlstack"),  # the monitor drains each pod's payload log
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlstack-monitor"}}},
            {"podSelector": server},
            {"namespaceSelector": ns("ray-system")},
        ]}],
        "egress": [
            {"to": [{"namespaceSelector": ns("kube-system"), "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {"to": [{"namespaceSelector": ns("mlflow")}], "ports": [{"protocol": "TCP", "port": 5000}]},
            {"to": [{"podSelector": server}]},
        ],
    }


def model_servers_policy(ns: str, org: str) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": MODEL_SERVERS_POLICY, "namespace": ns, "labels": {ORG_LABEL: org, **MANAGED}},
            "spec": model_servers_policy_spec()}


def subject(username: str) -> dict[str, Any]:
    """The RBAC subject of a TokenReview username (a ServiceAccount's is system:serviceaccount:NS:NAME)."""
    if username.startswith(SA_PREFIX) and username.count(":") == 3:
        _, _, ns, name = username.split(":")
        return {"kind": "ServiceAccount", "name": name, "namespace": ns}
    return {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": username}


def role_binding(ns: str, org: str, name: str, role: str, subj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": ns, "labels": {ORG_LABEL: org, ROLE_LABEL: role, **MANAGED}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": cluster_role_name(role)},
            "subjects": [subj]}


def member_binding(name: str) -> str:
    """The RoleBinding of a member who joined (ServiceAccount ``name`` in the organisation's namespace)."""
    return f"mlstack-member-{name}"


def joined_member(ns: str, binding: str, subj: dict[str, Any]) -> bool:
    """Whether ``subj`` of RoleBinding ``binding`` in ``ns`` joined with an invite (and so can be removed): the
    creator may be a ServiceAccount too, of another namespace, possibly with the same name."""
    return (subj.get("kind") == "ServiceAccount" and subj.get("namespace") == ns
            and binding == member_binding(str(subj.get("name", ""))))


def service_account(ns: str, org: str, name: str, role: str, invited_by: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns, "labels": {ORG_LABEL: org, ROLE_LABEL: role, **MANAGED},
                         "annotations": {"mlstack.io/invited-by": invited_by}}}


def token_request(seconds: int) -> dict[str, Any]:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds}}
