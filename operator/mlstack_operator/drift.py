"""Patch-if-different: does a live child still carry what the builder wants? (pure)

The API server adds defaults and controllers add fields, so "same" means "the desired object is
contained in the live one": every desired key present with a contained value; lists of the same
length, item by item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def contains(live: Any, desired: Any) -> bool:
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            contains(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)


def drift_patch(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch bringing ``live`` back to ``desired`` (spec, labels, annotations, owners), or None."""
    patch: dict[str, Any] = {}
    if not contains(live.get("spec"), desired.get("spec", {})):
        patch["spec"] = desired.get("spec", {})
    dmeta, lmeta = desired.get("metadata", {}), live.get("metadata", {})
    meta: dict[str, Any] = {}
    for key in ("labels", "annotations"):
        if not contains(lmeta.get(key) or {}, dmeta.get(key) or {}):
            meta[key] = dmeta.get(key)
    owners = dmeta.get("ownerReferences")
    if owners and not all(any(contains(o, d) for o in lmeta.get("ownerReferences") or []) for d in owners):
        meta["ownerReferences"] = owners
    if meta:
        patch["metadata"] = meta
    return patch or None
