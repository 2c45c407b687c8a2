"""The deployments panel's canary buttons in headless Chromium against a real local-mode API: a deployment with a
canary shows its exact share, Promote makes the canary the stable version, Abort removes it (one click each)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.sync_api import expect

from tests.utils.browser import open_page
from tests.utils.deployments import register_onnx

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_promote_and_abort_buttons(browser, dashboard, api_url, mlflow_uri):
    name = f"browser_canary_{uuid.uuid4().hex[:6]}"
    v1, v2 = register_onnx(mlflow_uri, name), register_onnx(mlflow_uri, name)
    for dep in ("web-promote", "web-abort"):
        r = httpx.post(f"{api_url}/deployments", json={"name": dep, "spec": {
            "model": {"name": name, "version": v1}, "canary": {"version": v2, "trafficPercent": 10}}}, timeout=30)
        assert r.status_code == 201, r.text
    errors: list[str] = []
    with open_page(browser, dashboard.url, lambda p: p.on("pageerror", lambda e: errors.append(str(e)))) as page:
        page.on("dialog", lambda d: d.accept())  # the confirmations
        rows = {dep: page.locator(f'#deployments-root tr[data-deployment="{dep}"]') for dep in ("web-promote",
                                                                                                 "web-abort")}
        for row in rows.values():
            expect(row).to_have_attribute("data-phase", "Ready", timeout=180_000)
            expect(row).to_contain_text(f"v{v1} + canary v{v2} (10 %)", timeout=30_000)

        button = rows["web-promote"].get_by_role("button", name="Promote canary of deployment web-promote")
        button.click()
        expect(button).to_have_count(0, timeout=30_000)
        spec = httpx.get(f"{api_url}/deployments/web-promote", timeout=10).json()["spec"]
        assert spec["model"]["version"] == v2 and spec.get("canary") is None
        page.locator("#deployments-refresh").click()  # the roll is quick: the status follows within seconds
        expect(rows["web-promote"].locator("td").nth(1)).to_have_text(f"v{v2}", timeout=30_000)

        button = rows["web-abort"].get_by_role("button", name="Abort canary of deployment web-abort")
        button.click()
        expect(button).to_have_count(0, timeout=30_000)
        spec = httpx.get(f"{api_url}/deployments/web-abort", timeout=10).json()["spec"]
        assert spec["model"]["version"] == v1 and spec.get("canary") is None
        page.locator("#deployments-refresh").click()
        expect(rows["web-abort"].locator("td").nth(1)).to_have_text(f"v{v1}", timeout=30_000)
    assert not errors, errors
    for dep in ("web-promote", "web-abort"):
        assert httpx.delete(f"{api_url}/deployments/{dep}", timeout=60).status_code == 204
