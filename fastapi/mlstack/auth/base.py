"""Who is calling (``Principal``) and the check every route makes (``Caller.require``).

An ``Authority`` turns a bearer token into a Principal (401 when it cannot) and answers whether a
Principal may do a verb on a resource in a namespace (403 with the reason when not). Three of them:
``Open`` (auth off), ``LocalTokens`` (roles from settings) and ``KubeAuthority`` (TokenReview +
SubjectAccessReview).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mlstack.errors import Forbidden

CLUSTER = None  # namespace of a cluster-scoped check (organisations)
HOME = ""  # namespace sentinel: the caller's home namespace


@dataclass(frozen=True)
class Principal:
    name: str
    kind: Literal["anonymous", "token", "kubernetes"]
    namespace: str  # home: where actions on shared things (models, training) are checked, deployments go
    role: str | None = None  # local tokens
    groups: tuple[str, ...] = ()
    uid: str = ""
    org: str | None = None  # the organisation whose namespace is home
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)

    def describe(self) -> str:
        return f"{self.name} (role {self.role})" if self.role else self.name


class Authority(Protocol):
    mode: Literal["off", "tokens", "kubernetes"]

    async def authenticate(self, token: str | None) -> Principal:
        """The caller of ``token``; ``Unauthorized`` when it is missing or not valid."""

    async def denied(self, who: Principal, verb: str, resource: str, namespace: str | None,
                     name: str | None) -> str | None:
        """None when allowed, else why not."""


@dataclass
class Caller:
    principal: Principal
    authority: Authority

    async def require(self, verb: str, resource: str, namespace: str | None = HOME, name: str | None = None) -> None:
        """Raise ``Forbidden`` unless the caller may ``verb`` ``resource`` (``HOME``: the caller's namespace)."""
        ns = self.principal.namespace if namespace == HOME else namespace
        why = await self.authority.denied(self.principal, verb, resource, ns, name)
        if why is not None:
            what = f"{resource}/{name}" if name else resource
            where = f"in namespace {ns}" if ns else "cluster-wide"
            raise Forbidden(f"{self.principal.describe()} may not {verb} {what} {where}: {why}")


class TTLCache:
    """A small dict with per-entry expiry and a size bound (the oldest entries go first)."""

    def __init__(self, ttl: float, size: int):
        self.ttl, self.size = ttl, size
        self._d: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._d.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._d[key]
            return None
        return hit[1]

    def put(self, key: Any, value: Any, ttl: float | None = None) -> None:
        if self.ttl <= 0:
            return
        if len(self._d) >= self.size:
            for k in list(self._d)[: max(1, self.size // 10)]:
                del self._d[k]
        self._d[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), value)
