"""The admin in a real browser (Debian's chromium through Playwright).

A live Django server serves the admin (and its static files); a live FTP
server in a thread shares its database. The tests click through the pages as
an operator would and check what the pages show, the files they download and
what FTP clients then get.

``FTPSUITE_SCREENSHOTS=1`` also writes the README's screenshots to
docs/screenshots/.
"""

import csv
import ftplib
import io
import os
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import sync_playwright

from ftpserver_core import audit
from ftpserver_core.models import (
    AuditEvent,
    DirectoryRule,
    FTPUserAccount,
    FTPUserGroup,
    HomeDirectory,
)

from .browser import VIEWPORT, AdminBrowser, launch, only_digits
from .conftest import PASSWORD

ADMIN_USER = "boss"
ADMIN_PASSWORD = "b0ss-Passw0rd!"
CAROL_PASSWORD = "Car0l-ftp-Passw0rd"
IMPORTED = ("erin", "frank", "grace")
INCOMING_RULE = {"path": "incoming", "permission": "elradfmw", "recursive": True}


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an asyncio loop in this thread while it
    # runs, so Django would refuse the tests' (synchronous) ORM calls and the
    # test database's flushes. They are safe: nothing runs on that loop while
    # the test code does.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"
    try:
        with sync_playwright() as playwright:
            chromium = launch(playwright)
            yield chromium
            chromium.close()
    finally:
        if saved is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


@pytest.fixture
def new_tab(browser, live_server, settings):
    """Open browser tabs on the live admin: ``new_tab()`` (not logged in)."""
    contexts = []

    def open_tab():
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        contexts.append(context)
        return AdminBrowser(context.new_page(), live_server.url, settings.STATIC_URL)

    yield open_tab
    for context in contexts:
        context.close()


@pytest.fixture
def admin(new_tab, django_user_model):
    """A tab logged in to the admin as a superuser."""
    django_user_model.objects.create_superuser(
        ADMIN_USER, "boss@example.com", ADMIN_PASSWORD
    )
    tab = new_tab()
    tab.login(ADMIN_USER, ADMIN_PASSWORD)
    return tab


def flush_audit():
    assert audit.writer.flush(), "the audit writer did not finish"


def read_csv(data):
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


# --- the pages are styled --------------------------------------------------------


def test_login_page_and_index_are_styled(new_tab, django_user_model):
    django_user_model.objects.create_superuser(ADMIN_USER, "", ADMIN_PASSWORD)
    tab = new_tab()
    tab.goto("/admin/")  # redirected to the login page
    assert "/admin/login/" in tab.page.url
    tab.page.fill("#id_username", ADMIN_USER)
    tab.page.fill("#id_password", "wrong")
    tab.submit("#login-form input[type=submit]")
    assert any("correct username and password" in e for e in tab.errors())
    tab.login(ADMIN_USER, ADMIN_PASSWORD)
    page = tab.page
    assert page.locator("#content h1").inner_text() == "Site administration"
    for model in ("Home directories", "FTP groups", "FTP accounts", "Audit events"):
        assert page.get_by_role("link", name=model, exact=True).first.is_visible()
    assert page.locator("#ftpadmin-reports a", has_text="Transfers").is_visible()


@pytest.mark.parametrize(
    "stylesheet",
    ["admin/css/base.css", "admin/css/login.css", "admin/css/nav_sidebar.css"],
)
def test_a_stylesheet_that_does_not_load_fails_the_check(new_tab, stylesheet):
    tab = new_tab()
    tab.page.route(
        f"**/static/{stylesheet}",
        lambda route: route.fulfill(
            status=404, body="Not Found", content_type="text/html"
        ),
    )
    with pytest.raises(AssertionError, match="did not load"):
        tab.goto("/admin/login/")


def test_the_reports_own_stylesheet_is_checked(admin):
    # ftpadmin's own static file, as a wheel without its package data would
    # leave it.
    admin.page.route(
        "**/static/ftpadmin/report.css",
        lambda route: route.fulfill(status=404, body="", content_type="text/html"),
    )
    with pytest.raises(AssertionError, match="did not load.*ftpadmin/report.css"):
        admin.goto("/admin/ftp-reports/transfers/")


def test_a_stylesheet_without_rules_fails_the_check(new_tab):
    # Served, but empty (a broken collectstatic, a proxy's error page as CSS):
    # the header keeps the browser's default style.
    tab = new_tab()
    tab.page.route(
        "**/static/admin/css/base.css",
        lambda route: route.fulfill(status=200, body="", content_type="text/css"),
    )
    with pytest.raises(AssertionError, match="without rules"):
        tab.goto("/admin/login/")
    tab.broken.clear()
    tab.page.unroute("**/static/admin/css/base.css")
    tab.goto("/admin/login/")  # and the real one passes


# --- steps of the stories ------------------------------------------------------


def add_home_directory(admin, template, name, rule=None):
    """Add a home directory, with a directory rule in the inline."""
    page = admin.page
    admin.goto("/admin/ftpserver_core/homedirectory/add/")
    assert page.locator("#content h1").inner_text() == "Add home directory"
    page.fill("#id_path", template)
    page.fill("#id_name", name)
    page.check("#id_create_on_login")
    if rule:
        # The inline has no empty form: the admin's JavaScript adds one.
        assert page.locator("#rules-group tr.form-row:not(.empty-form)").count() == 0
        page.click("#rules-group .add-row a")
        page.fill("#id_rules-0-path", rule["path"])
        page.fill("#id_rules-0-permission", rule["permission"])
        page.set_checked("#id_rules-0-recursive", rule["recursive"])
    admin.submit()
    assert admin.messages() == [
        f"The home directory \u201c{name}\u201d was added successfully."
    ], admin.messages()
    row = admin.result_rows()[0]
    assert row[1:4] == [template, name, ""], row  # the boolean is an icon
    return HomeDirectory.objects.get(path=template)


def add_group(admin, name, permission, home):
    page = admin.page
    admin.goto("/admin/ftpserver_core/ftpusergroup/add/")
    page.fill("#id_name", name)
    page.fill("#id_permission", permission)
    page.select_option("#id_home_directory", label=str(home))
    admin.submit()
    assert admin.messages() == [
        f"The FTP group \u201c{name}\u201d was added successfully."
    ], admin.messages()
    rows = admin.result_rows()
    assert [row[1:4] for row in rows] == [[name, permission, str(home)]], rows
    return FTPUserGroup.objects.get(name=name)


# --- home directories, groups and their rules --------------------------------------


def test_home_directory_with_a_rule_and_a_group(admin, tmp_path):
    template = str(tmp_path / "homes" / "{username}")
    rule = {"path": "incoming", "permission": "elradfmw", "recursive": True}
    home = add_home_directory(admin, template, "customers", rule)
    assert home.create_on_login
    saved = DirectoryRule.objects.get()
    assert (saved.home_directory, saved.path, saved.permission, saved.recursive) == (
        home,
        "incoming",
        "elradfmw",
        True,
    )
    # The change page shows the rule in its inline.
    admin.page.click(f"#result_list a:text-is('{template}')")
    admin.assert_styled()
    assert admin.page.input_value("#id_rules-0-path") == "incoming"
    assert admin.page.is_checked("#id_rules-0-recursive")
    group = add_group(admin, "customers", "elrm", home)
    assert (group.permission, group.home_directory) == ("elrm", home)


def test_a_bad_rule_is_shown_on_the_form_and_nothing_is_saved(admin, tmp_path):
    page = admin.page
    admin.goto("/admin/ftpserver_core/homedirectory/add/")
    page.fill("#id_path", str(tmp_path / "{username}"))
    page.click("#rules-group .add-row a")
    page.fill("#id_rules-0-path", "../escape")
    page.fill("#id_rules-0-permission", "elrx")
    admin.submit()
    errors = admin.errors()
    assert errors[0] == "Please correct the errors below."
    assert any("leaves the home directory" in e for e in errors), errors
    assert any("Unknown permission letter(s) 'x'" in e for e in errors), errors
    assert not HomeDirectory.objects.exists()


def add_account(admin, username, password, group, email=""):
    """Create an FTP account and its new Django user in the add form."""
    page = admin.page
    admin.goto("/admin/ftpserver_core/ftpuseraccount/")
    page.click("#content .object-tools a.addlink")
    admin.assert_styled()
    assert page.locator("#content h1").inner_text() == "Add FTP account"
    admin.screenshot("account-add-form")
    page.fill("#id_new_username", username)
    if email:
        page.fill("#id_email", email)
    page.fill("#id_password1", password)
    page.fill("#id_password2", password)
    page.select_option("#id_group", label=group)
    admin.submit()
    assert any(
        f"The FTP account \u201c{username}\u201d was added successfully" in m
        for m in admin.messages()
    ), admin.messages()
    return FTPUserAccount.objects.select_related("user", "group").get(
        user__username=username
    )


def test_a_mismatched_password_is_refused_and_nothing_is_created(admin):
    page = admin.page
    admin.goto("/admin/ftpserver_core/ftpuseraccount/add/")
    page.fill("#id_new_username", "carol")
    page.fill("#id_password1", CAROL_PASSWORD)
    page.fill("#id_password2", CAROL_PASSWORD + "x")
    admin.submit()
    assert admin.errors()[0] == "Please correct the error below."
    assert any("password fields didn\u2019t match" in e for e in admin.errors()), (
        admin.errors()
    )
    # What was typed is kept, the passwords are not.
    assert page.input_value("#id_new_username") == "carol"
    assert page.input_value("#id_password1") == ""
    assert not FTPUserAccount.objects.exists()


def ftp_upload(client, path, data):
    reply = client.storbinary(f"STOR {path}", io.BytesIO(data))
    assert reply.startswith("226"), reply


def filter_link(admin, title, choice):
    """Click a choice of the changelist's filter sidebar."""
    admin.page.click(
        f"#changelist-filter details[data-filter-title='{title}'] a:text-is('{choice}')"
    )
    admin.page.wait_for_load_state()
    admin.assert_styled()


def query_of(page):
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def column(admin, header):
    """The texts of one column of the changelist, by its header's text."""
    headers = [
        h.strip()
        for h in admin.page.locator("#result_list thead th").all_text_contents()
    ]
    index = headers.index(header)
    return [row[index] for row in admin.result_rows()]


def test_an_account_made_in_the_admin_uploads_and_the_upload_is_audited(
    admin, ftp_server, make_account, tmp_path
):
    page = admin.page
    template = str(tmp_path / "homes" / "{username}")
    home = add_home_directory(admin, template, "customers", INCOMING_RULE)
    add_group(admin, "customers", "elrm", home)
    account = add_account(admin, "carol", CAROL_PASSWORD, "customers", "c@example.com")
    assert account.user.check_password(CAROL_PASSWORD)
    assert account.group.name == "customers" and account.is_enabled
    assert column(admin, "Username") == ["carol"]

    # Over FTP: the home and its rules' folders are created at login; the
    # group may make directories but not upload, except in incoming/ (the
    # home directory's rule).
    server = ftp_server()
    dave = make_account("dave")  # another user, whom the filters leave out
    report, notes = b"id,total\n1,42\n", b"not a report"
    client = server.client()
    assert client.login("carol", CAROL_PASSWORD).startswith("230")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp_upload(client, "at-the-top.txt", b"refused")
    # The rule's folder was made with the home, at this first login.
    assert "incoming" in client.nlst()
    ftp_upload(client, "incoming/report.csv", report)
    ftp_upload(client, "incoming/notes.txt", notes)
    client.quit()
    assert (tmp_path / "homes" / "carol" / "incoming" / "report.csv").read_bytes() == (
        report
    )
    other = server.client(dave.user.username, PASSWORD)
    ftp_upload(other, "report.csv", b"dave's")
    other.quit()
    flush_audit()

    # The audit trail: carol's records, then her uploads, then the report.
    admin.goto("/admin/")
    page.get_by_role("link", name="Audit events", exact=True).first.click()
    admin.assert_styled()
    assert {"carol", "dave"} <= set(column(admin, "User"))
    page.locator("#result_list a:text-is('carol')").first.click()
    admin.assert_styled()
    assert query_of(page) == {"username": "carol"}
    assert set(column(admin, "User")) == {"carol"}
    assert {"login", "upload"} <= set(column(admin, "Event"))
    filter_link(admin, "event", "upload")
    assert query_of(page) == {"username": "carol", "event__exact": "upload"}
    assert sorted(column(admin, "Path")) == [
        "/incoming/notes.txt",
        "/incoming/report.csv",
    ]
    page.fill("#searchbar", "report")
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    admin.assert_styled()
    assert query_of(page) == {
        "username": "carol",
        "event__exact": "upload",
        "q": "report",
    }
    rows = admin.result_rows()
    assert len(rows) == 1, rows
    assert column(admin, "Path") == ["/incoming/report.csv"]
    assert only_digits(column(admin, "Bytes")[0]) == str(len(report))
    assert column(admin, "Result") == ["ok"]
    assert page.locator(
        "#changelist-filter details[data-filter-title='user']"
    ).is_visible()
    # Room for every column: the user folds the navigation sidebar away.
    page.click("#toggle-nav-sidebar")
    admin.screenshot("audit-trail-filtered")

    filtered = page.url

    # Export what is shown as CSV: the selected rows, by the action.
    page.check("#action-toggle")
    page.select_option("select[name=action]", "export_admin_action")
    with page.expect_navigation():
        page.click("button[name=index]")
    admin.assert_styled()
    assert "Export 1 selected item." in page.locator("#content").inner_text()
    page.select_option("#id_format", label="csv")
    with page.expect_download() as download_info:
        page.click("#content input[type=submit]")
    download = download_info.value
    assert download.suggested_filename.endswith(".csv"), download.suggested_filename
    (record,) = read_csv(download.path().read_bytes())
    upload = AuditEvent.objects.get(
        event="upload", username="carol", ftp_path="/incoming/report.csv"
    )
    assert record["id"] == str(upload.pk)
    assert record["event"] == "upload"
    assert record["username"] == "carol"
    assert record["group"] == "customers"
    assert record["ftp_path"] == "/incoming/report.csv"
    assert record["path"] == str(
        tmp_path / "homes" / "carol" / "incoming" / "report.csv"
    )
    assert record["size"] == str(len(report))
    assert record["success"] in ("1", "True", "true")
    assert record["remote_ip"] == "127.0.0.1"

    # Or every row that the filters match, by the changelist's Export button.
    page.goto(filtered)
    admin.assert_styled()
    page.locator("#content .object-tools").get_by_role("link", name="Export").click()
    admin.assert_styled()
    page.select_option("#id_format", label="csv")
    with page.expect_download() as download_info:
        page.click("#content input[type=submit]")
    assert read_csv(download_info.value.path().read_bytes()) == [record]


# --- the transfers report ------------------------------------------------------------


def totals(admin):
    """The report's totals row, as integers, by column header."""
    table = admin.page.locator("#transfer-totals")
    headers = [h.strip() for h in table.locator("thead th").all_text_contents()]
    cells = table.locator("tbody td").all_inner_texts()
    return {h: int(only_digits(c)) for h, c in zip(headers, cells, strict=True)}


def test_the_transfers_report_filters_adds_up_and_exports(
    admin, ftp_server, make_account, tmp_path
):
    page = admin.page
    server = ftp_server()
    alice = make_account("alice", group="staff")
    bob = make_account("bob", group="guests")
    sizes = {"a.bin": 1500, "b.bin": 2500, "c.bin": 700}
    client = server.client(alice.user.username)
    ftp_upload(client, "a.bin", b"a" * sizes["a.bin"])
    ftp_upload(client, "b.bin", b"b" * sizes["b.bin"])
    assert client.retrbinary("RETR a.bin", lambda data: None).startswith("226")
    client.quit()
    client = server.client(bob.user.username)
    ftp_upload(client, "c.bin", b"c" * sizes["c.bin"])
    assert client.retrbinary("RETR c.bin", lambda data: None).startswith("226")
    client.quit()
    flush_audit()

    admin.goto("/admin/")
    admin.screenshot("admin-index")
    page.get_by_role("link", name="Transfers", exact=True).first.click()
    admin.assert_styled()
    assert page.locator("#content h1").inner_text() == "Transfers"
    assert totals(admin) == {
        "Files": 5,
        "Files up": 3,
        "Bytes up": 4700,
        "Files down": 2,
        "Bytes down": 2200,
        "Incomplete": 0,
    }

    # Alice's uploads only.
    page.fill("#id_user", "alice")
    page.select_option("#id_direction", "upload")
    with page.expect_navigation():
        page.click("#transfer-filters input[type=submit]")
    admin.assert_styled()
    assert query_of(page)["user"] == "alice"
    assert query_of(page)["direction"] == "upload"
    assert totals(admin) == {
        "Files": 2,
        "Files up": 2,
        "Bytes up": 4000,
        "Files down": 0,
        "Bytes down": 0,
        "Incomplete": 0,
    }
    per_user = page.locator("#transfer-users tbody tr").all_inner_texts()
    assert len(per_user) == 1 and per_user[0].split()[0] == "alice", per_user
    assert page.locator("#transfer-list caption").text_content() == "2 transfers"
    listed = page.locator("#transfer-list tbody tr").all()
    assert sorted(row.locator("td").nth(5).inner_text() for row in listed) == [
        "/a.bin",
        "/b.bin",
    ]
    admin.screenshot("transfers-report")

    # The CSV export has the same rows.
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV", exact=True).click()
    download = download_info.value
    assert download.suggested_filename.startswith("transfers-")
    assert download.suggested_filename.endswith(".csv")
    assert parse_qs(urlsplit(download.url).query) == {
        "user": ["alice"],
        "direction": ["upload"],
    }
    records = read_csv(download.path().read_bytes())
    assert sorted((r["ftp_path"], r["size"]) for r in records) == [
        ("/a.bin", "1500"),
        ("/b.bin", "2500"),
    ]
    assert {(r["username"], r["group"], r["event"], r["status"]) for r in records} == {
        ("alice", "staff", "upload", "complete")
    }


# --- importing accounts ------------------------------------------------------------


def accounts_csv(frank_group):
    return (
        "username,email,group,permission,password\n"
        "erin,erin@example.com,staff,,Erin-Passw0rd-1\n"
        f"frank,,{frank_group},elrw,Frank-Passw0rd-2\n"
        "grace,,staff,elr,Grace-Passw0rd-3\n"
    ).encode()


def import_preview(admin):
    """The rows of the import preview, as dicts by column header."""
    table = admin.page.locator("#content table.import-preview")
    headers = [h.strip() for h in table.locator("thead th").all_text_contents()]
    return [
        dict(zip(headers, (c.strip() for c in row.all_inner_texts()), strict=True))
        for row in (r.locator(":scope > td") for r in table.locator("tbody tr").all())
    ]


def upload_for_import(admin, data):
    """Choose the file on the import page and submit it: the preview."""
    page = admin.page
    page.set_input_files(
        "#id_import_file",
        files=[{"name": "accounts.csv", "mimeType": "text/csv", "buffer": data}],
    )
    # The page guesses the format from the file name.
    assert page.locator("#id_format option:checked").inner_text() == "csv"
    with page.expect_navigation():
        page.click("#content form input[type=submit]")
    admin.assert_styled()


def test_importing_accounts_all_or_nothing_then_logging_in(admin, ftp_server, tmp_path):
    page = admin.page
    home = HomeDirectory.objects.create(
        path=str(tmp_path / "homes" / "{username}"), create_on_login=True
    )
    FTPUserGroup.objects.create(name="staff", permission="elr", home_directory=home)
    admin.goto("/admin/ftpserver_core/ftpuseraccount/")
    page.locator("#content .object-tools").get_by_role("link", name="Import").click()
    admin.assert_styled()
    assert page.locator("#content h1").inner_text() == "Import"

    # A file with a bad second row: the preview names the row and the reason,
    # offers no confirmation, and nothing is imported.
    upload_for_import(admin, accounts_csv(frank_group="no-such-group"))
    content = page.locator("#content")
    assert content.locator("h2").first.inner_text() == "Some rows failed to validate"
    rows = content.locator("table.import-preview tbody tr").all()
    assert len(rows) == 1
    cells = rows[0].locator(":scope > td")
    assert cells.nth(0).inner_text().strip() == "2"
    assert (
        cells.nth(1).locator(".validation-error-field-label").text_content() == "group"
    )
    assert "Unknown FTP group 'no-such-group'" in cells.nth(1).inner_text()
    assert cells.nth(2).inner_text() == "frank"
    assert "Frank-Passw0rd" not in content.inner_text()  # masked
    assert page.locator("input[name=confirm]").count() == 0
    assert not FTPUserAccount.objects.exists()
    assert not get_user_model().objects.filter(username__in=IMPORTED).exists()

    # Fixed: the preview shows three new accounts; confirming imports them.
    upload_for_import(admin, accounts_csv(frank_group="staff"))
    preview = import_preview(admin)
    assert [row[""] for row in preview] == ["New"] * 3, preview
    # What they get (which accounts they are: see the test below).
    assert [row["group"] for row in preview] == ["staff"] * 3
    assert [row["permission"] for row in preview] == ["", "elrw", "elr"]
    assert not FTPUserAccount.objects.exists()  # a dry run so far
    with page.expect_navigation():
        page.click("input[name=confirm]")
    admin.assert_styled()
    assert any("Import finished" in m and "3 new" in m for m in admin.messages()), (
        admin.messages()
    )
    assert column(admin, "Username") == list(IMPORTED)
    accounts = {
        a.user.username: a
        for a in FTPUserAccount.objects.select_related("user", "group")
    }
    assert set(accounts) == set(IMPORTED)
    assert accounts["erin"].user.email == "erin@example.com"
    assert accounts["frank"].permission == "elrw"
    assert accounts["grace"].group.name == "staff"
    assert accounts["frank"].user.check_password("Frank-Passw0rd-2")

    # The imported account logs in over FTP, and may upload (its own "w").
    server = ftp_server()
    client = server.client()
    assert client.login("frank", "Frank-Passw0rd-2").startswith("230")
    ftp_upload(client, "hello.txt", b"hello")
    assert client.nlst() == ["hello.txt"]
    client.quit()
    client = server.client()
    with pytest.raises(ftplib.error_perm, match="^530"):
        client.login("grace", "wrong-password")
    client.close()


def test_the_import_preview_names_the_accounts(admin, tmp_path):
    home = HomeDirectory.objects.create(path=str(tmp_path / "{username}"))
    FTPUserGroup.objects.create(name="staff", home_directory=home)
    admin.goto("/admin/ftpserver_core/ftpuseraccount/import/")
    upload_for_import(admin, accounts_csv(frank_group="staff"))
    preview = import_preview(admin)
    assert [row[""] for row in preview] == ["New"] * 3, preview
    assert [row["username"] for row in preview] == list(IMPORTED), preview
    assert [row["email"] for row in preview] == ["erin@example.com", "", ""]


# --- the defender: a manual ban, lifted ------------------------------------------------


def ftp_greeting(server, expected, timeout=10):
    """The server's first reply to a new connection, once it starts with
    ``expected`` (the servers poll the bans about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        client = ftplib.FTP(timeout=5)
        try:
            greeting = client.connect(server.host, server.port)
        except ftplib.error_temp as refused:
            greeting = str(refused)
        finally:
            client.close()
        if greeting.startswith(expected) or time.monotonic() > deadline:
            return greeting
        time.sleep(0.2)


def test_a_manual_ban_refuses_ftp_until_it_is_lifted(admin, ftp_server):
    page = admin.page
    server = ftp_server()
    assert ftp_greeting(server, "220").startswith("220")

    # Ban the address the FTP clients (and this browser) come from.
    admin.goto("/admin/")
    page.get_by_role("link", name="Bans", exact=True).first.click()
    admin.assert_styled()
    assert "Only bans that are over" in page.locator("#ban-help").inner_text()
    page.click("#content .object-tools a.addlink")
    admin.assert_styled()
    assert page.locator("#content h1").inner_text() == "Add ban"
    page.fill("#id_network", "127.0.0.1")
    page.select_option("#id_duration", label="1 hour")
    page.fill("#id_note", "testing the ban page")
    admin.submit()
    notes = admin.messages()
    assert any(
        "127.0.0.1/32 (manual)" in m and "added successfully" in m for m in notes
    )
    # The suite's settings safelist 127.0.0.1; the admin says what that means.
    assert any("overlaps the safelist entry 127.0.0.1/32" in m for m in notes), notes
    assert any("Your own address 127.0.0.1 is in 127.0.0.1/32" in m for m in notes)
    assert column(admin, "Address or network") == ["127.0.0.1/32"]
    assert column(admin, "Status") == ["active"]
    assert column(admin, "Reason") == ["manual"]
    assert column(admin, "Banned by") == [ADMIN_USER]
    admin.screenshot("defender-bans")
    greeting = ftp_greeting(server, "421")
    assert greeting.startswith("421 Your address is banned"), greeting

    # Lift it with the action: the list says so, FTP lets the address in.
    page.check("#result_list tbody input.action-select")
    page.select_option("select[name=action]", "lift_bans")
    with page.expect_navigation():
        page.click("button[name=index]")
    admin.assert_styled()
    assert any(m.startswith("Lifted 1 ban;") for m in admin.messages()), (
        admin.messages()
    )
    assert column(admin, "Status") == ["lifted"]
    assert column(admin, "Lifted by") == [ADMIN_USER]
    assert ftp_greeting(server, "220").startswith("220")

    # Both are in the audit trail, found by the network.
    flush_audit()
    admin.goto("/admin/ftpserver_core/auditevent/")
    page.fill("#searchbar", "127.0.0.1/32")
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    admin.assert_styled()
    assert column(admin, "Event") == ["ban lifted", "ban"]
    assert column(admin, "Result") == ["127.0.0.1/32: manual"] * 2
    assert column(admin, "User") == [ADMIN_USER] * 2
    assert AuditEvent.objects.filter(event="refused", reason="banned").exists()
