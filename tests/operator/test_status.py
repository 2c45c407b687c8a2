"""The status state machine and drift detection (pure)."""

from __future__ import annotations

from mlstack_operator.contract import Phase
from mlstack_operator.drift import contains, drift_patch, drifted
from mlstack_operator.status import (
    TRANSITIONS,
    ChildState,
    Inputs,
    child_state,
    compute,
    essential,
    newer_version,
    with_foreign_conditions,
)

T0, T1 = "2025-01-01T00:00:00Z", "2025-01-01T00:01:00Z"
NOT_READY = ChildState("Deployment", "iris", 2, 0, False)
HALF = ChildState("Deployment", "iris", 2, 1, False)
READY = ChildState("Deployment", "iris", 2, 2, True)
RESOLVED = Inputs(1, admitted=True, resolved_version="3", url="http://iris")


def conds(status):
    return {c["type"]: c for c in status["conditions"]}


def test_happy_path_deploying_ready_degraded():
    s1 = compute(Inputs(1, admitted=True, resolved_version="3", url="http://iris", children=(NOT_READY,)), None, T0)
    assert s1["phase"] == "Deploying" and s1["resolvedVersion"] == "3" and s1["observedGeneration"] == 1
    assert conds(s1)["Admitted"]["status"] == "True" and conds(s1)["Available"]["status"] == "False"
    s2 = compute(Inputs(1, admitted=True, resolved_version="3", url="http://iris", children=(READY,)), s1, T1)
    assert s2["phase"] == "Ready" and s2["readyReplicas"] == 2 and s2["url"] == "http://iris"
    assert conds(s2)["Ready"]["lastTransitionTime"] == T1 and conds(s2)["Admitted"]["lastTransitionTime"] == T0
    s3 = compute(Inputs(1, admitted=True, resolved_version="3", url="http://iris", children=(HALF,)), s2, T1)
    assert s3["phase"] == "Degraded" and conds(s3)["Available"]["status"] == "True"
    s4 = compute(Inputs(1, admitted=True, resolved_version="3", url="http://iris", children=(NOT_READY,)), s3, T1)
    assert s4["phase"] == "Deploying"


def test_queued_failed_invalid():
    q = compute(Inputs(1, admitted=False, queue_position=2, admission_message="waiting"), None, T0)
    assert q["phase"] == "Queued" and q["queuePosition"] == 2 and conds(q)["Admitted"]["reason"] == "WaitingForQuota"
    f = compute(Inputs(1, admitted=True, resolve_error=("ModelNotFound", "model 'x' not found")), q, T1)
    assert f["phase"] == "Failed" and conds(f)["ModelResolved"]["reason"] == "ModelNotFound"
    assert f["queuePosition"] is None
    i = compute(Inputs(2, invalid="spec.model: field required"), None, T0)
    assert i["phase"] == "Failed" and conds(i)["Ready"]["reason"] == "InvalidSpec"


def test_transitions_table_covers_what_compute_does():
    assert Phase.Deploying in TRANSITIONS[Phase.Pending]
    assert Phase.Deploying in TRANSITIONS[Phase.Failed]
    assert Phase.Ready in TRANSITIONS[Phase.Pending] and Phase.Ready in TRANSITIONS[Phase.Queued]
    assert Phase.Queued not in TRANSITIONS[Phase.Ready] and Phase.Pending not in TRANSITIONS[Phase.Ready]
    assert set(TRANSITIONS) == set(Phase)


def test_essential_ignores_timestamps():
    a = compute(RESOLVED, None, T0)
    b = compute(RESOLVED, None, T1)
    assert a != b and essential(a) == essential(b)


def test_child_states():
    dep = {"kind": "Deployment", "metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2},
           "status": {"observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 2}}
    assert child_state(dep).ready
    assert not child_state({**dep, "status": {**dep["status"], "observedGeneration": 1}}).ready
    rs = {"kind": "RayService", "metadata": {"name": "r"},
          "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert child_state(rs).ready and not child_state({**rs, "status": {}}).ready
    vm = {"kind": "VirtualMachine", "metadata": {"name": "v"}, "status": {"ready": True}}
    assert child_state(vm).ready and child_state({"kind": "HorizontalPodAutoscaler", "metadata": {}}) is None
    svc = child_state({"kind": "Service", "metadata": {"name": "s"}})  # present: ready; counts no replicas
    assert svc.ready and svc.desired == 0


def test_drift():
    desired = {"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 2, "template": {"x": [1, {"y": 2}]}}}
    live = {"metadata": {"labels": {"a": "1", "b": "2"}, "uid": "u"},
            "spec": {"replicas": 2, "progressDeadlineSeconds": 600, "template": {"x": [1, {"y": 2, "z": 3}]}}}
    assert contains(live, desired) and drift_patch(desired, live) is None
    live["spec"]["replicas"] = 5
    assert drift_patch(desired, live) == {"spec": desired["spec"]}
    live["spec"]["replicas"] = 2
    live["metadata"]["labels"]["a"] = "0"
    assert drift_patch(desired, live) == {"metadata": {"labels": {"a": "1"}}}


def test_drifted_remembers_what_was_in_sync_and_sees_every_change():
    desired = {"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 2, "template": {"x": [1, {"y": 2}]}}}

    def live(replicas=2, labels=None, status=None):  # a fresh object per event, as a watch parses them
        return {"metadata": {"labels": labels or {"a": "1", "b": "2"}}, "status": status or {},
                "spec": {"replicas": replicas, "progressDeadlineSeconds": 600, "template": {"x": [1, {"y": 2}]}}}

    in_sync: dict = {}
    assert not drifted(in_sync, "k", desired, live())
    remembered = in_sync["k"]
    assert not drifted(in_sync, "k", desired, live(status={"readyReplicas": 1}))  # a status update: in sync
    assert in_sync["k"] is remembered  # (the spec not walked again)
    assert drifted(in_sync, "k", desired, live(status={"readyReplicas": 2}, labels={"a": "0"}))  # labels: compared
    assert drifted(in_sync, "k", desired, live(replicas=5))  # a hand edit of the spec
    assert "k" not in in_sync and drifted(in_sync, "k", desired, live(replicas=5))  # still edited
    assert not drifted(in_sync, "k", desired, live())  # reverted
    assert drifted(in_sync, "k", desired, live(labels={"a": "0"}))  # a label edited
    assert not drifted(in_sync, "k", desired, live())
    other = {"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 3}}  # a new spec: checked again
    assert drifted(in_sync, "k", other, live())


def test_drift_leaves_an_hpa_owned_replica_count_alone_and_compares_selectors_exactly():
    desired = {"metadata": {"annotations": {"mlstack.io/replicas-from": "HorizontalPodAutoscaler/d"}},
               "spec": {"replicas": 2, "template": {"x": 1}}}
    live = {"metadata": {"annotations": {"mlstack.io/replicas-from": "HorizontalPodAutoscaler/d"}},
            "spec": {"replicas": 7, "template": {"x": 1}}}
    assert drift_patch(desired, live) is None  # the HPA scaled it: not reverted
    live["spec"]["template"]["x"] = 2
    assert drift_patch(desired, live) == {"spec": {"template": {"x": 1}}}  # no replicas in the patch
    svc = {"spec": {"selector": {"a": "1"}}}
    patch = drift_patch(svc, {"spec": {"selector": {"a": "1", "b": "2"}}})
    assert patch == {"spec": {"selector": {"a": "1", "b": None}}}  # an extra key selects other pods: removed
    quantities = {"spec": {"resources": {"requests": {"cpu": "0.5", "memory": "1.5Gi"}}}}
    assert drift_patch(quantities, {"spec": {"resources": {"requests": {"cpu": "500m", "memory": "1536Mi"}}}}) is None


def test_the_monitors_slomet_survives_the_operators_status_writes():
    """The operator's view of the status (its last write) lacks the SLOMet the monitor wrote since: the observed
    status brings it in, and the next status the operator computes (and writes whole) still carries it."""
    mine = compute(Inputs(1, admitted=True, resolved_version="3", url="http://iris", children=(NOT_READY,)), None, T0)
    slo = {"type": "SLOMet", "status": "False", "reason": "P99LatencyAboveMax", "message": "p99 9 ms > 5 ms",
           "lastTransitionTime": T1}
    observed = {**mine, "conditions": [*mine["conditions"], slo]}
    assert with_foreign_conditions(mine, mine) is mine  # nothing foreign: no copy
    merged = with_foreign_conditions(mine, observed)
    assert conds(merged)["SLOMet"] == slo and conds(merged)["Admitted"] == conds(mine)["Admitted"]
    assert with_foreign_conditions(merged, observed) is merged
    nxt = compute(Inputs(1, admitted=True, resolved_version="3", url="http://iris", children=(READY,)), merged, T1)
    assert nxt["phase"] == "Ready" and conds(nxt)["SLOMet"] == slo
    # the monitor's copy wins over the operator's stale one; the operator's own conditions stay its own
    stale = {**observed, "conditions": [{**c, "status": "True"} for c in observed["conditions"]]}
    again = with_foreign_conditions(stale, observed)
    assert conds(again)["SLOMet"]["status"] == "False" and conds(again)["Available"]["status"] == "True"
    assert with_foreign_conditions(None, {"conditions": [slo]}) == {"conditions": [slo]}


def test_newer_version_keeps_the_newest_resource_version():
    """The operator's status precondition: a late watch event never takes it back behind its own write's answer."""
    assert newer_version(None, "7") == "7" and newer_version("7", None) == "7" and newer_version(None, None) is None
    assert newer_version("12", "9") == "12"  # the event of an older write, after the answer of a newer one
    assert newer_version("9", "12") == "12" and newer_version("12", "12") == "12"
    assert newer_version("a1", "b2") == "b2"  # not numbered: the one seen last
