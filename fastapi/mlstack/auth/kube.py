"""Cluster mode: Kubernetes decides. TokenReview says who a bearer token is; SubjectAccessReview says
whether they may do a verb on an ``mlstack.io`` resource in a namespace (RBAC is the source of truth).

Answers are reused for ``auth_cache_seconds`` (keyed by the token's SHA-256, never the token), so a
revoked binding or a deleted ServiceAccount takes effect within that time. A ServiceAccount in an
organisation's namespace (labelled ``mlstack.io/org``) has that namespace as home; everyone else's
home is the deployments namespace. An unreachable API server is a 503, never a 401/403.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from mlstack.auth.base import Principal, TTLCache
from mlstack.auth.local import MISSING
from mlstack.auth.roles import GROUP
from mlstack.auth.settings import AuthSettings
from mlstack.errors import MlstackError, NotFound, Unauthorized, Unavailable
from mlstack.kubeapi import call

log = logging.getLogger(__name__)
ORG_LABEL = "mlstack.io/org"
SA_PREFIX = "system:serviceaccount:"


class KubeAuthority:
    mode = "kubernetes"

    def __init__(self, api_client: Any, settings: AuthSettings, default_namespace: str, timeout: float = 10.0):
        from kubernetes import client as k8s

        self.k8s = k8s
        self.authn = k8s.AuthenticationV1Api(api_client)
        self.authz = k8s.AuthorizationV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.default_namespace = default_namespace
        self.timeout = timeout
        ttl, size = settings.auth_cache_seconds, settings.auth_cache_size
        self._who, self._decisions, self._orgs = TTLCache(ttl, size), TTLCache(ttl, size), TTLCache(ttl, size)

    async def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return await call(what, fn, *args, timeout=self.timeout)
        except MlstackError as e:  # the API server failing a review is never the caller's 4xx
            raise Unavailable(e.message) from None

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized(MISSING)
        key = hashlib.sha256(token.encode()).hexdigest()
        who = self._who.get(key)
        if who is not None:
            return who
        k8s = self.k8s
        review = await self._call("TokenReview", self.authn.create_token_review,
                                  k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token)))
        st = review.status
        if st is None or not st.authenticated or st.user is None:
            raise Unauthorized(f"invalid token: {(st and st.error) or 'the Kubernetes API did not authenticate it'}")
        namespace, org = await self._home(st.user.username)
        who = Principal(st.user.username, "kubernetes", namespace, groups=tuple(st.user.groups or ()),
                        uid=st.user.uid or "", org=org, extra=dict(st.user.extra or {}))
        self._who.put(key, who)
        return who

    async def _home(self, username: str) -> tuple[str, str | None]:
        """(home namespace, organisation): a ServiceAccount of an organisation lives in its namespace."""
        if not username.startswith(SA_PREFIX):
            return self.default_namespace, None
        ns = username[len(SA_PREFIX):].split(":", 1)[0]
        hit = self._orgs.get(ns)
        if hit is None:
            try:
                obj = await call(f"namespace {ns}", self.core.read_namespace, ns, timeout=self.timeout, raw=True)
                hit = ((obj.get("metadata", {}).get("labels") or {}).get(ORG_LABEL) or "",)
            except NotFound:
                hit = ("",)
            self._orgs.put(ns, hit)
        return (ns, hit[0]) if hit[0] else (self.default_namespace, None)

    async def denied(self, who: Principal, verb: str, resource: str, namespace: str | None,
                     name: str | None) -> str | None:
        key = (who.name, who.uid, who.groups, verb, resource, namespace, name)
        hit = self._decisions.get(key)
        if hit is not None:
            return hit[0]
        k8s = self.k8s
        res, _, sub = resource.partition("/")
        attrs = k8s.V1ResourceAttributes(group=GROUP, resource=res, subresource=sub or None, verb=verb,
                                         namespace=namespace or None, name=name or None)
        spec = k8s.V1SubjectAccessReviewSpec(user=who.name, uid=who.uid or None, groups=list(who.groups) or None,
                                             extra=who.extra or None, resource_attributes=attrs)
        review = await self._call("SubjectAccessReview", self.authz.create_subject_access_review,
                                  k8s.V1SubjectAccessReview(spec=spec))
        st = review.status
        why = None if (st is not None and st.allowed) else (
            (st and st.reason) or "no RBAC rule allows it (bind a role: mlstack-viewer, -deployer or -admin)")
        self._decisions.put(key, (why,))
        return why
