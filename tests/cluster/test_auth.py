"""Authorisation in cluster mode, checked without a cluster: the roles' ClusterRoles (manifests/auth) are the one
role table (mlstack.auth.roles), the API's own RBAC is exactly what authentication and the organisations flow
need, its admission policy covers every write it must confine (what the policy decides is checked on the real server
in tests/orgs/test_kube.py), and the platform admin whose
token ./init.sh mints is bound to the platform-admin role.

After changing the role table, regenerate manifests/auth/clusterroles.yaml:
    .venv/bin/python -m mlstack.auth.roles > manifests/auth/clusterroles.yaml
"""

from __future__ import annotations

import pytest

from mlstack.auth.roles import PLATFORM_ADMIN, ROLES, cluster_role_name, cluster_roles, render_cluster_roles
from tests.utils.cluster import MANIFESTS, kustomize

CLUSTERROLES = MANIFESTS / "auth" / "clusterroles.yaml"
READ = {"get", "list", "watch"}
ORG_ROLES = tuple(cluster_role_name(r) for r in ROLES)  # what the API may bind in an organisation

# The API's ClusterRole, rule by rule: (apiGroup, resource, resourceNames) -> verbs. Nothing more, nothing less.
API_NEEDS = {
    ("authentication.k8s.io", "tokenreviews", ()): {"create"},  # every caller's bearer token
    ("authorization.k8s.io", "subjectaccessreviews", ()): {"create"},  # every action
    ("", "namespaces", ()): READ | {"create", "delete"},  # POST/GET/DELETE /orgs
    ("", "resourcequotas", ()): READ | {"create", "update", "patch"},  # mlstack-budget
    ("networking.k8s.io", "networkpolicies", ()): {"create"},  # the org's model servers' NetworkPolicy
    ("", "serviceaccounts", ()): {"get", "list", "create", "delete"},  # POST /orgs/join: one per member
    ("", "serviceaccounts/token", ()): {"create"},  # ...and its token (TokenRequest)
    ("rbac.authorization.k8s.io", "rolebindings", ()): {"get", "list", "create", "delete"},  # membership
    ("rbac.authorization.k8s.io", "clusterroles", tuple(sorted(ORG_ROLES))): {"bind"},  # only the org roles
    ("mlstack.io", "modeldeployments", ()): READ | {"create", "update", "patch", "delete"},  # /deployments
    ("mlstack.io", "modeldeployments/status", ()): {"get"},
    ("", "events", ()): READ,  # deployment status
    ("", "services", ()): READ,
}
# the API's writes that its admission policy confines to organisation namespaces (RBAC verb -> operation)
CONFINED = {"namespaces", "serviceaccounts", "serviceaccounts/token", "rolebindings", "resourcequotas",
            "networkpolicies"}
OPERATION = {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE", "delete": "DELETE"}


def by_kind(objs, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def rule_table(rules: list[dict]) -> dict[tuple, set[str]]:
    table: dict[tuple, set[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                key = (group, resource, tuple(sorted(rule.get("resourceNames", []))))
                table.setdefault(key, set()).update(rule["verbs"])
    return table


@pytest.fixture(scope="module")
def api_objects():
    return kustomize(MANIFESTS / "fastapi")


# -- the roles -----------------------------------------------------------------------------------------------


def test_clusterroles_file_is_the_role_table():
    assert CLUSTERROLES.read_text() == render_cluster_roles(), (
        "manifests/auth/clusterroles.yaml differs from mlstack.auth.roles.cluster_roles(): regenerate it with "
        ".venv/bin/python -m tests.cluster.test_auth > manifests/auth/clusterroles.yaml")


def test_roles_rendered_by_the_kind_overlay_and_synced_before_the_api():
    rendered = by_kind(kustomize(MANIFESTS / "overlays" / "kind"), "ClusterRole")
    for role in cluster_roles():
        name = role["metadata"]["name"]
        assert name in rendered, f"the kind overlay does not render {name}: include ../../auth"
        assert rendered[name]["rules"] == role["rules"], name
    apps = by_kind(kustomize(MANIFESTS / "argocd" / "apps"), "Application")
    auth = [a for a in apps.values() if a["spec"]["source"]["path"] == "manifests/auth"]
    assert len(auth) == 1, "one Argo CD Application syncs manifests/auth"
    wave = lambda app: int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])  # noqa: E731
    assert wave(auth[0]) < wave(apps["mlstack-api"]), "the roles exist before the API binds them"


def test_platform_admin_bound_cluster_wide_to_its_service_account():
    objs = kustomize(MANIFESTS / "auth")
    (sa,) = by_kind(objs, "ServiceAccount").values()
    assert sa["metadata"]["name"] == "mlstack-admin" and sa["metadata"]["namespace"] == "mlstack"
    assert sa.get("automountServiceAccountToken") is False, "no pod runs as the admin"
    bindings = [b for b in by_kind(objs, "ClusterRoleBinding").values()
                if b["roleRef"]["name"] == cluster_role_name(PLATFORM_ADMIN)]
    assert len(bindings) == 1
    assert bindings[0]["subjects"] == [{"kind": "ServiceAccount", "name": "mlstack-admin", "namespace": "mlstack"}]
    assert not by_kind(objs, "RoleBinding"), "organisation RoleBindings are the API's to create, at runtime"


# -- the API's own RBAC --------------------------------------------------------------------------------------


def test_api_cluster_role_is_exactly_what_the_orgs_flow_needs(api_objects):
    assert not by_kind(api_objects, "Role") and not by_kind(api_objects, "RoleBinding"), \
        "the API's rights are one ClusterRole now (organisations are namespaces made at runtime)"
    role = by_kind(api_objects, "ClusterRole")["mlstack-api"]
    table = rule_table(role["rules"])
    assert table == API_NEEDS, {k: table.get(k) for k in set(table) ^ set(API_NEEDS) | {
        k for k in table if table[k] != API_NEEDS.get(k)}}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not {"escalate", "impersonate"} & set(rule["verbs"]), rule
    assert cluster_role_name(PLATFORM_ADMIN) not in ORG_ROLES
    assert set(ORG_ROLES) <= {r["metadata"]["name"] for r in cluster_roles()}, "the API binds roles that exist"
    assert not any(k[1] == "secrets" for k in table), "the API reads no Secrets"


def test_api_cluster_role_bound_to_the_api_service_account(api_objects):
    binding = by_kind(api_objects, "ClusterRoleBinding")["mlstack-api"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "mlstack-api"}
    dep = by_kind(api_objects, "Deployment")["mlstack-api"]
    sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": dep["metadata"]["namespace"]}]


# -- the API's admission policy ------------------------------------------------------------------------------


def admission_policy(objs) -> dict:
    policies = by_kind(objs, "ValidatingAdmissionPolicy")
    assert "mlstack-api-org-scope" in policies
    return policies["mlstack-api-org-scope"]


def test_admission_policy_bound_and_covers_every_confined_write(api_objects):
    policy = admission_policy(api_objects)
    (binding,) = by_kind(api_objects, "ValidatingAdmissionPolicyBinding").values()
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"] and policy["spec"]["failurePolicy"] == "Fail"
    matched = {(group, resource, op)
               for rule in policy["spec"]["matchConstraints"]["resourceRules"]
               for group in rule["apiGroups"] for resource in rule["resources"] for op in rule["operations"]}
    wanted = {(group, resource, OPERATION[verb])
              for (group, resource, _), verbs in API_NEEDS.items() if resource in CONFINED
              for verb in verbs if verb in OPERATION}
    assert wanted == matched
    sa = by_kind(api_objects, "ClusterRoleBinding")["mlstack-api"]["subjects"][0]
    (condition,) = policy["spec"]["matchConditions"]
    assert f"'system:serviceaccount:{sa['namespace']}:{sa['name']}'" in condition["expression"]


# What the policy allows and refuses is the real API server's verdict, under impersonation of the API's
# ServiceAccount: tests/orgs/test_kube.py::test_admission_policy_confines_the_apis_rbac_to_organisation_namespaces
# (it replaced a cel-python evaluation of the policy here).
