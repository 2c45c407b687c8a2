"""A thin async Kubernetes client (aiohttp, raw JSON dicts) for the children and the status.

Raw dicts keep the per-request CPU low (no model (de)serialisation). Connection: the settings'
``kube_server`` (e.g. `kubectl proxy`), else in-cluster service account, else kubeconfig (both loaded
by the ``kubernetes`` package, which also refreshes rotated service-account tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

try:  # 2-3x faster parsing of watch events (most of the operator's CPU is reading them)
    from orjson import dumps as json_dumps
    from orjson import loads as json_loads
except ImportError:  # pragma: no cover
    json_loads, json_dumps = json.loads, lambda obj: json.dumps(obj).encode()

from mlstack_operator.settings import OperatorSettings

PLURALS: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("ray.io/v1", "RayService"): "rayservices",
    ("kubevirt.io/v1", "VirtualMachine"): "virtualmachines",
    ("mlstack.io/v1alpha1", "ModelDeployment"): "modeldeployments",
    ("v1", "ResourceQuota"): "resourcequotas",
    ("v1", "Event"): "events",
}


TOKEN_REFRESH_SECONDS = 60.0  # kubelet rotates projected service-account tokens well before they expire (1 h)
KEEPALIVE_SECONDS = 120.0  # keep idle connections: a new TLS handshake costs more CPU than a request
CONNECTIONS = 48  # the child watches hold 5 of them


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        return self.status in (408, 409, 425, 429) or self.status >= 500


def path_for(api_version: str, kind: str, namespace: str, name: str | None = None,
             subresource: str | None = None) -> str:
    plural = PLURALS[(api_version, kind)]
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural}"
    if name is not None:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


def path_of(obj: Mapping[str, Any], *, collection: bool = False, subresource: str | None = None) -> str:
    meta = obj["metadata"]
    return path_for(obj["apiVersion"], obj["kind"], meta["namespace"], None if collection else meta["name"],
                    subresource)


def bearer(cfg: Any) -> str | None:
    """The ``Authorization`` header value of a ``kubernetes.client.Configuration``, or None (client certs).

    ``auth_settings()`` is the client's own answer and refreshes rotated service-account tokens; since
    kubernetes-client 36 the loaders store the token under ``api_key["BearerToken"]`` (before: "authorization"),
    which a direct ``get_api_key_with_prefix("authorization")`` missed: every request went out anonymous.
    """
    setting = cfg.auth_settings().get("BearerToken")
    return setting.get("value") if setting else None


def session(connector: aiohttp.BaseConnector, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
    """The API server sets no cookies: no cookie jar to filter on every request (a few % of the operator's CPU)."""
    return aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar())


class KubeClient:
    def __init__(self, server: str, session: aiohttp.ClientSession, token: Any = None) -> None:
        self.server = server.rstrip("/")
        self.session = session
        self._token = token  # kubernetes.client.Configuration (refreshes tokens) or None
        self._auth: tuple[str | None, float] = (None, -TOKEN_REFRESH_SECONDS - 1.0)

    @classmethod
    async def connect(cls, settings: OperatorSettings) -> KubeClient:
        timeout = aiohttp.ClientTimeout(total=30, sock_connect=10)
        if settings.kube_server:
            ssl_ctx: ssl.SSLContext | bool = False if settings.kube_insecure else ssl.create_default_context()
            connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS)
            return cls(settings.kube_server, session(connector, timeout))

        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        cfg = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=cfg)
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else False
        if ctx and cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        connector = aiohttp.TCPConnector(ssl=ctx, limit=CONNECTIONS, keepalive_timeout=KEEPALIVE_SECONDS)
        return cls(cfg.host, session(connector, timeout), cfg)

    async def close(self) -> None:
        await self.session.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token is not None:
            now = time.monotonic()
            if now - self._auth[1] > TOKEN_REFRESH_SECONDS:  # re-read (a rotated token) now and then, not per request
                self._auth = (bearer(self._token), now)
            if self._auth[0]:
                headers["Authorization"] = self._auth[0]
        return headers

    async def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = content_type
        data = json_dumps(body) if body is not None else None
        try:
            async with self.session.request(method, self.server + path, data=data, params=params,
                                            headers=headers) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    reason, message = resp.reason or "", payload.decode(errors="replace")[:500]
                    try:
                        err = json.loads(payload)
                        reason, message = err.get("reason", reason), err.get("message", message)
                    except ValueError:
                        pass
                    raise ApiError(resp.status, str(reason), str(message))
                return json_loads(payload) if payload else {}
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            raise ApiError(503, "Unreachable", f"{method} {path}: {e!r}") from e

    async def watch(self, path: str, params: Mapping[str, str], timeout: float) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request (``watch=1`` and the caller's params: resourceVersion, labelSelector,
        allowWatchBookmarks, timeoutSeconds), parsed line by line until the server ends the stream. A refused
        request raises ApiError; an ``ERROR`` event (e.g. 410 Gone) is yielded for the caller to act on."""
        rto = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout)
        try:
            async with self.session.get(self.server + path, params={**params, "watch": "1"}, headers=self._headers(),
                                        timeout=rto) as resp:
                if resp.status >= 400:
                    payload = await resp.read()
                    try:
                        err = json.loads(payload)
                        reason, message = err.get("reason", resp.reason or ""), err.get("message", "")
                    except ValueError:
                        reason, message = resp.reason or "", payload.decode(errors="replace")[:500]
                    raise ApiError(resp.status, str(reason), str(message))
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    if b"\n" in chunk:
                        *lines, buf = buf.split(b"\n")
                        for line in lines:
                            if line.strip():
                                yield json_loads(line)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as e:
            raise ApiError(503, "Unreachable", f"watch {path}: {e!r}") from e

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list(self, path: str, label_selector: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in label_selector.items())} if label_selector else None
        return list((await self.request("GET", path, params=params)).get("items") or [])

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path_of(obj, collection=True), body=obj)

    async def patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    async def delete(self, path: str) -> bool:
        try:
            await self.request("DELETE", path, body={"propagationPolicy": "Background"})
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise


class Reflector:
    """List, then watch, one kind of object (a label selector, server-side); ``on_event(type, obj)`` for each
    change, synchronously (it must be quick: it indexes and spawns, never awaits). The watch resumes from the
    last resourceVersion (bookmarks keep it fresh while nothing changes); a 410 Gone or a broken stream relists,
    and objects that vanished meanwhile come as ``DELETED``. A kind the server does not serve (a CRD not
    installed yet) is re-tried every ``absent_retry`` seconds, or at once after ``wake()``."""

    def __init__(self, kube: KubeClient, api_version: str, kind: str, selector: str, on_event: Any, *,
                 namespace: str | None = None, server_timeout: int = 600, absent_retry: float = 60.0,
                 log: Any = None) -> None:
        plural = PLURALS[(api_version, kind)]
        root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        self.path = f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"
        self.kube, self.api_version, self.kind, self.selector = kube, api_version, kind, selector
        self.on_event, self.server_timeout, self.absent_retry = on_event, server_timeout, absent_retry
        self.known: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}  # (ns, name) -> (resourceVersion, labels)
        self.absent = False
        self.synced = asyncio.Event()  # listed once (or found absent): the index is complete
        self._wake = asyncio.Event()
        self.log = log

    def wake(self) -> None:
        """The kind may exist now (the operator just created one): stop waiting for it."""
        if self.absent:
            self._wake.set()

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                rv = await self._list()
                self.absent, delay = False, 1.0
                self.synced.set()
                while rv is not None:
                    rv = await self._watch(rv)
            except ApiError as e:
                if e.status == 404:  # not served (yet)
                    self.absent = True
                    self.synced.set()
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.absent_retry)
                    continue
                if e.status != 410 and self.log is not None:
                    self.log.warning(f"watch {self.path}: {e}; relisting in {delay:.0f}s")
                await asyncio.sleep(delay if e.status != 410 else 0)
                delay = min(30.0, delay * 2)

    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        try:
            self.on_event(type_, obj)
        except Exception as e:  # one bad object never stops the watch
            if self.log is not None:
                self.log.exception(f"watch {self.path}: handling {type_} failed: {e!r}")

    async def _list(self) -> str:
        answer = await self.kube.request("GET", self.path, params={"labelSelector": self.selector})
        seen: set[tuple[str, str]] = set()
        for obj in answer.get("items") or []:
            obj.setdefault("apiVersion", self.api_version)
            obj.setdefault("kind", self.kind)
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            seen.add(key)
            old = self.known.get(key)
            if old is None or old[0] != meta.get("resourceVersion"):
                self.known[key] = (meta.get("resourceVersion", ""), meta.get("labels") or {})
                self._emit("ADDED" if old is None else "MODIFIED", obj)
        for key in [k for k in self.known if k not in seen]:
            _, labels = self.known.pop(key)
            self._emit("DELETED", {"apiVersion": self.api_version, "kind": self.kind,
                                   "metadata": {"namespace": key[0], "name": key[1], "labels": labels}})
        return str((answer.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch(self, rv: str) -> str | None:
        """One watch request; the resourceVersion to resume from, or None to relist."""
        params = {"resourceVersion": rv, "allowWatchBookmarks": "true", "labelSelector": self.selector,
                  "timeoutSeconds": str(self.server_timeout)}
        async for event in self.kube.watch(self.path, params, timeout=self.server_timeout + 60):
            type_, obj = event.get("type"), event.get("object") or {}
            if type_ == "ERROR":  # 410 Gone (resourceVersion too old): relist; another error: relist after a pause
                if obj.get("code") == 410:
                    return None
                raise ApiError(int(obj.get("code") or 500), str(obj.get("reason", "")), str(obj.get("message", "")))
            rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
            if type_ == "BOOKMARK":
                continue
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            if type_ == "DELETED":
                self.known.pop(key, None)
            else:
                self.known[key] = (meta.get("resourceVersion", ""), meta.get("labels") or {})
            obj.setdefault("kind", self.kind)
            self._emit(str(type_), obj)
        return rv
