from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from tests.k8s.controlplane import Kube


@pytest.fixture
def ns(k8s_admin: Kube, request) -> Iterator[str]:
    """A fresh namespace per test (unique per run: MLSTACK_TEST_KUBECONFIG clusters outlive runs), deleted after."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.removeprefix("test_").lower())[:30].strip("-")
    name = f"e2e-{secrets.token_hex(2)}-{slug}"
    k8s_admin.ensure_namespace(name)
    yield name
    k8s_admin.delete(f"/api/v1/namespaces/{name}")
