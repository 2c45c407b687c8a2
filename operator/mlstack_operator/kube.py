"""A thin async Kubernetes client (aiohttp, raw JSON dicts) for the children and the status.

Raw dicts keep the per-request CPU low (no model (de)serialisation). Connection: the settings'
``kube_server`` (e.g. `kubectl proxy`), else in-cluster service account, else kubeconfig (both loaded
by the ``kubernetes`` package, which also refreshes rotated service-account tokens).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

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


class KubeClient:
    def __init__(self, server: str, session: aiohttp.ClientSession, token: Any = None) -> None:
        self.server = server.rstrip("/")
        self.session = session
        self._token = token  # kubernetes.client.Configuration (refreshes tokens) or None

    @classmethod
    async def connect(cls, settings: OperatorSettings) -> KubeClient:
        timeout = aiohttp.ClientTimeout(total=30, sock_connect=10)
        if settings.kube_server:
            ssl_ctx: ssl.SSLContext | bool = False if settings.kube_insecure else ssl.create_default_context()
            connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=32)
            return cls(settings.kube_server, aiohttp.ClientSession(connector=connector, timeout=timeout))

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
        connector = aiohttp.TCPConnector(ssl=ctx, limit=32)
        return cls(cfg.host, aiohttp.ClientSession(connector=connector, timeout=timeout), cfg)

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if self._token is not None:
            auth = bearer(self._token)
            if auth:
                headers["Authorization"] = auth
        data = json.dumps(body) if body is not None else None
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
                return json.loads(payload) if payload else {}
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            raise ApiError(503, "Unreachable", f"{method} {path}: {e!r}") from e

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
