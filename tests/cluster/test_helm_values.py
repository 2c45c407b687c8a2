"""Helm values: every key of helm-values/{argo-cd,kuberay-operator,ray-cluster}.yaml exists in that chart's
defaults (../shared/charts, at the versions pinned in config/charts.conf), so helm ignores nothing."""

from __future__ import annotations

import pytest
import yaml

from tests.utils.cluster import ROOT, chart_rows, need_shared

CHECKED = ("argo-cd", "kuberay-operator", "ray-cluster")
# maps the chart copies verbatim into a ConfigMap (any key is meaningful there)
FREE_FORM = {"argo-cd": {("configs", "cm"), ("configs", "params")}}


def unknown_keys(values: dict, defaults: dict, free: set[tuple[str, ...]], path: tuple[str, ...] = ()) -> list[str]:
    if path in free:
        return []
    bad = []
    for key, value in values.items():
        here = (*path, key)
        if key not in defaults:
            bad.append(".".join(here))
        elif isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key]:
            bad += unknown_keys(value, defaults[key], free, here)
    return bad


def test_every_chart_has_a_values_file():
    for row in chart_rows():
        path = ROOT / row["values"]
        assert path.exists(), row
        assert isinstance(yaml.safe_load(path.read_text()) or {}, dict)


@pytest.mark.parametrize("chart", CHECKED)
def test_pinned_version_matches_shared_chart(chart):
    meta = yaml.safe_load(need_shared("charts", chart, "Chart.yaml").read_text())
    rows = [r for r in chart_rows() if r["chart"] == chart]
    assert rows, f"{chart} is not in config/charts.conf"
    assert {r["version"] for r in rows} == {str(meta["version"])}


@pytest.mark.parametrize("chart", CHECKED)
def test_values_keys_exist_in_chart_defaults(chart):
    defaults = yaml.safe_load(need_shared("charts", chart, "values.yaml").read_text())
    values = yaml.safe_load((ROOT / "helm-values" / f"{chart}.yaml").read_text())
    assert values, chart
    bad = unknown_keys(values, defaults, FREE_FORM.get(chart, set()))
    assert not bad, f"helm-values/{chart}.yaml keys the chart does not have (helm would ignore them): {bad}"


def test_the_checker_catches_a_typo():
    assert unknown_keys({"server": {"servce": {}}}, {"server": {"service": {"type": "x"}}}, set()) == ["server.servce"]


def test_no_bitnami_and_no_hardcoded_secrets():
    for path in (ROOT / "helm-values").glob("*.yaml"):
        text = path.read_text().lower()
        assert "bitnami" not in text.replace("no bitnami", ""), path
        values = yaml.safe_load(path.read_text()) or {}
        flat = yaml.safe_dump(values).lower()
        for word in ("rootpassword:", "password: ", "secretkey:", "awssecretaccesskey:"):
            assert word not in flat, f"{path.name}: {word} belongs in a generated Secret"
