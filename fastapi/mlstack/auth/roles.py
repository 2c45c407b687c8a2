"""The roles: one table for both modes.

Local mode checks a token's role against ``ROLES``. Cluster mode asks Kubernetes (SubjectAccessReview):
RBAC is the source of truth there, and ``cluster_roles()`` renders the same table as the ClusterRoles
that RoleBindings in an organisation's namespace refer to (``manifests/auth/clusterroles.yaml`` is
that rendering; a test keeps the two equal).

Resources are in the ``mlstack.io`` API group. ``modeldeployments`` is the CRD (so the same roles also
govern ``kubectl apply``); the others name what the API guards and exist only as RBAC resource names:
RBAC and SubjectAccessReview accept any resource name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

GROUP = "mlstack.io"
READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete")

RESOURCES: dict[str, str] = {
    "modeldeployments": "ModelDeployments (the CRD): /deployments",
    "models": "registered models and versions: read, upload, copy, edit, aliases, /get_metrics",
    "trainingjobs": "training runs and their logs: /trigger_training, /train, /training",
    "schedules": "scheduled training and model watches",
    "inferences": "predictions: create = POST /inference",
    "alerts": "the alert stream and recent alerts; create = post an alert",
    "invites": "an organisation's one-time invite codes",
    "organizations": "organisations (namespaces labelled mlstack.io/org); create/delete are cluster-scoped",
}

RoleName = Literal["viewer", "deployer", "admin"]


@dataclass(frozen=True)
class Rule:
    verbs: tuple[str, ...]
    resources: tuple[str, ...]

    def allows(self, verb: str, resource: str) -> bool:
        return (verb in self.verbs or "*" in self.verbs) and (resource in self.resources or "*" in self.resources)

    def k8s(self) -> dict[str, Any]:
        return {"apiGroups": [GROUP], "resources": list(self.resources), "verbs": list(self.verbs)}


_VIEWER = (
    Rule(READ, ("modeldeployments", "modeldeployments/status", "models", "trainingjobs", "schedules", "alerts",
                "organizations")),
    Rule(("create",), ("inferences",)),
)
_DEPLOYER = (*_VIEWER, Rule(WRITE, ("modeldeployments", "models", "trainingjobs", "schedules", "alerts")))
_ADMIN = (*_DEPLOYER, Rule((*READ, "create", "delete"), ("invites",)), Rule(("update", "patch"), ("organizations",)))

# An organisation's roles, bound in its namespace. ``admin`` in local mode may do everything.
ROLES: dict[str, tuple[Rule, ...]] = {"viewer": _VIEWER, "deployer": _DEPLOYER, "admin": _ADMIN}
# Cluster-wide (a ClusterRoleBinding): creates and deletes organisations, may do anything in mlstack.io.
PLATFORM_ADMIN = "platform-admin"
_PLATFORM_RULES = (Rule(("*",), ("*",)),)


def allows(role: str, verb: str, resource: str) -> bool:
    """Local mode: may a token of ``role`` do ``verb`` on ``resource``? (``admin`` may do everything.)"""
    if role == "admin":
        return True
    return any(rule.allows(verb, resource) for rule in ROLES.get(role, ()))


def cluster_role_name(role: str) -> str:
    return f"mlstack-{role}"


def cluster_roles() -> list[dict[str, Any]]:
    """The ClusterRoles of ``ROLES`` plus the platform admin's (pure: ``manifests/auth/clusterroles.yaml``)."""
    out = []
    for role, rules in [*ROLES.items(), (PLATFORM_ADMIN, _PLATFORM_RULES)]:
        out.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_role_name(role),
                         "labels": {"app.kubernetes.io/part-of": "mlstack", "mlstack.io/role": role}},
            "rules": [rule.k8s() for rule in rules],
        })
    return out


def render_cluster_roles() -> str:
    """The text of ``manifests/auth/clusterroles.yaml`` (printed by ``python -m mlstack.auth.roles``)."""
    import yaml

    header = ("# GENERATED from fastapi/mlstack/auth/roles.py (cluster_roles()): edit the role table there, not this "
              "file.\n# tests/cluster/test_auth.py keeps the two equal; regenerate with\n"
              "#   .venv/bin/python -m mlstack.auth.roles > manifests/auth/clusterroles.yaml\n")
    return header + yaml.safe_dump_all(cluster_roles(), sort_keys=False)


if __name__ == "__main__":
    print(render_cluster_roles(), end="")
