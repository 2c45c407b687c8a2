"""The deployment page in headless Chromium against a real local-mode API: a real ``mlstack serve`` deployment
slower than its latency SLO gets traffic; the monitor (evaluating every 0.5 s) records series points and raises a
``deployment.slo`` alert; one click on the alert's deployment link opens the page, whose SVG charts have data
points and whose alert list has the breach; the deployments row links to the same page.

The full path (model server -> monitor drain -> evaluation -> series -> API -> page), nothing written directly."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from playwright.sync_api import expect

from tests.utils.monitored import deploy_slow, fast_monitor_env, register_onnx, send_traffic
from tests.utils.procs import start_api, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
NS = "models"
NAME = "web-monitored"


@pytest.fixture(scope="module")
def api_url(stack_env, workdir):
    """This module's own API (overrides the browser conftest's): its monitor records a point every 0.5 s."""
    env = {**stack_env, **fast_monitor_env(workdir, "browser-series", "[25700, 25899]")}
    proc, url = start_api(workdir / "browser-series-api.log", env, what="mlstack api (browser series)",
                          args=("--log-level", "warning"))
    yield url
    proc.stop(timeout=30)


def test_an_alert_opens_the_deployment_page_with_its_charts(browser, dashboard, api_url, mlflow_uri, artifacts):
    model = f"web_series_{uuid.uuid4().hex[:6]}"
    version = register_onnx(mlflow_uri, model)
    with httpx.Client(base_url=api_url, timeout=60) as c:
        deploy_slow(c, model, version, NAME, NS)
        t0 = time.time()

        def monitoring():
            return c.get(f"/deployments/{NAME}/monitoring", params={"namespace": NS, "since": t0 - 60}).json()

        def with_latency(body):
            return [p for p in body["points"] if p["versions"].get(version, {}).get("p99_ms") is not None]

        for burst in range(1, 4):  # three bursts, each in a point of its own: lines, not a lone dot
            send_traffic(c, f"{NS}/{NAME}", 10)
            wait_until(lambda n=burst: len(with_latency(monitoring())) >= n, 30, interval=0.3,
                       what=f"the point of burst {burst}")

        def breached():
            body = monitoring()
            return body if any(a["type"] == "deployment.slo" for a in body["alerts"]) else None

        body = wait_until(breached, 30, interval=0.5, what="the latency breach")
        assert any(p["counted"] and p["requests"] for p in body["points"])

    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme="light")
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(dashboard.url)
        alert = page.locator('#alert-list li[data-type="deployment.slo"]').first
        link = alert.locator("a.dep-link")
        expect(link).to_have_text(f"deployment {NS}/{NAME}", timeout=30_000)
        link.click()  # one click from the alert

        assert page.evaluate("location.hash") == f"#/deployments/{NS}/{NAME}"
        section = page.locator("#deployment-page")
        expect(section).to_be_visible()
        expect(page.locator("#deployment-h")).to_have_text(f"Deployment {NS}/{NAME}")
        expect(section.locator("#deployment-serving")).to_have_text(f"Ready: serving v{version}")  # what serves
        expect(page.locator("#models")).to_be_hidden()  # the page replaces the panels
        for chart in ("rate", "latency"):
            fig = section.locator(f'figure[data-chart="{chart}"]')
            expect(fig).to_be_visible(timeout=30_000)
            assert int(fig.get_attribute("data-points")) > 0
            d = fig.locator("path.ts-line").first.get_attribute("d")
            assert d and d.startswith("M"), d
        latency = section.locator('figure[data-chart="latency"]')
        expect(latency.locator("path.ts-line")).to_have_count(2)  # p50 and p99 of the one version
        expect(latency.locator(".ts-legend")).to_contain_text(f"v{version} p99")
        expect(section.locator('#deployment-alerts li[data-type="deployment.slo"]').first).to_be_visible()
        page.screenshot(path=str(artifacts / "deployment-page.png"), full_page=True)

        # back to the panels, and from the deployment's row to the same page (one click)
        section.get_by_role("link", name="All deployments").click()
        expect(section).to_be_hidden()
        row = page.locator(f'#deployments-root tr[data-deployment="{NAME}"]')
        row.get_by_role("link", name=NAME).click()
        expect(section).to_be_visible()
        expect(section.locator('figure[data-chart="latency"]')).to_be_visible(timeout=30_000)
    finally:
        context.close()
    assert not errors, errors
    with httpx.Client(base_url=api_url, timeout=60) as c:
        assert c.delete(f"/deployments/{NAME}", params={"namespace": NS}).status_code == 204
