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
* the request log (KMock's ``requests``) keeps the last ``max_requests`` requests.

Unknown paths and undeclared resources fall through to KMock (404 in Kubernetes' format).
Run standalone: ``python -m tests.operator.emulator --port N`` (prints ``READY <url>``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime as dt
import json
import secrets
import string
import uuid
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import enums, rendering

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
]
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    max_requests: int = 500
    max_events: int = 20000

    store: dict[ResKey, dict[ObjKey, dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _info: dict[ResKey, tuple[str, bool, tuple[str, ...]]] = attrs.field(factory=dict, init=False)
    _event_rvs: dict[ResKey, list[int]] = attrs.field(factory=dict, init=False)
    _events: dict[ResKey, list[dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    write_count: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for group, version, plural, kind, namespaced, subresources in DEFAULT_RESOURCES:
            self.declare(group, version, plural, kind, namespaced=namespaced, subresources=subresources)

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

    # --- request routing -------------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._trim_log()
        r = request.resource
        res = (r.group, r.version, r.plural) if r is not None else None
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
        if namespace is not None:
            meta["namespace"] = namespace
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), generation=1,
                    creationTimestamp=_now())
        obj.setdefault("apiVersion", f"{res[0]}/{res[1]}" if res[0] else res[1])
        obj.setdefault("kind", kind)
        if "status" in subresources:
            obj.pop("status", None)
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
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.store[res][key]
            await self._emit(res, "DELETED", new)
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


async def serve(port: int, host: str = "127.0.0.1", with_fake_mlflow: bool = False) -> None:
    async with ApiServerEmulator() as emulator, kmock.Server(emulator, host=host, port=port) as server:
        if with_fake_mlflow:
            fake_mlflow(emulator)
        print(f"READY {server.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--fake-mlflow", action="store_true", help="also answer MLflow registry lookups")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.host, args.fake_mlflow))


if __name__ == "__main__":
    main()
