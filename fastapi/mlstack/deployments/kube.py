"""Cluster mode: ModelDeployment custom resources through the Kubernetes API; the operator serves them.

Calls and their error mapping: ``mlstack.kubeapi`` (a 422 from the CRD's schema or CEL rules is a 422
here too, with the API server's message).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mlstack.aio import cancel_all
from mlstack.deployments.schemas import DeploymentView, abort_spec, new_object, promote_spec, view, views
from mlstack.deployments.settings import DeploymentSettings
from mlstack.errors import Conflict, MlstackError, NotFound, Unavailable
from mlstack.kubeapi import NamespaceTerminating, call
from mlstack_operator.contract import GROUP, PLURAL, VERSION, ModelDeploymentSpec, Phase

log = logging.getLogger(__name__)


class KubeDeployments:
    def __init__(self, api_client: Any, ds: DeploymentSettings, timeout: float):
        from kubernetes import client as k8s

        self.api_client = api_client
        self.api = k8s.CustomObjectsApi(api_client)
        self.ds = ds
        self.timeout = timeout

    @property
    def default_namespace(self) -> str:
        return self.ds.deployments_namespace

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)

    async def _call(self, what: str, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await call(what, getattr(self.api, fn_name), GROUP, VERSION, *args, timeout=self.timeout,
                              **kwargs)
        except NotFound as e:
            if "could not find the requested resource" in e.message:
                raise NotFound(f"{e.message} (is the ModelDeployment CRD from manifests/crds/ installed?)") from None
            raise

    async def create(self, namespace: str, name: str, spec: ModelDeploymentSpec) -> DeploymentView:
        body = new_object(namespace, name, spec, local=False)
        try:
            obj = await self._call(f"create ModelDeployment {namespace}/{name}", "create_namespaced_custom_object",
                                   namespace, PLURAL, body)
        except NamespaceTerminating:
            raise
        except Conflict:
            raise Conflict(f"ModelDeployment {namespace}/{name} already exists") from None
        return view(obj)

    async def list(self, namespace: str | None) -> list[DeploymentView]:
        return views(await self.list_raw(namespace or self.default_namespace))

    async def list_raw(self, namespace: str) -> list[dict[str, Any]]:
        out = await self._call(f"list ModelDeployments in {namespace}", "list_namespaced_custom_object",
                               namespace, PLURAL)
        return sorted(out.get("items") or [], key=lambda o: o["metadata"]["name"])

    async def list_scope(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """ModelDeployments of ``namespaces``; empty: of every namespace (organisations come and go)."""
        if not namespaces:
            out = await self._call("list ModelDeployments in all namespaces", "list_cluster_custom_object", PLURAL)
            return sorted(out.get("items") or [], key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
        items: list[dict[str, Any]] = []
        for ns in namespaces:
            items += await self.list_raw(ns)
        return items

    async def get(self, namespace: str, name: str) -> DeploymentView:
        try:
            obj = await self._call(f"ModelDeployment {namespace}/{name}", "get_namespaced_custom_object",
                                   namespace, PLURAL, name)
        except NotFound:
            raise NotFound(f"ModelDeployment {namespace}/{name} not found") from None
        return view(obj)

    async def promote_canary(self, namespace: str, name: str) -> DeploymentView:
        """The canary becomes stable: ``model.version`` = the canary's version, no canary (the operator rolls the
        stable Deployment to it and prunes the canary's children)."""
        return await self._update_spec(namespace, name, promote_spec)

    async def abort_canary(self, namespace: str, name: str) -> DeploymentView:
        """The canary is removed (the operator prunes its children; stable takes all traffic)."""
        return await self._update_spec(namespace, name, abort_spec)

    async def _update_spec(self, namespace: str, name: str, change) -> DeploymentView:
        what = f"ModelDeployment {namespace}/{name}"
        try:
            obj = await self._call(what, "get_namespaced_custom_object", namespace, PLURAL, name)
        except NotFound:
            raise NotFound(f"{what} not found") from None
        spec = change(ModelDeploymentSpec.model_validate(obj["spec"]), f"{namespace}/{name}")
        body = {**obj, "spec": spec.to_k8s()}  # with its resourceVersion: a concurrent change is a 409, not lost
        body.pop("status", None)
        try:
            out = await self._call(f"update {what}", "replace_namespaced_custom_object", namespace, PLURAL, name,
                                   body)
        except NotFound:
            raise NotFound(f"{what} not found") from None
        except Conflict:
            raise Conflict(f"{what} changed meanwhile; read it again and retry") from None
        return view(out)

    async def delete(self, namespace: str, name: str) -> None:
        try:
            await self._call(f"delete ModelDeployment {namespace}/{name}", "delete_namespaced_custom_object",
                             namespace, PLURAL, name)
        except NotFound:
            raise NotFound(f"ModelDeployment {namespace}/{name} not found") from None


class KubeEndpoints:
    """The ``/inference`` endpoints (``mlstack.inference.Endpoints``) in cluster mode: the ``status.url`` of a
    Ready ModelDeployment.

    The list of ModelDeployments is reused for ``endpoint_cache_seconds``; a miss re-reads it at once
    (at most every 0.25 s), so a deployment that just became Ready is found on the next retry. A caller
    is served by its own namespace's deployments first, then the shared deployments namespace; never by
    another organisation's (whose budget pays for them).
    """

    MIN_REFRESH = 0.25

    def __init__(self, deployments: KubeDeployments, ds: DeploymentSettings):
        self.deployments = deployments
        self.namespaces = ds.endpoint_namespaces  # empty: every namespace
        self.default_namespace = ds.deployments_namespace
        self.ttl = ds.endpoint_cache_seconds
        self._items: list[dict[str, Any]] = []
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh(self, min_age: float) -> None:
        async with self._lock:
            if time.monotonic() - self._at < min_age:
                return
            self._items, self._at = await self.deployments.list_scope(self.namespaces), time.monotonic()

    def _match(self, name: str, version: str, namespaces: tuple[str, ...] | None) -> str | None:
        """The Ready deployment with most ready replicas, in the first of ``namespaces`` that has one (None: any)."""
        best: tuple[int, int, str] | None = None
        for obj in self._items:
            st = obj.get("status") or {}
            if ((obj.get("spec") or {}).get("model") or {}).get("name") != name:
                continue
            if st.get("phase") != Phase.Ready or str(st.get("resolvedVersion")) != version or not st.get("url"):
                continue
            ns = obj["metadata"].get("namespace", "")
            if namespaces is not None and ns not in namespaces:
                continue
            rank = namespaces.index(ns) if namespaces is not None else 0
            cand = (-rank, int(st.get("readyReplicas") or 0), st["url"])
            if best is None or cand[:2] > best[:2]:
                best = cand
        return best[2] if best else None

    async def endpoint(self, name: str, version: str, timeout: float | None = None,
                       namespace: str | None = None) -> str:
        """A caller's own namespace first, then the shared deployments namespace; other organisations' never."""
        scope = None if namespace is None else tuple(dict.fromkeys((namespace, self.default_namespace)))
        await self._refresh(self.ttl)
        url = self._match(name, version, scope)
        if url is None:
            await self._refresh(self.MIN_REFRESH)
            url = self._match(name, version, scope)
        if url is None:
            where = f"namespaces {', '.join(scope)}" if scope else (
                f"namespaces {', '.join(self.namespaces)}" if self.namespaces else "any namespace")
            raise Unavailable(f"no Ready ModelDeployment serves {name} v{version} ({where}); "
                              f"create one with POST /deployments")
        return url.rstrip("/")

    async def stop_all(self) -> None:
        return None


def _why_rolled(model: dict[str, Any]) -> str:
    """What moved the served version: the alias the deployment follows, or its spec (a pinned version changed,
    e.g. a promoted canary)."""
    if model.get("alias"):
        return f"@{model['alias']} moved"
    return f"the spec pins v{model.get('version')}"


class PhaseAlerts:
    """Cluster mode: turn ModelDeployment phase changes (written by the operator) into ``deployment.phase`` alerts.

    The operator imports nothing from the API, so the API watches: it lists the namespaces every
    ``deployments_watch_seconds`` and compares phases with what it saw last. With several API
    replicas each change is alerted once: a Redis ``SET NX`` on (uid, phase, Ready transition time).
    Phases already present when the API starts are remembered, not alerted.

    The same poll turns a changed ``status.resolvedVersion`` (the operator re-resolved a moved alias and
    rolled) into one ``deployment.rolled`` alert naming both versions (deduplicated across replicas by
    a short-lived Redis key on (uid, from, to)).
    """

    SEVERITY = {"Degraded": "warning", "Failed": "error"}

    def __init__(self, deployments: KubeDeployments, namespaces: list[str], redis: Any, alerts: Any,
                 interval: float, dedup_prefix: str):
        self.deployments = deployments
        self.namespaces = namespaces
        self.redis = redis
        self.alerts = alerts
        self.interval = interval
        self.prefix = dedup_prefix
        self._seen: dict[str, str] = {}
        self._versions: dict[str, str] = {}  # uid -> status.resolvedVersion last seen
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="deployment-phase-alerts")

    async def stop(self) -> None:
        await cancel_all([self._task])

    async def _loop(self) -> None:
        first = True
        while True:
            try:
                await self.poll(alert=not first)
                first = False
            except MlstackError as e:
                log.warning("ModelDeployment phase watch: %s", e.message)
            except Exception:
                log.exception("ModelDeployment phase watch failed")
            await asyncio.sleep(self.interval)

    async def poll(self, alert: bool = True) -> None:
        seen: dict[str, str] = {}
        versions: dict[str, str] = {}
        for obj in await self.deployments.list_scope(self.namespaces):
            meta, st = obj["metadata"], obj.get("status") or {}
            uid, phase = meta.get("uid") or f"{meta['namespace']}/{meta['name']}", st.get("phase")
            version = st.get("resolvedVersion")
            if version:
                versions[uid] = str(version)
                previous = self._versions.get(uid)
                if alert and previous is not None and previous != str(version):
                    await self._emit_rolled(obj, previous, str(version))
            if not phase:
                continue
            seen[uid] = phase
            if alert and self._seen.get(uid) != phase:
                await self._emit(obj, self._seen.get(uid), phase)
        self._seen = seen
        self._versions = versions

    async def _emit_rolled(self, obj: dict[str, Any], previous: str, version: str) -> None:
        meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        key = f"{self.prefix}:{meta.get('uid')}:rolled:{previous}:{version}"
        # replicas see the change within one interval of each other; a later roll back and forth alerts again
        if not await self.redis.set(key, "1", nx=True, ex=max(int(self.interval * 6), 30)):
            return
        ns, name = meta["namespace"], meta["name"]
        model = spec.get("model") or {}
        try:
            await self.alerts.emit(
                "deployment.rolled", "info", f"ModelDeployment {ns}/{name} rolled {model.get('name')} "
                f"v{previous} -> v{version}",
                f"{_why_rolled(model)}; serving v{version}" + (f" at {st['url']}" if st.get("url") else ""),
                namespace=ns, deployment=name, model=model.get("name"), version=version,
                data={"from": previous, "to": version, "alias": model.get("alias"), "mode": "cluster"})
        except Exception as e:
            log.warning("deployment.rolled alert not sent: %s", e)

    async def _emit(self, obj: dict[str, Any], previous: str | None, phase: str) -> None:
        meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
        key = f"{self.prefix}:{meta.get('uid')}:{phase}:{ready.get('lastTransitionTime', '')}"
        if not await self.redis.set(key, "1", nx=True, ex=7 * 24 * 3600):
            return  # another API replica sent it
        ns, name = meta["namespace"], meta["name"]
        message = ready.get("message", "")
        if phase == "Ready":
            message = f"serving v{st.get('resolvedVersion')} at {st.get('url')}"
        try:
            await self.alerts.emit(
                "deployment.phase", self.SEVERITY.get(phase, "info"), f"ModelDeployment {ns}/{name} is {phase}",
                message, namespace=ns, deployment=name, model=(spec.get("model") or {}).get("name"),
                version=st.get("resolvedVersion"),
                data={"phase": phase, "previous": previous, "reason": ready.get("reason", phase), "mode": "cluster"})
        except Exception as e:
            log.warning("deployment.phase alert not sent: %s", e)
