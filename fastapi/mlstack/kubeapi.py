"""The API's Kubernetes client (cluster mode): one connection, one way to call it, one error mapping.

The ``kubernetes`` client is sync: every call runs in a thread with a timeout. Connection: the
``MLSTACK_KUBE_SERVER`` override (a bare API server URL), else the in-cluster service account, else kubeconfig.
The API server's answers map to domain errors: 404 -> NotFound, 409 -> Conflict (and the 403 that
NamespaceLifecycle answers for a create in a namespace being deleted), 400/422 (schema, CEL rules,
validation) -> InvalidInput with its message, anything else (401/403 of the API's own ServiceAccount
included) -> Unavailable; so does an unreachable API server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlstack.errors import Conflict, InvalidInput, MlstackError, NotFound, Unavailable

# the cause a real API server gives (403) for a create in a namespace that is being deleted (NamespaceLifecycle)
TERMINATING = "NamespaceTerminating"


class NamespaceTerminating(Conflict):
    """A write refused because its namespace is being deleted (409, not "already exists")."""


class KubeSettings(BaseSettings):
    """How the API (and the cluster monitor) reach the Kubernetes API (env prefix ``MLSTACK_``)."""

    model_config = SettingsConfigDict(env_prefix="MLSTACK_", env_file=None, extra="ignore")

    kube_server: str | None = Field(None, description="a bare API server URL; unset: in-cluster/kubeconfig")
    kube_insecure: bool = False
    kubeconfig: Path | None = Field(None, description="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    kube_context: str | None = None
    kube_timeout: float = Field(10.0, gt=0, le=300, description="timeout of one Kubernetes API call")



def connect(ds: KubeSettings) -> Any:
    """A ``kubernetes.client.ApiClient`` (blocking: call it in a thread)."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    cfg = k8s.Configuration()
    if ds.kube_server:
        cfg.host = ds.kube_server
        cfg.verify_ssl = not ds.kube_insecure
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except k8s_config.ConfigException:
            try:
                k8s_config.load_kube_config(config_file=str(ds.kubeconfig) if ds.kubeconfig else None,
                                            context=ds.kube_context, client_configuration=cfg)
            except (k8s_config.ConfigException, OSError) as e:
                raise Unavailable(f"no Kubernetes configuration (not in a cluster, kubeconfig: {e})") from None
    return k8s.ApiClient(cfg)


def _body(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(exc.body)
    except (TypeError, ValueError, AttributeError):
        return {}
    return body if isinstance(body, dict) else {}


def message(exc: Any) -> str:
    body = _body(exc)
    if body:
        return str(body.get("message") or body)
    return str(getattr(exc, "reason", "") or exc)


def causes(exc: Any) -> set[str]:
    """The ``details.causes[].reason`` of a Kubernetes Status (e.g. ``NamespaceTerminating``)."""
    details = _body(exc).get("details") or {}
    return {str(c.get("reason")) for c in details.get("causes") or [] if isinstance(c, dict)}


def api_error(what: str, status: int, msg: str, reasons: set[str] | frozenset[str] = frozenset()) -> MlstackError:
    if status == 404:
        return NotFound(f"{what}: {msg}")
    if status == 409:
        return Conflict(f"{what}: {msg}")
    if status == 403 and TERMINATING in reasons:  # the namespace is being deleted: not the API's rights
        return NamespaceTerminating(f"{what}: the namespace is being deleted: {msg}")
    if status in (400, 422):
        return InvalidInput(f"{what}: {msg}")
    if status in (401, 403):
        return Unavailable(f"{what}: the API may not do this in the cluster ({status}): {msg}")
    return Unavailable(f"{what}: Kubernetes API answered {status}: {msg}")


async def call(what: str, fn: Any, *args: Any, timeout: float, raw: bool = False, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a thread. ``raw``: the answer as a plain dict (not the client's models)."""
    from kubernetes.client.exceptions import ApiException

    try:
        if raw:
            resp = await asyncio.to_thread(fn, *args, _preload_content=False, _request_timeout=timeout, **kwargs)
            return json.loads(resp.data) if resp.data else {}
        return await asyncio.to_thread(fn, *args, _request_timeout=timeout, **kwargs)
    except ApiException as e:
        raise api_error(what, e.status, message(e), causes(e)) from None
    except MlstackError:
        raise
    except Exception as e:  # connection refused, timeouts, TLS
        raise Unavailable(f"{what}: Kubernetes API unreachable: {type(e).__name__}: {e}") from None
