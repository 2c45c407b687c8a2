"""Least privilege, measured: what a ServiceAccount asked the API server for (its audit log) against what its
ClusterRole grants, as (apiGroup, resource[/subresource], verb) triples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def audit_events(path: Path, username: str) -> list[dict[str, Any]]:
    """The completed requests of ``username`` in an audit log (one JSON event per line)."""
    return [e for e in map(json.loads, path.read_text().splitlines())
            if e.get("user", {}).get("username") == username and e.get("stage") == "ResponseComplete"]


def used_grants(events: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """What the requests needed; discovery (/api, /apis, open to every authenticated user) left out."""
    used = set()
    for e in events:
        ref = e.get("objectRef")
        if not ref:
            continue
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, e["verb"]))
    return used


def cluster_role_grants(rbac_yaml: Path) -> set[tuple[str, str, str]]:
    """What the (one) ClusterRole of a manifest file grants."""
    role = next(d for d in yaml.safe_load_all(rbac_yaml.read_text()) if d and d["kind"] == "ClusterRole")
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}
