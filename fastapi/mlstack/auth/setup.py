"""Pick the authority at startup (``svc.auth``): off, local tokens, or Kubernetes."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any

from mlstack.auth.base import Authority
from mlstack.auth.local import LocalTokens, Open
from mlstack.auth.settings import AuthSettings, get_auth_settings

log = logging.getLogger(__name__)


def resolve_mode(settings: AuthSettings, api_mode: str, has_tokens: bool) -> str:
    if settings.auth_mode != "auto":
        return settings.auth_mode
    if api_mode == "cluster":
        return "kubernetes"
    return "tokens" if has_tokens else "off"


async def start(svc: Any, stack: AsyncExitStack, namespace: str, settings: AuthSettings | None = None) -> Authority:
    """Set ``svc.auth``. Cluster mode reuses ``svc.kube`` (the API's Kubernetes client) when there is one.
    ``namespace``: the deployments' default namespace (where a request naming none goes)."""
    s = settings or get_auth_settings()
    tokens = s.tokens()
    mode = resolve_mode(s, svc.settings.mode, bool(tokens))
    if mode == "tokens":
        if not tokens:
            raise ValueError("MLSTACK_AUTH_MODE=tokens but no token is set (MLSTACK_AUTH_TOKENS[_FILE])")
        svc.auth = LocalTokens(tokens, namespace)
    elif mode == "kubernetes":
        from mlstack.auth.kube import KubeAuthority
        from mlstack.kubeapi import connect, get_kube_settings

        if svc.kube is None:
            svc.kube = await asyncio.to_thread(connect, get_kube_settings())
            stack.push_async_callback(asyncio.to_thread, svc.kube.close)
        svc.auth = KubeAuthority(svc.kube, s, namespace, timeout=get_kube_settings().kube_timeout)
    else:
        log.warning("authentication is OFF: every caller is an admin. Set MLSTACK_AUTH_TOKENS_FILE "
                    "(./init.sh --local does) or MLSTACK_AUTH_MODE=kubernetes")
        svc.auth = Open(namespace)
    log.info("auth mode: %s", mode)
    return svc.auth
