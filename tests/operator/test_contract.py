"""One contract: the CRD's schema (structural + CEL) and the pydantic model accept and reject alike."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from mlstack_operator.contract import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from tests.utils.operator_schemas import crd, crd_errors

BASE: dict[str, Any] = {"model": {"name": "iris_model", "version": "3"}}


def with_(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is ...:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


VALID = {
    "minimal-version": BASE,
    "alias": {"model": {"name": "iris_model", "alias": "champion"}},
    "design-example": {
        "model": {"name": "iris_model", "alias": "champion"}, "runtime": "pod", "server": "onnx", "replicas": 1,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilization": 70},
        "resources": {"cpu": "500m", "memory": "512Mi", "gpu": 0}, "priority": 100,
        "canary": {"version": "4", "trafficPercent": 10}, "alerts": {"minAccuracy": 0.9, "maxP99LatencyMs": 50},
    },
    "rayserve": with_(server="rayserve", autoscaling={"maxReplicas": 3}),
    "vm": with_(runtime="vm", vm={"image": "quay.io/containerdisks/ubuntu:24.04"}),
    "vm-full": with_(runtime="vm", vm={"image": "img:1", "cores": 4, "memory": "8Gi"}, resources={"cpu": "2"}),
    "zero-replicas": with_(replicas=0),
    "cpu-decimal": with_(resources={"cpu": "1.5", "memory": "1Gi"}),
    "max-bounds": with_(replicas=100, priority=1_000_000, resources={"gpu": 16}),
    "min-equals-max": with_(autoscaling={"minReplicas": 3, "maxReplicas": 3}),
    "alias-canary": {"model": {"name": "m", "alias": "prod"}, "canary": {"version": "7", "trafficPercent": 99}},
    "accuracy-int": with_(alerts={"minAccuracy": 1}),
    "dotted-model-name": {"model": {"name": "team.iris-v2_model", "version": "12"}},
    "monitoring-full": with_(monitoring={"sampleRate": 1, "psiThreshold": 0.1, "windowSeconds": 60, "minRows": 10}),
    "monitoring-off": with_(monitoring={"sampleRate": 0}),
    "monitoring-defaults": with_(monitoring={}),
    "shadow-version": with_(shadow={"version": "4", "percent": 20}),
    "shadow-alias-fraction": with_(shadow={"alias": "challenger", "percent": 0.5}),
    "shadow-everything": with_(shadow={"version": "5", "percent": 100}, canary={"version": "4", "trafficPercent": 10}),
    "shadow-alias-model": {"model": {"name": "m", "alias": "champion"}, "shadow": {"version": "1", "percent": 1}},
    "shadow-vm": with_(runtime="vm", vm={"image": "img:1"}, shadow={"version": "4", "percent": 10}),
}

INVALID = {
    "no-model": with_(model=...),
    "both-version-and-alias": {"model": {"name": "m", "version": "1", "alias": "a"}},
    "neither-version-nor-alias": {"model": {"name": "m"}},
    "vm-without-vm-runtime": with_(vm={"image": "img:1"}),
    "vm-runtime-without-vm": with_(runtime="vm"),
    "rayserve-on-vm": with_(runtime="vm", server="rayserve", vm={"image": "img:1"}),
    "unknown-runtime": with_(runtime="lambda"),
    "unknown-server": with_(server="triton"),
    "negative-replicas": with_(replicas=-1),
    "too-many-replicas": with_(replicas=101),
    "replicas-as-string": with_(replicas="2"),
    "replicas-as-float": with_(replicas=1.5),
    "replicas-as-bool": with_(replicas=True),
    "min-above-max": with_(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
    "autoscaling-without-max": with_(autoscaling={"minReplicas": 1}),
    "cpu-as-number": with_(resources={"cpu": 1}),
    "bad-cpu": with_(resources={"cpu": "lots"}),
    "bad-memory": with_(resources={"memory": "1GB"}),
    "gpu-too-many": with_(resources={"gpu": 17}),
    "canary-same-version": with_(canary={"version": "3", "trafficPercent": 10}),
    "canary-100-percent": with_(canary={"version": "4", "trafficPercent": 100}),
    "canary-without-traffic": with_(canary={"version": "4"}),
    "shadow-same-version": with_(shadow={"version": "3", "percent": 10}),
    "shadow-same-as-canary": with_(shadow={"version": "4", "percent": 10},
                                   canary={"version": "4", "trafficPercent": 5}),
    "shadow-neither": with_(shadow={"percent": 10}),
    "shadow-both": with_(shadow={"version": "4", "alias": "challenger", "percent": 10}),
    "shadow-zero-percent": with_(shadow={"version": "4", "percent": 0}),
    "shadow-over-100": with_(shadow={"version": "4", "percent": 100.5}),
    "shadow-percent-string": with_(shadow={"version": "4", "percent": "10"}),
    "shadow-without-percent": with_(shadow={"version": "4"}),
    "shadow-bad-alias": with_(shadow={"alias": "my alias", "percent": 10}),
    "shadow-on-rayserve": with_(server="rayserve", shadow={"version": "4", "percent": 10}),
    "shadow-unknown-field": with_(shadow={"version": "4", "percent": 10, "mode": "mirror"}),
    "version-not-a-number": {"model": {"name": "m", "version": "latest"}},
    "version-zero": {"model": {"name": "m", "version": "0"}},
    "alias-with-space": {"model": {"name": "m", "alias": "my alias"}},
    "model-name-empty": {"model": {"name": "", "version": "1"}},
    "accuracy-above-1": with_(alerts={"minAccuracy": 1.5}),
    "latency-zero": with_(alerts={"maxP99LatencyMs": 0}),
    "priority-negative": with_(priority=-5),
    "unknown-field": with_(replica=2),
    "unknown-nested-field": with_(resources={"cpus": "1"}),
    "vm-cores-zero": with_(runtime="vm", vm={"image": "img:1", "cores": 0}),
    "vm-empty-image": with_(runtime="vm", vm={"image": ""}),
    "sample-rate-above-1": with_(monitoring={"sampleRate": 1.5}),
    "psi-threshold-zero": with_(monitoring={"psiThreshold": 0}),
    "window-too-short": with_(monitoring={"windowSeconds": 5}),
    "window-as-float": with_(monitoring={"windowSeconds": 60.5}),
    "min-rows-zero": with_(monitoring={"minRows": 0}),
    "monitoring-unknown-field": with_(monitoring={"rate": 0.1}),
}


def obj(spec: dict[str, Any], name: str = "iris") -> dict[str, Any]:
    return {"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "models"}, "spec": spec}


def pydantic_ok(o: dict[str, Any]) -> bool:
    try:
        ModelDeployment.model_validate(o)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("spec", VALID.values(), ids=VALID.keys())
def test_both_accept(spec):
    o = obj(spec)
    assert crd_errors(o) == []
    assert pydantic_ok(o)


@pytest.mark.parametrize("spec", INVALID.values(), ids=INVALID.keys())
def test_both_reject(spec):
    o = obj(spec)
    assert crd_errors(o), "the CRD accepted it"
    assert not pydantic_ok(o), "pydantic accepted it"


@pytest.mark.parametrize("name,ok", [("iris", True), ("a" * 42, True), ("a" * 43, False)])
def test_name_length_agrees(name, ok):
    o = obj(BASE, name)
    assert (crd_errors(o) == []) is ok
    assert pydantic_ok(o) is ok


def test_cross_field_messages_match():
    o = obj({"model": {"name": "m", "version": "1", "alias": "a"}})
    assert any("exactly one of model.version and model.alias" in e for e in crd_errors(o))
    with pytest.raises(ValidationError, match=r"exactly one of model\.version and model\.alias"):
        ModelDeployment.model_validate(o)


def test_defaults_agree():
    """The API server's defaults equal pydantic's: the stored spec is what the operator sees."""
    from tests.utils.operator_schemas import _default, crd_schema

    spec_schema = crd_schema()["properties"]["spec"]
    defaulted = _default(spec_schema, copy.deepcopy(BASE))
    assert defaulted == ModelDeploymentSpec.model_validate(BASE).to_k8s()
    partial = with_(monitoring={"sampleRate": 0.5})
    assert _default(spec_schema, copy.deepcopy(partial)) == ModelDeploymentSpec.model_validate(partial).to_k8s()


def test_status_model_reads_what_the_crd_allows():
    status = {"phase": "Queued", "queuePosition": 2, "observedGeneration": 3, "conditions": [
        {"type": "Admitted", "status": "False", "reason": "WaitingForQuota", "message": "m",
         "lastTransitionTime": "2025-01-01T00:00:00Z"}], "kopf": {"progress": {}}}
    o = {**obj(BASE), "status": status}
    assert crd_errors(o) == []
    parsed = ModelDeploymentStatus.model_validate(status)
    assert parsed.queue_position == 2 and parsed.condition("Admitted").reason == "WaitingForQuota"


def test_crd_shape():
    c = crd()
    v = c["spec"]["versions"][0]
    assert c["spec"]["names"]["shortNames"] == ["mdep"] and c["spec"]["scope"] == "Namespaced"
    assert v["subresources"] == {"status": {}}
    assert [col["name"] for col in v["additionalPrinterColumns"]] == ["Model", "Version", "Runtime", "Phase",
                                                                       "URL", "SLOMet", "Age"]


def test_shadow_messages_match():
    for shadow, message in [({"percent": 5}, "exactly one of shadow.version and shadow.alias"),
                            ({"version": "3", "percent": 5}, "shadow.version must differ from model.version"),
                            ({"version": "4", "percent": 5}, "shadow.version must differ from canary.version")]:
        o = obj(with_(shadow=shadow, canary={"version": "4", "trafficPercent": 5}))
        assert any(message in e for e in crd_errors(o)), crd_errors(o)
        with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
            ModelDeployment.model_validate(o)
