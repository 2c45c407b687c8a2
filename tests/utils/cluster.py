"""Shared helpers for the cluster-mode tests: no Docker, no network, no cluster.

``../shared`` (chart defaults, upstream schemas, validate-upstream) sits next to the repository on the
team's machines only; tests that need it skip with a reason when it is absent.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MLSTACK_SHARED_DIR") or ROOT.parent / "shared")  # override: tests of the skips
MANIFESTS = ROOT / "manifests"
KIND_NODE_K8S = "1.32.0"  # config/defaults.env MLSTACK_KIND_NODE_IMAGE kindest/node:v1.32.2


def need_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only on the team's machines): check not run")
    return path


def need_tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} is not installed: check not run")
    return exe


def yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@functools.cache
def kustomize(path: Path) -> tuple[dict, ...]:
    """``kubectl kustomize PATH`` as objects (cached: renders are reused across tests)."""
    kubectl = need_tool("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)} failed:\n{out.stderr}"
    return tuple(yaml_docs(out.stdout))


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))


def operator_manifests_present() -> bool:
    return (MANIFESTS / "operator" / "kustomization.yaml").exists()


def renders_operator(path: Path) -> bool:
    """Whether the kustomization at PATH includes manifests/operator (directly or through other dirs)."""
    path = path.resolve()
    if path == (MANIFESTS / "operator").resolve():
        return True
    kfile = path / "kustomization.yaml"
    if not kfile.exists():
        return False
    spec = yaml.safe_load(kfile.read_text()) or {}
    for entry in spec.get("resources", []) + spec.get("components", []):
        target = (path / entry).resolve()
        if target.is_dir() and renders_operator(target):
            return True
    return False


def skip_if_operator_missing(path: Path) -> None:
    if renders_operator(path) and not operator_manifests_present():
        pytest.skip("manifests/operator/kustomization.yaml has not landed yet (operator engineer): render not checked")


@functools.cache
def chart_rows() -> tuple[dict, ...]:
    rows = []
    for line in (ROOT / "config" / "charts.conf").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        release, ns, repo, url, chart, version, values = line.split()
        rows.append(dict(release=release, namespace=ns, repo=repo, url=url, chart=chart, version=version,
                         values=values))
    return tuple(rows)


@functools.cache
def defaults_env() -> dict[str, str]:
    env = {}
    for line in (ROOT / "config" / "defaults.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip('"')
    return env


def run_init(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSTACK_")}
    env["MLSTACK_OUTPUTS"] = str(tmp_path / "outputs")
    return subprocess.run([str(ROOT / "init.sh"), *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=60)

