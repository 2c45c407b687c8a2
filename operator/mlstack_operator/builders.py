"""Pure builders: a ModelDeployment (plus the resolved model versions) -> the children's manifests.

No I/O here. The handlers add ownerReferences with ``kopf.adopt``; ``mlstack operator render``
prints the same dicts. Children per runtime:

* ``pod`` + ``onnx``: Deployment (``mlstack serve``) + Service (+ HPA with ``autoscaling``).
* ``pod`` + ``rayserve``: a KubeRay RayService whose ``serveConfigV2`` runs the same predictor.
* ``vm``: a KubeVirt VirtualMachine (containerDisk + cloud-init starting ``mlstack serve``) + Service.

Canary traffic, exact on every runtime: ``rayserve`` splits inside Ray Serve (the application gets the canary
model URI and percentage: ``CanaryRouter``). ``onnx`` and ``vm`` run the canary as its own replica set (own
Deployment and HPA, or VM) behind its own ``<name>-canary`` Service; the main Service selects only the stable
track, and every stable replica (``mlstack serve --canary-url <canary Service> --canary-percent P``) forwards
exactly P of every 100 inference requests it gets to the canary Service. Both use ``canary_turn``
(``mlstack.serving.canary``), so the share does not depend on replica counts or autoscaling; the replica split
(``canary_split``) only sizes the canary for its share of the load.

Shadow traffic (``spec.shadow``; ``onnx`` and ``vm``): the shadow version runs as its own replica set behind its own
``<name>-shadow`` Service (track ``shadow``, logging every request it gets for the monitor); every stable replica
(``--shadow-url <shadow Service> --shadow-percent P``) mirrors exactly P% of its inference requests to it in the
background and answers from itself. The model-server NetworkPolicy already admits model-server pods to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from mlstack_operator.contract import ModelDeployment, Runtime, Server
from mlstack_operator.settings import OperatorSettings

LABEL_PREFIX = "mlstack.io"
LABEL_DEPLOYMENT = f"{LABEL_PREFIX}/deployment"
LABEL_TRACK = f"{LABEL_PREFIX}/track"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlstack-operator"}
ANNOTATION_MODEL_URI = f"{LABEL_PREFIX}/model-uri"
ANNOTATION_CANARY_PERCENT = f"{LABEL_PREFIX}/canary-percent"  # the canary's exact share of requests
ANNOTATION_SHADOW_PERCENT = f"{LABEL_PREFIX}/shadow-percent"  # the share of requests mirrored to the shadow
# On a Deployment whose replica count an HPA owns: spec.replicas is only the starting count (the HPA's minimum,
# so the Deployment starts at its minimum scale, not at 1), never patched back (drift.py).
ANNOTATION_REPLICAS_FROM = f"{LABEL_PREFIX}/replicas-from"

STABLE = "stable"
CANARY = "canary"
SHADOW = "shadow"
RAY_SERVE_PORT = 8000
CONTAINER_NAME = "model-server"
NON_ROOT_UID = 10001

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Versions:
    """The model versions to serve: ``stable`` resolved from version/alias, ``canary`` and ``shadow`` if any."""

    stable: str
    canary: str | None = None
    shadow: str | None = None


class _BlockDumper(yaml.SafeDumper):
    """YAML with multi-line strings as literal blocks (readable cloud-init, serve configs, render output)."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_BlockDumper.add_representer(str, _str_presenter)


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_BlockDumper, sort_keys=False, width=1 << 16)


def dump_yaml_all(objs: list[Any]) -> str:
    return yaml.dump_all(objs, Dumper=_BlockDumper, sort_keys=False, width=1 << 16)


def model_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def labels(md: ModelDeployment, track: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "mlstack-model-server",
        "app.kubernetes.io/instance": md.name,
        "app.kubernetes.io/part-of": "mlstack",
        **MANAGED_BY,
        LABEL_DEPLOYMENT: md.name,
    }
    if track is not None:
        out[LABEL_TRACK] = track
    return out


def child_name(md: ModelDeployment, track: str) -> str:
    return md.name if track == STABLE else f"{md.name}-{track}"


def base_replicas(md: ModelDeployment) -> int:
    spec = md.spec
    return spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas


def canary_split(total: int, percent: int) -> tuple[int, int]:
    """(stable, canary) replica counts: the canary sized for its ``percent`` of the load, at least one replica
    (when ``total`` > 0); the stable track keeps at least one. Capacity only: the traffic share is exact whatever
    these are (the stable replicas forward exactly ``percent`` of requests to the canary's Service)."""
    if total <= 0:
        return 0, 0
    canary = max(1, round(total * percent / 100))
    stable = max(1, total - canary)
    return stable, canary


def shadow_replicas(total: int, percent: float) -> int:
    """Replicas of the shadow: sized for its ``percent`` of the load, at least one (when ``total`` > 0)."""
    return max(1, -(-round(total * percent * 1000) // 100_000)) if total > 0 else 0


def shadow_version(md: ModelDeployment, versions: Versions) -> str | None:
    """The version the shadow track serves: None without ``spec.shadow``, on Ray Serve, or when its alias resolves
    to the stable version itself (nothing to compare)."""
    if md.spec.shadow is None or versions.shadow in (None, versions.stable):
        return None
    if md.spec.runtime == Runtime.pod and md.spec.server == Server.rayserve:
        return None
    return versions.shadow


def url(md: ModelDeployment, settings: OperatorSettings) -> str:
    domain = settings.cluster_domain
    if md.spec.runtime == Runtime.pod and md.spec.server == Server.rayserve:
        return f"http://{md.name}-serve-svc.{md.namespace}.svc.{domain}:{RAY_SERVE_PORT}"
    return f"http://{md.name}.{md.namespace}.svc.{domain}:{settings.server_port}"


def canary_host(md: ModelDeployment, settings: OperatorSettings) -> str:
    """The DNS name of the ``<name>-canary`` Service (onnx and vm runtimes)."""
    return f"{child_name(md, CANARY)}.{md.namespace}.svc.{settings.cluster_domain}"


def canary_args(md: ModelDeployment, settings: OperatorSettings) -> list[str]:
    """``mlstack serve`` arguments of the stable track when there is a canary: forward exactly its share."""
    if md.spec.canary is None:
        return []
    host = canary_host(md, settings)
    out = ["--canary-url", f"http://{host}:{settings.server_port}", "--canary-percent",
           str(md.spec.canary.traffic_percent)]
    if settings.grpc_port:
        out += ["--canary-grpc", f"{host}:{settings.grpc_port}"]
    return out


def shadow_args(md: ModelDeployment, settings: OperatorSettings) -> list[str]:
    """``mlstack serve`` arguments of the stable track when there is a shadow: mirror its share to its Service."""
    if md.spec.shadow is None:
        return []
    host = f"{child_name(md, SHADOW)}.{md.namespace}.svc.{settings.cluster_domain}"
    return ["--shadow-url", f"http://{host}:{settings.server_port}", "--shadow-percent", f"{md.spec.shadow.percent:g}"]


def _stable_args(md: ModelDeployment, settings: OperatorSettings, track: str, mirror: bool) -> list[str]:
    if track != STABLE:
        return []
    return canary_args(md, settings) + (shadow_args(md, settings) if mirror else [])


def _meta(md: ModelDeployment, name: str, track: str | None, annotations: dict[str, str] | None = None) -> Manifest:
    meta: Manifest = {"name": name, "namespace": md.namespace, "labels": labels(md, track)}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _requests(md: ModelDeployment) -> tuple[dict[str, str], dict[str, str]]:
    """(requests, limits) for one replica. No CPU limit (throttling hurts latency); memory limited."""
    r = md.spec.resources
    requests = {"cpu": r.cpu, "memory": r.memory}
    limits = {"memory": r.memory}
    if r.gpu:
        requests["nvidia.com/gpu"] = str(r.gpu)
        limits["nvidia.com/gpu"] = str(r.gpu)
    return requests, limits


def _pod_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _serve_command(md: ModelDeployment, version: str, port: int, grpc_port: int = 0,
                   extra: list[str] | None = None) -> list[str]:
    name = md.spec.model.name
    grpc = ["--grpc-port", str(grpc_port)] if grpc_port else []
    return ["mlstack", "serve", "--model", model_uri(name, version), "--host", "0.0.0.0", "--port", str(port),
            *grpc, "--name", name, *(extra or [])]


def monitoring_env(md: ModelDeployment, track: str) -> dict[str, str]:
    """The model server's payload log: the share of requests it keeps for the API's monitor (which pulls them
    over HTTP: model servers hold no platform credentials) and the track it records them under. A shadow logs every
    request it gets (each is a mirrored one, compared with the live answer), unless monitoring is off."""
    rate = md.spec.effective_monitoring.sample_rate
    if track == SHADOW:
        rate = 1.0 if rate > 0 else 0.0
    return {"MLSTACK_SERVE_MONITORING_SAMPLE_RATE": f"{rate:g}", "MLSTACK_SERVE_TRACK": track}


def build_deployment(md: ModelDeployment, version: str, settings: OperatorSettings, *, track: str = STABLE,
                     replicas: int | None = None, surge: bool = True, mirror: bool = False) -> Manifest:
    """The lean model server. ``replicas`` None leaves the count to an HPA. ``surge`` False: rolling updates
    replace one pod at a time without an extra one (when the namespace's quota has no room for it). ``mirror``:
    the stable track mirrors ``spec.shadow``'s share of requests to the shadow's Service."""
    requests, limits = _requests(md)
    port = settings.server_port
    probe_common = {"periodSeconds": 5, "timeoutSeconds": 2}
    extra = _stable_args(md, settings, track, mirror)
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": settings.server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": _serve_command(md, version, port, settings.grpc_port, extra),
        "env": [
            {"name": "MLSTACK_MLFLOW_TRACKING_URI", "value": settings.mlflow_tracking_uri},
            {"name": "MLSTACK_MODEL_CACHE_DIR", "value": "/tmp/models"},
            {"name": "HOME", "value": "/tmp"},
            *({"name": k, "value": v} for k, v in monitoring_env(md, track).items()),
        ],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}] + (
            [{"name": "grpc", "containerPort": settings.grpc_port, "protocol": "TCP"}] if settings.grpc_port else []),
        # Loading a model from MLflow can take a while: the startup probe holds liveness off until then.
        "startupProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "failureThreshold": 60,
                         **probe_common},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "failureThreshold": 3,
                          **probe_common},
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "failureThreshold": 2,
                           **probe_common},
        "resources": {"requests": requests, "limits": limits},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    uri = model_uri(md.spec.model.name, version)
    spec: Manifest = {
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": {LABEL_DEPLOYMENT: md.name, LABEL_TRACK: track}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1} if surge
                     else {"maxUnavailable": 1, "maxSurge": 0}},
        "template": {
            "metadata": {"labels": labels(md, track), "annotations": {ANNOTATION_MODEL_URI: uri}},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": _pod_security(),
                "terminationGracePeriodSeconds": 30,
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
            },
        },
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(md, child_name(md, track), track, {ANNOTATION_MODEL_URI: uri}),
        "spec": spec,
    }


def build_service(md: ModelDeployment, settings: OperatorSettings, *, target_port: int | str = "http",
                  grpc_target: int | str = "grpc", track: str = STABLE) -> Manifest:
    """The Service of one track: ``<name>`` selects the stable pods only (they forward the canary's share),
    ``<name>-canary`` the canary's (what the stable pods forward to), ``<name>-shadow`` the shadow's (what they
    mirror to). HTTP and, when the model server has one,
    its gRPC v2 port (``appProtocol: grpc`` for meshes and gateways)."""
    ports = [{"name": "http", "port": settings.server_port, "targetPort": target_port, "protocol": "TCP"}]
    if settings.grpc_port:
        ports.append({"name": "grpc", "port": settings.grpc_port, "targetPort": grpc_target, "protocol": "TCP",
                      "appProtocol": "grpc"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(md, child_name(md, track), None if track == STABLE else track),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_DEPLOYMENT: md.name, LABEL_TRACK: track},
            "ports": ports,
        },
    }


def hpa_bounds(md: ModelDeployment) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """((min, max) of the stable HPA, (min, max) of the canary's or None). At minimum scale stable + canary =
    ``minReplicas`` (as admission and the quota controller count); at maximum scale at most ``maxReplicas``
    (the canary's maximum sized for its share of the load). The traffic share is exact at any scale."""
    auto = md.spec.autoscaling
    assert auto is not None
    if md.spec.canary is None:
        return (auto.min_replicas, max(auto.min_replicas, auto.max_replicas)), None
    pct = md.spec.canary.traffic_percent
    _, canary_lo = canary_split(auto.min_replicas, pct)
    canary_hi = max(canary_lo, -(-auto.max_replicas * pct // 100))
    lo = max(1, auto.min_replicas - canary_lo)
    hi = max(lo, auto.max_replicas - canary_hi)
    return (lo, hi), (canary_lo, canary_hi)


def shadow_hpa_bounds(md: ModelDeployment) -> tuple[int, int]:
    """(min, max) of the shadow's HPA: sized for its share of the load at the deployment's minimum and maximum."""
    auto, shadow = md.spec.autoscaling, md.spec.shadow
    assert auto is not None and shadow is not None
    lo = shadow_replicas(auto.min_replicas, shadow.percent)
    return lo, max(lo, shadow_replicas(auto.max_replicas, shadow.percent))


def build_hpa(md: ModelDeployment, track: str = STABLE) -> Manifest:
    """The HPA of one track (``hpa_bounds``); each track scales on its own CPU, neither changes the share."""
    auto = md.spec.autoscaling
    assert auto is not None
    stable, canary = hpa_bounds(md)
    bounds = stable if track == STABLE else canary if track == CANARY else shadow_hpa_bounds(md)
    assert bounds is not None
    name = child_name(md, track)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(md, name, track),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": bounds[0],
            "maxReplicas": bounds[1],
            "metrics": [{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                       "averageUtilization": auto.target_cpu_utilization}},
            }],
        },
    }


def _cpu_float(cpu: str) -> float:
    return int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def serve_config(md: ModelDeployment, versions: Versions, settings: OperatorSettings) -> Manifest:
    """The Ray Serve config (serveConfigV2) for one application running the predictor."""
    spec = md.spec
    name = spec.model.name
    args: Manifest = {"model_uri": model_uri(name, versions.stable), "name": name,
                      "sample_rate": spec.effective_monitoring.sample_rate}  # the payload log (its collector)
    if versions.canary is not None and spec.canary is not None:
        args["canary_model_uri"] = model_uri(name, versions.canary)
        args["canary_traffic_percent"] = spec.canary.traffic_percent
    deployment: Manifest = {
        "name": settings.ray_serve_deployment,
        "ray_actor_options": {"num_cpus": _cpu_float(spec.resources.cpu), "num_gpus": spec.resources.gpu},
    }
    if spec.autoscaling:
        deployment["autoscaling_config"] = {
            "min_replicas": spec.autoscaling.min_replicas,
            "max_replicas": spec.autoscaling.max_replicas,
            "target_ongoing_requests": 2,
        }
    else:
        deployment["num_replicas"] = spec.replicas
    return {
        "applications": [{
            "name": "model",
            "import_path": settings.ray_serve_app,
            "route_prefix": "/",
            "args": args,
            "runtime_env": {"env_vars": {"MLSTACK_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}},
            "deployments": [deployment],
        }],
    }


def _ray_container(md: ModelDeployment, settings: OperatorSettings, name: str, requests: dict[str, str],
                   limits: dict[str, str], ports: list[Manifest]) -> Manifest:
    return {
        "name": name,
        "image": settings.ray_image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": [{"name": "MLSTACK_MLFLOW_TRACKING_URI", "value": settings.mlflow_tracking_uri}],
        "ports": ports,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


def _ray_pod(md: ModelDeployment, container: Manifest, track: str) -> Manifest:
    return {
        "metadata": {"labels": labels(md, track)},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
        },
    }


def build_rayservice(md: ModelDeployment, versions: Versions, settings: OperatorSettings) -> Manifest:
    spec = md.spec
    requests, limits = _requests(md)
    head = _ray_container(md, settings, "ray-head", {"cpu": "1", "memory": "2Gi"}, {"memory": "2Gi"}, [
        {"name": "gcs", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": RAY_SERVE_PORT},
    ])
    worker = _ray_container(md, settings, "ray-worker", requests, limits, [])
    if spec.autoscaling:
        lo, hi, start = spec.autoscaling.min_replicas, spec.autoscaling.max_replicas, spec.autoscaling.min_replicas
    else:
        lo = hi = start = spec.replicas
    annotations = {ANNOTATION_MODEL_URI: model_uri(spec.model.name, versions.stable)}
    if versions.canary is not None and spec.canary is not None:
        annotations[ANNOTATION_CANARY_PERCENT] = str(spec.canary.traffic_percent)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _meta(md, md.name, STABLE, annotations),
        "spec": {
            "serveConfigV2": dump_yaml(serve_config(md, versions, settings)),
            "rayClusterConfig": {
                "rayVersion": settings.ray_version,
                "enableInTreeAutoscaling": spec.autoscaling is not None,
                "headGroupSpec": {
                    # The head schedules no replicas; workers carry the per-replica resources.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": _ray_pod(md, head, STABLE),
                },
                "workerGroupSpecs": [{
                    "groupName": "serve",
                    "replicas": start,
                    "minReplicas": lo,
                    "maxReplicas": hi,
                    "rayStartParams": {},
                    "template": _ray_pod(md, worker, STABLE),
                }],
            },
        },
    }


def cloud_init(md: ModelDeployment, version: str, settings: OperatorSettings, track: str = STABLE,
               mirror: bool = False) -> str:
    """cloud-config that runs the platform's own model-server image (``vm_server_image``, else ``server_image``:
    pinned, by digest in production) with podman as a systemd service. Nothing of the platform is installed by name
    from a public index (the old ``pip install mlstack==0.1.0`` resolved to a stranger's project on PyPI); podman
    itself comes from the VM image's own distribution."""
    port = settings.server_port
    argv = _serve_command(md, version, port, settings.grpc_port, _stable_args(md, settings, track, mirror))
    run = ["/usr/bin/podman", "run", "--rm", "--name", "mlstack-serve", "--network", "host", "--read-only",
           "--tmpfs", "/tmp", "--user", "10001:10001", "--security-opt", "no-new-privileges",
           "-e", f"MLSTACK_MLFLOW_TRACKING_URI={settings.mlflow_tracking_uri}",
           "-e", "MLSTACK_MODEL_CACHE_DIR=/tmp/models", "-e", "HOME=/tmp",
           *(x for k, v in monitoring_env(md, track).items() for x in ("-e", f"{k}={v}")),
           settings.effective_vm_image, *argv]
    unit = "\n".join([
        "[Unit]",
        "Description=mlstack model server",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "ExecStartPre=-/usr/bin/podman rm -f mlstack-serve",
        f"ExecStart={' '.join(run)}",
        "ExecStop=/usr/bin/podman stop -t 10 mlstack-serve",
        "Restart=always",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
    config = {
        "package_update": True,
        "packages": ["podman"],
        "write_files": [{"path": "/etc/systemd/system/mlstack-serve.service", "permissions": "0644",
                         "content": unit}],
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "mlstack-serve.service"],
        ],
    }
    return "#cloud-config\n" + dump_yaml(config)


def build_virtualmachine(md: ModelDeployment, version: str, settings: OperatorSettings, *,
                         track: str = STABLE, mirror: bool = False) -> Manifest:
    vm = md.spec.vm
    assert vm is not None
    port = settings.server_port
    requests = {"cpu": md.spec.resources.cpu, "memory": vm.memory}
    if md.spec.resources.gpu:
        requests["nvidia.com/gpu"] = str(md.spec.resources.gpu)
    uri = model_uri(md.spec.model.name, version)
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": _meta(md, child_name(md, track), track, {ANNOTATION_MODEL_URI: uri}),
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": labels(md, track), "annotations": {ANNOTATION_MODEL_URI: uri}},
                "spec": {
                    "domain": {
                        "cpu": {"cores": vm.cores},
                        "memory": {"guest": vm.memory},
                        "resources": {"requests": requests},
                        "devices": {
                            "disks": [
                                {"name": "containerdisk", "disk": {"bus": "virtio"}},
                                {"name": "cloudinitdisk", "disk": {"bus": "virtio"}},
                            ],
                            "interfaces": [{"name": "default", "masquerade": {},
                                            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}],
                        },
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    # Installing the server at first boot takes minutes: probe patiently.
                    "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": port},
                                       "initialDelaySeconds": 60, "periodSeconds": 10, "timeoutSeconds": 2,
                                       "failureThreshold": 3},
                    "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": port},
                                      "initialDelaySeconds": 900, "periodSeconds": 20, "timeoutSeconds": 5,
                                      "failureThreshold": 6},
                    "terminationGracePeriodSeconds": 30,
                    "volumes": [
                        {"name": "containerdisk", "containerDisk": {"image": vm.image}},
                        {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": cloud_init(md, version, settings,
                                                                                              track, mirror)}},
                    ],
                },
            },
        },
    }


def build_children(md: ModelDeployment, versions: Versions, settings: OperatorSettings, *,
                   surge: bool = True) -> list[Manifest]:
    """Every child of ``md``, stable first. Deterministic: the same input gives the same list."""
    spec = md.spec
    canary = versions.canary if spec.canary is not None else None
    if spec.runtime == Runtime.pod and spec.server == Server.rayserve:
        return [build_rayservice(md, Versions(versions.stable, canary), settings)]

    shadow = shadow_version(md, versions)
    mirror = shadow is not None
    total = base_replicas(md)
    if canary is not None:
        assert spec.canary is not None
        stable_n, canary_n = canary_split(total, spec.canary.traffic_percent)
    else:
        stable_n, canary_n = total, 0

    children: list[Manifest] = []
    if spec.runtime == Runtime.vm:
        children.append(build_virtualmachine(md, versions.stable, settings, mirror=mirror))
        if canary is not None:
            children.append(build_virtualmachine(md, canary, settings, track=CANARY))
        if shadow is not None:
            children.append(build_virtualmachine(md, shadow, settings, track=SHADOW))
        children.append(build_service(md, settings, target_port=settings.server_port,
                                      grpc_target=settings.grpc_port))
        if canary is not None:
            children.append(build_service(md, settings, target_port=settings.server_port,
                                          grpc_target=settings.grpc_port, track=CANARY))
        if shadow is not None:
            children.append(build_service(md, settings, target_port=settings.server_port,
                                          grpc_target=settings.grpc_port, track=SHADOW))
        return children

    # With autoscaling each track's HPA owns its replica count (hpa_bounds); the share stays exact at any scale
    # because the stable replicas forward it, whatever the counts.
    stable = build_deployment(md, versions.stable, settings, replicas=stable_n, surge=surge, mirror=mirror)
    if spec.autoscaling:
        stable["metadata"]["annotations"][ANNOTATION_REPLICAS_FROM] = f"HorizontalPodAutoscaler/{md.name}"
    children.append(stable)
    if canary is not None:
        assert spec.canary is not None
        dep = build_deployment(md, canary, settings, track=CANARY, replicas=canary_n, surge=surge)
        dep["metadata"]["annotations"][ANNOTATION_CANARY_PERCENT] = str(spec.canary.traffic_percent)
        if spec.autoscaling:
            dep["metadata"]["annotations"][ANNOTATION_REPLICAS_FROM] = \
                f"HorizontalPodAutoscaler/{child_name(md, CANARY)}"
        children.append(dep)
    if shadow is not None:
        assert spec.shadow is not None
        dep = build_deployment(md, shadow, settings, track=SHADOW, surge=surge,
                               replicas=shadow_replicas(total, spec.shadow.percent))
        dep["metadata"]["annotations"][ANNOTATION_SHADOW_PERCENT] = f"{spec.shadow.percent:g}"
        if spec.autoscaling:
            dep["metadata"]["annotations"][ANNOTATION_REPLICAS_FROM] = \
                f"HorizontalPodAutoscaler/{child_name(md, SHADOW)}"
        children.append(dep)
    children.append(build_service(md, settings))
    if canary is not None:
        children.append(build_service(md, settings, track=CANARY))
    if shadow is not None:
        children.append(build_service(md, settings, track=SHADOW))
    if spec.autoscaling:
        children.append(build_hpa(md))
        if canary is not None:
            children.append(build_hpa(md, CANARY))
        if shadow is not None:
            children.append(build_hpa(md, SHADOW))
    return children


def child_keys(md: ModelDeployment, settings: OperatorSettings) -> set[tuple[str, str, str]]:
    """(apiVersion, kind, name) of the children ``md``'s spec makes (which ones, not their versions)."""
    versions = Versions("1", "2" if md.spec.canary is not None else None, "3" if md.spec.shadow is not None else None)
    return {(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in build_children(md, versions, settings)}


def possible_children(md: ModelDeployment) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of everything this operator could have made for ``md``: stale ones get deleted."""
    canary, shadow = child_name(md, CANARY), child_name(md, SHADOW)
    return [
        ("apps/v1", "Deployment", md.name),
        ("apps/v1", "Deployment", canary),
        ("apps/v1", "Deployment", shadow),
        ("v1", "Service", md.name),
        ("v1", "Service", canary),
        ("v1", "Service", shadow),
        ("autoscaling/v2", "HorizontalPodAutoscaler", md.name),
        ("autoscaling/v2", "HorizontalPodAutoscaler", canary),
        ("autoscaling/v2", "HorizontalPodAutoscaler", shadow),
        ("ray.io/v1", "RayService", md.name),
        ("kubevirt.io/v1", "VirtualMachine", md.name),
        ("kubevirt.io/v1", "VirtualMachine", canary),
        ("kubevirt.io/v1", "VirtualMachine", shadow),
    ]
