"""``./init.sh --dry-run --cluster`` on a machine without Docker: exits 0, prints every command in order,
pins every chart from config/charts.conf, touches nothing."""

from __future__ import annotations

import re

import pytest

from tests.utils.cluster import MANIFESTS, chart_rows, defaults_env, kustomize, run_init


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dry")
    out = run_init("--dry-run", "--cluster", "--repo", "https://github.com/acme/mlstack.git", "--revision", "main",
                   tmp_path=tmp)
    return out, tmp


@pytest.fixture(scope="module")
def commands(dry_run):
    out, _ = dry_run
    assert out.returncode == 0, f"init.sh --dry-run --cluster failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return [line[2:] for line in out.stdout.splitlines() if line.startswith("+ ")]


def index(commands: list[str], pattern: str) -> int:
    for i, cmd in enumerate(commands):
        if re.search(pattern, cmd):
            return i
    raise AssertionError(f"no command matches {pattern!r}:\n" + "\n".join(commands))


def test_exits_zero_and_touches_nothing(dry_run, commands):
    out, tmp = dry_run
    assert commands, out.stdout
    assert not (tmp / "outputs").exists(), "--dry-run must not write outputs/"


def test_progress_lines_and_summary(dry_run):
    out, _ = dry_run
    steps = re.findall(r"^\[(\d+)/(\d+)\] ", out.stdout, flags=re.M)
    assert len(steps) >= 10
    assert all(total == steps[0][1] for _, total in steps)
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1))
    assert int(steps[-1][0]) == int(steps[-1][1]), "the step counter must end at its total"
    for url in ("localhost:8888", "localhost:5001", "localhost:5555", "localhost:8080", "localhost:8265",
                "localhost:9001"):
        assert url in out.stdout


def test_every_chart_installed_once_pinned_from_the_one_list(commands):
    installs = [c for c in commands if re.search(r"\bhelm\b.*\b(install|upgrade)\b", c)]
    assert installs, "no helm installs printed"
    for cmd in installs:
        assert "upgrade --install" in cmd, cmd
        assert re.search(r"--version \S+", cmd), f"unpinned helm install: {cmd}"
    rows = chart_rows()
    assert len(installs) == len(rows), "every chart of config/charts.conf, and only those, is installed"
    for row in rows:
        matching = [c for c in installs if f" upgrade --install {row['release']} {row['repo']}/{row['chart']} " in c]
        assert len(matching) == 1, f"{row['release']}: {matching}"
        cmd = matching[0]
        assert f"--version {row['version']} " in cmd + " "
        assert f"--namespace {row['namespace']} " in cmd
        assert f"-f {row['values']} " in cmd
        assert "--wait" in cmd and "--timeout" in cmd
    for repo in {r["repo"]: r["url"] for r in rows}.items():
        assert any(f"helm repo add --force-update {repo[0]} {repo[1]}" in c for c in commands), repo


def test_no_bitnami_anywhere(commands):
    assert not [c for c in commands if "bitnami" in c.lower()]


def test_order(commands):
    at = lambda p: index(commands, p)  # noqa: E731
    assert at(r"kind create cluster .*--config config/kind-config.yaml") < at(r"apply -k manifests/namespaces")
    assert at(r"apply -k manifests/namespaces") < at(r"create secret generic minio-root")
    assert at(r"create secret generic minio-root") < at(r"upgrade --install minio ")
    assert at(r"create secret generic mlflow-s3") < at(r"upgrade --install mlflow ")
    assert at(r"apply -k manifests/platform") < at(r"upgrade --install mlflow "), "the MLflow PVC comes first"
    assert at(r"upgrade --install minio ") < at(r"upgrade --install mlflow ")
    assert at(r"upgrade --install minio ") < at(r"job/iris-seed")
    assert at(r"upgrade --install kuberay-operator ") < at(r"upgrade --install ray-cluster ")
    assert at(r"kind load docker-image mlstack-api:") < at(r"upgrade --install ray-cluster ")
    assert at(r"create secret generic redis-auth") < at(r"apply -k manifests/redis")
    # the CRD is applied (and Established) before anything syncs the operator
    assert at(r"apply --server-side .*-k manifests/crds") < at(r"wait --for=condition=Established crd/")
    assert at(r"wait --for=condition=Established crd/") < at(r"manifests/argocd/root.yaml")
    assert at(r"upgrade --install argocd ") < at(r"manifests/argocd/root.yaml")
    assert at(r"manifests/argocd/root.yaml") < at(r"Healthy application/mlstack-crds")
    assert at(r"Healthy application/mlstack-crds") < at(r"Healthy application/mlstack-operator")
    assert at(r"Healthy application/mlstack-operator") < at(r"Healthy application/mlstack-api")
    assert at(r"Healthy application/mlstack-api") < at(r"Healthy application/mlstack-dashboard")
    assert at(r"Healthy application/mlstack-operator") < at(r"Healthy application/mlstack-monitor")
    # the platform admin's ServiceAccount is synced by mlstack-auth before its token is minted
    assert at(r"Healthy application/mlstack-auth") < at(r"create token mlstack-admin")
    for image in defaults_env()["MLSTACK_IMAGES"].split():
        assert at(rf"docker build .* -t {image}:") < at(rf"kind load docker-image {image}:")
        assert at(rf"kind load docker-image {image}:") < at(r"manifests/argocd/root.yaml")


def test_images_tagged_by_commit_and_loaded(commands):
    tags = set()
    for cmd in commands:
        m = re.search(r"docker build .* -t (mlstack-[a-z]+):(\S+)", cmd)
        if m:
            assert m.group(2) != "latest"
            tags.add(m.group(2))
    assert len(tags) == 1, f"one git-commit tag for every image: {tags}"
    (tag,) = tags
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty-[0-9a-f]{8})?|0\.0\.0-nogit", tag), tag
    root = commands[index(commands, r"manifests/argocd/root.yaml")]
    assert f"__IMAGE_TAG__|{tag}|" in root and "__REPO_URL__|https://github.com/acme/mlstack.git|" in root


def test_admin_token_minted_for_the_platform_admin(commands):
    """The token in outputs/credentials.txt belongs to the ServiceAccount that manifests/auth binds to
    mlstack-platform-admin, and expires after MLSTACK_ADMIN_TOKEN_DURATION."""
    (sa,) = [o for o in kustomize(MANIFESTS / "auth") if o["kind"] == "ServiceAccount"]
    binding = next(o for o in kustomize(MANIFESTS / "auth") if o["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "mlstack-platform-admin"
    assert {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"]} in binding["subjects"]
    duration = defaults_env()["MLSTACK_ADMIN_TOKEN_DURATION"]
    want = f"-n {sa['metadata']['namespace']} create token {sa['metadata']['name']} --duration={duration}"
    tokens = [c for c in commands if " create token " in c]
    assert len(tokens) == 1 and want in tokens[0], tokens
    assert tokens[0].startswith("kubectl --context kind-mlstack ")
    assert index(commands, r"create token ") < index(commands, r"^write .*credentials\.txt")


def test_secrets_never_printed(commands):
    secret_cmds = [c for c in commands if "create secret" in c]
    assert len(secret_cmds) >= 4
    for cmd in secret_cmds:
        assert "--from-literal" not in cmd and "GENERATED" not in cmd, cmd


def test_options(tmp_path):
    out = run_init("--dry-run", "--cluster", "--name", "demo", "--repo", "git@github.com:acme/ml.git",
                   "--with-kubevirt", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "kind create cluster --name demo " in out.stdout
    assert "--context kind-demo " in out.stdout and "--kube-context kind-demo " in out.stdout
    assert "__REPO_URL__|https://github.com/acme/ml.git|" in out.stdout, "ssh remotes become https for Argo CD"
    version = defaults_env()["MLSTACK_KUBEVIRT_VERSION"]
    assert f"kubevirt/releases/download/{version}/kubevirt-operator.yaml" in out.stdout
    assert "useEmulation" in out.stdout


def test_missing_option_value_is_an_error(tmp_path):
    out = run_init("--dry-run", "--cluster", "--name", tmp_path=tmp_path)
    assert out.returncode != 0 and "--name needs a value" in out.stderr


def test_down_dry_run(tmp_path):
    out = run_init("--dry-run", "--cluster", "--down", "--name", "demo", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "+ kind delete cluster --name demo" in out.stdout
