"""Priority admission against ResourceQuotas (pure)."""

from __future__ import annotations

from decimal import Decimal

from mlstack_operator.admission import Candidate, Demand, Limits, decide, demand, limits_from_quota, merge_limits
from mlstack_operator.contract import ModelDeployment

ONE = Demand(Decimal(1), Decimal(1 << 30))


def cand(name: str, priority: int, created: str, d: Demand = ONE, admitted: bool = False) -> Candidate:
    return Candidate(name, priority, created, d, admitted)


def test_no_quota_admits_everything():
    out = decide([cand("a", 0, "1"), cand("b", 5, "2")], None)
    assert all(d.admitted for d in out.values())


def test_priority_then_fifo_while_it_fits():
    limits = Limits(cpu=Decimal(2))
    out = decide([cand("low", 1, "2025-01-01T00:00:01Z"), cand("high", 9, "2025-01-01T00:00:03Z"),
                  cand("mid-old", 5, "2025-01-01T00:00:00Z"), cand("mid-new", 5, "2025-01-01T00:00:02Z")], limits)
    assert [n for n, d in out.items() if d.admitted] == ["high", "mid-old"]
    assert out["mid-new"].position == 1 and out["low"].position == 2
    assert "waiting for quota" in out["mid-new"].message and out["mid-new"].reason == "WaitingForQuota"
    assert "waiting behind mid-new" in out["low"].message


def test_admitted_stay_admitted_and_block_newcomers():
    limits = Limits(cpu=Decimal(1))
    out = decide([cand("old-low", 0, "1", admitted=True), cand("new-high", 100, "2")], limits)
    assert out["old-low"].admitted and not out["new-high"].admitted and out["new-high"].position == 1


def test_strict_order_no_backfill():
    limits = Limits(cpu=Decimal(2))
    big = Demand(Decimal("1.5"), Decimal(0))
    small = Demand(Decimal("0.5"), Decimal(0))
    out = decide([cand("running", 0, "0", Demand(Decimal(1), Decimal(0)), admitted=True),
                  cand("big", 10, "1", big), cand("small", 1, "2", small)], limits)
    assert not out["big"].admitted and not out["small"].admitted
    assert (out["big"].position, out["small"].position) == (1, 2)


def test_more_than_the_whole_quota_fails_at_once_and_blocks_nobody():
    limits = Limits(cpu=Decimal(2))  # no memory limit: the messages don't invent one
    huge = Demand(Decimal(3), Decimal(1 << 30))
    small = Demand(Decimal("0.5"), Decimal(0))
    out = decide([cand("huge", 10, "1", huge), cand("small", 1, "2", small)], limits)
    assert not out["huge"].admitted and out["huge"].reason == "ExceedsQuota" and out["huge"].position is None
    assert "more than the namespace's whole ResourceQuota allows (cpu=2)" in out["huge"].message
    assert out["small"].admitted and "memory" not in out["small"].message


def test_capacity_freed_admits_next():
    limits = Limits(cpu=Decimal(1))
    queue = [cand("a", 5, "1"), cand("b", 1, "2"), cand("c", 9, "3")]
    assert [n for n, d in decide(queue, limits).items() if d.admitted] == ["c"]
    assert [n for n, d in decide(queue[:2], limits).items() if d.admitted] == ["a"]


def test_quota_parsing_and_merge():
    q1 = limits_from_quota({"hard": {"requests.cpu": "2", "requests.memory": "4Gi", "requests.nvidia.com/gpu": "1"}})
    q2 = limits_from_quota({"hard": {"cpu": "1500m", "pods": "10"}})
    assert q1 == Limits(Decimal(2), Decimal(4 << 30), Decimal(1))
    merged = merge_limits([q1, q2])
    assert merged == Limits(Decimal("1.5"), Decimal(4 << 30), Decimal(1))
    assert merge_limits([]) is None
    assert limits_from_quota({"hard": {"pods": "3"}}).fits(Demand(Decimal(100), Decimal(1 << 40), Decimal(8)))


def test_memory_and_gpu_limits_count():
    limits = Limits(memory=Decimal(1 << 30), gpu=Decimal(1))
    gpu = Demand(Decimal(0), Decimal(0), Decimal(1))
    out = decide([cand("m1", 0, "1"), cand("g1", 0, "2", gpu), cand("g2", 0, "3", gpu)], limits)
    assert out["m1"].admitted and out["g1"].admitted and not out["g2"].admitted


def _md(**spec) -> ModelDeployment:
    spec.setdefault("model", {"name": "m", "version": "1"})
    return ModelDeployment.model_validate({"metadata": {"name": "x"}, "spec": spec})


def test_demand_of_specs():
    assert demand(_md(replicas=3, resources={"cpu": "500m", "memory": "1Gi"})) == Demand(
        Decimal("1.5"), Decimal(3 << 30))
    assert demand(_md(autoscaling={"minReplicas": 2, "maxReplicas": 9}, resources={"cpu": "1"})).cpu == 2
    assert demand(_md(replicas=10, canary={"version": "2", "trafficPercent": 10})).cpu == Decimal(5)
    assert demand(_md(replicas=1, canary={"version": "2", "trafficPercent": 10})).cpu == Decimal(1)
    assert demand(_md(server="rayserve", replicas=1, canary={"version": "2", "trafficPercent": 10})).cpu == Decimal(
        "0.5")
    vm = _md(runtime="vm", vm={"image": "i:1", "memory": "4Gi"}, resources={"cpu": "2"})
    assert demand(vm) == Demand(Decimal(2), Decimal(4 << 30))
    assert demand(_md(resources={"gpu": 2}, replicas=2)).gpu == 4
