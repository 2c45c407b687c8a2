"""Shadow traffic in the operator's pure builders (issue 15, item 5): ``<name>-shadow`` Deployment (or VM) and
Service like a canary's, the stable pods mirroring its share to that Service, the shadow's pods logging every
request, admission counting its replicas; validated against the real schemas."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import yaml

from mlstack_operator import builders
from mlstack_operator.admission import demand
from mlstack_operator.builders import Versions, build_children, shadow_replicas
from mlstack_operator.contract import ModelDeployment
from mlstack_operator.settings import OperatorSettings
from tests.utils.operator_schemas import k8s_validate, upstream_validate

SETTINGS = OperatorSettings(server_image="ghcr.io/mlstack/model-server:1.2.3", mlflow_tracking_uri="http://mlflow:5000")
SHADOW_URL = "http://iris-shadow.models.svc.cluster.local:8080"


def md(**spec: Any) -> ModelDeployment:
    spec.setdefault("model", {"name": "iris_model", "version": "3"})
    return ModelDeployment.model_validate({"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
                                           "metadata": {"name": "iris", "namespace": "models"}, "spec": spec})


def kinds(objs: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objs]


def container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]["containers"][0]


def env(obj: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(obj)["env"]}


def test_the_shadow_is_its_own_replica_set_and_service_and_stable_mirrors_its_share(tmp_path):
    objs = build_children(md(replicas=4, shadow={"alias": "challenger", "percent": 12.5}), Versions("3", None, "5"),
                          SETTINGS)
    assert kinds(objs) == ["Deployment/iris", "Deployment/iris-shadow", "Service/iris", "Service/iris-shadow"]
    stable, shadow, svc, shadow_svc = objs
    for o in objs:
        k8s_validate(o)
    upstream_validate(objs, tmp_path)
    cmd = container(stable)["command"]
    assert cmd[3] == "models:/iris_model/3"
    assert cmd[cmd.index("--shadow-url") + 1] == SHADOW_URL and cmd[cmd.index("--shadow-percent") + 1] == "12.5"
    scmd = container(shadow)["command"]
    assert scmd[3] == "models:/iris_model/5" and "--shadow-url" not in scmd and "--canary-url" not in scmd
    # the stable Deployment keeps all its replicas (the shadow answers copies); the shadow is sized for its share
    assert stable["spec"]["replicas"] == 4 and shadow["spec"]["replicas"] == 1
    assert shadow["metadata"]["annotations"][builders.ANNOTATION_SHADOW_PERCENT] == "12.5"
    assert env(stable)["MLSTACK_SERVE_TRACK"] == "stable" and env(stable)["MLSTACK_SERVE_MONITORING_SAMPLE_RATE"] == \
        "0.05"
    assert env(shadow)["MLSTACK_SERVE_TRACK"] == "shadow" and env(shadow)["MLSTACK_SERVE_MONITORING_SAMPLE_RATE"] == "1"
    # the main Service reaches only stable pods; clients never reach the shadow through it
    assert svc["spec"]["selector"] == {builders.LABEL_DEPLOYMENT: "iris", builders.LABEL_TRACK: "stable"}
    assert shadow_svc["spec"]["selector"] == {builders.LABEL_DEPLOYMENT: "iris", builders.LABEL_TRACK: "shadow"}
    assert shadow_svc["metadata"]["labels"][builders.LABEL_TRACK] == "shadow"  # the monitor finds it by name
    # every pod carries the model-server label: the model-server NetworkPolicy admits stable -> shadow
    for dep in (stable, shadow):
        assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "mlstack-model-server"
        assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_shadow_with_a_canary_and_autoscaling():
    objs = build_children(md(autoscaling={"minReplicas": 4, "maxReplicas": 8},
                             canary={"version": "4", "trafficPercent": 25}, shadow={"version": "5", "percent": 50}),
                          Versions("3", "4", "5"), SETTINGS)
    assert kinds(objs) == ["Deployment/iris", "Deployment/iris-canary", "Deployment/iris-shadow", "Service/iris",
                           "Service/iris-canary", "Service/iris-shadow", "HorizontalPodAutoscaler/iris",
                           "HorizontalPodAutoscaler/iris-canary", "HorizontalPodAutoscaler/iris-shadow"]
    stable, canary, shadow = objs[:3]
    cmd = container(stable)["command"]
    assert "--canary-url" in cmd and cmd[cmd.index("--shadow-url") + 1] == SHADOW_URL
    assert "--shadow-url" not in container(canary)["command"]
    hpa = objs[-1]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "iris-shadow"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)  # 50 % of 4..8
    assert shadow["spec"]["replicas"] == 2
    assert shadow["metadata"]["annotations"][builders.ANNOTATION_REPLICAS_FROM] == \
        "HorizontalPodAutoscaler/iris-shadow"
    for o in objs:
        k8s_validate(o)
    # admission counts the shadow's pods too: 3 stable + 1 canary + 2 shadow at minimum scale
    assert demand(md(autoscaling={"minReplicas": 4, "maxReplicas": 8}, canary={"version": "4", "trafficPercent": 25},
                     shadow={"version": "5", "percent": 50})).cpu == Decimal(3)


def test_vm_shadow():
    objs = build_children(md(runtime="vm", vm={"image": "img:1"}, shadow={"version": "5", "percent": 10}),
                          Versions("3", None, "5"), SETTINGS)
    assert kinds(objs) == ["VirtualMachine/iris", "VirtualMachine/iris-shadow", "Service/iris", "Service/iris-shadow"]

    def user_data(vm):
        (disk,) = [v for v in vm["spec"]["template"]["spec"]["volumes"] if v["name"] == "cloudinitdisk"]
        return disk["cloudInitNoCloud"]["userData"]

    stable, shadow = objs[:2]
    unit = yaml.safe_load(user_data(stable))["write_files"][0]["content"]
    assert f"--shadow-url {SHADOW_URL} --shadow-percent 10" in unit
    assert "--shadow-url" not in user_data(shadow) and "models:/iris_model/5" in user_data(shadow)
    assert "-e MLSTACK_SERVE_MONITORING_SAMPLE_RATE=1 -e MLSTACK_SERVE_TRACK=shadow" in user_data(shadow)


def test_no_shadow_when_it_resolves_to_the_stable_version_and_monitoring_off_logs_nothing():
    spec = md(model={"name": "iris_model", "alias": "champion"}, shadow={"alias": "challenger", "percent": 20})
    objs = build_children(spec, Versions("3", None, "3"), SETTINGS)
    assert kinds(objs) == ["Deployment/iris", "Service/iris"] and "--shadow-url" not in container(objs[0])["command"]
    assert builders.shadow_version(spec, Versions("3", None, "3")) is None
    assert builders.shadow_version(spec, Versions("3", None, "4")) == "4"
    off = build_children(md(shadow={"version": "5", "percent": 20}, monitoring={"sampleRate": 0}),
                         Versions("3", None, "5"), SETTINGS)
    assert env(off[1])["MLSTACK_SERVE_MONITORING_SAMPLE_RATE"] == "0"


def test_shadow_children_are_possible_children_and_stale_ones_go():
    with_shadow = md(shadow={"version": "5", "percent": 20}, autoscaling={"maxReplicas": 3})
    made = {(c["apiVersion"], c["kind"], c["metadata"]["name"])
            for c in build_children(with_shadow, Versions("3", None, "5"), SETTINGS)}
    assert made <= set(builders.possible_children(with_shadow))
    assert made == builders.child_keys(with_shadow, SETTINGS)
    # the spec without the shadow: its children are not wanted any more (the handler prunes the difference)
    assert not {k for k in made if k[2] == "iris-shadow"} & builders.child_keys(md(autoscaling={"maxReplicas": 3}),
                                                                               SETTINGS)


@pytest.mark.parametrize("total,pct,expected", [(1, 20, 1), (10, 25, 3), (4, 50, 2), (0, 50, 0), (3, 0.1, 1),
                                                (8, 100, 8)])
def test_shadow_replicas(total, pct, expected):
    assert shadow_replicas(total, pct) == expected
