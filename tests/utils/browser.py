"""Helpers for the browser tests (tests/browser/conftest.py starts the API, the dashboard and Chromium)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def open_page(browser, url: str, watch: Callable | None = None) -> Iterator:
    """A page in a fresh light-mode context at ``url`` (``watch(page)`` hooks listeners before it loads)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme="light")
    try:
        page = context.new_page()
        if watch is not None:
            watch(page)
        page.goto(url)
        yield page
    finally:
        context.close()
