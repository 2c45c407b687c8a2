"""Status as an explicit state machine (pure; no I/O).

Inputs: whether the spec is valid, the admission decision, the model resolution and the
children's readiness. Output: ``status`` with ``phase`` and the conditions Admitted,
ModelResolved, Available and Ready (``lastTransitionTime`` kept while a condition's status holds).

Phases and the transitions the operator makes::

    Pending   -> Queued | Deploying | Ready (children ready at the first look) | Failed
    Queued    -> Deploying | Ready | Failed (ExceedsQuota)
    Deploying -> Ready | Failed | Queued
    Ready     -> Degraded | Deploying (spec change) | Failed
    Degraded  -> Ready | Deploying | Failed
    Failed    -> Pending | Queued | Deploying | Ready (the model appeared, the spec was fixed, a rejected
                 child was accepted on a retry)

``Failed`` covers: an invalid spec, a model the registry does not have, a deployment that needs more
than the namespace's whole quota (``ExceedsQuota``), and a child the API server refused (the reason and
message are the server's; the operator keeps retrying with backoff). A pod the scheduler cannot place
keeps ``Deploying`` with the scheduler's message on the ``Ready`` condition (reason ``Unschedulable``).
``replicas: 0`` is ``Ready`` with reason ``ScaledToZero`` (nothing serves, by request).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlstack_operator.contract import CONDITION_TYPES, Phase

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.Pending: frozenset({Phase.Queued, Phase.Deploying, Phase.Ready, Phase.Failed}),
    Phase.Queued: frozenset({Phase.Deploying, Phase.Ready, Phase.Failed}),
    Phase.Deploying: frozenset({Phase.Ready, Phase.Failed, Phase.Queued, Phase.Degraded}),
    Phase.Ready: frozenset({Phase.Degraded, Phase.Deploying, Phase.Failed}),
    Phase.Degraded: frozenset({Phase.Ready, Phase.Deploying, Phase.Failed}),
    Phase.Failed: frozenset({Phase.Pending, Phase.Queued, Phase.Deploying, Phase.Ready}),
}


@dataclass(frozen=True)
class ChildState:
    """Readiness of one child: ``desired``/``ready`` replicas, ``ready`` when fully rolled out."""

    kind: str
    name: str
    desired: int
    ready_replicas: int
    ready: bool

    @property
    def available(self) -> bool:
        return self.ready_replicas > 0


def child_state(obj: Mapping[str, Any]) -> ChildState | None:
    """Readiness of a Deployment, RayService or VirtualMachine as its controller reports it."""
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    name = meta.get("name", "")
    if kind == "Deployment":
        desired = spec.get("replicas", 1)
        ready = int(status.get("readyReplicas") or 0)
        current = status.get("observedGeneration", 0) >= meta.get("generation", 0)
        updated = int(status.get("updatedReplicas") or 0) >= desired
        return ChildState(kind, name, desired, ready, bool(current and updated and ready >= desired))
    if kind == "RayService":
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        ok = conds.get("Ready") == "True"
        return ChildState(kind, name, 1, 1 if ok else 0, ok)
    if kind == "Service":  # no readiness of its own: it is there or not (the operator recreates it)
        return ChildState(kind, name, 0, 0, True)
    if kind == "VirtualMachine":
        ok = bool(status.get("ready"))
        return ChildState(kind, name, 1, 1 if ok else 0, ok)
    return None


@dataclass(frozen=True)
class Inputs:
    generation: int | None
    invalid: str | None = None  # message when the spec cannot work at all
    admitted: bool | None = None  # None: not decided yet
    queue_position: int | None = None
    admission_reason: str = ""
    admission_message: str = ""
    resolved_version: str | None = None
    canary_version: str | None = None
    shadow_version: str | None = None  # the version spec.shadow mirrors requests to
    resolve_error: tuple[str, str] | None = None  # (reason, message)
    url: str | None = None
    children: tuple[ChildState, ...] = ()
    child_error: tuple[str, str] | None = None  # (reason, message): the API server refused a child write
    unschedulable: str | None = None  # the scheduler's message for a pod it cannot place
    rollout_note: str = ""  # how rolling updates fit the quota (said on the Admitted condition)


def set_condition(conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
                  now: str, generation: int | None) -> None:
    for c in conditions:
        if c["type"] == type_:
            if c["status"] != status:
                c["lastTransitionTime"] = now
            c.update(status=status, reason=reason, message=message)
            if generation is not None:
                c["observedGeneration"] = generation
            return
    cond = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now}
    if generation is not None:
        cond["observedGeneration"] = generation
    conditions.append(cond)


# the conditions the operator writes; any other type (SLOMet: the monitor's) is another writer's, kept as observed
OPERATOR_CONDITIONS: tuple[str, ...] = ("Admitted", "ModelResolved", "Available", "Ready")


def with_foreign_conditions(last: Mapping[str, Any] | None,
                            observed: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``last`` (the operator's own view of the status) with the conditions it does not own as ``observed`` (the
    object's status as watched) has them: a status write replaces the whole list (merge patch), so the operator
    carries the monitor's ``SLOMet`` along instead of erasing it."""
    foreign = [dict(c) for c in (observed or {}).get("conditions") or [] if c.get("type") not in OPERATOR_CONDITIONS]
    conds = (last or {}).get("conditions") or []
    if [c for c in conds if c.get("type") not in OPERATOR_CONDITIONS] == foreign:
        return last  # nothing new from the other writers (the common case: one comparison per event)
    mine = [c for c in conds if c.get("type") in OPERATOR_CONDITIONS]
    return {**(last or {}), "conditions": mine + foreign}


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def compute(inputs: Inputs, previous: Mapping[str, Any] | None, now: str | None = None) -> dict[str, Any]:
    """The next ``status`` (without the ``kopf`` bookkeeping) from ``inputs`` and the previous status."""
    prev = dict(previous or {})
    now = now or now_rfc3339()
    prev_phase = Phase(prev.get("phase", Phase.Pending))
    conds: list[dict[str, Any]] = [dict(c) for c in prev.get("conditions") or [] if c.get("type") in CONDITION_TYPES]
    gen = inputs.generation
    out: dict[str, Any] = {"observedGeneration": gen} if gen is not None else {}

    def finish(phase: Phase) -> dict[str, Any]:
        out["phase"] = phase.value
        out["conditions"] = sorted(conds, key=lambda c: CONDITION_TYPES.index(c["type"]))
        return out

    if inputs.invalid is not None:
        set_condition(conds, "Ready", "False", "InvalidSpec", inputs.invalid, now, gen)
        return finish(Phase.Failed)

    if inputs.admitted is False and inputs.admission_reason == "ExceedsQuota":
        set_condition(conds, "Admitted", "False", "ExceedsQuota", inputs.admission_message, now, gen)
        set_condition(conds, "Ready", "False", "ExceedsQuota", inputs.admission_message, now, gen)
        out["queuePosition"] = None
        return finish(Phase.Failed)
    if inputs.admitted is False:
        set_condition(conds, "Admitted", "False", inputs.admission_reason or "WaitingForQuota",
                      inputs.admission_message, now, gen)
        set_condition(conds, "Ready", "False", "Queued", f"queued at position {inputs.queue_position}", now, gen)
        out["queuePosition"] = inputs.queue_position
        return finish(Phase.Queued)
    if inputs.admitted:
        message = inputs.admission_message + (f"; {inputs.rollout_note}" if inputs.rollout_note else "")
        set_condition(conds, "Admitted", "True", "Admitted", message, now, gen)
    out["queuePosition"] = None

    if inputs.resolve_error is not None:
        reason, message = inputs.resolve_error
        set_condition(conds, "ModelResolved", "False", reason, message, now, gen)
        set_condition(conds, "Ready", "False", reason, message, now, gen)
        return finish(Phase.Failed)
    if inputs.resolved_version is None:
        return finish(prev_phase if prev_phase != Phase.Failed else Phase.Pending)
    out["resolvedVersion"] = inputs.resolved_version
    out["canaryVersion"] = inputs.canary_version
    msg = f"serving version {inputs.resolved_version}"
    if inputs.canary_version:
        msg += f", canary {inputs.canary_version}"
    if inputs.shadow_version or prev.get("shadowVersion"):  # (None: a merge patch removes it)
        out["shadowVersion"] = inputs.shadow_version
    if inputs.shadow_version:
        msg += f", shadow {inputs.shadow_version}"
    set_condition(conds, "ModelResolved", "True", "Resolved", msg, now, gen)
    out["url"] = inputs.url

    if inputs.child_error is not None:
        reason, message = inputs.child_error
        set_condition(conds, "Ready", "False", reason, message, now, gen)
        return finish(Phase.Failed)

    children = inputs.children
    desired = sum(c.desired for c in children)
    ready_n = sum(c.ready_replicas for c in children)
    out["replicas"] = desired
    out["readyReplicas"] = ready_n
    available = bool(children) and all(c.available or c.desired == 0 for c in children)
    ready = bool(children) and all(c.ready for c in children)
    set_condition(conds, "Available", "True" if available else "False",
                  "MinimumReplicasAvailable" if available else "ReplicasUnavailable",
                  f"{ready_n}/{desired} replicas ready", now, gen)
    if ready and desired == 0 and children:
        set_condition(conds, "Ready", "True", "ScaledToZero", "scaled to zero (replicas: 0): nothing serves", now,
                      gen)
        return finish(Phase.Ready)
    if ready:
        set_condition(conds, "Ready", "True", "Ready", "all children report ready", now, gen)
        return finish(Phase.Ready)
    if inputs.unschedulable:
        set_condition(conds, "Ready", "False", "Unschedulable", inputs.unschedulable, now, gen)
        return finish(Phase.Degraded if prev_phase in (Phase.Ready, Phase.Degraded) and available
                      else Phase.Deploying)
    not_ready = ", ".join(f"{c.kind}/{c.name}" for c in children if not c.ready) or "children not created"
    if prev_phase in (Phase.Ready, Phase.Degraded) and available:
        set_condition(conds, "Ready", "False", "Degraded", f"not ready: {not_ready}", now, gen)
        return finish(Phase.Degraded)
    set_condition(conds, "Ready", "False", "Deploying", f"waiting for {not_ready}", now, gen)
    return finish(Phase.Deploying)


def essential(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status without timestamps and bookkeeping, to decide whether a write is needed."""
    status = dict(status or {})
    status.pop("kopf", None)
    conds = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.pop("conditions", None) or []]
    return {**{k: v for k, v in status.items() if v is not None}, "conditions": conds}


def phase_of(status: Mapping[str, Any] | None) -> Phase:
    return Phase((status or {}).get("phase") or Phase.Pending)


def newer_version(known: str | None, seen: str | None) -> str | None:
    """The newer of two resourceVersions of one object (a watch event may arrive after our own write's answer).
    etcd-backed API servers number them; anything else: the one seen last."""
    if known is None or seen is None:
        return seen or known
    try:
        return seen if int(seen) >= int(known) else known
    except ValueError:
        return seen
