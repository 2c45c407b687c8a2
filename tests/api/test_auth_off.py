"""With no token configured (local mode's default without init.sh) auth is off: everyone is an anonymous admin."""

from __future__ import annotations


def test_me_is_an_anonymous_admin(client):
    r = client.get("/auth/me")
    assert r.status_code == 200
    assert r.json() == {"name": "anonymous", "kind": "anonymous", "role": "admin", "groups": [],
                        "namespace": "models", "org": None, "authMode": "off"}
    # a token is ignored, not refused, when auth is off
    assert client.get("/auth/me", headers={"Authorization": "Bearer whatever-it-is"}).json()["name"] == "anonymous"


def test_openapi_declares_the_bearer_scheme(client):
    spec = client.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["HTTPBearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer") and "kubectl create token" in scheme["description"]
    assert spec["paths"]["/inference"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert "security" not in spec["paths"]["/orgs/join"]["post"]
