"""Priority admission against a namespace's ResourceQuota (pure; no I/O).

In each namespace, pending ModelDeployments are admitted highest ``priority`` first (FIFO by
creation time within a priority) while the summed requests of the admitted ones fit every
ResourceQuota's ``requests.cpu`` / ``requests.memory`` / ``requests.nvidia.com/gpu``. Admission is
strict: the first one that does not fit blocks the ones behind it (no backfilling, so a large
high-priority deployment is not starved by small ones). Admitted deployments are never preempted;
a quota that shrinks only stops new admissions. A deployment that could not fit even in an empty
namespace fails at once (``ExceedsQuota``) instead of blocking the queue. No quota in the namespace:
everything is admitted.
Node placement stays the scheduler's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from mlstack_operator.builders import base_replicas, canary_split, shadow_replicas
from mlstack_operator.contract import ModelDeployment, Runtime, Server

ZERO = Decimal(0)
EXCEEDS_QUOTA = "ExceedsQuota"


@dataclass(frozen=True)
class Demand:
    cpu: Decimal = ZERO  # cores
    memory: Decimal = ZERO  # bytes
    gpu: Decimal = ZERO

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)

    def human(self) -> str:
        parts = [f"cpu={_fmt(self.cpu)}", f"memory={_fmt(self.memory / (1 << 20))}Mi"]
        if self.gpu:
            parts.append(f"gpu={_fmt(self.gpu)}")
        return ", ".join(parts)


def _fmt(d: Decimal) -> str:
    return f"{d.normalize():f}" if d == d.to_integral() else f"{d:.3f}".rstrip("0")


@dataclass(frozen=True)
class Limits:
    """The tightest hard limits over a namespace's ResourceQuotas; None = unbounded."""

    cpu: Decimal | None = None
    memory: Decimal | None = None
    gpu: Decimal | None = None

    def fits(self, d: Demand) -> bool:
        return all(
            limit is None or used <= limit
            for limit, used in ((self.cpu, d.cpu), (self.memory, d.memory), (self.gpu, d.gpu))
        )

    def merge(self, other: Limits) -> Limits:
        def tight(a: Decimal | None, b: Decimal | None) -> Decimal | None:
            return b if a is None else a if b is None else min(a, b)

        return Limits(tight(self.cpu, other.cpu), tight(self.memory, other.memory), tight(self.gpu, other.gpu))

    def human(self) -> str:
        """Only the resources the quota limits (no ``memory=0Mi`` for a quota without a memory limit)."""
        return human_parts(self, self.cpu, self.memory, self.gpu)

    def used(self, used: Demand) -> str:
        """``used`` for the resources the quota limits."""
        return human_parts(self, *(u if lim is not None else None for lim, u in
                                   ((self.cpu, used.cpu), (self.memory, used.memory), (self.gpu, used.gpu))))

    def free(self, used: Demand) -> str:
        """What the limits leave after ``used``, for the resources they limit."""
        def left(limit: Decimal | None, u: Decimal) -> Decimal | None:
            return None if limit is None else limit - u

        return human_parts(self, left(self.cpu, used.cpu), left(self.memory, used.memory), left(self.gpu, used.gpu))


def human_parts(_: Limits, cpu: Decimal | None, memory: Decimal | None, gpu: Decimal | None) -> str:
    parts = []
    if cpu is not None:
        parts.append(f"cpu={_fmt(cpu)}")
    if memory is not None:
        parts.append(f"memory={_fmt(memory / (1 << 20))}Mi")
    if gpu is not None:
        parts.append(f"gpu={_fmt(gpu)}")
    return ", ".join(parts) or "no limits"


def limits_from_quota(spec: Mapping[str, Any]) -> Limits:
    """Hard limits of one ResourceQuota spec (``requests.cpu`` or the older bare ``cpu`` key)."""
    hard = spec.get("hard") or {}

    def pick(*keys: str) -> Decimal | None:
        for key in keys:
            if key in hard:
                return parse_quantity(hard[key])
        return None

    return Limits(
        cpu=pick("requests.cpu", "cpu"),
        memory=pick("requests.memory", "memory"),
        gpu=pick("requests.nvidia.com/gpu"),
    )


def merge_limits(quotas: Iterable[Limits]) -> Limits | None:
    out: Limits | None = None
    for q in quotas:
        out = q if out is None else out.merge(q)
    return out


def per_replica(md: ModelDeployment) -> Demand:
    """What one replica (pod or VM) of ``md`` requests."""
    spec = md.spec
    r = spec.resources
    memory = spec.vm.memory if spec.runtime == Runtime.vm and spec.vm else r.memory
    return Demand(parse_quantity(r.cpu), parse_quantity(memory), Decimal(r.gpu))


def demand(md: ModelDeployment) -> Demand:
    """What ``md`` requests at its minimum scale (HPA/Serve autoscaling may add more later)."""
    spec = md.spec
    one = per_replica(md)
    n = base_replicas(md)
    base = n
    if spec.canary is not None and not (spec.runtime == Runtime.pod and spec.server == Server.rayserve):
        n = sum(canary_split(n, spec.canary.traffic_percent))
    if spec.shadow is not None:  # the shadow's own replicas (the contract allows it on onnx and vm only)
        n += shadow_replicas(base, spec.shadow.percent)
    return Demand(one.cpu * n, one.memory * n, one.gpu * n)


def room_for_one_more(candidates: Iterable[Candidate], limits: Limits | None, md: ModelDeployment) -> bool:
    """Whether the namespace's quota leaves room for one extra replica of ``md`` beyond what the admitted
    deployments demand (a rolling update's surge pod); no quota: always."""
    if limits is None:
        return True
    used = Demand()
    for c in candidates:
        if c.admitted:
            used = used + c.demand
    return limits.fits(used + per_replica(md))


@dataclass(frozen=True)
class Candidate:
    name: str
    priority: int
    created: str  # RFC 3339 creationTimestamp: sorts chronologically
    demand: Demand
    admitted: bool = False


@dataclass(frozen=True)
class Decision:
    admitted: bool
    position: int | None = None  # 1-based place in the queue when not admitted
    reason: str = "Admitted"
    message: str = ""


def queue_order(c: Candidate) -> tuple[int, str, str]:
    return (-c.priority, c.created, c.name)


def decide(candidates: Iterable[Candidate], limits: Limits | None) -> dict[str, Decision]:
    """Admission for every candidate of one namespace."""
    cands = list(candidates)
    if limits is None:
        return {c.name: Decision(True, message="no ResourceQuota in the namespace") for c in cands}
    used = Demand()
    out: dict[str, Decision] = {}
    for c in cands:
        if c.admitted:
            used = used + c.demand
            out[c.name] = Decision(True, message="admitted earlier")
    pending = sorted((c for c in cands if not c.admitted), key=queue_order)
    blocker: Candidate | None = None
    position = 0
    for c in pending:
        if not limits.fits(c.demand):  # could never fit, even alone: fail it now, don't block the queue
            out[c.name] = Decision(False, reason=EXCEEDS_QUOTA, message=(
                f"needs {limits.used(c.demand)}, more than the namespace's whole ResourceQuota allows "
                f"({limits.human()}): lower spec.resources/replicas or raise the quota"))
            continue
        if blocker is None and limits.fits(used + c.demand):
            used = used + c.demand
            out[c.name] = Decision(True, message=f"fits the ResourceQuota ({limits.used(used)} of {limits.human()})")
            continue
        position += 1
        if blocker is None:
            blocker = c
            message = (f"waiting for quota: needs {limits.used(c.demand)}; the ResourceQuota leaves "
                       f"{limits.free(used)} after admitted deployments")
        else:
            message = f"waiting behind {blocker.name} (priority {blocker.priority}) for quota"
        out[c.name] = Decision(False, position=position, reason="WaitingForQuota", message=message)
    return out
