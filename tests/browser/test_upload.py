"""Uploading a model package from the dashboard, in headless Chromium, against the real API (auth off).

(a) A zipped MLflow model directory uploaded through the form becomes a new version: the form says
"Registered <name> v<n>" (its button disabled, with progress text, while it works) and the models list
shows the version with its alias; "Save as new version" on it adds another version. (b) A malicious zip
(zip-slip and an absolute path) is refused: the page lists every problem of the API's 422 and nothing
is registered. A file that is not a .zip is refused before anything is sent.
"""

from __future__ import annotations

import io
import re
import uuid
import zipfile

import httpx
import pytest
from playwright.sync_api import expect

from tests.utils import zips
from tests.utils.browser import open_page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MODEL = f"browser_upload_{uuid.uuid4().hex[:8]}"
EVIL_MODEL = f"{MODEL}_evil"
# registering in MLflow on a busy machine can take a while; these are limits, not waits
SLOW_MS = 90_000

# every state change of the upload form, recorded in the page (so "disabled while uploading" is seen
# however quickly the API answers)
RECORD_UPLOAD_STATES = """() => {
  const form = document.querySelector('#upload-form');
  const button = form.querySelector('button[type=submit]');
  const note = document.querySelector('#upload-msg');
  window.__uploadStates = [];
  new MutationObserver(() => window.__uploadStates.push([button.disabled, note.textContent]))
    .observe(document.querySelector('#upload'),
             {attributes: true, childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def page(browser, dashboard):
    with open_page(browser, dashboard.url) as page:
        yield page


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


@pytest.fixture(scope="module")
def sklearn_zip(tmp_path_factory) -> bytes:
    return zips.sklearn_model_zip(tmp_path_factory.mktemp("browser-upload"))


def malicious_zip() -> bytes:
    """A seed-000 package plus a zip-slip entry and an absolute path."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in zips.seed_files().items():
            zf.writestr(name, data)
        zf.writestr(zips.raw_entry("../evil.py"), b"print('pwned')")
        zf.writestr(zips.raw_entry("/etc/cron.d/evil"), b"* * * * * root true")
    return buf.getvalue()


def upload_form(page):
    details = page.locator("#upload")
    expect(details).to_be_visible(timeout=30_000)  # shown once /openapi.json names the upload route
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    form = page.locator("#upload-form")
    expect(form).to_be_visible()
    return form


def choose(form, filename: str, data: bytes) -> None:
    form.locator("input[name=file]").set_input_files(
        files=[{"name": filename, "mimeType": "application/zip", "buffer": data}])


def is_upload(name: str):
    return lambda r: r.request.method == "POST" and r.url.endswith(f"/api/models/{name}/versions")


def test_a_zipped_mlflow_model_becomes_a_version(page, api_url, sklearn_zip, state):
    form = upload_form(page)
    form.get_by_label("Model name").fill(MODEL)
    choose(form, "iris_sklearn.zip", sklearn_zip)
    form.get_by_label("Aliases (optional)").fill("candidate")
    form.get_by_label("Description (optional)").fill("uploaded from the browser test")
    button = form.get_by_role("button", name="Upload")
    page.evaluate(RECORD_UPLOAD_STATES)
    with page.expect_response(is_upload(MODEL), timeout=SLOW_MS) as answer:
        button.click()
    response = answer.value
    assert response.status == 201, response.text()
    version = response.json()["version"]
    state["version"] = version

    note = page.locator("#upload-msg")
    expect(note).to_have_text(f"Registered {MODEL} v{version}")
    expect(note).not_to_have_class(re.compile(r"\berror\b"))
    expect(button).to_be_enabled()
    seen = page.evaluate("window.__uploadStates")
    assert any(disabled and text.startswith("Uploading iris_sklearn.zip") for disabled, text in seen), seen

    # the models list was refreshed: the new model, its version, the alias
    card = page.locator(f'#models-root article[data-model="{MODEL}"]')
    row = card.locator(f'tr[data-version="{version}"]')
    expect(row).to_be_visible(timeout=30_000)
    expect(row).to_contain_text("@candidate")
    expect(row).to_contain_text("uploaded from the browser test")
    model = httpx.get(f"{api_url}/models/{MODEL}", timeout=30).json()
    assert model["aliases"]["candidate"] == version
    assert [v["version"] for v in model["versions"]] == [version]


def test_save_as_new_version(page, api_url, state):
    version = state["version"]
    card = page.locator(f'#models-root article[data-model="{MODEL}"]')
    row = card.locator(f'tr[data-version="{version}"]')
    row.locator("details.copy > summary").click()
    row.get_by_label("Aliases to point at it (optional)").fill("copied")
    with page.expect_response(lambda r: r.url.endswith(f"/api/models/{MODEL}/versions/{version}/copy"),
                              timeout=SLOW_MS) as answer:
        row.get_by_role("button", name="Save as new version").click()
    assert answer.value.status == 201, answer.value.text()
    copy = answer.value.json()["version"]
    assert copy != version
    expect(page.locator("#models-msg")).to_have_text(f"Saved {MODEL} v{version} as v{copy}.")
    new_row = card.locator(f'tr[data-version="{copy}"]')
    expect(new_row).to_be_visible(timeout=30_000)
    expect(new_row).to_contain_text("@copied")
    model = httpx.get(f"{api_url}/models/{MODEL}", timeout=30).json()
    assert model["aliases"] == {"candidate": version, "copied": copy}


def test_a_file_that_is_not_a_zip_is_refused_before_sending(page):
    form = upload_form(page)
    choose(form, "model.tar.gz", b"not a zip")
    expect(form.locator(".field-error")).to_have_text('"model.tar.gz" is not a .zip file.')
    expect(form.locator("input[name=file]")).to_have_attribute("aria-invalid", "true")


def test_a_malicious_zip_is_refused_with_every_problem_listed(page, api_url):
    form = upload_form(page)
    form.get_by_label("Model name").fill(EVIL_MODEL)
    form.get_by_label("Aliases (optional)").fill("")
    form.get_by_label("Description (optional)").fill("")
    choose(form, "evil.zip", malicious_zip())
    expect(form.locator(".field-error")).to_have_count(0)
    with page.expect_response(is_upload(EVIL_MODEL), timeout=SLOW_MS) as answer:
        form.get_by_role("button", name="Upload").click()
    response = answer.value
    assert response.status == 422, response.text()
    problems = response.json()["problems"]
    assert len(problems) >= 2, problems
    assert any("../evil.py" in p and "path traversal" in p for p in problems), problems
    assert any("/etc/cron.d/evil" in p for p in problems), problems

    note = page.locator("#upload-msg")
    expect(note).to_have_text(re.compile(r"^Not uploaded: model package refused \(\d+ problems?\)$"))
    expect(note).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#upload-problems li")).to_have_text(problems)  # every problem, in order
    expect(form.get_by_role("button", name="Upload")).to_be_enabled()
    # nothing was registered
    assert httpx.get(f"{api_url}/models/{EVIL_MODEL}", timeout=30).status_code == 404
    expect(page.locator(f'#models-root article[data-model="{EVIL_MODEL}"]')).to_have_count(0)
