"""GitHub workflows: valid YAML, one per concern, each with timeout-minutes, least permissions, concurrency."""

from __future__ import annotations

import pytest
import yaml

from tests.utils.cluster import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))


def load(path):
    doc = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def test_the_three_concerns_exist():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "images.yml", "e2e-kind.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_shape(path):
    wf = load(path)
    assert wf.get("on"), f"{path.name}: no triggers"
    assert "concurrency" in wf and wf["concurrency"]["group"], f"{path.name}: concurrency"
    perms = wf.get("permissions")
    assert isinstance(perms, dict) and perms, f"{path.name}: top-level permissions"
    assert all(v in {"read", "none"} for v in perms.values()), f"{path.name}: top level must be read-only: {perms}"
    for name, job in wf["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int) and job["timeout-minutes"] <= 120, f"{path.name}:{name}"
        for step in job.get("steps", []):
            uses = step.get("uses", "")
            if uses:
                assert "@" in uses and not uses.endswith(("@main", "@master")), f"{path.name}: unpinned {uses}"


def test_write_permissions_only_where_needed():
    images = load(ROOT / ".github" / "workflows" / "images.yml")
    assert images["jobs"]["build"]["permissions"] == {"contents": "read", "packages": "write"}
    assert images["jobs"]["gitops"]["permissions"] == {"contents": "write"}
    for path in WORKFLOWS:
        if path.name != "images.yml":
            for job in load(path)["jobs"].values():
                assert "permissions" not in job or all(v == "read" for v in job["permissions"].values())


def test_ci_runs_test_sh_and_e2e_runs_init_and_smoke():
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert ".ci/run" in ci or "./test.sh" in ci
    e2e = (ROOT / ".github" / "workflows" / "e2e-kind.yml").read_text()
    assert "./init.sh --cluster" in e2e and "tests/cluster/e2e_smoke.sh" in e2e
    assert (ROOT / "tests" / "cluster" / "e2e_smoke.sh").stat().st_mode & 0o111
