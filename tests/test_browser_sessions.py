"""The live sessions page and the quota column in a real browser.

A real FTP client holds a session on a real server (in a thread of this
process, sharing the live admin's database); the admin sees it appear on
the page by itself, disconnects it, and the client's next command gets 421.
The disconnect latency (the action's button clicked -> the client sees the
421) is printed.
"""

import ftplib
import threading
import time

from ftpserver_core.models import FTPUserGroup, LiveSession, QuotaUsage

from .test_browser import admin, browser, column, new_tab  # noqa: F401

LIST = "/admin/ftpserver_core/livesession/"
MiB = 1024 * 1024


def refresh_state(page):
    return page.locator("#live-refresh").get_attribute("data-state")


def test_the_admin_sees_a_session_and_disconnects_it(admin, live_ftp, make_account):  # noqa: F811
    page = admin.page
    make_account("carol")
    make_account("dave")
    # Opened before the session exists, filtered: the page reloads itself
    # and keeps the filter and the search.
    admin.goto(f"{LIST}?status=live&q=carol")
    assert page.locator("#live-refresh").is_visible()
    assert refresh_state(page) == "running"
    assert admin.result_rows() == []
    carol = live_ftp.client("carol")
    dave = live_ftp.client("dave")  # left out by the search
    carol.voidcmd("NOOP")
    page.locator("#result_list tbody tr").first.wait_for(timeout=15_000)
    admin.assert_styled()
    assert "status=live" in page.url and "q=carol" in page.url
    assert column(admin, "Username") == ["carol"]
    assert column(admin, "Client IP") == ["127.0.0.1"]
    assert column(admin, "Status") == ["live"]
    session = LiveSession.objects.get(username="carol")  # listed, so there
    assert column(admin, "Server") == [str(session.process)]
    admin.screenshot("live-sessions")

    # A selected session pauses the reload: the page stays while choosing.
    page.check("#result_list tbody input.action-select")
    page.evaluate("window.stillHere = true")
    page.wait_for_function(
        "document.getElementById('live-refresh').dataset.state === 'waiting'"
    )
    time.sleep(6)  # longer than the 5 s interval
    assert page.evaluate("window.stillHere === true"), "the page reloaded"

    # Disconnect; the client polls with NOOP meanwhile.
    page.select_option("select[name=action]", "disconnect")
    seen = {}

    def poll():
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                carol.voidcmd("NOOP")
            except (ftplib.Error, EOFError, OSError) as exc:
                seen["at"] = time.monotonic()
                seen["error"] = str(exc)
                return
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    clicked = time.monotonic()
    poller.start()
    with page.expect_navigation():
        page.click("button[name=index]")
    admin.assert_styled()
    poller.join(20)
    assert "error" in seen, "the client was not disconnected within 15 s"
    latency = seen["at"] - clicked
    print(f"\ndisconnect latency (click -> client sees 421): {latency * 1000:.0f} ms")
    assert seen["error"].startswith("421 Disconnected by an administrator"), seen
    assert admin.messages()[0].startswith("Disconnecting 1 session;"), admin.messages()
    carol.close()

    # Dave's session is untouched, and carol's row goes with the next reloads.
    dave.voidcmd("NOOP")
    page.wait_for_function(
        "document.querySelectorAll('#result_list tbody tr').length === 0",
        timeout=20_000,
    )
    assert "q=carol" in page.url
    dave.quit()


def test_the_quota_column_and_the_over_90_filter(admin, make_account):  # noqa: F811
    group = FTPUserGroup.objects.create(name="limited", quota_bytes=10 * MiB)
    full = make_account("full", group=group)
    half = make_account("half", group=group)
    make_account("free")
    QuotaUsage.objects.create(account=full, bytes=int(9.5 * MiB), files=3)
    QuotaUsage.objects.create(account=half, bytes=5 * MiB, files=1)
    page = admin.page
    admin.goto("/admin/ftpserver_core/ftpuseraccount/")
    names, cells = column(admin, "Username"), column(admin, "Quota usage")
    usage = {n: c.replace("\xa0", " ") for n, c in zip(names, cells, strict=True)}
    assert usage == {
        "free": "-",
        "full": "9.5 MB of 10.0 MB (95%)",
        "half": "5.0 MB of 10.0 MB (50%)",
    }, usage
    meter = page.locator("tr:has-text('full') meter")
    assert meter.is_visible()
    assert meter.get_attribute("value") == "95"
    assert meter.bounding_box()["width"] > 40  # the stylesheet's width applies
    page.locator("#changelist-filter a", has_text="Over 90%").click()
    page.wait_for_load_state()
    admin.assert_styled()
    assert "quota=over90" in page.url
    assert column(admin, "Username") == ["full"]
    admin.screenshot("accounts-quota")
