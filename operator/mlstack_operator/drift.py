"""Patch-if-different: does a live child still carry what the builder wants? (pure)

The API server adds defaults and controllers add fields, so "same" means "the desired object is
contained in the live one": every desired key present with a contained value; lists of the same
length, item by item; resource quantities compare as quantities (``0.5`` == ``500m``), since the API
server normalises them and a string compare would patch on every reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.utils.quantity import parse_quantity

QUANTITY_MAPS = frozenset({"requests", "limits"})  # resources.{requests,limits}: values are quantities


def same_quantity(live: Any, desired: Any) -> bool:
    """``"0.5"`` and ``"500m"``, ``"1.5Gi"`` and ``"1536Mi"`` are the same (the API server normalises them)."""
    if live == desired:
        return True
    if not isinstance(live, str | int | float) or not isinstance(desired, str | int | float):
        return False
    try:
        return bool(parse_quantity(live) == parse_quantity(desired))
    except ValueError:
        return False


REPLICAS_FROM = "mlstack.io/replicas-from"  # builders.ANNOTATION_REPLICAS_FROM (drift imports no builder)
EXACT = frozenset({"selector"})  # an extra key in a selector selects other pods: compared exactly


def contains(live: Any, desired: Any, quantities: bool = False) -> bool:
    if type(desired) is dict or isinstance(desired, Mapping):  # (dict first: a Mapping test is an ABC's, slower)
        return (type(live) is dict or isinstance(live, Mapping)) and all(
            k in live and (live[k] == v if k in EXACT else contains(live[k], v, quantities or k in QUANTITY_MAPS))
            for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            contains(a, b) for a, b in zip(live, desired, strict=True))
    if quantities:
        return same_quantity(live, desired)
    return bool(live == desired)


def drift_patch(desired: Mapping[str, Any], live: Mapping[str, Any], *,
                spec_in_sync: bool = False) -> dict[str, Any] | None:
    """A merge patch bringing ``live`` back to ``desired`` (spec, labels, annotations, owners), or None.
    ``spec_in_sync``: the live spec is known to contain the desired one (not walked again)."""
    patch: dict[str, Any] = {}
    wanted = desired.get("spec", {})
    if REPLICAS_FROM in ((desired.get("metadata") or {}).get("annotations") or {}):
        wanted = {k: v for k, v in wanted.items() if k != "replicas"}  # an HPA owns the count
    if not spec_in_sync and not contains(live.get("spec"), wanted):
        spec = dict(wanted)
        for key in EXACT & spec.keys():  # a merge patch keeps extra keys unless they are set to null
            extra = set((live.get("spec") or {}).get(key) or {}) - set(spec[key] or {})
            if extra and isinstance(spec[key], Mapping):
                spec[key] = {**spec[key], **dict.fromkeys(extra)}
        patch["spec"] = spec
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


InSync = dict[Any, tuple[Mapping[str, Any], Any]]  # key -> (desired, the live spec last found to contain it)


def drifted(in_sync: InSync, key: Any, desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """``drift_patch(desired, live) is not None``, the spec part remembered in ``in_sync``: not walked again while
    the live spec equals the one last found in sync with this same ``desired`` object (most child events are a
    controller's status updates: an equality test instead of a walk through the whole pod template; the small
    labels, annotations and owners are always compared). ``live`` is a fresh object per event (as a watch parses
    them), never one changed in place."""
    spec = live.get("spec")
    last = in_sync.get(key)
    known = last is not None and last[0] is desired and last[1] == spec
    if drift_patch(desired, live, spec_in_sync=known) is not None:
        in_sync.pop(key, None)
        return True
    if not known:
        in_sync[key] = (desired, spec)
    return False
