"""Images referenced by the manifests are the ones ./init.sh builds (tagged by git commit, never :latest,
never imagePullPolicy: Never), and the Dockerfiles are pinned, multi-stage and non-root."""

from __future__ import annotations

import re

from tests.utils.cluster import (
    MANIFESTS,
    ROOT,
    defaults_env,
    kustomize,
    operator_manifests_present,
    renders_operator,
    run_init,
)

KIND = MANIFESTS / "overlays" / "kind"


def built_images(tmp_path) -> set[str]:
    out = run_init("--dry-run", "--cluster", "--repo", "https://example.com/r.git", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"docker build .* -t (mlstack-[a-z]+):\S+", out.stdout))


def containers(obj: dict):
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get(
        "spec") or {}
    yield from pod.get("initContainers", []) + pod.get("containers", [])


def test_init_builds_the_configured_images(tmp_path):
    assert built_images(tmp_path) == set(defaults_env()["MLSTACK_IMAGES"].split())


def test_kind_overlay_images_are_built_by_init(tmp_path):
    built = built_images(tmp_path)
    dirs = [KIND / "fastapi", KIND / "frontend"]
    if operator_manifests_present():
        dirs.append(KIND / "operator")
    refs = set()
    for d in dirs:
        for obj in kustomize(d):
            for c in containers(obj):
                image = c["image"]
                repo, _, tag = image.rpartition(":")
                assert tag and tag != "latest", f"{d.name}: {image}"
                assert c.get("imagePullPolicy") != "Never", image
                refs.add(repo.rsplit("/", 1)[-1])
                for env in c.get("env", []):
                    if env["name"].endswith("_IMAGE") and "value" in env:
                        refs.add(env["value"].rpartition(":")[0].rsplit("/", 1)[-1])
    mlstack_refs = {r for r in refs if r.startswith("mlstack-")}
    assert mlstack_refs, refs
    assert mlstack_refs <= built, f"referenced but not built by init.sh: {mlstack_refs - built}"
    if operator_manifests_present():
        assert {"mlstack-api", "mlstack-dashboard", "mlstack-operator", "mlstack-server"} <= mlstack_refs


def test_one_tag_across_the_kind_overlays():
    tags = set()
    for path in KIND.glob("*/kustomization.yaml"):
        tags |= set(re.findall(r"newTag: (\S+)", path.read_text()))
        tags |= set(re.findall(r"value: \S+/mlstack-[a-z]+:(\S+)", path.read_text()))
    assert len(tags) == 1, f"images.yml commits one tag everywhere: {tags}"


def test_bases_use_logical_image_names():
    for sub in ("fastapi", "frontend"):
        for obj in kustomize(MANIFESTS / sub):
            for c in containers(obj):
                assert c["image"].startswith("mlstack-") and ":" not in c["image"], c["image"]
    assert not renders_operator(MANIFESTS / "fastapi")


def test_argocd_root_overrides_every_built_image(tmp_path):
    text = (MANIFESTS / "argocd" / "root.yaml").read_text()
    for image in built_images(tmp_path):
        assert f"{image}:__IMAGE_TAG__" in text, image


def test_dockerfiles_pinned_non_root_with_healthchecks():
    for rel in ("fastapi/Dockerfile", "operator/Dockerfile"):
        text = (ROOT / rel).read_text()
        assert text.count("\nFROM ") >= 2, f"{rel}: multi-stage"
        base = re.search(r"ARG PYTHON_IMAGE=(\S+)", text).group(1)
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
        assert "latest" not in text
        users = re.findall(r"^USER (\S+)", text, flags=re.M)
        assert users and all(u.split(":")[0] not in {"root", "0"} for u in users), rel
    api = (ROOT / "fastapi/Dockerfile").read_text()
    assert "AS api" in api and "AS server" in api and api.count("HEALTHCHECK") == 2
