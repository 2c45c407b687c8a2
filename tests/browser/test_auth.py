"""Signing in to the dashboard against the real API with authentication on (local tokens).

One page, as a user would: it asks for a token; a wrong one is refused with a clear message; the viewer
token signs in and shows "vic (viewer)"; a viewer cannot create a deployment and the form says why (the
API's 403); sign out; sign in as the admin; the alert stream connects with the admin's token (an alert
posted to the API appears live) and a reload stays signed in.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.utils.browser import open_page
from tests.utils.procs import start_api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ADMIN_TOKEN = secrets.token_urlsafe(32)
VIEWER_TOKEN = secrets.token_urlsafe(32)


# overrides conftest's api_url for this module (conftest's dashboard fixture then fronts this API)
@pytest.fixture(scope="module")
def api_url(stack_env, workdir):
    """The real API with auth on: an admin "ada" and a viewer "vic" (``MLSTACK_AUTH_TOKENS``)."""
    ray_dir = Path(tempfile.mkdtemp(prefix="mlsa-", dir="/tmp"))
    tokens = [{"name": "ada", "role": "admin", "token": ADMIN_TOKEN},
              {"name": "vic", "role": "viewer", "token": VIEWER_TOKEN}]
    env = {**stack_env, "MLSTACK_RAY_TEMP_DIR": str(ray_dir), "MLSTACK_STATE_DIR": str(workdir / "state-auth"),
           "MLSTACK_MODEL_NAME": "auth_iris", "MLSTACK_MLFLOW_EXPERIMENT": "browser-auth-tests",
           "MLSTACK_SERVE_PORT_RANGE": "[27000, 27999]", "MLSTACK_AUTH_TOKENS": json.dumps(tokens),
           # its own deployments: the panel's empty state must not depend on other modules
           "MLSTACK_DEPLOYMENTS_REDIS_KEY": f"mlstack:deployments:browser-auth-{secrets.token_hex(4)}"}
    proc, url = start_api(workdir / "browser-auth-api.log", env, ready_path="/readyz", timeout=180,
                          args=("--log-level", "warning"))
    yield url
    proc.stop()
    shutil.rmtree(ray_dir, ignore_errors=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def stream_urls() -> list[str]:
    """Every URL the page opened the alert stream with."""
    return []


@pytest.fixture(scope="module")
def page(browser, dashboard, stream_urls):
    def watch(page):
        page.on("request", lambda r: stream_urls.append(r.url) if "/api/webhook" in r.url else None)

    with open_page(browser, dashboard.url, watch) as page:
        yield page


def stored_token(page) -> str | None:
    return page.evaluate("localStorage.getItem('mlstack.token')")


def sign_in(page, token: str) -> None:
    page.locator("#signin-token").fill(token)
    page.locator("#signin-form").get_by_role("button", name="Sign in").click()


def test_the_api_wants_a_token(api_url):
    r = httpx.get(f"{api_url}/alerts", timeout=10)
    assert r.status_code == 401, r.text
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
    me = httpx.get(f"{api_url}/auth/me", headers=bearer(VIEWER_TOKEN), timeout=10).json()
    assert (me["name"], me["role"], me["authMode"]) == ("vic", "viewer", "tokens")


def test_the_page_asks_for_a_token(page, artifacts):
    expect(page.locator("#signin")).to_be_visible(timeout=15_000)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#signin-token")).to_have_attribute("type", "password")
    expect(page.locator("#signin-token")).to_be_focused()
    expect(page.locator("#signin-hint")).to_contain_text("outputs/credentials.txt")
    expect(page.locator("#auth-who")).to_have_text("Not signed in")
    expect(page.locator("#alerts-msg")).to_have_text("Sign in to see alerts.")
    expect(page.locator("#metrics-msg")).to_have_text("Sign in to see metrics.", timeout=15_000)
    expect(page.locator("#conn")).to_have_attribute("data-state", "stopped")
    assert stored_token(page) is None
    page.screenshot(path=str(artifacts / "dashboard-signin.png"))


def test_a_wrong_token_is_refused(page):
    sign_in(page, secrets.token_urlsafe(32))
    expect(page.locator("#signin-msg")).to_contain_text("That token was refused", timeout=15_000)
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#auth-who")).to_have_text("Not signed in")
    assert stored_token(page) is None


def test_the_viewer_signs_in(page, stream_urls, artifacts):
    sign_in(page, VIEWER_TOKEN)
    expect(page.locator("#auth-who")).to_have_text("vic (viewer)", timeout=15_000)
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert stored_token(page) == VIEWER_TOKEN
    # no reload: the panels load and the stream connects with the new token
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    # the stream opens with a single-use ticket, never the token in the URL
    assert any("ticket=" in u for u in stream_urls), stream_urls
    assert not any(VIEWER_TOKEN in u or "access_token" in u for u in stream_urls), stream_urls
    note = page.locator("#deployments-root > p[role=status]")
    expect(note).not_to_have_text("", timeout=15_000)
    expect(note).not_to_contain_text("Could not load")
    expect(page.locator("#metrics-msg")).not_to_contain_text("Sign in", timeout=15_000)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "dashboard-viewer.png"))


def test_a_viewer_may_not_create_a_deployment(page, api_url):
    page.locator("#deployments-root details.create summary").click()
    form = page.locator("#deploy-form")
    form.get_by_label("Name", exact=True).fill("viewer-made")
    form.get_by_label("Model", exact=True).fill("auth_iris")
    form.get_by_role("button", name="Create deployment").click()
    note = page.locator("#deployments-root .form-note")
    expect(note).to_have_text(re.compile(r"^Not created: .*\bvic\b.* may not "), timeout=15_000)
    expect(note).to_have_class(re.compile(r"\berror\b"))
    # a 403 is not a sign-in matter: still signed in as vic
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#auth-who")).to_have_text("vic (viewer)")
    r = httpx.get(f"{api_url}/deployments/viewer-made", headers=bearer(ADMIN_TOKEN), timeout=10)
    assert r.status_code == 404, r.text


def test_sign_out(page):
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signin")).to_be_visible(timeout=15_000)
    expect(page.locator("#auth-who")).to_have_text("Not signed in")
    expect(page.locator("#conn")).to_have_attribute("data-state", "stopped")
    expect(page.locator("#alert-list li")).to_have_count(0)
    assert stored_token(page) is None


def test_the_admin_signs_in_and_alerts_arrive_live(page, api_url, stream_urls):
    sign_in(page, ADMIN_TOKEN)
    expect(page.locator("#auth-who")).to_have_text("ada (admin)", timeout=15_000)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    assert "ticket=" in stream_urls[-1] and ADMIN_TOKEN not in stream_urls[-1], stream_urls[-1]
    # a new ticket for every connection: no stream URL twice
    tickets = [u.split("ticket=")[1].split("&")[0] for u in stream_urls if "ticket=" in u]
    assert len(tickets) == len(set(tickets)), stream_urls

    title = f"auth check {uuid.uuid4().hex[:8]}"
    assert httpx.post(f"{api_url}/alerts", json={"title": title}, timeout=10).status_code == 401
    r = httpx.post(f"{api_url}/alerts", json={"title": title, "severity": "warning"}, headers=bearer(ADMIN_TOKEN),
                   timeout=10)
    assert r.status_code == 201, r.text
    item = page.locator(f'#alert-list li[data-alert-id="{r.json()["id"]}"]')
    expect(item).to_have_count(1, timeout=15_000)
    expect(item.locator(".alert-title")).to_have_text(title)


def test_a_reload_stays_signed_in(page):
    page.reload()
    expect(page.locator("#auth-who")).to_have_text("ada (admin)", timeout=15_000)
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
