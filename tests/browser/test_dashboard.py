"""The dashboard in headless Chromium against the real local stack (API, Redis, MLflow, moto S3, Ray).

One page is kept open across the module, as a user would: it loads cleanly, a training started from
its form shows up live as an alert, the chart gains that version, predict answers with a class, and a
dropped connection replays exactly the alerts it missed. The screenshot lands in tests/artifacts/ with
MLSTACK_UPDATE_SCREENSHOTS=1 (else a temporary directory).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from urllib.parse import urlparse

import httpx
import pytest
from playwright.sync_api import expect

from tests.utils.browser import open_page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# endpoints that may legitimately answer 404 on a fresh stack (no model yet / not built yet)
MAY_404 = {"/api/get_metrics", "/api/deployments"}
IRIS = re.compile(r"^(setosa|versicolor|virginica)$")


class Watch:
    """Console errors and uncaught page errors, each tagged with the phase it happened in."""

    def __init__(self) -> None:
        self.phase = "load"
        self.console: list[tuple[str, str]] = []
        self.page_errors: list[tuple[str, str]] = []

    def on_console(self, msg) -> None:
        if msg.type != "error":
            return
        url_path = urlparse(msg.location.get("url", "")).path
        if msg.text.startswith("Failed to load resource") and "404" in msg.text and url_path in MAY_404:
            return
        self.console.append((self.phase, f"{msg.text} @ {msg.location.get('url', '')}"))


@pytest.fixture(scope="module")
def watch() -> Watch:
    return Watch()


@pytest.fixture(scope="module")
def page(browser, dashboard, watch):
    def listen(page):
        page.on("console", watch.on_console)
        page.on("pageerror", lambda e: watch.page_errors.append((watch.phase, str(e))))

    with open_page(browser, dashboard.url, listen) as page:
        yield page


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


def alert_ids(page) -> list[str]:
    return page.eval_on_selector_all("#alert-list li", "els => els.map(e => e.dataset.alertId)")


def test_page_loads_live_without_console_errors(page, watch):
    expect(page).to_have_title("mlstack dashboard")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    for name in ("Alerts", "Metrics", "Train", "Predict", "Models", "Deployments"):
        expect(page.get_by_role("heading", name=re.compile(f"^{name}"), level=2)).to_be_visible()
    expect(page.locator("#alerts-msg")).not_to_have_text("Loading alerts…", timeout=15_000)
    expect(page.locator("#deployments-root > p[role=status]")).not_to_have_text("", timeout=15_000)
    # every form control has an accessible name
    unnamed = page.eval_on_selector_all(
        "main input:not([type=hidden]), main select, main textarea",
        "els => els.filter(e => !e.closest('label') && !e.getAttribute('aria-label') && !e.labels?.length)"
        ".map(e => e.name || e.id)",
    )
    assert unnamed == []
    assert watch.console == [], watch.console
    assert watch.page_errors == [], watch.page_errors


def test_training_from_the_form_shows_its_completion_alert_live(page, api_url, state, watch):
    watch.phase = "train"
    state["points_before"] = int(page.locator("#chart").get_attribute("data-points") or 0)
    form = page.locator("#train-form")
    form.get_by_label("Trees (n_estimators)").fill("10")
    form.get_by_label("Max depth").fill("4")
    form.get_by_role("button", name="Start training").click()

    job = page.locator("#train-status .job")
    expect(job).to_have_count(1, timeout=15_000)
    job_id = job.get_attribute("data-job-id")
    assert job_id

    alert = page.locator(f'#alert-list li[data-type="training.finished"][data-job-id="{job_id}"]')
    failed = page.locator(f'#train-status .job[data-status="failed"][data-job-id="{job_id}"]')
    expect(alert.or_(failed)).to_have_count(1, timeout=300_000)  # the first training also starts Ray
    seen_at = time.time()
    assert failed.count() == 0, f"training failed: {failed.inner_text()}"
    record = httpx.get(f"{api_url}/training/{job_id}", timeout=10).json()
    assert record["status"] == "succeeded", record
    finished = datetime.fromisoformat(record["finished_at"].replace("Z", "+00:00")).timestamp()
    assert seen_at - finished < 5, f"alert shown {seen_at - finished:.1f}s after the job finished"
    expect(alert.locator(".alert-title")).to_contain_text(f"v{record['version']}")
    expect(page.locator(f'#train-status .job[data-status="succeeded"][data-job-id="{job_id}"]')).to_have_count(
        1, timeout=10_000
    )
    state["version"] = record["version"]


def test_the_chart_gains_a_point(page, api_url, state):
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-points", str(state["points_before"] + 1), timeout=30_000)
    expect(chart.locator("canvas")).to_have_count(1)
    expect(page.locator("#chart-table tr").last).to_contain_text(f"v{state['version']}")
    expect(page.locator("#latest-metrics dd[data-metric=accuracy]")).to_have_text(re.compile(r"^[01]\.\d+"))
    # a training started elsewhere (here: straight at the API) reaches the chart through its alert alone
    r = httpx.post(f"{api_url}/trigger_training", json={"hyperparameters": {"n_estimators": 5, "max_depth": 2}},
                   timeout=30)
    assert r.status_code == 202, r.text
    expect(chart).to_have_attribute("data-points", str(state["points_before"] + 2), timeout=120_000)
    job_id = r.json()["job_id"]
    expect(page.locator(f'#alert-list li[data-type="training.finished"][data-job-id="{job_id}"]')).to_have_count(1)


def test_a_training_job_is_cancelled_from_its_card(page, api_url, watch):
    watch.phase = "cancel"
    form = page.locator("#train-form")
    job = page.locator("#train-status .job")
    before = job.get_attribute("data-job-id") if job.count() else None  # the card of the job trained above
    form.get_by_label("Trees (n_estimators)").fill("10")
    form.get_by_role("button", name="Start training").click()
    expect(job).to_have_count(1, timeout=15_000)
    if before:
        expect(job).not_to_have_attribute("data-job-id", before, timeout=15_000)
    job_id = job.get_attribute("data-job-id")
    page.once("dialog", lambda d: d.accept())
    job.get_by_role("button", name=f"Cancel job {job_id[:8]}").click()
    expect(page.locator(f'#train-status .job[data-status="cancelled"][data-job-id="{job_id}"]')).to_have_count(
        1, timeout=15_000)
    expect(page.locator("#train-status .job button")).to_have_count(0)  # nothing left to cancel
    assert httpx.get(f"{api_url}/training/{job_id}", timeout=10).json()["status"] == "cancelled"
    alert = page.locator(f'#alert-list li[data-type="training.cancelled"][data-job-id="{job_id}"]')
    expect(alert).to_have_count(1, timeout=15_000)


def test_predict_shows_a_class(page, watch):
    watch.phase = "predict"
    form = page.locator("#predict-form")
    form.get_by_label("Petal length (cm)").fill("1.4")
    form.get_by_role("button", name="Predict").click()
    expect(page.locator("#pred-class")).to_have_text(IRIS, timeout=180_000)  # the first call starts a model server
    expect(page.locator("#predict-result .probs li")).to_have_count(3)


def test_predict_with_a_chosen_model_and_version(page, watch, api_url):
    """The form lists the registered models and their versions and builds its fields from the chosen
    version's features; the answer names that model and version."""
    watch.phase = "predict-model"
    version = httpx.get(f"{api_url}/models/browser_iris", timeout=30).json()["versions"][-1]["version"]
    target = page.locator("#predict-target")
    target.focus()  # reloads models and deployments
    expect(target.locator('option[value="model:browser_iris"]')).to_have_count(1, timeout=30_000)
    target.select_option("model:browser_iris")
    page.locator("#predict-version").select_option(version)
    form = page.locator("#predict-form")
    expect(form.locator("#predict-features input")).to_have_count(4)
    form.get_by_label("Petal width (cm)").fill("2.1")
    form.get_by_label("Petal length (cm)").fill("5.4")
    form.get_by_role("button", name="Predict").click()
    expect(page.locator("#predict-result")).to_contain_text(f"browser_iris v{version}", timeout=180_000)
    expect(page.locator("#pred-class")).to_have_text(IRIS)
    page.locator("#predict-target").select_option("")  # back to the default for the tests after this one


def test_a_reconnect_replays_missed_alerts_without_duplicates(page, dashboard, api_url, watch):
    conn = page.locator("#conn")
    expect(conn).to_have_attribute("data-state", "live")
    watch.phase = "reconnect"  # connection-refused errors are expected while the server is down
    dashboard.stop()
    expect(conn).to_have_attribute("data-state", "reconnecting", timeout=20_000)

    tag = uuid.uuid4().hex[:8]
    missed = []
    for i in range(3):
        r = httpx.post(f"{api_url}/alerts", json={"title": f"missed {tag} #{i}", "severity": "warning"}, timeout=10)
        assert r.status_code == 201, r.text
        missed.append(r.json()["id"])
    assert all(missed)

    dashboard.start()
    expect(conn).to_have_attribute("data-state", "live", timeout=30_000)
    for alert_id in missed:
        expect(page.locator(f'#alert-list li[data-alert-id="{alert_id}"]')).to_have_count(1, timeout=15_000)

    # and it is live again afterwards
    r = httpx.post(f"{api_url}/alerts", json={"title": f"after {tag}", "severity": "error"}, timeout=10)
    live_id = r.json()["id"]
    expect(page.locator(f'#alert-list li[data-alert-id="{live_id}"]')).to_have_count(1, timeout=15_000)

    shown = alert_ids(page)
    assert len(shown) == len(set(shown)), "an alert is shown twice"
    on_server = [a["id"] for a in httpx.get(f"{api_url}/alerts?limit=100", timeout=10).json()]
    assert set(on_server) <= set(shown), f"missing: {set(on_server) - set(shown)}"
    # newest first, in stream order
    order = [tuple(int(p) for p in i.split("-")) for i in shown]
    assert order == sorted(order, reverse=True)


def test_deployment_created_from_the_form_becomes_ready_and_is_deleted(page, api_url, watch):
    watch.phase = "deployments"
    page.once("dialog", lambda d: d.accept())  # the delete confirmation
    page.locator("#deployments-root details.create summary").click()
    form = page.locator("#deploy-form")
    form.get_by_label("Name", exact=True).fill("web-iris")
    form.get_by_label("Model", exact=True).fill("browser_iris")
    form.get_by_role("button", name="Create deployment").click()
    row = page.locator('#deployments-root tr[data-deployment="web-iris"]')
    expect(row).to_have_count(1, timeout=30_000)

    # no reload: the deployment.phase alerts make the panel refresh itself (a model server starts first)
    expect(row).to_have_attribute("data-phase", "Ready", timeout=180_000)
    # the URL cell's link (the name's links to the deployment page)
    expect(row.locator("td a")).to_have_attribute("href", re.compile(r"^http://127\.0\.0\.1:\d+$"))

    row.get_by_role("button", name="Delete deployment web-iris").click()
    expect(row).to_have_count(0, timeout=30_000)
    assert httpx.get(f"{api_url}/deployments/web-iris", timeout=10).status_code == 404


def test_theme_toggle_and_screenshot(page, artifacts, watch):
    watch.phase = "final"
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "light")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    toggle = page.get_by_role("button", name=re.compile("theme"))
    toggle.focus()
    page.keyboard.press("Enter")  # keyboard operable
    expect(html).to_have_attribute("data-theme", "dark")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#chart canvas")).to_have_count(1)  # redrawn in the new colours
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "dashboard-dark.png"), full_page=True)
    for name in ("dashboard.png", "dashboard-dark.png"):
        data = (artifacts / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000
    assert watch.page_errors == [], watch.page_errors
    assert [e for e in watch.console if e[0] != "reconnect"] == []
