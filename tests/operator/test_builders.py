"""Pure builders for every runtime and option, validated against the real schemas."""

from __future__ import annotations

from typing import Any

import pytest

from mlstack_operator import builders
from mlstack_operator.builders import Versions, build_children, canary_split
from mlstack_operator.contract import ModelDeployment
from mlstack_operator.settings import OperatorSettings
from tests.utils.operator_schemas import k8s_validate, upstream_validate

SETTINGS = OperatorSettings(server_image="ghcr.io/mlstack/model-server:1.2.3", mlflow_tracking_uri="http://mlflow:5000")


def md(name: str = "iris", **spec: Any) -> ModelDeployment:
    spec.setdefault("model", {"name": "iris_model", "alias": "champion"})
    return ModelDeployment.model_validate({"apiVersion": "mlstack.io/v1alpha1", "kind": "ModelDeployment",
                                           "metadata": {"name": name, "namespace": "models"}, "spec": spec})


CASES: dict[str, ModelDeployment] = {
    "onnx": md(),
    "onnx-gpu": md(resources={"cpu": "2", "memory": "4Gi", "gpu": 1}, replicas=3),
    "onnx-autoscaling": md(autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 60}),
    "onnx-canary": md(replicas=10, canary={"version": "4", "trafficPercent": 10}),
    "onnx-canary-autoscaling": md(autoscaling={"minReplicas": 4, "maxReplicas": 8},
                                  canary={"version": "4", "trafficPercent": 25}),
    "onnx-zero": md(replicas=0),
    "rayserve": md(server="rayserve", replicas=2),
    "rayserve-autoscaling-canary": md(server="rayserve", autoscaling={"minReplicas": 1, "maxReplicas": 4},
                                      canary={"version": "4", "trafficPercent": 10}, resources={"gpu": 1}),
    "vm": md(runtime="vm", vm={"image": "quay.io/containerdisks/ubuntu:24.04", "cores": 2, "memory": "4Gi"}),
    "vm-canary": md(runtime="vm", vm={"image": "img:1"}, canary={"version": "4", "trafficPercent": 50}),
}


def children(case: str) -> list[dict[str, Any]]:
    return build_children(CASES[case], Versions("3", "4" if CASES[case].spec.canary else None), SETTINGS)


def kinds(objs: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objs]


@pytest.mark.parametrize("case", CASES)
def test_children_validate_and_carry_labels(case, tmp_path):
    objs = children(case)
    for o in objs:
        assert o["metadata"]["namespace"] == "models"
        assert o["metadata"]["labels"][builders.LABEL_DEPLOYMENT] == "iris"
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlstack-operator"
        if o["kind"] in ("Deployment", "Service", "HorizontalPodAutoscaler"):
            k8s_validate(o)
    upstream_validate(objs, tmp_path)


def test_onnx_children():
    assert kinds(children("onnx")) == ["Deployment/iris", "Service/iris"]
    dep = children("onnx")[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == SETTINGS.server_image and not c["image"].endswith(":latest")
    assert c["command"] == ["mlstack", "serve", "--model", "models:/iris_model/3", "--host", "0.0.0.0", "--port",
                            "8080", "--grpc-port", "8081", "--name", "iris_model"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "grpc": 8081}
    svc = next(o for o in children("onnx") if o["kind"] == "Service")
    assert {p["name"]: (p["port"], p["targetPort"], p.get("appProtocol")) for p in svc["spec"]["ports"]} == {
        "http": (8080, "http", None), "grpc": (8081, "grpc", "grpc")}  # the model server's gRPC v2
    assert {"name": "MLSTACK_MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in c["env"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}}
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["allowPrivilegeEscalation"] is False
    assert dep["spec"]["replicas"] == 1
    svc = children("onnx")[1]
    assert svc["spec"]["selector"] == {builders.LABEL_DEPLOYMENT: "iris", builders.LABEL_TRACK: "stable"}


def test_gpu_requests_and_limits():
    c = children("onnx-gpu")[0]["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1" and c["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_autoscaling_adds_hpa_and_leaves_replicas_to_it():
    objs = children("onnx-autoscaling")
    assert kinds(objs) == ["Deployment/iris", "Service/iris", "HorizontalPodAutoscaler/iris"]
    assert objs[0]["spec"]["replicas"] == 2  # starts at the HPA's minimum, which owns the count from then on
    assert objs[0]["metadata"]["annotations"][builders.ANNOTATION_REPLICAS_FROM] == "HorizontalPodAutoscaler/iris"
    hpa = objs[2]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60


def test_onnx_canary_is_its_own_replica_set_and_service_and_stable_forwards_its_share():
    objs = children("onnx-canary")
    assert kinds(objs) == ["Deployment/iris", "Deployment/iris-canary", "Service/iris", "Service/iris-canary"]
    stable, canary, svc, canary_svc = objs
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (9, 1)  # capacity only, not the share
    canary_cmd = canary["spec"]["template"]["spec"]["containers"][0]["command"]
    assert canary_cmd[3] == "models:/iris_model/4" and "--canary-url" not in canary_cmd
    stable_cmd = stable["spec"]["template"]["spec"]["containers"][0]["command"]
    assert stable_cmd[3] == "models:/iris_model/3"
    assert stable_cmd[stable_cmd.index("--canary-url") + 1] == "http://iris-canary.models.svc.cluster.local:8080"
    assert stable_cmd[stable_cmd.index("--canary-percent") + 1] == "10"
    assert stable_cmd[stable_cmd.index("--canary-grpc") + 1] == "iris-canary.models.svc.cluster.local:8081"
    assert canary["metadata"]["annotations"][builders.ANNOTATION_CANARY_PERCENT] == "10"
    assert stable["spec"]["selector"]["matchLabels"][builders.LABEL_TRACK] == "stable"
    assert canary["spec"]["selector"]["matchLabels"][builders.LABEL_TRACK] == "canary"
    # the main Service reaches only stable pods (which forward exactly 10 %); the canary's only the canary's
    assert svc["spec"]["selector"] == {builders.LABEL_DEPLOYMENT: "iris", builders.LABEL_TRACK: "stable"}
    assert canary_svc["spec"]["selector"] == {builders.LABEL_DEPLOYMENT: "iris", builders.LABEL_TRACK: "canary"}
    assert [p["name"] for p in canary_svc["spec"]["ports"]] == ["http", "grpc"]
    no_grpc = OperatorSettings(server_image=SETTINGS.server_image, grpc_port=0)
    cmd = build_children(CASES["onnx-canary"], Versions("3", "4"), no_grpc)[0]["spec"]["template"]["spec"][
        "containers"][0]["command"]
    assert "--canary-grpc" not in cmd and "--canary-url" in cmd


def test_canary_with_autoscaling_has_its_own_hpa_within_the_bounds():
    # minReplicas 4 at 25 %: stable 3 (its HPA's minimum) + canary 1 = 4 pods at minimum scale, as admission (4 x
    # 500m) and the quota controller count; maxReplicas 8: stable up to 6 + canary up to 2 = 8
    from mlstack_operator.admission import demand

    objs = children("onnx-canary-autoscaling")
    assert kinds(objs) == ["Deployment/iris", "Deployment/iris-canary", "Service/iris", "Service/iris-canary",
                           "HorizontalPodAutoscaler/iris", "HorizontalPodAutoscaler/iris-canary"]
    stable, canary, _, _, hpa, canary_hpa = objs
    assert stable["spec"]["replicas"] == 3 and canary["spec"]["replicas"] == 1
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 6)
    assert (canary_hpa["spec"]["minReplicas"], canary_hpa["spec"]["maxReplicas"]) == (1, 2)
    assert canary_hpa["spec"]["scaleTargetRef"]["name"] == "iris-canary"
    assert canary["metadata"]["annotations"][builders.ANNOTATION_REPLICAS_FROM] == \
        "HorizontalPodAutoscaler/iris-canary"
    assert canary["metadata"]["annotations"][builders.ANNOTATION_CANARY_PERCENT] == "25"
    pods = hpa["spec"]["minReplicas"] + canary_hpa["spec"]["minReplicas"]
    cpu = sum(float(builders._cpu_float(o["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]))
              * n for o, n in ((stable, hpa["spec"]["minReplicas"]), (canary, 1)))
    assert pods == 4 and demand(CASES["onnx-canary-autoscaling"]).cpu == pytest.approx(cpu)
    assert hpa["spec"]["maxReplicas"] + canary_hpa["spec"]["maxReplicas"] == 8


@pytest.mark.parametrize("total,pct,expected", [(10, 10, (9, 1)), (1, 10, (1, 1)), (4, 25, (3, 1)),
                                                (0, 50, (0, 0)), (2, 50, (1, 1)), (20, 99, (1, 20))])
def test_canary_split(total, pct, expected):
    assert canary_split(total, pct) == expected


def test_rayserve_serve_config():
    import yaml

    (rs,) = children("rayserve-autoscaling-canary")
    assert rs["apiVersion"] == "ray.io/v1" and rs["kind"] == "RayService"
    cfg = yaml.safe_load(rs["spec"]["serveConfigV2"])
    app = cfg["applications"][0]
    assert app["import_path"] == "mlstack.serving.rayserve:build_app"
    assert app["args"] == {"model_uri": "models:/iris_model/3", "name": "iris_model", "sample_rate": 0.05,
                           "canary_model_uri": "models:/iris_model/4", "canary_traffic_percent": 10}
    dep = app["deployments"][0]
    assert dep["autoscaling_config"]["min_replicas"] == 1 and dep["autoscaling_config"]["max_replicas"] == 4
    assert dep["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 1}
    workers = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (1, 4)
    assert rs["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    assert builders.url(CASES["rayserve"], SETTINGS) == "http://iris-serve-svc.models.svc.cluster.local:8000"


def test_rayserve_fixed_replicas():
    import yaml

    (rs,) = children("rayserve")
    dep = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["deployments"][0]
    assert dep["num_replicas"] == 2 and "autoscaling_config" not in dep


def test_vm_children():
    import yaml

    vm, svc = children("vm")
    spec = vm["spec"]
    assert spec["runStrategy"] == "Always"
    tmpl = spec["template"]["spec"]
    disks = [d["name"] for d in tmpl["domain"]["devices"]["disks"]]
    volumes = {v["name"]: v for v in tmpl["volumes"]}
    assert disks == ["containerdisk", "cloudinitdisk"] and set(volumes) == set(disks)
    assert volumes["containerdisk"]["containerDisk"]["image"] == "quay.io/containerdisks/ubuntu:24.04"
    assert tmpl["domain"]["devices"]["interfaces"][0]["masquerade"] == {}
    assert tmpl["networks"] == [{"name": "default", "pod": {}}]
    assert tmpl["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    user_data = volumes["cloudinitdisk"]["cloudInitNoCloud"]["userData"]
    assert user_data.startswith("#cloud-config\n")
    cloud = yaml.safe_load(user_data)
    unit = cloud["write_files"][0]["content"]
    assert "mlstack serve --model models:/iris_model/3 --host 0.0.0.0 --port 8080" in unit
    assert ["systemctl", "enable", "--now", "mlstack-serve.service"] in cloud["runcmd"]
    assert spec["template"]["metadata"]["labels"][builders.LABEL_DEPLOYMENT] == "iris"
    assert svc["spec"]["selector"] == {builders.LABEL_DEPLOYMENT: "iris", builders.LABEL_TRACK: "stable"}
    assert svc["spec"]["ports"][0]["targetPort"] == 8080


def test_vm_canary():
    import yaml

    objs = children("vm-canary")
    assert kinds(objs) == ["VirtualMachine/iris", "VirtualMachine/iris-canary", "Service/iris",
                           "Service/iris-canary"]
    stable, canary, svc, canary_svc = objs

    def unit(vm):
        (disk,) = [v for v in vm["spec"]["template"]["spec"]["volumes"] if v["name"] == "cloudinitdisk"]
        return yaml.safe_load(disk["cloudInitNoCloud"]["userData"])["write_files"][0]["content"]

    assert ("--canary-url http://iris-canary.models.svc.cluster.local:8080 --canary-percent 50 "
            "--canary-grpc iris-canary.models.svc.cluster.local:8081") in unit(stable)
    assert "--canary-url" not in unit(canary) and "models:/iris_model/4" in unit(canary)
    assert canary["spec"]["template"]["metadata"]["labels"][builders.LABEL_TRACK] == "canary"
    assert svc["spec"]["selector"][builders.LABEL_TRACK] == "stable"
    assert canary_svc["spec"]["selector"][builders.LABEL_TRACK] == "canary"
    assert canary_svc["spec"]["ports"][0]["targetPort"] == 8080


def test_every_canary_child_is_a_possible_child():
    for case in CASES:
        made = {(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in children(case)}
        assert made <= set(builders.possible_children(CASES[case])), case
        assert made == builders.child_keys(CASES[case], SETTINGS), case


def test_builders_are_deterministic_and_pure():
    assert children("onnx-canary") == children("onnx-canary")


def test_settings_refuse_latest():
    with pytest.raises(ValueError, match="pinned"):
        OperatorSettings(server_image="ghcr.io/mlstack/model-server:latest")
    with pytest.raises(ValueError, match="pinned"):
        OperatorSettings(server_image="ghcr.io/mlstack/model-server")
    assert OperatorSettings(server_image="registry:5000/model-server@sha256:abc").server_image


def test_vm_cloud_init_runs_the_platforms_pinned_image_and_validates_with_cloud_init(tmp_path):
    """The VM runs exactly the platform's build (the pinned model-server image, with podman), never a package
    resolved by name on PyPI; the user-data passes `cloud-init schema` (Debian's cloud-init, installed by test.sh)."""
    import shutil
    import subprocess

    settings = OperatorSettings(server_image="ghcr.io/mlstack/model-server@sha256:" + "a" * 64,
                                mlflow_tracking_uri="http://mlflow:5000")
    (vm, _svc) = build_children(CASES["vm"], Versions("3"), settings)
    volumes = vm["spec"]["template"]["spec"]["volumes"]
    user_data = next(v["cloudInitNoCloud"]["userData"] for v in volumes if "cloudInitNoCloud" in v)
    assert "pip" not in user_data and "mlstack==" not in user_data
    assert f"{settings.server_image} mlstack serve --model models:/iris_model/3" in user_data
    exe = shutil.which("cloud-init")
    assert exe, "cloud-init is missing: test.sh installs Debian's cloud-init package"
    path = tmp_path / "user-data"
    path.write_text(user_data)
    out = subprocess.run([exe, "schema", "--config-file", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Valid cloud-config" in out.stdout, out.stdout + out.stderr
    path.write_text(user_data.replace("packages:", "packages: 7\nbogus_packages:"))
    bad = subprocess.run([exe, "schema", "--config-file", str(path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0  # the check does reject a broken one


def test_an_unpinned_vm_image_is_refused():
    with pytest.raises(ValueError, match="must be pinned"):
        OperatorSettings(vm_server_image="ghcr.io/mlstack/model-server:latest")


def test_model_servers_get_the_payload_logs_sample_rate_and_their_track():
    def env(obj):
        return {e["name"]: e["value"] for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}

    stable, canary = children("onnx-canary")[:2]
    assert env(stable)["MLSTACK_SERVE_MONITORING_SAMPLE_RATE"] == "0.05" and env(stable)["MLSTACK_SERVE_TRACK"] == \
        "stable"
    assert env(canary)["MLSTACK_SERVE_TRACK"] == "canary"
    off = build_children(md(monitoring={"sampleRate": 0}), Versions("3"), SETTINGS)[0]
    assert env(off)["MLSTACK_SERVE_MONITORING_SAMPLE_RATE"] == "0"
    vm = build_children(md(runtime="vm", vm={"image": "img:1"}, monitoring={"sampleRate": 0.5}), Versions("3"),
                        SETTINGS)[0]
    (disk,) = [v for v in vm["spec"]["template"]["spec"]["volumes"] if v["name"] == "cloudinitdisk"]
    assert "-e MLSTACK_SERVE_MONITORING_SAMPLE_RATE=0.5 -e MLSTACK_SERVE_TRACK=stable" in disk["cloudInitNoCloud"][
        "userData"]
    import yaml

    rs = build_children(md(server="rayserve", monitoring={"sampleRate": 0.25}), Versions("3"), SETTINGS)[0]
    assert yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]["sample_rate"] == 0.25
