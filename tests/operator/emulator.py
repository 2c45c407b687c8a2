"""A Kubernetes API emulator for the operator's tests and benchmark: KMock plus what kopf relies on.

KMock 0.8's ``KubernetesEmulator`` serves discovery and keeps objects, but (measured here) sets no
``resourceVersion``/``uid``/``generation``, ignores ``generateName`` and label selectors, answers
creates with 200, turns a failed JSON-patch ``test`` into a 500 and slows down linearly with every
request served. ``ApiServerEmulator`` keeps KMock's server, discovery and error rendering and serves
every request on a declared resource itself. Its contract, exactly what the tests rely on:

* writes (POST, PATCH, DELETE) set ``metadata.uid`` and ``creationTimestamp`` on create, bump a
  global ``metadata.resourceVersion`` on every change and ``metadata.generation`` on changes
  outside ``metadata`` and ``status``; POST answers 201, honours ``generateName`` and answers 409
  when the name exists;
* PATCH: merge and strategic-merge patches (as JSON merge patches) and JSON patches; a merge patch
  carrying a stale ``metadata.resourceVersion`` gets 409, a failed JSON-patch ``test`` op 422;
  with a ``status`` subresource, the main endpoint ignores ``status`` and ``/status`` changes
  only ``status``;
* DELETE: objects with finalizers get ``deletionTimestamp`` and disappear when the last finalizer
  is removed; others disappear at once. No garbage collector, no controllers: ownerReferences
  are stored, never acted on;
* GET list (``labelSelector``: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``) and watch
  (``resourceVersion`` continuation from a bounded event log, 410 Gone when it is too old,
  ``timeoutSeconds``);
* the request log (KMock's ``requests``) keeps the last ``max_requests`` requests;
* Namespaces are served at ``/api/v1/namespaces[/name[/status]]`` (KMock 0.8 cannot parse these
  paths; the emulator does) with ``status.phase`` ``Active``;
* DELETE of a Namespace deletes every namespaced object stored in it, at once (objects with
  finalizers get ``deletionTimestamp``; the Namespace stays ``Terminating`` until they are gone,
  and creating in a terminating namespace is 403). A namespace need not exist to create in it;
* authentication: ``POST .../serviceaccounts/{name}/token`` (TokenRequest; 404 without the
  ServiceAccount; ``expirationSeconds`` defaults to 3600 and below ``min_token_seconds``, 600 as
  in Kubernetes, is 422) mints an opaque random token bound to the ServiceAccount's uid.
  ``POST /apis/authentication.k8s.io/v1/tokenreviews`` authenticates it as
  ``system:serviceaccount:<ns>:<name>`` (groups ``system:serviceaccounts``,
  ``system:serviceaccounts:<ns>``, ``system:authenticated``) until it expires (by ``clock``) or
  its ServiceAccount is deleted or re-created; and static users registered with ``add_user()``
  (``--user``) with their groups plus ``system:authenticated``. Audiences as in Kubernetes: a
  token is minted for ``spec.audiences`` (default ``api_audiences``) and reviews only for one of
  them (default ``api_audiences``); static users are audience-agnostic;
* authorization: ``POST /apis/authorization.k8s.io/v1/subjectaccessreviews`` evaluates RBAC from
  the stored Roles, ClusterRoles, RoleBindings and ClusterRoleBindings (no aggregation): the group
  ``system:masters`` may do anything, ClusterRoleBindings grant everywhere, RoleBindings only in
  their namespace; subjects User, Group, ServiceAccount; apiGroups, resources (``*``,
  ``res/sub``, ``*/sub``), verbs, resourceNames and nonResourceURLs (exact or ``prefix*``) as in
  Kubernetes. ``status.reason`` names the allowing binding (RBAC never denies explicitly).

The emulator itself authenticates and authorizes nobody: any caller may do anything.
Unknown paths and undeclared resources fall through to KMock (404 in Kubernetes' format).
Run standalone: ``python -m tests.operator.emulator --port N [--user TOKEN=USER[:GROUP,...]]...
[--min-token-seconds S]`` (prints ``READY <url>``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime as dt
import json
import re
import secrets
import string
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import enums, parsing, rendering

ResKey = tuple[str, str, str]  # (group, version, plural)
ObjKey = tuple[str | None, str]  # (namespace, name)

# What the operator and its tests use: (group, version, plural, kind, namespaced, subresources)
DEFAULT_RESOURCES: list[tuple[str, str, str, str, bool, tuple[str, ...]]] = [
    ("mlstack.io", "v1alpha1", "modeldeployments", "ModelDeployment", True, ("status",)),
    ("apps", "v1", "deployments", "Deployment", True, ("status", "scale")),
    ("", "v1", "services", "Service", True, ("status",)),
    ("", "v1", "events", "Event", True, ()),
    ("", "v1", "resourcequotas", "ResourceQuota", True, ("status",)),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ("status",)),
    ("ray.io", "v1", "rayservices", "RayService", True, ("status",)),
    ("kubevirt.io", "v1", "virtualmachines", "VirtualMachine", True, ("status",)),
    ("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", False, ("status",)),
    # kopf's backbone waits for these in discovery even when it neither lists nor watches them
    ("", "v1", "namespaces", "Namespace", False, ("status",)),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, ("status",)),
    # authentication and authorization (the mlstack API's tenants)
    ("", "v1", "serviceaccounts", "ServiceAccount", True, ("token",)),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", True, ()),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, ()),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, ()),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, ()),
]
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
NAMESPACES: ResKey = ("", "v1", "namespaces")
SERVICEACCOUNTS: ResKey = ("", "v1", "serviceaccounts")
ROLES: ResKey = ("rbac.authorization.k8s.io", "v1", "roles")
ROLEBINDINGS: ResKey = ("rbac.authorization.k8s.io", "v1", "rolebindings")
CLUSTERROLES: ResKey = ("rbac.authorization.k8s.io", "v1", "clusterroles")
CLUSTERROLEBINDINGS: ResKey = ("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
TOKENREVIEWS: ResKey = ("authentication.k8s.io", "v1", "tokenreviews")
SUBJECTACCESSREVIEWS: ResKey = ("authorization.k8s.io", "v1", "subjectaccessreviews")
REVIEWS = {TOKENREVIEWS: "TokenReview", SUBJECTACCESSREVIEWS: "SubjectAccessReview"}
# The namespaces resource's own paths, which KMock 0.8 cannot parse (``/api/v1/namespaces`` fails,
# ``/api/v1/namespaces/x`` reads as "namespace x, no resource").
NAMESPACES_PATH = re.compile(r"/api/v1/namespaces(?:/([^/]+)(?:/(status))?)?/?")


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _timestamp(seconds: float) -> str:
    """Seconds since the epoch -> RFC 3339 (``2024-01-02T03:04:05Z``)."""
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).isoformat().replace("+00:00", "Z")


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": code,
            "reason": reason, "message": message}
    return aiohttp.web.json_response(body, status=code)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def _newer(rvs: list[int], position: int) -> bool:
    return bool(rvs) and rvs[-1] > position


def parse_selector(selector: str) -> list[tuple[str, str, str | None]]:
    """``k=v,k!=v,k,!k`` -> [(op, key, value)] with op in =, !=, exists, !exists."""
    reqs: list[tuple[str, str, str | None]] = []
    for part in filter(None, (p.strip() for p in selector.split(","))):
        if "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append(("!=", k.strip(), v.strip()))
        elif "==" in part or "=" in part:
            k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
            reqs.append(("=", k.strip(), v.strip()))
        elif part.startswith("!"):
            reqs.append(("!exists", part[1:].strip(), None))
        else:
            reqs.append(("exists", part, None))
    return reqs


def selector_matches(reqs: list[tuple[str, str, str | None]], labels: Mapping[str, str]) -> bool:
    for op, k, v in reqs:
        if (op == "=" and labels.get(k) != v) or (op == "!=" and labels.get(k) == v):
            return False
        if (op == "exists" and k not in labels) or (op == "!exists" and k in labels):
            return False
    return True


def parse_user(spec: str) -> tuple[str, str, tuple[str, ...]]:
    """``TOKEN=USERNAME[:GROUP1,GROUP2]`` -> (token, username, groups). The username cannot contain ``:``
    (the first ``:`` starts the groups, which may: ``t=admin:system:masters``); use ``add_user()`` for that."""
    token, sep, rest = spec.partition("=")
    username, _, groups = rest.partition(":")
    if not sep or not token or not username:
        raise ValueError(f"expected TOKEN=USERNAME[:GROUP1,GROUP2], got {spec!r}")
    return token, username, tuple(g.strip() for g in groups.split(",") if g.strip())


def _rule_allows(rule: Mapping[str, Any], attrs_: Mapping[str, Any], resource_request: bool) -> bool:
    """Kubernetes' ``RuleAllows`` (plugin/pkg/auth/authorizer/rbac) for one PolicyRule."""
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs_.get("verb", "") not in verbs:
        return False
    if not resource_request:
        path = attrs_.get("path", "")
        return any(url == "*" or url == path or (url.endswith("*") and path.startswith(url.rstrip("*")))
                   for url in rule.get("nonResourceURLs") or [])
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs_.get("group", "") not in groups:
        return False
    sub = attrs_.get("subresource") or ""
    wanted = f"{attrs_.get('resource', '')}/{sub}" if sub else attrs_.get("resource", "")
    if not any(r in ("*", wanted) or (sub and r == f"*/{sub}") for r in rule.get("resources") or []):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs_.get("name", "") in names


def _subject_matches(subject: Mapping[str, Any], user: str, groups: Iterable[str], namespace: str) -> bool:
    """Kubernetes' ``appliesToUser``: a ServiceAccount subject's namespace defaults to the binding's."""
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        sa_namespace = subject.get("namespace") or namespace
        return bool(sa_namespace) and user == f"system:serviceaccount:{sa_namespace}:{name}"
    return False


def _describe_subject(subject: Mapping[str, Any], namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("name")}/{subject.get("namespace") or namespace}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


@attrs.define(frozen=True)
class SaToken:
    """What a TokenRequest minted: the token is valid while its ServiceAccount (same uid) exists and until expiry."""

    namespace: str
    name: str
    uid: str
    expiry: float  # seconds since the epoch, on the emulator's ``clock``
    audiences: tuple[str, ...]


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    max_requests: int = 500
    max_events: int = 20000
    # TokenRequest: shorter ``expirationSeconds`` is 422 (Kubernetes: 10 minutes); lower it to test expiry.
    min_token_seconds: int = 600
    # The API server's own audiences: TokenRequests and TokenReviews without ``spec.audiences`` use these.
    api_audiences: tuple[str, ...] = ("https://kubernetes.default.svc.cluster.local",)
    # Seconds since the epoch, for token expiry; replace it to move time forward in tests.
    clock: Callable[[], float] = time.time

    store: dict[ResKey, dict[ObjKey, dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _info: dict[ResKey, tuple[str, bool, tuple[str, ...]]] = attrs.field(factory=dict, init=False)
    _event_rvs: dict[ResKey, list[int]] = attrs.field(factory=dict, init=False)
    _events: dict[ResKey, list[dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    write_count: int = attrs.field(default=0, init=False)
    _users: dict[str, dict[str, Any]] = attrs.field(factory=dict, init=False)  # token -> TokenReview user
    _sa_tokens: dict[str, SaToken] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for group, version, plural, kind, namespaced, subresources in DEFAULT_RESOURCES:
            self.declare(group, version, plural, kind, namespaced=namespaced, subresources=subresources)
        for (group, version, plural), kind in REVIEWS.items():  # discovery only: created, never stored
            self.resources[f"{group}/{version}/{plural}"] = kmock.ResourceInfo(kind=kind, namespaced=False,
                                                                               verbs={"create"})

    # --- declaration and direct access (for tests) -----------------------------------------------

    def declare(self, group: str, version: str, plural: str, kind: str, *, namespaced: bool = True,
                subresources: tuple[str, ...] = ("status",)) -> None:
        key = f"{group}/{version}/{plural}" if group else f"{version}/{plural}"
        self.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=VERBS,
                                                 subresources=set(subresources))
        res = (group, version, plural)
        self._info[res] = (kind, namespaced, subresources)
        self.store.setdefault(res, {})
        self._events.setdefault(res, [])
        self._event_rvs.setdefault(res, [])

    @staticmethod
    def res(spec: str) -> ResKey:
        """'apps/v1/deployments' or 'v1/services' -> (group, version, plural)."""
        parts = spec.split("/")
        return ("", parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.store.get(self.res(resource), {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (ns, _), o in self.store.get(self.res(resource), {}).items()
                if namespace is None or ns == namespace]

    # --- authentication and authorization --------------------------------------------------------

    def add_user(self, token: str, username: str, groups: Iterable[str] = (), *, uid: str | None = None) -> None:
        """A static bearer token (like the API server's ``--token-auth-file``) that TokenReviews authenticate
        as ``username`` with ``groups`` plus ``system:authenticated``."""
        if not token or not username:
            raise ValueError("a static user needs a token and a username")
        group_list = [*groups]
        user: dict[str, Any] = {"username": username, "groups": group_list + [
            g for g in ["system:authenticated"] if g not in group_list]}
        if uid:
            user["uid"] = uid
        self._users[token] = user

    def authenticate(self, token: str, audiences: Iterable[str] = ()) -> dict[str, Any]:
        """The ``status`` of a TokenReview of ``token`` for ``audiences`` (default: ``api_audiences``)."""
        wanted = [*audiences] or [*self.api_audiences]
        if token in self._users:
            return {"authenticated": True, "user": copy.deepcopy(self._users[token]), "audiences": wanted}
        minted = self._sa_tokens.get(token)
        if minted is None:
            return {"authenticated": False, "user": {}, "error": "invalid bearer token"}
        sa = self.store[SERVICEACCOUNTS].get((minted.namespace, minted.name))
        matched = [a for a in wanted if a in minted.audiences]
        error = None
        if sa is None:
            error = f'invalid bearer token, serviceaccounts "{minted.name}" not found'
        elif sa["metadata"]["uid"] != minted.uid:
            error = (f"invalid bearer token, service account UID ({sa['metadata']['uid']}) does not match "
                     f"claim ({minted.uid})")
        elif self.clock() >= minted.expiry:
            error = "invalid bearer token, token is expired"
        elif not matched:
            error = (f"invalid bearer token, token audiences {list(minted.audiences)} is invalid for the target "
                     f"audiences {wanted}")
        if error is not None:
            return {"authenticated": False, "user": {}, "error": error}
        ns = minted.namespace
        user = {"username": f"system:serviceaccount:{ns}:{minted.name}", "uid": minted.uid,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]}
        return {"authenticated": True, "user": user, "audiences": matched}

    def authorize(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The ``status`` of a SubjectAccessReview with this ``spec``, by RBAC over the stored objects."""
        user, groups = spec.get("user") or "", [*(spec.get("groups") or [])]
        resource_attrs = spec.get("resourceAttributes")
        attrs_ = resource_attrs or spec.get("nonResourceAttributes") or {}
        if "system:masters" in groups:
            return {"allowed": True, "reason": 'allowed: the group "system:masters" may do anything'}
        namespace = (resource_attrs or {}).get("namespace") or ""
        bindings = [("ClusterRoleBinding", b, "") for b in self.store[CLUSTERROLEBINDINGS].values()]
        if namespace:  # RoleBindings grant only in their namespace, so never cluster-wide or non-resource access
            bindings += [("RoleBinding", b, namespace) for (ns, _), b in self.store[ROLEBINDINGS].items()
                         if ns == namespace]
        for kind, binding, binding_ns in bindings:
            ref = binding.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole":
                role = self.store[CLUSTERROLES].get((None, ref.get("name", "")))
            elif ref.get("kind") == "Role" and binding_ns:
                role = self.store[ROLES].get((binding_ns, ref.get("name", "")))
            else:
                continue
            if role is None:
                continue
            subject = next((s for s in binding.get("subjects") or []
                            if _subject_matches(s, user, groups, binding_ns)), None)
            if subject is None:
                continue
            if any(_rule_allows(rule, attrs_, resource_attrs is not None) for rule in role.get("rules") or []):
                name = binding["metadata"]["name"] + (f"/{binding_ns}" if binding_ns else "")
                return {"allowed": True, "reason": f'RBAC: allowed by {kind} "{name}" of {ref["kind"]} '
                                                   f'"{ref.get("name")}" to {_describe_subject(subject, binding_ns)}'}
        if resource_attrs is not None:
            what = attrs_.get("resource", "") + (f".{attrs_['group']}" if attrs_.get("group") else "")
            what += f"/{attrs_['subresource']}" if attrs_.get("subresource") else ""
            what += f' "{attrs_["name"]}"' if attrs_.get("name") else ""
            where = f' in the namespace "{namespace}"' if namespace else " cluster-wide"
        else:
            what, where = f'the path "{attrs_.get("path", "")}"', ""
        return {"allowed": False, "reason": f'RBAC: no rule allows User "{user}" (groups: {", ".join(groups)}) '
                                            f'to {attrs_.get("verb", "")} {what}{where}'}

    # --- request routing -------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """KMock's entry point, except that the namespaces resource's own paths are parsed here."""
        match = NAMESPACES_PATH.fullmatch(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        try:
            request = await self._parse_namespaces_request(raw_request, match[1], match[2])
            self._requests.append(request)
            return await self._handle(request)
        except Exception as e:  # as KMock does: report to the client, and re-raise when the emulator exits
            if not self._errors:
                raise
            self._errors[-1].append(e)
            return await self._render_error(e)

    async def _parse_namespaces_request(self, raw: aiohttp.web.BaseRequest, name: str | None,
                                        subresource: str | None) -> rendering.Request:
        body = await raw.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        path = parsing.ParsedPath("", "v1", "namespaces", None, name, subresource)
        method = enums.method(raw.method)
        return rendering.Request(
            id=len(self._requests), raw_request=raw, url=raw.url, method=raw.method, params=dict(raw.query),
            headers=dict(raw.headers), cookies=dict(raw.cookies), data=data, body=body,
            text=body.decode(errors="replace"), action=parsing.guess_k8s(path, method, dict(raw.query)),
            resource=kmock.resource("", "v1", "namespaces"), name=name, subresource=subresource)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._trim_log()
        r = request.resource
        res = (r.group, r.version, r.plural) if r is not None else None
        if res in REVIEWS:
            return self._review(res, request)
        if res == SERVICEACCOUNTS and request.name and request.subresource == "token":
            return self._token_request(request)
        if res is None or res not in self._info or request.action is None:
            return await super()._handle(request)
        if self._changed is None:
            self._changed = asyncio.Condition()
        action = request.action
        if request.subresource not in (None, "status"):
            return _status(404, "NotFound", f"subresource {request.subresource} is not emulated")
        if action == enums.action.LIST:
            return self._serve_list_(res, request)
        if action == enums.action.WATCH:
            return await self._serve_watch_(res, request)
        if action == enums.action.FETCH:
            obj = self.store[res].get((request.namespace, request.name or ""))
            if obj is None:
                return _status(404, "NotFound", f'{r.plural} "{request.name}" not found')
            return aiohttp.web.json_response(obj)
        if action == enums.action.CREATE:
            return await self._create(res, request)
        if action == enums.action.UPDATE:
            return await self._patch(res, request)
        if action == enums.action.DELETE:
            return await self._delete(res, request)
        return _status(405, "MethodNotAllowed", f"{request.method} is not emulated")

    def _token_request(self, request: rendering.Request) -> aiohttp.web.Response:
        if request.method != enums.method.POST:
            return _status(405, "MethodNotAllowed", f"{request.method} is not allowed on serviceaccounts/token")
        name, namespace = request.name or "", request.namespace
        sa = self.store[SERVICEACCOUNTS].get((namespace, name))
        if sa is None:
            return _status(404, "NotFound", f'serviceaccounts "{name}" not found')
        body = request.data
        if not isinstance(body, dict) or body.get("kind", "TokenRequest") != "TokenRequest":
            return _status(400, "BadRequest", "the body must be a TokenRequest")
        spec = dict(body.get("spec") or {})
        seconds = spec.get("expirationSeconds", 3600)
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            return _status(400, "BadRequest", "spec.expirationSeconds must be an integer")
        problem = None
        if seconds < self.min_token_seconds:
            shortest = self.min_token_seconds
            shortest_text = f"{shortest // 60} minutes" if shortest % 60 == 0 else f"{shortest} seconds"
            problem = f"may not specify a duration less than {shortest_text}"
        elif seconds > 1 << 32:
            problem = "may not specify a duration larger than 2^32 seconds"
        if problem:
            return _status(422, "Invalid", f'TokenRequest.authentication.k8s.io "{name}" is invalid: '
                                           f"spec.expirationSeconds: Invalid value: {seconds}: {problem}")
        audiences = [*(spec.get("audiences") or self.api_audiences)]
        now = self.clock()
        token = secrets.token_urlsafe(32)
        self._sa_tokens[token] = SaToken(namespace=namespace or "", name=name, uid=sa["metadata"]["uid"],
                                         expiry=now + seconds, audiences=tuple(audiences))
        out = copy.deepcopy(body)
        out.update(apiVersion="authentication.k8s.io/v1", kind="TokenRequest")
        out["metadata"] = {**(out.get("metadata") or {}), "name": name, "namespace": namespace,
                           "creationTimestamp": _timestamp(now)}
        out["spec"] = {**spec, "audiences": audiences, "expirationSeconds": seconds,
                       "boundObjectRef": spec.get("boundObjectRef")}
        out["status"] = {"token": token, "expirationTimestamp": _timestamp(now + seconds)}
        return aiohttp.web.json_response(out, status=201)

    def _review(self, res: ResKey, request: rendering.Request) -> aiohttp.web.Response:
        kind = REVIEWS[res]
        if request.namespace is not None or request.name is not None:
            return _status(404, "NotFound", f"the server could not find the requested resource ({res[2]} is "
                                            "cluster-scoped and has no named objects)")
        if request.method != enums.method.POST:
            return _status(405, "MethodNotAllowed", f"{request.method} is not allowed on {res[2]}: create only")
        body = request.data
        if not isinstance(body, dict) or body.get("kind", kind) != kind:
            return _status(400, "BadRequest", f"the body must be a {kind}")
        spec = body.get("spec") or {}
        if res == TOKENREVIEWS:
            if not spec.get("token"):
                return _status(400, "BadRequest", "token is required for TokenReview in authentication")
            status = self.authenticate(spec["token"], spec.get("audiences") or ())
        else:
            problems: list[str] = []
            if (spec.get("resourceAttributes") is None) == (spec.get("nonResourceAttributes") is None):
                problems.append("spec.resourceAttributes: exactly one of nonResourceAttributes or "
                                "resourceAttributes must be specified")
            if not spec.get("user") and not spec.get("groups"):
                problems.append('spec.user: Invalid value: "": at least one of user or group must be specified')
            if problems:
                return _status(422, "Invalid", f'{kind}.{res[0]} "" is invalid: [{", ".join(problems)}]')
            status = self.authorize(spec)
        out = {"apiVersion": f"{res[0]}/{res[1]}", "kind": kind,
               "metadata": {**(body.get("metadata") or {}), "creationTimestamp": None},
               "spec": copy.deepcopy(spec), "status": status}
        return aiohttp.web.json_response(out, status=201)

    def _trim_log(self) -> None:
        """Bound KMock's request log (it is scanned on every request) and the reactions' logs."""
        for log in [self._requests, *(p._requests for p in self._payloads)]:
            if len(log) > 2 * self.max_requests:
                del log[: len(log) - self.max_requests]

    # --- writes ----------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _emit(self, res: ResKey, type_: str, obj: dict[str, Any]) -> None:
        self.write_count += 1
        rvs, events = self._event_rvs[res], self._events[res]
        rvs.append(int(obj["metadata"]["resourceVersion"]))
        events.append({"type": type_, "object": obj})
        if len(rvs) > 2 * self.max_events:
            del rvs[: self.max_events]
            del events[: self.max_events]
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _create(self, res: ResKey, request: rendering.Request) -> aiohttp.web.StreamResponse:
        kind, namespaced, subresources = self._info[res]
        obj = request.data
        if not isinstance(obj, dict):
            return _status(400, "BadRequest", "the body must be a JSON object")
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            alphabet = string.ascii_lowercase + string.digits
            meta["name"] = meta["generateName"] + "".join(secrets.choice(alphabet) for _ in range(5))
        name = meta.get("name")
        if not name:
            return _status(422, "Invalid", "metadata.name or metadata.generateName is required")
        namespace = (request.namespace or meta.get("namespace")) if namespaced else None
        if namespaced and not namespace:
            return _status(422, "Invalid", "a namespaced object needs a namespace")
        key = (namespace, name)
        if key in self.store[res]:
            return _status(409, "AlreadyExists", f'{res[2]} "{name}" already exists')
        home = self.store[NAMESPACES].get((None, namespace)) if namespace is not None else None
        if home is not None and home["metadata"].get("deletionTimestamp"):
            return _status(403, "Forbidden", f'{res[2]} "{name}" is forbidden: unable to create new content in '
                                             f"namespace {namespace} because it is being terminated")
        if namespace is not None:
            meta["namespace"] = namespace
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), generation=1,
                    creationTimestamp=_now())
        obj.setdefault("apiVersion", f"{res[0]}/{res[1]}" if res[0] else res[1])
        obj.setdefault("kind", kind)
        if "status" in subresources:
            obj.pop("status", None)
        if res == NAMESPACES:
            obj["status"] = {"phase": "Active"}
        self.store[res][key] = obj
        await self._emit(res, "ADDED", obj)
        return aiohttp.web.json_response(obj, status=201)

    async def _patch(self, res: ResKey, request: rendering.Request) -> aiohttp.web.StreamResponse:
        _, namespaced, subresources = self._info[res]
        key = (request.namespace if namespaced else None, request.name or "")
        old = self.store[res].get(key)
        if old is None:
            return _status(404, "NotFound", f'{res[2]} "{request.name}" not found')
        body = request.data
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/json-patch+json" or isinstance(body, list):
            try:
                new = jsonpatch.apply_patch(copy.deepcopy(old), body, in_place=False)
            except jsonpatch.JsonPatchTestFailed as e:
                return _status(422, "Invalid", f"the JSON patch test failed: {e}")
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                return _status(422, "Invalid", f"the JSON patch cannot be applied: {e}")
        elif isinstance(body, dict):
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and str(wanted_rv) != old["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", "the object has been modified; please apply your changes "
                                                "to the latest version and try again")
            new = _merge(old, body)
        else:
            return _status(400, "BadRequest", "unsupported patch body")

        if request.subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")} if "status" in new else {
                k: v for k, v in old.items() if k != "status"}
        elif "status" in subresources:
            new = {k: v for k, v in new.items() if k != "status"}
            if "status" in old:
                new["status"] = old["status"]
        # Identity fields are the server's.
        for field in ("uid", "creationTimestamp", "generation", "resourceVersion", "name", "namespace"):
            if field in old["metadata"]:
                new.setdefault("metadata", {})[field] = old["metadata"][field]
        if new == old:
            return aiohttp.web.json_response(old)
        outside = {k: v for k, v in new.items() if k not in ("metadata", "status")}
        if outside != {k: v for k, v in old.items() if k not in ("metadata", "status")}:
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not (
                res == NAMESPACES and self._has_contents(key[1])):
            del self.store[res][key]
            await self._emit(res, "DELETED", new)
            if key[0] is not None:
                await self._settle_namespace(key[0])
        else:
            self.store[res][key] = new
            await self._emit(res, "MODIFIED", new)
        return aiohttp.web.json_response(new)

    async def _delete(self, res: ResKey, request: rendering.Request) -> aiohttp.web.StreamResponse:
        _, namespaced, _ = self._info[res]
        key = (request.namespace if namespaced else None, request.name or "")
        obj = self.store[res].get(key)
        if obj is None:
            return _status(404, "NotFound", f'{res[2]} "{request.name}" not found')
        if res == NAMESPACES:
            return await self._delete_namespace(key[1])
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self.store[res][key] = obj
                await self._emit(res, "MODIFIED", obj)
            return aiohttp.web.json_response(obj, status=202)
        del self.store[res][key]
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        await self._emit(res, "DELETED", gone)
        return aiohttp.web.json_response(gone)

    # --- namespace deletion ----------------------------------------------------------------------

    def _has_contents(self, namespace: str) -> bool:
        return any(ns == namespace for objs in self.store.values() for ns, _ in objs)

    async def _delete_namespace(self, namespace: str) -> aiohttp.web.Response:
        """What the namespace controller does, at once: delete the contents (finalizers are honoured), then the
        namespace when it is empty and has no finalizers of its own; until then it is ``Terminating``."""
        for res, objs in self.store.items():
            for key in [k for k in objs if k[0] == namespace]:
                obj = objs[key]
                if not obj["metadata"].get("finalizers"):
                    del objs[key]
                    gone = copy.deepcopy(obj)
                    gone["metadata"]["resourceVersion"] = self._next_rv()
                    await self._emit(res, "DELETED", gone)
                elif not obj["metadata"].get("deletionTimestamp"):
                    obj = copy.deepcopy(obj)
                    obj["metadata"].update(deletionTimestamp=_now(), resourceVersion=self._next_rv())
                    objs[key] = obj
                    await self._emit(res, "MODIFIED", obj)
        ns_obj = self.store[NAMESPACES][(None, namespace)]
        if not ns_obj["metadata"].get("finalizers") and not self._has_contents(namespace):
            del self.store[NAMESPACES][(None, namespace)]
            gone = copy.deepcopy(ns_obj)
            gone["metadata"]["resourceVersion"] = self._next_rv()
            await self._emit(NAMESPACES, "DELETED", gone)
            return aiohttp.web.json_response(gone)
        if not ns_obj["metadata"].get("deletionTimestamp"):
            ns_obj = copy.deepcopy(ns_obj)
            ns_obj["metadata"].update(deletionTimestamp=_now(), resourceVersion=self._next_rv())
            ns_obj["status"] = {**(ns_obj.get("status") or {}), "phase": "Terminating"}
            self.store[NAMESPACES][(None, namespace)] = ns_obj
            await self._emit(NAMESPACES, "MODIFIED", ns_obj)
        return aiohttp.web.json_response(ns_obj, status=202)

    async def _settle_namespace(self, namespace: str) -> None:
        """Remove a terminating namespace once it is empty and has no finalizers."""
        obj = self.store[NAMESPACES].get((None, namespace))
        if obj is None or not obj["metadata"].get("deletionTimestamp") or obj["metadata"].get("finalizers"):
            return
        if not self._has_contents(namespace):
            del self.store[NAMESPACES][(None, namespace)]
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = self._next_rv()
            await self._emit(NAMESPACES, "DELETED", gone)

    # --- reads -----------------------------------------------------------------------------------

    def _select(self, res: ResKey, request: rendering.Request) -> Iterator[dict[str, Any]]:
        reqs = parse_selector(request.params.get("labelSelector", ""))
        for (ns, _), obj in self.store[res].items():
            if request.namespace is not None and ns != request.namespace:
                continue
            if reqs and not selector_matches(reqs, obj["metadata"].get("labels") or {}):
                continue
            yield obj

    def _serve_list_(self, res: ResKey, request: rendering.Request) -> aiohttp.web.Response:
        kind = self._info[res][0]
        return aiohttp.web.json_response({
            "apiVersion": f"{res[0]}/{res[1]}" if res[0] else res[1],
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": list(self._select(res, request)),
        })

    async def _serve_watch_(self, res: ResKey, request: rendering.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None and self._changed is not None
        reqs = parse_selector(request.params.get("labelSelector", ""))
        timeout = float(request.params.get("timeoutSeconds") or 1800)
        since = request.params.get("resourceVersion")
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)

        def wanted(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            if request.namespace is not None and meta.get("namespace") != request.namespace:
                return False
            return not reqs or selector_matches(reqs, meta.get("labels") or {})

        async def send(event: Mapping[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        rvs, events = self._event_rvs[res], self._events[res]
        if since in (None, "", "0"):
            position = self._rv
            for obj in list(self._select(res, request)):
                await send({"type": "ADDED", "object": obj})
        else:
            position = int(since)
            if rvs and rvs[0] > position + 1 and len(rvs) >= self.max_events:
                await send({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "code": 410,
                                                        "reason": "Expired", "message": "too old resource version"}})
                await response.write_eof()
                return response
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                start = bisect_right(rvs, position)
                pending = list(zip(rvs[start:], events[start:], strict=True))
                for rv, ev in pending:
                    position = rv
                    if wanted(ev["object"]):
                        await send(ev)
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait_for(partial(_newer, rvs, position)),
                                               timeout=remaining)
                    except TimeoutError:
                        break
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


def fake_mlflow(emulator: ApiServerEmulator) -> None:
    """Answer MLflow's registry lookups with "version 1 exists" (for benchmarks without an MLflow server)."""
    version = {"model_version": {"name": "bench", "version": "1", "current_stage": "None", "status": "READY"}}
    emulator["/api/2.0/mlflow/model-versions/get"] << version
    emulator["/api/2.0/mlflow/registered-models/alias"] << version


async def serve(port: int, host: str = "127.0.0.1", with_fake_mlflow: bool = False,
                users: Iterable[tuple[str, str, tuple[str, ...]]] = (), min_token_seconds: int = 600) -> None:
    async with (ApiServerEmulator(min_token_seconds=min_token_seconds) as emulator,
                kmock.Server(emulator, host=host, port=port) as server):
        if with_fake_mlflow:
            fake_mlflow(emulator)
        for token, username, groups in users:
            emulator.add_user(token, username, groups)
        print(f"READY {server.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--fake-mlflow", action="store_true", help="also answer MLflow registry lookups")
    p.add_argument("--user", action="append", default=[], type=_user_arg, metavar="TOKEN=USERNAME[:GROUP,...]",
                   help="a static user that TokenReviews authenticate (repeatable)")
    p.add_argument("--min-token-seconds", type=int, default=600,
                   help="the shortest TokenRequest expirationSeconds accepted (Kubernetes: 600)")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.host, args.fake_mlflow, args.user, args.min_token_seconds))


def _user_arg(spec: str) -> tuple[str, str, tuple[str, ...]]:
    try:
        return parse_user(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


if __name__ == "__main__":
    main()
