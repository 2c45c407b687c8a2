"""Pick the authority at startup (``Services.auth``): off, local tokens, or Kubernetes."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any

from mlstack.auth.base import Authority
from mlstack.auth.local import LocalTokens, Open
from mlstack.auth.settings import AuthSettings
from mlstack.kubeapi import KubeSettings

log = logging.getLogger(__name__)


def resolve_mode(settings: AuthSettings, api_mode: str, has_tokens: bool) -> str:
    if settings.auth_mode != "auto":
        return settings.auth_mode
    if api_mode == "cluster":
        return "kubernetes"
    return "tokens" if has_tokens else "off"


async def start(api_mode: str, stack: AsyncExitStack, namespace: str, settings: AuthSettings,
                kube_settings: KubeSettings, kube: Any = None) -> Authority:
    """Who calls and what they may do. ``api_mode``: ``Settings.mode``; ``namespace``: the deployments' default
    namespace (where a request naming none goes); ``kube``: the API's Kubernetes client (``ApiClient``), reused in
    Kubernetes mode; without one this connects its own (closed by ``stack``)."""
    s = settings
    tokens = s.tokens()
    mode = resolve_mode(s, api_mode, bool(tokens))
    auth: Authority
    if mode == "tokens":
        if not tokens:
            raise ValueError("MLSTACK_AUTH_MODE=tokens but no token is set (MLSTACK_AUTH_TOKENS[_FILE])")
        auth = LocalTokens(tokens, namespace)
    elif mode == "kubernetes":
        from mlstack.auth.kube import KubeAuthority
        from mlstack.kubeapi import connect

        if kube is None:
            kube = await asyncio.to_thread(connect, kube_settings)
            stack.push_async_callback(asyncio.to_thread, kube.close)
        auth = KubeAuthority(kube, s, namespace, timeout=kube_settings.kube_timeout)
    else:
        log.warning("authentication is OFF: every caller is an admin. Set MLSTACK_AUTH_TOKENS_FILE "
                    "(./init.sh --local does) or MLSTACK_AUTH_MODE=kubernetes")
        auth = Open(namespace)
    log.info("auth mode: %s", mode)
    return auth
