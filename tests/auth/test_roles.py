"""The role table, local tokens and the auth-mode choice (pure; no services)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mlstack.auth.roles import RESOURCES, ROLES, allows, cluster_roles
from mlstack.auth.settings import AuthSettings, LocalToken
from mlstack.auth.setup import resolve_mode

TOKEN = "t" * 20


@pytest.mark.parametrize(("role", "verb", "resource", "ok"), [
    ("viewer", "get", "models", True), ("viewer", "list", "modeldeployments", True),
    ("viewer", "create", "inferences", True), ("viewer", "create", "modeldeployments", False),
    ("viewer", "update", "models", False), ("viewer", "create", "trainingjobs", False),
    ("deployer", "create", "modeldeployments", True), ("deployer", "delete", "schedules", True),
    ("deployer", "create", "models", True), ("deployer", "create", "invites", False),
    ("deployer", "update", "organizations", False),
    ("admin", "create", "invites", True), ("admin", "create", "organizations", True),
    ("nobody", "get", "models", False),
])
def test_role_table(role, verb, resource, ok):
    assert allows(role, verb, resource) is ok


def test_roles_only_name_known_resources_and_nest():
    known = set(RESOURCES) | {"modeldeployments/status"}
    for rules in ROLES.values():
        for rule in rules:
            assert set(rule.resources) <= known
    # each role can do everything the one below it can
    for lower, higher in (("viewer", "deployer"), ("deployer", "admin")):
        assert set(ROLES[lower]) <= set(ROLES[higher])


def test_cluster_roles_render_the_table():
    objs = {o["metadata"]["name"]: o for o in cluster_roles()}
    assert set(objs) == {"mlstack-viewer", "mlstack-deployer", "mlstack-admin", "mlstack-platform-admin"}
    viewer = objs["mlstack-viewer"]["rules"]
    assert all(r["apiGroups"] == ["mlstack.io"] for r in viewer)
    assert {"apiGroups": ["mlstack.io"], "resources": ["inferences"], "verbs": ["create"]} in viewer
    assert objs["mlstack-platform-admin"]["rules"] == [{"apiGroups": ["mlstack.io"], "resources": ["*"],
                                                        "verbs": ["*"]}]


def test_local_tokens_are_validated():
    with pytest.raises(ValidationError, match="at least 16"):
        LocalToken(name="a", role="admin", token="short")
    with pytest.raises(ValidationError):
        LocalToken(name="a", role="root", token=TOKEN)
    tok = LocalToken(name="a", role="viewer", token=TOKEN)
    assert TOKEN not in repr(tok)  # a secret: never in logs


def test_tokens_file_and_env_merge_and_errors(tmp_path, monkeypatch):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([{"name": "f", "role": "deployer", "token": "f" * 20}]))
    monkeypatch.setenv("MLSTACK_AUTH_TOKENS", json.dumps([{"name": "e", "role": "viewer", "token": TOKEN}]))
    monkeypatch.setenv("MLSTACK_AUTH_TOKENS_FILE", str(path))
    assert [t.name for t in AuthSettings().tokens()] == ["e", "f"]

    path.write_text(json.dumps([{"name": "dup", "role": "admin", "token": TOKEN}]))
    with pytest.raises(ValueError, match="listed twice"):
        AuthSettings().tokens()
    path.write_text("{not json")
    with pytest.raises(ValueError, match="MLSTACK_AUTH_TOKENS_FILE"):
        AuthSettings().tokens()
    path.unlink()
    with pytest.raises(ValueError, match="No such file"):
        AuthSettings().tokens()


@pytest.mark.parametrize(("setting", "api_mode", "has_tokens", "mode"), [
    ("auto", "cluster", False, "kubernetes"), ("auto", "local", True, "tokens"), ("auto", "local", False, "off"),
    ("off", "cluster", True, "off"), ("kubernetes", "local", False, "kubernetes"),
])
def test_auth_mode(setting, api_mode, has_tokens, mode):
    assert resolve_mode(AuthSettings(auth_mode=setting), api_mode, has_tokens) == mode
