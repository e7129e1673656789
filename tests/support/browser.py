"""A real headless Chromium for end-to-end tests of the box's web page, driven by playwright.

The browser is the distribution's (/usr/bin/chromium, installed by `make sysdeps`), never one
downloaded by playwright: it is the build an installer's laptop is likeliest to share, with the
codecs the distribution ships, and tests must not fetch anything from the internet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path(os.environ.get("EDGE_TEST_CHROMIUM", "/usr/bin/chromium"))  # or chromium-browser

# Nothing more than a laptop's browser: in particular Chromium keeps hiding its host ICE
# candidates behind mDNS names (.local) as it does by default, so the box must cope with them
# (it does: the browser's connectivity checks reach the box's own candidates).
ARGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in CI containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",  # no update checks or safe-browsing lists
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def missing_reason() -> str | None:
    """Why the browser cannot run here (a sentence for pytest.skip), or None."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: apt-get install chromium (make sysdeps does)"
    return None


@contextmanager
def chromium(*, timeout_s: float = 15.0) -> Iterator[Browser]:
    """A launched headless Chromium, closed (with its helper processes) on exit."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=list(ARGS),
            headless=True,
            timeout=timeout_s * 1000,
        )
        try:
            yield browser
        finally:
            browser.close()
