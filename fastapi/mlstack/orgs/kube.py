"""Organisations in Kubernetes: a Namespace labelled ``mlstack.io/org`` with a ResourceQuota (its budget,
which the operator's admission enforces on ModelDeployments), the model servers' NetworkPolicy and
RoleBindings of the mlstack roles.

Invites are one-time codes in Redis (only their SHA-256 is stored). Redeeming swaps the record for a
"used" marker atomically (``SET ... GET KEEPTTL``), so two concurrent joins cannot both win; if
creating the ServiceAccount, its RoleBinding or its token fails, everything made so far is deleted
and the code is put back. Creating an organisation is undone the same way (the Namespace is deleted).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import time
from typing import Any

from mlstack.auth.settings import AuthSettings
from mlstack.errors import Conflict, Gone, InvalidInput, MlstackError, NotFound, Unavailable
from mlstack.kubeapi import NamespaceTerminating, call
from mlstack.orgs import builders as b
from mlstack.orgs.schemas import Budget, InviteView, JoinResult, Member, OrgView

log = logging.getLogger(__name__)
USED = "used"


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _terminating(ns_obj: dict[str, Any]) -> bool:
    """A deleted namespace lingers (Terminating) while the namespace controller empties it: the organisation
    is gone for the API from the moment it was deleted."""
    return bool((ns_obj.get("metadata") or {}).get("deletionTimestamp")) or (
        (ns_obj.get("status") or {}).get("phase") == "Terminating")


class KubeOrgs:
    def __init__(self, api_client: Any, redis: Any, settings: AuthSettings, timeout: float = 10.0):
        from kubernetes import client as k8s

        self.core = k8s.CoreV1Api(api_client)
        self.rbac = k8s.RbacAuthorizationV1Api(api_client)
        self.networking = k8s.NetworkingV1Api(api_client)
        self.redis = redis
        self.s = settings
        self.timeout = timeout

    def namespace_of(self, org: str) -> str:
        return f"{self.s.org_namespace_prefix}{org}"

    async def _k(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One Kubernetes call; the JSON answer as a dict; errors as domain errors (``mlstack.kubeapi``)."""
        return await call(what, fn, *args, timeout=self.timeout, raw=True, **kwargs)

    async def _undo(self, what: str, fn: Any, *args: Any) -> None:
        try:
            await self._k(what, fn, *args)
        except NotFound:
            pass
        except MlstackError as e:
            log.error("could not undo (%s): %s", what, e.message)

    # --- organisations ---------------------------------------------------------------------------

    async def _org_namespace(self, org: str) -> dict[str, Any]:
        ns = self.namespace_of(org)
        try:
            obj = await self._k(f"namespace {ns}", self.core.read_namespace, ns)
        except NotFound:
            raise NotFound(f"organisation {org} not found") from None
        if (obj.get("metadata", {}).get("labels") or {}).get(b.ORG_LABEL) != org:
            raise NotFound(f"organisation {org} not found (namespace {ns} is not labelled {b.ORG_LABEL}={org})")
        if _terminating(obj):
            raise NotFound(f"organisation {org} is being deleted (namespace {ns} is terminating)")
        return obj

    async def create(self, org: str, display_name: str | None, budget: Budget, creator: str) -> OrgView:
        ns = self.namespace_of(org)
        try:
            await self._k(f"create namespace {ns}", self.core.create_namespace,
                          b.namespace(ns, org, display_name, creator))
        except Conflict:
            try:
                existing = await self._k(f"namespace {ns}", self.core.read_namespace, ns)
            except NotFound:  # gone meanwhile: the caller may simply retry
                existing = {}
            if _terminating(existing):
                raise Conflict(f"organisation {org} is still being deleted (namespace {ns} is terminating): "
                               "try again when it is gone") from None
            raise Conflict(f"organisation {org} (namespace {ns}) already exists") from None
        try:
            await self._k(f"create ResourceQuota {ns}/{b.QUOTA_NAME}", self.core.create_namespaced_resource_quota,
                          ns, b.quota(ns, org, budget))
            await self._k(f"create NetworkPolicy {ns}/{b.MODEL_SERVERS_POLICY}",
                          self.networking.create_namespaced_network_policy, ns, b.model_servers_policy(ns, org))
            name = f"mlstack-admin-{hashlib.sha256(creator.encode()).hexdigest()[:10]}"
            await self._k(f"create RoleBinding {ns}/{name}", self.rbac.create_namespaced_role_binding,
                          ns, b.role_binding(ns, org, name, "admin", b.subject(creator)))
        except BaseException:
            await self._undo(f"delete namespace {ns}", self.core.delete_namespace, ns)
            raise
        return await self.get(org)

    async def get(self, org: str) -> OrgView:
        obj = await self._org_namespace(org)
        ns = self.namespace_of(org)
        quotas = await self._k(f"ResourceQuotas of {ns}", self.core.list_namespaced_resource_quota, ns)
        bindings = await self._k(f"RoleBindings of {ns}", self.rbac.list_namespaced_role_binding, ns,
                                 label_selector=b.ROLE_LABEL)
        return self._view(org, obj, quotas.get("items") or [], bindings.get("items") or [])

    def _view(self, org: str, ns_obj: dict[str, Any], quotas: list[dict[str, Any]],
              bindings: list[dict[str, Any]]) -> OrgView:
        meta = ns_obj.get("metadata") or {}
        ann = meta.get("annotations") or {}
        quota = next((q for q in quotas if q["metadata"]["name"] == b.QUOTA_NAME), {})
        ns = meta.get("name", self.namespace_of(org))
        members = [Member(kind=s.get("kind", ""), name=s.get("name", ""),
                          role=(rb["metadata"].get("labels") or {}).get(b.ROLE_LABEL, ""),
                          namespace=s.get("namespace") if s.get("kind") == "ServiceAccount" else None,
                          joined=b.joined_member(ns, rb["metadata"]["name"], s))
                   for rb in bindings for s in rb.get("subjects") or []]
        return OrgView(name=org, namespace=ns,
                       displayName=ann.get("mlstack.io/display-name"), createdBy=ann.get("mlstack.io/created-by"),
                       createdAt=meta.get("creationTimestamp"),
                       budget={k: str(v) for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()},
                       used={k: str(v) for k, v in ((quota.get("status") or {}).get("used") or {}).items()},
                       members=sorted(members, key=lambda m: (m.role, m.kind, m.name)))

    async def list(self) -> list[OrgView]:
        """Every organisation with its budget, usage and members: three list calls, not three per organisation."""
        out = await self._k("list organisations", self.core.list_namespace, label_selector=b.ORG_LABEL)
        quotas = await self._k("list organisation budgets", self.core.list_resource_quota_for_all_namespaces,
                               label_selector=b.ORG_LABEL)
        bindings = await self._k("list organisation members", self.rbac.list_role_binding_for_all_namespaces,
                                 label_selector=b.ROLE_LABEL)

        def of(items: dict[str, Any], ns: str) -> list[dict[str, Any]]:
            return [o for o in items.get("items") or [] if o["metadata"].get("namespace") == ns]

        views = []
        for obj in out.get("items") or []:
            org, ns = (obj["metadata"].get("labels") or {}).get(b.ORG_LABEL, ""), obj["metadata"]["name"]
            if ns == self.namespace_of(org) and not _terminating(obj):
                views.append(self._view(org, obj, of(quotas, ns), of(bindings, ns)))
        return sorted(views, key=lambda v: v.name)

    async def set_budget(self, org: str, budget: Budget) -> OrgView:
        await self._org_namespace(org)
        ns = self.namespace_of(org)
        await self._k(f"update ResourceQuota {ns}/{b.QUOTA_NAME}", self.core.patch_namespaced_resource_quota,
                      b.QUOTA_NAME, ns, {"spec": {"hard": b.quota_hard(budget)}})
        return await self.get(org)

    async def delete(self, org: str) -> None:
        await self._org_namespace(org)
        await self._k(f"delete namespace {self.namespace_of(org)}", self.core.delete_namespace,
                      self.namespace_of(org))

    async def remove_member(self, org: str, name: str) -> None:
        """Delete a joined member: its RoleBinding and ServiceAccount (its tokens stop working)."""
        await self._org_namespace(org)
        ns = self.namespace_of(org)
        try:
            sa = await self._k(f"ServiceAccount {ns}/{name}", self.core.read_namespaced_service_account, name, ns)
        except NotFound:
            raise NotFound(f"organisation {org} has no member {name}") from None
        if b.ROLE_LABEL not in (sa.get("metadata", {}).get("labels") or {}):
            raise NotFound(f"organisation {org} has no member {name} (that ServiceAccount did not join)")
        await self._undo(f"delete RoleBinding {ns}/{b.member_binding(name)}", self.rbac.delete_namespaced_role_binding,
                         b.member_binding(name), ns)
        await self._k(f"delete ServiceAccount {ns}/{name}", self.core.delete_namespaced_service_account, name, ns)

    # --- invites ---------------------------------------------------------------------------------

    def _invite_key(self, code: str) -> str:
        return f"{self.s.org_redis_prefix}:invite:{hashlib.sha256(code.encode()).hexdigest()}"

    async def invite(self, org: str, role: str, seconds: int, invited_by: str) -> InviteView:
        if seconds > self.s.org_invite_max_seconds:
            raise InvalidInput(f"expiresInSeconds: at most {self.s.org_invite_max_seconds} "
                               "(MLSTACK_ORG_INVITE_MAX_SECONDS)")
        await self._org_namespace(org)
        code = secrets.token_urlsafe(24)
        expires = time.time() + seconds
        record = json.dumps({"org": org, "role": role, "expires": expires, "by": invited_by})
        # kept a day past expiry so that a late join hears "expired", not "unknown"
        await self.redis.set(self._invite_key(code), record, ex=seconds + 24 * 3600, nx=True)
        return InviteView(code=code, org=org, role=role, expiresAt=_iso(expires))

    async def _redeem(self, code: str) -> tuple[str, dict[str, Any]]:
        key = self._invite_key(code)
        old = await self.redis.set(key, USED, keepttl=True, get=True, xx=True)
        if old is None:
            raise NotFound("unknown invite code")
        if old == USED:
            raise Gone("this invite code was already used")
        rec = json.loads(old)
        if rec["expires"] < time.time():
            raise Gone(f"this invite code expired at {_iso(rec['expires'])}")
        return key, rec

    async def join(self, code: str, name: str) -> JoinResult:
        key, rec = await self._redeem(code)
        org, role = rec["org"], rec["role"]
        ns = self.namespace_of(org)
        made: list[tuple[str, Any, tuple[Any, ...]]] = []
        try:
            await self._org_namespace(org)
            try:
                await self._k(f"create ServiceAccount {ns}/{name}", self.core.create_namespaced_service_account,
                              ns, b.service_account(ns, org, name, role, rec.get("by", "")))
            except NamespaceTerminating:
                raise NotFound(f"organisation {org} is being deleted (namespace {ns} is terminating)") from None
            except Conflict:
                raise Conflict(f"the name {name} is taken in organisation {org}: choose another") from None
            made.append((f"delete ServiceAccount {ns}/{name}", self.core.delete_namespaced_service_account,
                         (name, ns)))
            rb = b.member_binding(name)
            await self._k(f"create RoleBinding {ns}/{rb}", self.rbac.create_namespaced_role_binding, ns,
                          b.role_binding(ns, org, rb, role, {"kind": "ServiceAccount", "name": name, "namespace": ns}))
            made.append((f"delete RoleBinding {ns}/{rb}", self.rbac.delete_namespaced_role_binding, (rb, ns)))
            tr = await self._k(f"token of ServiceAccount {ns}/{name}",
                               self.core.create_namespaced_service_account_token, name, ns,
                               b.token_request(self.s.org_token_seconds))
        except BaseException:
            for what, fn, args in reversed(made):
                await self._undo(what, fn, *args)
            ttl = await self.redis.ttl(key)
            if ttl and ttl > 0:  # put the code back: the join can be retried
                await self.redis.set(key, json.dumps(rec), ex=ttl)
            raise
        st = tr.get("status") or {}
        if not st.get("token"):
            raise Unavailable(f"the Kubernetes API returned no token for ServiceAccount {ns}/{name}")
        return JoinResult(org=org, namespace=ns, serviceAccount=name, role=role, token=st["token"],
                          expiresAt=st.get("expirationTimestamp"))
