"""Admin polish in a real browser (Debian's chromium): widths at 1280 px, the favicon.

The accounts list and the import page's error table must fit a 1280x800
window without a horizontal scrollbar, with long usernames, group names and
home paths. ``FTPSUITE_SCREENSHOTS=1`` writes their screenshots to
docs/screenshots/.
"""

import base64
import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from ftpserver_core.models import FTPUserAccount, FTPUserGroup, HomeDirectory

from .browser import SCREENSHOT_DIR, VIEWPORT
from .test_browser import admin, browser, new_tab  # noqa: F401

WIDTH = VIEWPORT["width"]
assert WIDTH == 1280 and VIEWPORT["height"] == 800

LONG_USER = "accounting.department.external.auditor.2026@subsidiary-example.com"
LONG_GROUP = "external-auditors-with-read-only-access-to-the-quarterly-reports"


def page_width(tab):
    return tab.page.evaluate("document.scrollingElement.scrollWidth")


def assert_fits(tab, what, table):
    """The page, and the table in its box (the admin scrolls wide lists inside)."""
    width = page_width(tab)
    assert width <= WIDTH, (
        f"{what} is {width} px wide, wider than the {WIDTH} px window"
    )
    table_width, box_width, right = tab.page.eval_on_selector(
        table,
        """table => [table.scrollWidth, table.parentElement.clientWidth,
                     table.getBoundingClientRect().right]""",
    )
    assert table_width <= box_width, (
        f"{what}: its table is {table_width} px wide in a {box_width} px box"
    )
    assert right <= WIDTH, f"{what}: its table ends at {right} px"


@pytest.fixture
def long_accounts(db, tmp_path):
    """Accounts whose every column is as wide as it gets."""
    root = tmp_path / "homes-of-the-finance-and-accounting-departments-2026" / "ftp"
    home = HomeDirectory.objects.create(
        path=str(root / "{group}" / "{username}"), name=""
    )
    group = FTPUserGroup.objects.create(
        name=LONG_GROUP, home_directory=home, quota_bytes=10 * 1024**3
    )
    users = get_user_model().objects
    for n in range(6):
        user = users.create_user(f"{LONG_USER}.{n}", password="x")
        FTPUserAccount.objects.create(
            user=user,
            group=group,
            permission="elradfmwMT" if n % 2 else "",
            quota_bytes=5 * 1024**3 if n % 3 else None,
            quota_files=100_000 if n % 2 else None,
            expires_at=timezone.now() + timezone.timedelta(days=365),
            last_login_at=timezone.now(),
            last_login_ip="2001:db8:1234:5678:9abc:def0:1234:5678",
        )
    return group


def test_the_accounts_list_fits_1280_pixels(admin, long_accounts):  # noqa: F811
    admin.goto("/admin/ftpserver_core/ftpuseraccount/")
    rows = admin.result_rows()
    assert len(rows) == 6
    assert any(LONG_USER in cell for cell in rows[0])
    admin.screenshot("accounts-list-1280")
    assert_fits(admin, "the accounts list", "#result_list")
    # The filters stay beside the list, as Django draws them.
    sidebar = admin.page.locator("#changelist-filter").bounding_box()
    table = admin.page.locator("#result_list").bounding_box()
    assert sidebar["x"] >= table["x"] + table["width"] - 1, (sidebar, table)


def import_file(rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def bad_row(n):
    return {
        "username": f"{LONG_USER}.new{n}",
        "email": f"not-an-email-address-of-the-{n}th-external-auditor",
        "group": f"{LONG_GROUP}-that-does-not-exist",
        "home_directory": "/srv/ftp/homes-of-the-finance-and-accounting-departments/x",
        "permission": "elradfmwMT",
        "is_enabled": "maybe",
        "expires_at": "at the end of the fourth quarter",
        "require_tls": "1",
        "max_sessions": "lots",
        "allowed_networks": "192.0.2.0/24 198.51.100.0/24 2001:db8:1234::/48 nonsense",
        "quota_bytes": "10737418240",
        "quota_files": "100000",
        "max_upload_size": "2147483648",
        "upload_rate": "5242880",
        "download_rate": "5242880",
        "password": "Sh0rt!",
    }


def test_the_import_error_table_fits_1280_pixels(admin, long_accounts):  # noqa: F811
    page = admin.page
    admin.goto("/admin/ftpserver_core/ftpuseraccount/import/")
    page.set_input_files(
        "#id_import_file",
        files=[
            {
                "name": "accounts.csv",
                "mimeType": "text/csv",
                "buffer": import_file([bad_row(n) for n in range(3)]),
            }
        ],
    )
    with page.expect_navigation():
        page.click("#content form input[type=submit]")
    admin.assert_styled()
    errors = page.locator("table.import-preview .validation-error-list").first
    assert "Unknown FTP group" in errors.inner_text()
    assert page.locator("table.import-preview tbody tr").count() == 3
    if admin.screenshot("account-import-page-1280"):
        page.locator("table.import-preview").screenshot(
            path=str(SCREENSHOT_DIR / "account-import-errors-1280.png")
        )
    assert_fits(admin, "the import page with its errors", "table.import-preview")
    # Every row's values can be read: no cell is cut off.
    clipped = page.eval_on_selector_all(
        "table.import-preview td",
        "cells => cells.filter(c => c.scrollWidth > c.clientWidth + 1).length",
    )
    assert clipped == 0


def test_the_favicon_and_the_mark_load(admin):  # noqa: F811
    admin.goto("/admin/")
    page = admin.page
    href = page.eval_on_selector("link[rel=icon]", "link => link.href")
    assert href.endswith("/static/favicon.svg"), href
    fetched = page.evaluate(
        """async href => {
            const response = await fetch(href);
            const body = await response.text();
            return [response.status, response.headers.get("content-type"), body];
        }""",
        href,
    )
    status, content_type, body = fetched
    assert status == 200 and content_type.startswith("image/svg+xml"), fetched[:2]
    assert body.lstrip().startswith("<svg")
    # The browser draws it: the mark before the site's name has pixels.
    mark = page.locator("#site-name img.site-mark")
    assert mark.evaluate("img => img.complete && img.naturalWidth") > 0
    box = mark.bounding_box()
    assert 16 <= box["width"] <= 32, box
    assert (
        page.locator("#site-name").inner_text().strip() == "FTP server administration"
    )
    assert page.locator("#user-tools a", has_text="View site").count() == 0
    # Rendered as an image by the browser (a broken SVG would not decode).
    png = page.evaluate(
        """async href => {
            const img = new Image();
            img.src = href;
            await img.decode();
            const canvas = document.createElement("canvas");
            canvas.width = canvas.height = 32;
            canvas.getContext("2d").drawImage(img, 0, 0, 32, 32);
            return canvas.toDataURL("image/png");
        }""",
        href,
    )
    assert len(base64.b64decode(png.split(",", 1)[1])) > 100
    admin.screenshot("admin-index-branding")
