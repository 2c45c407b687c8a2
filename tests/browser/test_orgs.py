"""The dashboard's Organisation panel against a cluster-mode API on the real control plane (the API as its
ServiceAccount; the platform admin a ServiceAccount of the test users bound to mlstack-platform-admin).

One page, as people would use it: the platform admin signs in, creates an organisation with a budget and
sees it (budget bars, the admin as a member); creates a deployer invite and reads the code off the page;
signs out; the new member joins with the code through the form and is signed in as the organisation's
ServiceAccount, seeing the organisation.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.k8s.fixtures import TEST_USERS_NS, user_token
from tests.utils.browser import open_page
from tests.utils.kube_api import start_cluster_api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ADMIN = "pat"
ORG = f"ui-{secrets.token_hex(3)}"
MEMBER = "dana"


@pytest.fixture(scope="module")
def admin_token(k8s) -> str:
    return user_token(k8s, ADMIN, "mlstack-platform-admin")


# overrides conftest's api_url (conftest's dashboard fixture then fronts this API)
@pytest.fixture(scope="module")
def api_url(stack_env, api_kubeconfig, workdir) -> Iterator[str]:
    """The API in cluster mode as its ServiceAccount: TokenReview and SubjectAccessReview on the real API server."""
    proc, url = start_cluster_api(stack_env, api_kubeconfig, workdir / "browser-orgs", "api",
                                  args=("--log-level", "warning"))
    yield url
    proc.stop(timeout=30)


@pytest.fixture(scope="module")
def shared() -> dict[str, str]:
    """What one step reads off the page for the next (the invite code)."""
    return {}


@pytest.fixture(scope="module")
def page(browser, dashboard):
    with open_page(browser, dashboard.url) as page:
        yield page


def stored_token(page) -> str | None:
    return page.evaluate("localStorage.getItem('mlstack.token')")


def card(page):
    return page.locator(f'#org-list article.org[data-org="{ORG}"]')


def test_the_api_has_organisations(api_url, admin_token):
    assert httpx.get(f"{api_url}/orgs", timeout=10).status_code == 401
    r = httpx.get(f"{api_url}/orgs", headers={"Authorization": f"Bearer {admin_token}"}, timeout=10)
    assert r.status_code == 200, r.text


def test_signed_out_the_panel_offers_to_join(page):
    expect(page.locator("#signin")).to_be_visible(timeout=15_000)
    expect(page.locator("#orgs")).to_be_visible(timeout=15_000)
    expect(page.locator("#orgs-msg")).to_contain_text("Sign in to see your organisations")
    expect(page.locator("#org-join")).to_have_attribute("open", "")


def test_the_platform_admin_creates_an_organisation(page, artifacts, admin_token):
    page.locator("#signin-token").fill(admin_token)
    page.locator("#signin-form").get_by_role("button", name="Sign in").click()
    expect(page.locator("#auth-who")).to_contain_text(ADMIN, timeout=15_000)
    expect(page.locator("#orgs-msg")).not_to_contain_text("Sign in", timeout=15_000)

    page.locator("#org-create summary").click()
    form = page.locator("#org-create-form")
    form.get_by_label("Name", exact=True).fill(ORG)
    form.get_by_label("Display name (optional)").fill("UI Test Org")
    form.get_by_label("CPU (cores)").fill("1500m")
    form.get_by_label("Memory").fill("3Gi")
    form.get_by_label("GPUs").fill("1")
    form.get_by_role("button", name="Create organisation").click()
    expect(page.locator("#org-create-msg")).to_have_text(f"Created {ORG} (namespace org-{ORG}).", timeout=15_000)

    org = card(page)
    expect(org).to_have_count(1, timeout=15_000)
    expect(org.locator("h3")).to_contain_text("UI Test Org")
    expect(org.locator('.usage-row[data-resource="cpu"] .usage-text')).to_have_text("0 of 1.5 cores")
    expect(org.locator('.usage-row[data-resource="memory"] .usage-text')).to_have_text("0 of 3Gi")
    expect(org.locator('.usage-row[data-resource="gpu"] .usage-text')).to_have_text("0 of 1")
    admin_row = org.locator(f'tr[data-member="{ADMIN}"]')
    # the platform admin is a ServiceAccount of another namespace (a real cluster's identities): shown with its
    # namespace, and not removable like a member who joined
    expect(admin_row).to_contain_text("ServiceAccount")
    expect(admin_row).to_contain_text(f"{TEST_USERS_NS}/{ADMIN}")
    expect(admin_row).to_contain_text("admin")
    expect(admin_row.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)

    # a second organisation of the same name: the API's 409 in the form
    form.get_by_label("Name", exact=True).fill(ORG)
    form.get_by_role("button", name="Create organisation").click()
    expect(page.locator("#org-create-msg")).to_contain_text("already exists", timeout=15_000)
    expect(page.locator("#org-create-msg")).to_have_class(re.compile(r"\berror\b"))
    org.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "dashboard-orgs-admin.png"))


def test_the_admin_creates_a_deployer_invite(page, shared):
    org = card(page)
    org.locator(".org-invite-edit summary").click()
    form = org.locator(".org-invite-form")
    form.get_by_label("Role").select_option("deployer")
    form.get_by_label("Expires in (hours)").fill("2")
    form.get_by_role("button", name="Create invite").click()
    code = org.locator("#invite-code")
    expect(code).to_be_visible(timeout=15_000)
    expect(org.locator(f"#org-invite-{ORG}-msg")).to_contain_text("Invite for a deployer")
    expect(org.locator("#invite-command")).to_contain_text("/api/orgs/join")
    text = code.inner_text().strip()
    assert len(text) >= 8
    shared["code"] = text


def test_sign_out_and_join_with_the_code(page, shared, artifacts):
    code = shared["code"]
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signin")).to_be_visible(timeout=15_000)
    expect(page.locator("#auth-who")).to_have_text("Not signed in")
    expect(page.locator("#org-list article.org")).to_have_count(0)
    assert stored_token(page) is None

    form = page.locator("#org-join-form")
    expect(form).to_be_visible()
    form.get_by_label("Invite code").fill(code)
    form.get_by_label("Your name").fill(MEMBER)
    form.get_by_role("button", name="Join").click()
    who = f"system:serviceaccount:org-{ORG}:{MEMBER}"
    expect(page.locator("#org-join-msg")).to_have_text(
        f"Joined {ORG} as deployer. You are now signed in as {who}.", timeout=15_000)
    expect(page.locator("#auth-who")).to_contain_text(who, timeout=15_000)
    expect(page.locator("#signin")).to_be_hidden()
    token = page.locator("#join-token").inner_text().strip()
    assert token and stored_token(page) == token

    org = card(page)
    expect(org).to_have_count(1, timeout=15_000)
    member_row = org.locator(f'tr[data-member="{MEMBER}"]')
    expect(member_row).to_contain_text("deployer")
    expect(member_row.get_by_role("button", name=re.compile("^Remove"))).to_have_count(1)  # joined: removable
    expect(org.locator('.usage-row[data-resource="cpu"] .usage-text')).to_have_text("0 of 1.5 cores")
    page.screenshot(path=str(artifacts / "dashboard-orgs-member.png"))

    # the code is spent: a second join says so (410) in the form
    form.get_by_label("Invite code").fill(code)
    form.get_by_label("Your name").fill("dana-again")
    form.get_by_role("button", name="Join").click()
    expect(page.locator("#org-join-msg")).to_contain_text("Not joined:", timeout=15_000)
    expect(page.locator("#org-join-msg")).to_contain_text("already used")
    expect(page.locator("#auth-who")).to_contain_text(who)


def test_a_deployer_may_not_change_the_budget(page):
    org = card(page)
    org.locator(".org-budget-edit summary").click()
    form = org.locator(".org-budget-form")
    form.get_by_label("CPU (cores)").fill("64")
    form.get_by_role("button", name="Save budget").click()
    note = org.locator(f"#org-budget-{ORG}-msg")
    expect(note).to_contain_text("Not saved:", timeout=15_000)
    expect(note).to_contain_text("may not update organizations")
    expect(page.locator("#auth-who")).to_contain_text(MEMBER)
