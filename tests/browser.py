"""Helpers of the browser tests: Debian's chromium driven by Playwright.

The browser is the system's ``chromium`` (``apt-get install chromium``); no
browser is ever downloaded (``playwright install`` is not needed).
``FTPSUITE_CHROMIUM`` names another binary.

``AdminBrowser`` wraps a Playwright page on the live admin: it logs in,
navigates, fails on any static file that does not load, checks that the
admin's CSS is applied, and takes the README's screenshots when
``FTPSUITE_SCREENSHOTS=1``.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT_DIR = REPO_ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("FTPSUITE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
#: Playwright's default is 30 s; a local admin answers in milliseconds.
TIMEOUT_MS = 15_000

# What the admin's base.css does to its header; a browser's defaults for a
# <div> are display: block and a transparent background.
UNSTYLED_BACKGROUNDS = {"rgba(0, 0, 0, 0)", "transparent"}


def screenshots_wanted():
    return os.environ.get("FTPSUITE_SCREENSHOTS", "").strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
    )


def launch(playwright):
    """Launch the system's chromium, headless; fail with the fix if missing."""
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError(
            f"{CHROMIUM} not found: install Debian's chromium "
            "(apt-get install chromium) or set FTPSUITE_CHROMIUM"
        )
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )


class AdminBrowser:
    """A browser tab on the live admin at ``base_url``."""

    def __init__(self, page, base_url, static_url="/static/"):
        self.page = page
        self.base_url = base_url.rstrip("/")
        self.static_path = "/" + static_url.strip("/") + "/"
        #: Static files that did not load: (status or error, url).
        self.broken = []
        page.set_default_timeout(TIMEOUT_MS)
        page.on("response", self._on_response)
        page.on("requestfailed", self._on_failed)

    # --- network watch

    def _is_static(self, url):
        return urlsplit(url).path.startswith(self.static_path)

    def _on_response(self, response):
        if response.status >= 400 and self._is_static(response.url):
            self.broken.append((response.status, response.url))

    def _on_failed(self, request):
        # The browser cancels a page's favicon request when the next page
        # is opened before it finished (net::ERR_ABORTED): not a broken
        # file. A favicon that fails to load is caught by its status.
        cancelled = request.failure == "net::ERR_ABORTED" and urlsplit(
            request.url
        ).path.endswith("/favicon.svg")
        if self._is_static(request.url) and not cancelled:
            self.broken.append((request.failure, request.url))

    # --- navigation

    def url(self, path):
        return self.base_url + path

    def goto(self, path, status=200):
        """Open ``path``; assert the HTTP status and that the page is styled."""
        response = self.page.goto(self.url(path))
        assert response is not None, path
        assert response.status == status, (path, response.status)
        self.assert_styled()
        return response

    def login(self, username, password, next_path="/admin/"):
        """Log in through the admin's login form; return on the next page."""
        self.goto(f"/admin/login/?next={next_path}")
        page = self.page
        assert page.locator("#site-name").is_visible()
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("#login-form input[type=submit]")
        page.wait_for_load_state()
        assert urlsplit(page.url).path == next_path, page.url
        welcome = page.locator("#user-tools").text_content().split()
        assert welcome[:2] == ["Welcome,", f"{username}."], welcome
        self.assert_styled()

    def submit(self, selector="input[type=submit][name=_save]"):
        """Click a submit button and wait for the page it leads to."""
        with self.page.expect_navigation():
            self.page.click(selector)
        self.assert_styled()

    # --- what the user sees

    def assert_styled(self):
        """Fail unless every static file loaded and the admin's CSS applies.

        A stylesheet that answers 404 (or HTML) leaves its ``<link>`` without
        rules and the admin header in the browser's default style.
        """
        page = self.page
        page.wait_for_load_state("load")
        assert not self.broken, f"static files did not load: {self.broken}"
        sheets = page.eval_on_selector_all(
            "link[rel=stylesheet]",
            """links => links.map(link => {
                let rules = -1;
                try { rules = link.sheet ? link.sheet.cssRules.length : -1; }
                catch (e) { rules = -2; }
                return [link.href, rules];
            })""",
        )
        assert sheets, f"{page.url}: no stylesheet linked"
        empty = [href for href, rules in sheets if rules <= 0]
        assert not empty, f"{page.url}: stylesheets without rules: {empty}"
        header = page.locator("#header")
        style = header.evaluate(
            "el => { const s = getComputedStyle(el);"
            " return [s.display, s.backgroundColor]; }"
        )
        display, background = style
        assert display == "flex", f"{page.url}: #header is {display}: unstyled"
        assert background not in UNSTYLED_BACKGROUNDS, (
            f"{page.url}: #header background {background}: unstyled"
        )

    def messages(self):
        """The texts of the admin's messages (success, warning, error)."""
        return [
            text.strip()
            for text in self.page.locator("ul.messagelist li").all_inner_texts()
        ]

    def errors(self):
        """The texts of the form's error lists."""
        return [
            text.strip()
            for text in self.page.locator(
                ".errornote, ul.errorlist li"
            ).all_inner_texts()
        ]

    def result_rows(self):
        """The changelist's result table: one list of cell texts per row."""
        rows = []
        for row in self.page.locator("#result_list tbody tr").all():
            cells = row.locator("th, td").all_inner_texts()
            rows.append([cell.strip() for cell in cells])
        return rows

    def screenshot(self, name):
        """Save docs/screenshots/<name>.png when FTPSUITE_SCREENSHOTS=1."""
        if not screenshots_wanted():
            return None
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{name}.png"
        self.page.evaluate("window.scrollTo(0, 0)")  # the page as it opens
        self.page.screenshot(path=str(path), full_page=False, animations="disabled")
        return path


def only_digits(text):
    return re.sub(r"\D", "", text)
