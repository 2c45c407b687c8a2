"""Every YAML under manifests/ and every rendered kustomization validates: core kinds with
kubernetes-validate (strict, at the kind node's Kubernetes and at the newest, so removed API versions
fail), Argo CD / KubeRay / KubeVirt kinds with ../shared/tools/validate-upstream."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.cluster.conftest import (
    KIND_NODE_K8S,
    MANIFESTS,
    PYTHON,
    ROOT,
    kustomization_dirs,
    kustomize,
    need_shared,
    skip_if_operator_missing,
    yaml_docs,
)

UPSTREAM_GROUPS = {"argoproj.io", "ray.io", "kubevirt.io"}
NOT_OBJECTS = {"Kustomization", "Component"}  # kustomize's own files
OWN_DIRS = ("namespaces", "redis", "platform", "auth", "fastapi", "frontend", "overlays", "argocd")
VERSIONS = sorted({KIND_NODE_K8S, kubernetes_validate.latest_version()})


def group_of(obj: dict) -> str:
    return str(obj.get("apiVersion", "")).rpartition("/")[0]


CORE_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
               "apiextensions.k8s.io", "coordination.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
               "admissionregistration.k8s.io"}


def validate_core(obj: dict) -> None:
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # a third-party kind with no schema here (e.g. kopf.dev peering objects); core kinds must have one
            assert group_of(obj) not in CORE_GROUPS, f"{obj['apiVersion']} {obj['kind']} is unknown at k8s {version}"
            return
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path)) or "<root>"
            name = f"{obj['kind']}/{obj['metadata'].get('name')}"
            raise AssertionError(f"{name} @k8s {version}: {where}: {exc.message}") from None


def validate_upstream(objs: list[dict], label: str) -> None:
    tool = need_shared("tools", "validate-upstream")
    out = subprocess.run([PYTHON, str(tool), "-"], input=yaml.safe_dump_all(objs), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"{label}: validate-upstream:\n{out.stdout}{out.stderr}"


def check_objects(objs: list[dict], label: str) -> int:
    objs = [o for o in objs if o.get("kind") not in NOT_OBJECTS]
    upstream = [o for o in objs if group_of(o) in UPSTREAM_GROUPS]
    for obj in objs:
        if group_of(obj) in UPSTREAM_GROUPS or group_of(obj) == "mlstack.io":
            continue  # ModelDeployment examples are the operator's tests' business
        validate_core(obj)
    if upstream:
        validate_upstream(upstream, label)
    return len(objs)


YAML_FILES = sorted(p for p in MANIFESTS.rglob("*") if p.suffix in {".yaml", ".yml"})


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_file_validates(path):
    docs = yaml_docs(path.read_text())
    assert docs, f"{path} is empty"
    check_objects(docs, str(path.relative_to(ROOT)))


@pytest.mark.parametrize("path", kustomization_dirs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomization_renders_and_validates(path):
    skip_if_operator_missing(path)
    objs = list(kustomize(path))
    assert objs, f"{path} renders nothing"
    assert check_objects(objs, f"kubectl kustomize {path.relative_to(ROOT)}") == len(objs)


def own_workloads():
    for sub in ("redis", "fastapi", "frontend"):
        for obj in kustomize(MANIFESTS / sub):
            if obj["kind"] in {"Deployment", "StatefulSet"}:
                yield obj


def test_workloads_hardened_with_resources_and_probes():
    seen = 0
    for obj in own_workloads():
        seen += 1
        name = obj["metadata"]["name"]
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            assert "readinessProbe" in c and "livenessProbe" in c, name
            assert c.get("imagePullPolicy") != "Never", name
    assert seen == 3


def test_pdb_where_replicas_above_one():
    for sub in ("fastapi", "frontend"):
        objs = kustomize(MANIFESTS / sub)
        pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
        for dep in (o for o in objs if o["kind"] == "Deployment" and o["spec"].get("replicas", 1) > 1):
            labels = dep["spec"]["selector"]["matchLabels"]
            assert any(p["spec"]["selector"]["matchLabels"] == labels for p in pdbs), dep["metadata"]["name"]


def test_kind_overlays_carry_only_differences():
    api = {o["kind"]: o for o in kustomize(MANIFESTS / "overlays" / "kind" / "fastapi")}
    base = {o["kind"]: o for o in kustomize(MANIFESTS / "fastapi")}
    assert api["Deployment"]["spec"]["replicas"] == 1 and "PodDisruptionBudget" not in api
    assert api["Service"]["spec"]["type"] == "NodePort" and api["Service"]["spec"]["ports"][0]["nodePort"] == 30888
    assert base["Service"]["spec"]["type"] == "ClusterIP"
    ui = {o["kind"]: o for o in kustomize(MANIFESTS / "overlays" / "kind" / "frontend")}
    assert ui["Service"]["spec"]["ports"][0]["nodePort"] == 30501


def test_argocd_app_of_apps():
    apps = [o for o in kustomize(MANIFESTS / "argocd" / "apps") if o["kind"] == "Application"]
    by_name = {a["metadata"]["name"]: a for a in apps}
    assert set(by_name) == {"mlstack-crds", "mlstack-auth", "mlstack-operator", "mlstack-api", "mlstack-dashboard"}
    wave = {n: int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for n, a in by_name.items()}
    assert wave["mlstack-crds"] < wave["mlstack-operator"] < wave["mlstack-api"] <= wave["mlstack-dashboard"]
    assert wave["mlstack-auth"] < wave["mlstack-api"], "the roles the API binds exist before it"
    for app in [*apps, yaml.safe_load((MANIFESTS / "argocd" / "root.yaml").read_text())]:
        auto = app["spec"]["syncPolicy"]["automated"]
        assert auto["prune"] is True and auto["selfHeal"] is True, app["metadata"]["name"]
    for app in apps:
        path = ROOT / app["spec"]["source"]["path"]
        assert (path / "kustomization.yaml").exists(), f"{app['metadata']['name']}: {path} has no kustomization"


def test_root_patches_apply_to_every_child(tmp_path):
    """Render what Argo CD renders for the root: manifests/argocd/apps plus the root's kustomize.patches."""
    root = yaml.safe_load((MANIFESTS / "argocd" / "root.yaml").read_text())
    for f in (MANIFESTS / "argocd" / "apps").glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    k = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    k["patches"] = root["spec"]["source"]["kustomize"]["patches"]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(k))
    objs = kustomize(tmp_path)
    apps = [o for o in objs if o["kind"] == "Application"]
    assert len(apps) == 5
    for app in apps:
        src = app["spec"]["source"]
        assert src["repoURL"] == "__REPO_URL__" and src["targetRevision"] == "__REVISION__"
        assert "mlstack-api=mlstack-api:__IMAGE_TAG__" in src["kustomize"]["images"]
    operator = next(a for a in apps if a["metadata"]["name"] == "mlstack-operator")
    assert "MLSTACK_OPERATOR_SERVER_IMAGE" in operator["spec"]["source"]["kustomize"]["patches"][0]["patch"]
    check_objects(list(objs), "rendered root")


def test_operator_overlay_patches_the_real_container():
    skip_if_operator_missing(MANIFESTS / "overlays" / "kind" / "operator")
    deps = [o for o in kustomize(MANIFESTS / "overlays" / "kind" / "operator") if o["kind"] == "Deployment"]
    dep = next((d for d in deps if d["metadata"]["name"] == "mlstack-operator"), None)
    assert dep, "overlays/kind/operator patches Deployment mlstack-operator: rename the patch target"
    containers = dep["spec"]["template"]["spec"]["containers"]
    for c in containers:
        assert c.get("image"), f"container {c['name']} has no image: the env patch names a missing container"
    env = {e["name"]: e.get("value") for c in containers for e in c.get("env", [])}
    assert env["MLSTACK_OPERATOR_SERVER_IMAGE"].rsplit("/", 1)[-1].startswith("mlstack-server:")
