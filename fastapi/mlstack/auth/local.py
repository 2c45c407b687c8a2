"""Local mode: no auth (``Open``), or tokens with roles from settings (``LocalTokens``)."""

from __future__ import annotations

import hashlib

from mlstack.auth.base import Principal
from mlstack.auth.roles import allows
from mlstack.auth.settings import LocalToken
from mlstack.errors import Unauthorized

MISSING = "a bearer token is required: send 'Authorization: Bearer <token>'"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Open:
    """Auth off: every caller is an anonymous admin (local development only; the API logs a warning)."""

    mode = "off"

    def __init__(self, default_namespace: str):
        self.principal = Principal("anonymous", "anonymous", default_namespace, role="admin")

    async def authenticate(self, token: str | None) -> Principal:
        return self.principal

    async def denied(self, who, verb, resource, namespace, name) -> str | None:
        return None


class LocalTokens:
    """Tokens from ``MLSTACK_AUTH_TOKENS[_FILE]``; each has a role from ``mlstack.auth.roles.ROLES``."""

    mode = "tokens"

    def __init__(self, tokens: list[LocalToken], default_namespace: str):
        self._by_digest = {
            _digest(t.token.get_secret_value()): Principal(t.name, "token", t.namespace or default_namespace,
                                                           role=t.role)
            for t in tokens
        }

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized(MISSING)
        who = self._by_digest.get(_digest(token))
        if who is None:
            raise Unauthorized("invalid token (not one of MLSTACK_AUTH_TOKENS / MLSTACK_AUTH_TOKENS_FILE)")
        return who

    async def denied(self, who: Principal, verb: str, resource: str, namespace: str | None,
                     name: str | None) -> str | None:
        if who.role and allows(who.role, verb, resource):
            return None
        return f"role {who.role} does not allow it"
