"""Every manifest applied to a real API server (issue 11, item 6).

On the session control plane (``k8s``): each kustomization under manifests/ and every YAML no kustomization
includes goes through ``kubectl apply --server-side --dry-run=server --validate=strict`` (strict field
validation on the server: unknown or duplicate fields are errors) and may print no warning at all;
``kubectl explain`` describes the CRD's fields.

On a FRESH control plane of this module's own (no mlstack CRD, no namespace; only what the helm charts bring
before Argo CD: KubeRay's CRDs, and Argo CD's / KubeVirt's from ../shared/schemas where present), the
bootstrap runs as ``./init.sh`` does it (its own ``k apply`` lines, read from init.sh), then the app-of-apps as
Argo CD syncs it: the Application objects in sync-wave order (validated by the real Argo CD CRD), and what each
one syncs, server-side applied in that order (namespaces and CRDs first within an app, CRDs Established before
the next wave, the destination namespace created for ``CreateNamespace=true``, namespaced objects without a
namespace put in the destination's). Nothing may fail for ordering. Then the documented commands run verbatim,
read from README.md and init.sh's printed hints, with the operator running as its ServiceAccount, and
``kubectl get mdep -A`` must show the columns README names, with values.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s import controlplane
from tests.k8s.controlplane import Cluster, Kube, kubectl_bin
from tests.k8s.fixtures import Operator
from tests.utils.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SHARED = controlplane.SHARED
FIELD_MANAGER = "mlstack-tests-apply"
ARGOCD_APP_CRD = "applications.argoproj.io"
DEADLINE = 90.0
# what ./init.sh fills into manifests/argocd/root.yaml (its sed), with stand-in values
ROOT_PLACEHOLDERS = {"__REPO_URL__": "https://github.com/mlstack/mlstack.git", "__REVISION__": "main",
                     "__IMAGE_TAG__": "0123456789ab"}


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------

def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))


def render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl_bin(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {rel(path)}:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def files_outside_kustomizations() -> list[Path]:
    """YAML files under manifests/ that no kustomization lists (applied on their own, e.g. by init.sh)."""
    listed: set[Path] = set()
    for d in kustomization_dirs():
        k = yaml.safe_load((d / "kustomization.yaml").read_text()) or {}
        for entry in k.get("resources", []) + k.get("components", []):
            listed.add((d / entry).resolve())
    return sorted(p for p in MANIFESTS.rglob("*.yaml")
                  if p.name != "kustomization.yaml" and p.resolve() not in listed)


def warnings_of(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("Warning:")]


def dry_run(k8s: Cluster, *source: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return k8s.kubectl("apply", "--server-side", "--dry-run=server", "--validate=strict", "--force-conflicts",
                       f"--field-manager={FIELD_MANAGER}", *source, input=stdin, check=False)


def crd_installed(kube: Kube, name: str) -> bool:
    return kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") is not None


def need_argocd_crd(kube: Kube) -> None:
    if not crd_installed(kube, ARGOCD_APP_CRD):
        pytest.skip(f"Argo CD's CRDs are not installed ({SHARED / 'schemas'} is absent: ../shared is only on the "
                    "team's machines): the Application objects were not validated by the real Argo CD CRD")


def group_of(obj: dict[str, Any]) -> str:
    return str(obj["apiVersion"]).rpartition("/")[0]


def scopes(kube: Kube) -> dict[tuple[str, str], bool]:
    """(group, kind) -> namespaced, from the server's discovery (what Argo CD asks too)."""
    out: dict[tuple[str, str], bool] = {}
    for r in kube.get("/api/v1")["resources"]:
        out[("", r["kind"])] = r["namespaced"]
    for g in kube.get("/apis")["groups"]:
        lst = kube.get(f"/apis/{g['preferredVersion']['groupVersion']}") or {"resources": []}
        for r in lst["resources"]:
            out.setdefault((g["name"], r["kind"]), r["namespaced"])
    return out


def root_application() -> dict[str, Any]:
    text = (MANIFESTS / "argocd" / "root.yaml").read_text()
    for k, v in ROOT_PLACEHOLDERS.items():
        text = text.replace(k, v)
    return yaml.safe_load(text)


def rendered_children(tmp: Path) -> list[dict[str, Any]]:
    """manifests/argocd/apps as the root Application renders it (the apps plus the root's kustomize.patches)."""
    root = root_application()
    tmp.mkdir(parents=True, exist_ok=True)
    for f in (MANIFESTS / "argocd" / "apps").glob("*.yaml"):
        (tmp / f.name).write_text(f.read_text())
    k = yaml.safe_load((tmp / "kustomization.yaml").read_text())
    k["patches"] = root["spec"]["source"]["kustomize"]["patches"]
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump(k))
    return render(tmp)


def wave(obj: dict[str, Any]) -> int:
    return int(((obj["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave")) or 0)


def waves(objs: list[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    by: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for o in objs:
        by[wave(o)].append(o)
    return sorted(by.items())


def app_content(app: dict[str, Any], kinds: dict[tuple[str, str], bool]) -> list[dict[str, Any]]:
    """What Argo CD applies for ``app``: its source path rendered with the app's kustomize options, namespaced
    objects without a namespace put in the destination namespace."""
    src = app["spec"]["source"]
    objs = render(ROOT / src["path"])
    common = (src.get("kustomize") or {}).get("commonAnnotations") or {}
    dest_ns = app["spec"]["destination"].get("namespace")
    for o in objs:
        o["metadata"].setdefault("annotations", {}).update(common)
        key = (group_of(o), o["kind"])
        namespaced = kinds.get(key, key not in CLUSTER_SCOPED_CRDS)
        if namespaced and not o["metadata"].get("namespace") and dest_ns:
            o["metadata"]["namespace"] = dest_ns
    return objs


# cluster-scoped kinds of CRDs that a later wave installs (unknown to discovery before): read from manifests/crds
CLUSTER_SCOPED_CRDS = {(c["spec"]["group"], c["spec"]["names"]["kind"])
                       for c in (d for p in (MANIFESTS / "crds").glob("*.yaml")
                                 for d in yaml.safe_load_all(p.read_text()) if d)
                       if c.get("kind") == "CustomResourceDefinition" and c["spec"]["scope"] == "Cluster"}
FIRST_KINDS = ("Namespace", "CustomResourceDefinition")  # Argo CD (like helm) applies these before the rest


def apply_objects(cluster: Cluster, objs: list[dict[str, Any]], manager: str) -> subprocess.CompletedProcess:
    return cluster.kubectl("apply", "--server-side", "--validate=strict", f"--field-manager={manager}", "-f", "-",
                           input=yaml.safe_dump_all(objs), check=False)


def established_crds(cluster: Cluster, objs: list[dict[str, Any]]) -> None:
    names = [o["metadata"]["name"] for o in objs if o["kind"] == "CustomResourceDefinition"]
    if names:
        cluster.wait_crds(names)


def bash(cluster: Cluster, cmd: str, **env: str) -> subprocess.CompletedProcess:
    """A documented command, verbatim, in bash at the repository root: the venv's kubectl and mlstack first on
    PATH, KUBECONFIG pointing at ``cluster``."""
    path = os.pathsep.join([str(Path(kubectl_bin()).parent), str(Path(sys.executable).parent),
                            os.environ.get("PATH", "")])
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={**os.environ, "PATH": path, "KUBECONFIG": str(cluster.kubeconfig), **env})


# ---------------------------------------------------------------------------------------------------------------
# the documented commands, read from the docs (a doc change is a test change)
# ---------------------------------------------------------------------------------------------------------------

def readme_block(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [ln for ln in block.splitlines() if ln.strip()]


def readme_commands() -> list[tuple[str, str]]:
    """(command, its trailing comment) of the ModelDeployments block, plus commands quoted in the comments
    ("or every example: kubectl apply -k ...") and the inline `kubectl ... create token ...` of the auth section."""
    out: list[tuple[str, str]] = []
    for line in readme_block("### ModelDeployments"):
        cmd, _, comment = line.partition(" # ")
        out.append((cmd.strip(), comment.strip()))
        for quoted in re.findall(r"(?:^|: )((?:kubectl|mlstack) [^#|]+)", comment):
            out.append((quoted.strip(), ""))
    text = (ROOT / "README.md").read_text()
    out += [(c, "") for c in re.findall(r"`(kubectl -n \S+ create token \S+)`", text)]
    return out


def init_hints() -> list[str]:
    """The kubectl commands init.sh prints for the user (`log "...: kubectl --context $KCTX ..."`) and the token
    command it runs for the admin (admin_token), as written there."""
    text = (ROOT / "init.sh").read_text()
    hints = [m.strip() for line in text.splitlines() if line.lstrip().startswith("log ")
             for m in re.findall(r"(kubectl --context \$KCTX [^|\"]+)", line)]
    hints += re.findall(r'^\s*(kubectl --context "\$KCTX" -n mlstack create token mlstack-admin [^|]*?) \|\|',
                        text, re.M)
    return hints


def init_bootstrap() -> list[str]:
    """cluster_up's own `k apply ... manifests/...` lines, in order: what ./init.sh applies before Argo CD."""
    body = (ROOT / "init.sh").read_text().split("\ncluster_up() {", 1)[1].split("\n}\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\s*k (apply .*manifests/\S+)\s*$", body, re.M)]


def test_documented_commands_are_found():
    cmds = [c for c, _ in readme_commands()]
    assert "kubectl apply -k manifests/examples" in cmds, cmds
    assert any(c.startswith("kubectl get mdep -A") for c in cmds), cmds
    assert any(" create token " in c for c in cmds), cmds
    assert any(c.startswith("kubectl apply -f manifests/examples/") for c in cmds), cmds
    assert init_hints(), "init.sh prints no kubectl hint any more: update this test"
    boot = init_bootstrap()
    assert any(b.endswith("manifests/crds") for b in boot) and any(b.endswith("manifests/namespaces") for b in boot)


@pytest.mark.parametrize("cmd", [c for c, _ in readme_commands()] + init_hints(), ids=str)
def test_documented_kubectl_commands_never_apply_a_folder_with_f(cmd):
    """`kubectl apply -f DIR/` of a folder holding a kustomization.yaml exits 1 on a real server (shared note,
    defect 3): folders go with -k."""
    words = shlex.split(cmd)
    for i, w in enumerate(words[:-1]):
        if w in ("-f", "--filename"):
            target = ROOT / words[i + 1]
            assert not target.is_dir(), f"{cmd!r}: -f {words[i + 1]} is a folder: use -k"


# ---------------------------------------------------------------------------------------------------------------
# the session control plane: every kustomization dry-run, strict, no warnings
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def namespaces(k8s: Cluster) -> set[str]:
    """Every Namespace the manifests declare, applied for real (a sync creates them first; a server-side dry run
    of a namespaced object needs its namespace to exist)."""
    objs = [o for d in kustomization_dirs() for o in render(d) if o["kind"] == "Namespace"]
    unique = {o["metadata"]["name"]: o for o in objs}
    out = apply_objects(k8s, list(unique.values()), FIELD_MANAGER)
    assert out.returncode == 0, out.stderr
    return set(unique)


@pytest.mark.parametrize("path", kustomization_dirs(), ids=rel)
def test_kustomization_server_dry_run_strict(k8s, k8s_admin, namespaces, path):
    if path == MANIFESTS / "argocd" / "apps":
        need_argocd_crd(k8s_admin)
    objs = render(path)
    out = dry_run(k8s, "-k", rel(path))
    assert out.returncode == 0, f"{rel(path)} refused by the API server:\n{out.stderr}"
    assert not warnings_of(out.stderr), f"{rel(path)}: the API server warned:\n{out.stderr}"
    assert out.stdout.count("(server dry run)") == len(objs), out.stdout


@pytest.mark.parametrize("path", files_outside_kustomizations(), ids=rel)
def test_loose_yaml_server_dry_run_strict(k8s, k8s_admin, namespaces, path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if any(group_of(d) == "argoproj.io" for d in docs):
        need_argocd_crd(k8s_admin)
    text = path.read_text()
    for k, v in ROOT_PLACEHOLDERS.items():  # init.sh fills these in with sed before applying
        text = text.replace(k, v)
    out = dry_run(k8s, "-f", "-", stdin=text)
    assert out.returncode == 0, f"{rel(path)} refused by the API server:\n{out.stderr}"
    assert not warnings_of(out.stderr), f"{rel(path)}: the API server warned:\n{out.stderr}"
    assert out.stdout.count("(server dry run)") == len(docs), out.stdout


def test_strict_validation_reaches_the_server(k8s, namespaces):
    """The control: the same dry run refuses an unknown field (so a clean run above means something)."""
    dep = next(o for o in render(MANIFESTS / "fastapi") if o["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    out = dry_run(k8s, "-f", "-", stdin=yaml.safe_dump(dep))
    assert out.returncode != 0 and "imagePullPolicyy: field not declared in schema" in out.stderr, out.stderr


def test_explain_describes_the_model_fields(k8s):
    def explained() -> str | None:  # the server publishes a CRD's OpenAPI a moment after the CRD changes
        out = k8s.kubectl("explain", "modeldeployment.spec.model").stdout
        return None if "<no description>" in out else out

    try:
        out = wait_until(explained, 30, interval=0.5, what="kubectl explain with every field described")
    except TimeoutError:
        raise AssertionError(k8s.kubectl("explain", "modeldeployment.spec.model").stdout) from None
    assert "GROUP:      mlstack.io" in out and "VERSION:    v1alpha1" in out, out
    assert "exactly one of version and alias" in out, out
    fields = dict(re.findall(r"^  (\w+)\t<(\w+)>", out, re.M))
    assert fields == {"alias": "string", "name": "string", "version": "string"}, out
    assert re.search(r"^  name\t<string> -required-$", out, re.M), out
    described = dict(re.findall(r"^  (\w+)\t<\w+>.*\n    (\S.*)$", out, re.M))
    assert set(described) == set(fields) and "MLflow" in described["name"], out


def test_explain_recursive_covers_the_spec(k8s):
    out = k8s.kubectl("explain", "mdep.spec", "--recursive").stdout
    for field in ("model", "runtime", "server", "replicas", "autoscaling", "resources", "priority", "canary", "vm",
                  "alerts"):
        assert re.search(rf"^  {field}\t<", out, re.M), f"spec.{field} missing from kubectl explain:\n{out}"


# ---------------------------------------------------------------------------------------------------------------
# a fresh control plane: init.sh's bootstrap, then the app-of-apps in sync-wave order, then the docs verbatim
# ---------------------------------------------------------------------------------------------------------------

def platform_crds(cluster: Cluster) -> dict[str, str]:
    """What the helm charts installed before Argo CD brings: KubeRay's CRDs (its Go module), Argo CD's and
    KubeVirt's (../shared/schemas) where present. Not ours: the bootstrap and the sync must install those."""
    skipped: dict[str, str] = {}
    ray = controlplane.kuberay_crd_dir()
    files = [ray / "ray.io_rayservices.yaml", ray / "ray.io_rayclusters.yaml"]
    names = ["rayservices.ray.io", "rayclusters.ray.io"]
    for crd, name in (("argoproj.io_applications.yaml", ARGOCD_APP_CRD),
                      ("argoproj.io_appprojects.yaml", "appprojects.argoproj.io"),
                      ("kubevirt.io_virtualmachines.yaml", "virtualmachines.kubevirt.io")):
        if (SHARED / "schemas" / crd).exists():
            files.append(SHARED / "schemas" / crd)
            names.append(name)
        else:
            skipped[name] = f"{SHARED / 'schemas' / crd} is absent"
    for f in files:
        cluster.kubectl("apply", "--server-side", "--field-manager=helm", "-f", str(f))
    cluster.wait_crds(names)
    return skipped


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Iterator[Cluster]:
    """A control plane of this module's own, with no mlstack CRD and no mlstack namespace."""
    d = tmp_path_factory.mktemp("fresh-k8s")
    with pytest.MonkeyPatch.context() as mp:  # up() installs our CRDs too: here only the platform's
        mp.setattr(controlplane, "install_crds", platform_crds)
        cluster = controlplane.up(d, nodes=1)
    try:
        yield cluster
    finally:
        controlplane.down(d)


class Sync:
    """The record of one fresh convergence: what was applied, in which order, and what was skipped."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.applied: list[dict[str, Any]] = []
        self.applications: list[dict[str, Any]] = []
        self.argocd = False


@pytest.fixture(scope="module")
def converged(fresh: Cluster, tmp_path_factory) -> Sync:
    sync = Sync()
    kube = fresh.admin()
    sync.argocd = crd_installed(kube, ARGOCD_APP_CRD)

    # 1. ./init.sh's own applies before Argo CD (namespaces, platform additions, redis, the CRDs), verbatim
    for cmd in init_bootstrap():
        out = bash(fresh, f"kubectl {cmd}")
        assert out.returncode == 0, f"init.sh's `k {cmd}` failed on a fresh cluster:\n{out.stderr}"
        sync.steps.append(f"init.sh: k {cmd}")

    # 2. the root Application (init.sh: sed the placeholders | kubectl apply -f -)
    root = root_application()
    if sync.argocd:
        out = apply_objects(fresh, [root], "mlstack-init")
        assert out.returncode == 0, f"the root Application was refused:\n{out.stderr}"
        assert not warnings_of(out.stderr), out.stderr
        sync.steps.append("root Application")

    # 3. what the root syncs (AppProject and Applications), wave by wave; after each wave, what each of its
    #    Applications syncs (Argo CD waits for a wave's Applications to be Healthy before the next one)
    children = rendered_children(tmp_path_factory.mktemp("argocd-root"))
    for w, objs in waves(children):
        if sync.argocd:
            out = apply_objects(fresh, objs, "argocd-controller")
            assert out.returncode == 0, f"wave {w} of the root's objects refused:\n{out.stderr}"
            assert not warnings_of(out.stderr), f"wave {w}: the API server warned:\n{out.stderr}"
        sync.steps.append(f"wave {w}: " + ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in objs))
        for app in (o for o in objs if o["kind"] == "Application"):
            sync.applications.append(app)
            kinds = scopes(kube)
            content = app_content(app, kinds)
            if "CreateNamespace=true" in (app["spec"].get("syncPolicy") or {}).get("syncOptions", []):
                kube.ensure_namespace(app["spec"]["destination"]["namespace"])
            first = [o for o in content if o["kind"] in FIRST_KINDS]
            rest = [o for o in content if o["kind"] not in FIRST_KINDS]
            for batch in (first, rest):
                if not batch:
                    continue
                out = apply_objects(fresh, batch, "argocd-controller")
                assert out.returncode == 0, (
                    f"wave {w}, Application {app['metadata']['name']} ({app['spec']['source']['path']}) failed on a "
                    f"fresh cluster:\n{out.stderr}\nsteps so far:\n" + "\n".join(sync.steps))
                assert not warnings_of(out.stderr), f"{app['metadata']['name']}: the API server warned:\n{out.stderr}"
                established_crds(fresh, batch)
            sync.applied += content
            sync.steps.append(f"  synced {app['metadata']['name']}: {len(content)} objects")
    return sync


def live(kube: Kube, obj: dict[str, Any], kinds: dict[tuple[str, str], bool]) -> dict[str, Any] | None:
    group, version = (obj["apiVersion"].split("/") if "/" in obj["apiVersion"] else ("", obj["apiVersion"]))
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    res = next(r["name"] for r in kube.get(base)["resources"] if r["kind"] == obj["kind"] and "/" not in r["name"])
    ns = obj["metadata"].get("namespace")
    path = f"{base}/namespaces/{ns}/{res}" if kinds[(group, obj["kind"])] else f"{base}/{res}"
    return kube.get(f"{path}/{obj['metadata']['name']}")


def test_fresh_cluster_converges_in_sync_wave_order(fresh, converged):
    kube = fresh.admin()
    kinds = scopes(kube)
    names = [a["metadata"]["name"] for a in converged.applications]
    assert names[0] == "mlstack-crds" and sorted(names[-2:]) == ["mlstack-dashboard", "mlstack-monitor"], names
    missing = [f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
               for o in converged.applied if live(kube, o, kinds) is None]
    assert not missing, f"not in the cluster after the sync: {missing}"
    # the real controllers took it from there: the operator's, the API's, the dashboard's and the monitor's pods
    for ns, dep in (("mlstack-system", "mlstack-operator"), ("mlstack", "mlstack-api"),
                    ("mlstack", "mlstack-dashboard"), ("mlstack", "mlstack-monitor")):
        wait_until(lambda ns=ns, dep=dep: (kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{dep}") or {})
                   .get("status", {}).get("readyReplicas"), DEADLINE, interval=0.2, what=f"{ns}/{dep} Ready")


def test_argocd_applications_validated_by_the_real_crd(fresh, converged):
    kube = fresh.admin()
    need_argocd_crd(kube)
    for app in [root_application(), *converged.applications]:
        got = kube.get(f"/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/{app['metadata']['name']}")
        assert got is not None, app["metadata"]["name"]
        assert got["spec"]["source"]["path"] == app["spec"]["source"]["path"]
    project = kube.get("/apis/argoproj.io/v1alpha1/namespaces/argocd/appprojects/mlstack")
    assert project is not None and project["spec"]["clusterResourceWhitelist"]
    # the control: the real CRD refuses what Argo CD would not understand
    bad = json.loads(json.dumps(converged.applications[0]))
    bad["metadata"]["name"] = "strict-control"
    bad["spec"]["syncPolicy"]["automated"]["prunee"] = True
    out = fresh.kubectl("apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-",
                        input=yaml.safe_dump(bad), check=False)
    assert out.returncode != 0 and "prunee" in out.stderr, out.stderr


def glob_match(pattern: str, value: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(value, pattern)


def test_argocd_project_permits_everything_each_application_syncs(fresh, converged):
    """Argo CD refuses to sync a cluster-scoped kind its AppProject does not whitelist ("Resource G:K is not
    permitted in project P") and a namespaced object outside the project's destinations; the scopes come from
    the real server's discovery."""
    kinds = scopes(fresh.admin())
    project = next(o for o in rendered_children(Path(fresh.dir) / "argocd-render") if o["kind"] == "AppProject")
    allowed = project["spec"].get("clusterResourceWhitelist") or []
    dests = project["spec"]["destinations"]
    problems = []
    for app in converged.applications:
        assert app["spec"]["project"] == project["metadata"]["name"], app["metadata"]["name"]
        dest_ns = app["spec"]["destination"]["namespace"]
        if not any(glob_match(d["namespace"], dest_ns) for d in dests):
            problems.append(f"{app['metadata']['name']}: destination namespace {dest_ns} not in the project")
        for o in app_content(app, kinds):
            g, k = group_of(o), o["kind"]
            if kinds[(g, k)]:
                ns = o["metadata"]["namespace"]
                if not any(glob_match(d["namespace"], ns) for d in dests):
                    problems.append(f"{app['metadata']['name']}: {k}/{o['metadata']['name']} in namespace {ns}")
            elif not any(glob_match(a.get("group", ""), g) and glob_match(a["kind"], k) for a in allowed):
                problems.append(f"{app['metadata']['name']}: cluster-scoped {g or 'core'}/{k} "
                                f"{o['metadata']['name']} is not in clusterResourceWhitelist")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """An MLflow registry (sqlite, no server) holding what the examples name: iris_model 1..4, champion -> 1."""
    from mlflow import MlflowClient

    d = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("iris_model")
    for _ in range(4):
        client.create_model_version("iris_model", source=str(d / "model"))
    client.set_registered_model_alias("iris_model", "champion", "1")
    return uri


@pytest.fixture(scope="module")
def fresh_operator(fresh: Cluster, converged: Sync, registry: str, tmp_path_factory) -> Iterator[Operator]:
    """``mlstack operator run`` with only the token of the ServiceAccount the sync created."""
    cfg = fresh.token_kubeconfig("mlstack-system", "mlstack-operator", fresh.dir / "operator.kubeconfig")
    op = Operator(cfg, registry, tmp_path_factory.mktemp("fresh-operator"))
    op.start()
    yield op
    op.stop()


def test_readme_and_init_commands_verbatim(fresh, converged, fresh_operator):
    kube = fresh.admin()
    commands = readme_commands()
    ran = []
    for cmd, _comment in commands:
        if cmd.startswith("kubectl get mdep"):
            continue  # below, once the operator has had its say
        out = bash(fresh, cmd)
        assert out.returncode == 0, f"README: `{cmd}` exited {out.returncode}:\n{out.stderr}"
        assert "error" not in out.stderr.lower() and not warnings_of(out.stderr), f"README: `{cmd}`:\n{out.stderr}"
        ran.append(cmd)
        if " create token " in cmd:
            token = out.stdout.strip()
            review = kube.create("/apis/authentication.k8s.io/v1/tokenreviews",
                                 {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                  "spec": {"token": token}})
            assert review["status"]["user"]["username"] == "system:serviceaccount:mlstack:mlstack-admin", review
        if cmd.startswith("mlstack operator render"):
            kinds = [o["kind"] for o in yaml.safe_load_all(out.stdout) if o]
            assert kinds == ["RayService"], kinds
    ctx = yaml.safe_load(fresh.kubeconfig.read_text())["current-context"]
    duration = dict(ln.split("=", 1) for ln in (ROOT / "config" / "defaults.env").read_text().splitlines()
                    if "=" in ln and not ln.lstrip().startswith("#"))["MLSTACK_ADMIN_TOKEN_DURATION"]
    for hint in init_hints():
        out = bash(fresh, hint, KCTX=ctx, MLSTACK_ADMIN_TOKEN_DURATION=duration.strip().strip('"'))
        assert out.returncode == 0, f"init.sh: `{hint}` exited {out.returncode}:\n{out.stderr}"
        assert not warnings_of(out.stderr), f"init.sh: `{hint}`:\n{out.stderr}"
        ran.append(hint)

    # kubectl get mdep -A: README names the columns; the operator fills them in (iris: onnx, resolved, Ready, URL)
    get_cmd, columns = next((c, m) for c, m in commands if c.startswith("kubectl get mdep"))
    wanted = [c.strip() for c in columns.split(",")]
    assert wanted == ["Model", "Version", "Runtime", "Phase", "URL", "SLOMet", "Age"], columns

    def iris_ready() -> bool:
        md = kube.get("/apis/mlstack.io/v1alpha1/namespaces/models/modeldeployments/iris") or {}
        return (md.get("status") or {}).get("phase") == "Ready"

    try:
        wait_until(iris_ready, DEADLINE, interval=0.2, what="ModelDeployment models/iris Ready")
    except TimeoutError:
        md = kube.get("/apis/mlstack.io/v1alpha1/namespaces/models/modeldeployments/iris")
        raise AssertionError(f"iris: {md and md.get('status')}\n{fresh_operator.log()[-4000:]}") from None
    out = bash(fresh, get_cmd)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["NAMESPACE", "NAME", *(c.upper() for c in wanted)], out.stdout
    table = {tuple(r.split()[:2]): r.split() for r in rows}
    example_names = {d["metadata"]["name"] for p in (MANIFESTS / "examples").glob("iris*.yaml")
                     for d in yaml.safe_load_all(p.read_text()) if d}
    assert {n for ns, n in table if ns == "models"} == example_names, out.stdout
    assert table[("models", "iris")][2:7] == ["iris_model", "1", "pod", "Ready",
                                              "http://iris.models.svc.cluster.local:8080"], out.stdout
    assert ran, "no documented command ran"
