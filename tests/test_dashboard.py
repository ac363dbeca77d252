"""The FTP dashboard of the admin index: today's figures, busiest users, chart."""

import datetime
import re
import time
import xml.etree.ElementTree as ET
from html import unescape

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from ftpadmin import dashboard
from ftpserver_core.models import AuditEvent

INDEX = reverse("admin:index")
AUDIT_TABLE = AuditEvent._meta.db_table
KIB, MIB = 1024, 1024 * 1024
NBSP = "\xa0"


@pytest.fixture(autouse=True)
def not_at_midnight():
    """Wait out the last seconds before a midnight: "today" must not change mid-test.

    Midnight in any time zone is on a quarter hour of UTC.
    """
    now = datetime.datetime.now(datetime.UTC)
    left = 900 - (now.minute % 15 * 60 + now.second + now.microsecond / 1e6)
    if left < 20:
        time.sleep(left + 0.5)


def at(day, hour=0, minute=0, second=0, microsecond=0):
    """Return a moment of ``day`` in the current time zone."""
    naive = datetime.datetime.combine(
        day, datetime.time(hour, minute, second, microsecond)
    )
    return timezone.make_aware(naive)


def record(when, event, username="alice", size=None):
    return AuditEvent(time=when, event=event, username=username, size=size)


def add(*records):
    AuditEvent.objects.bulk_create(records)


def index_html(client, path=INDEX):
    response = client.get(path)
    assert response.status_code == 200
    return response.content.decode()


def element(html, id_, tag="div"):
    """Return the element with ``id_`` (no nested element of the same tag)."""
    match = re.search(rf'<{tag}[^>]* id="{id_}"[^>]*>.*?</{tag}>', html, re.S)
    assert match, f"no <{tag} id={id_!r}>"
    return match.group(0)


def text(fragment):
    """Return the visible text of an HTML fragment, whitespace collapsed."""
    # Not str.split(): the no-break space of "3.0\xa0MB" must stay.
    return re.sub(
        r"[ \t\r\n]+", " ", unescape(re.sub(r"<[^>]+>", " ", fragment))
    ).strip()


def figure(html, name):
    """Return (value, title, detail) of one of today's figures."""
    block = element(html, f"dashboard-{name}")
    value = re.search(r'<dd class="value"[^>]*>(.*?)</dd>', block, re.S).group(1)
    title = re.search(r'<dd class="value"(?: title="([^"]*)")?', block).group(1)
    detail = re.search(r'<dd class="detail">(.*?)</dd>', block, re.S)
    return text(value), title, text(detail.group(1)) if detail else None


def top_users(html):
    """Return the rows of the busiest users table as lists of cell texts."""
    table = element(html, "dashboard-top-users", "table")
    body = re.search(r"<tbody>(.*)</tbody>", table, re.S).group(1)
    return [
        [text(cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def chart_svg(html):
    return re.search(
        r'<figure class="dashboard-chart".*?(<svg .*?</svg>)', html, re.S
    ).group(1)


def bars(html):
    """Return the chart's days: date, title, and the two bars' geometry."""
    # Our own markup, well-formed XML: nothing untrusted to parse.
    root = ET.fromstring(chart_svg(html))  # noqa: S314
    ns = {"svg": "http://www.w3.org/2000/svg"}
    days = []
    for g in root.findall("svg:g[@class='day']", ns):
        up = g.find("svg:rect[@class='up']", ns)
        down = g.find("svg:rect[@class='down']", ns)
        days.append(
            {
                "date": datetime.date.fromisoformat(g.get("data-date")),
                "role": g.get("role"),
                "title": g.find("svg:title", ns).text,
                "up": (float(up.get("y")), float(up.get("height"))),
                "down": (float(down.get("y")), float(down.get("height"))),
            }
        )
    return days


def title(day, up, down):
    return f"{day:%a} {day.day} {day:%b %Y}: up {up}, down {down}"


def size(text_):
    """Write sizes as filesizeformat does: "3.0 MB" with a no-break space."""
    return re.sub(r"(\d) (bytes|KB|MB|GB)", rf"\1{NBSP}\2", text_)


# Today's figures ----------------------------------------------------------------


def test_today_figures(audit_viewer):
    today = timezone.localdate()
    yesterday = today - datetime.timedelta(days=1)
    start = at(today)
    add(
        # Today, from its first microsecond on.
        record(start, "login", "alice"),
        record(at(today, 8), "login", "bob"),
        record(at(today, 8, 1), "login_failed", "mallory"),
        record(at(today, 8, 2), "login_failed", "mallory"),
        record(at(today, 9), "upload", "alice", 3 * MIB),
        record(at(today, 9, 5), "upload_incomplete", "alice", 512 * KIB),
        record(at(today, 10), "download", "bob", MIB),
        record(at(today, 10, 5), "download_incomplete", "bob", 1500),
        # Not logins nor transfers.
        record(at(today, 11), "delete", "alice", 7 * MIB),
        record(at(today, 11), "connect", ""),
        # Yesterday, up to its last microsecond, 40 days ago, and tomorrow
        # from its midnight on: not today.
        record(start - datetime.timedelta(microseconds=1), "login", "alice"),
        record(at(today + datetime.timedelta(days=1)), "login", "alice"),
        record(at(today + datetime.timedelta(days=1)), "upload", "alice", MIB),
        record(at(yesterday, 12), "login_failed", "mallory"),
        record(at(yesterday, 12), "upload", "alice", 9 * MIB),
        record(at(today - datetime.timedelta(days=40)), "download", "bob", 9 * MIB),
    )
    html = index_html(audit_viewer)
    assert 'id="ftpadmin-dashboard"' in html
    assert figure(html, "logins") == ("2", None, None)
    assert figure(html, "failed-logins") == ("2", None, None)
    # Bytes up and down count incomplete transfers too, and say how much.
    assert figure(html, "bytes-up") == (
        size("3.5 MB"),
        "3,670,016 bytes",
        size("2 files, 1 incomplete (512.0 KB)"),
    )
    assert figure(html, "bytes-down") == (
        size("1.0 MB"),
        "1,050,076 bytes",
        size("2 files, 1 incomplete (1.5 KB)"),
    )
    # Failed logins stand out; the figures link to today's records.
    assert 'class="figure alert" id="dashboard-failed-logins"' in html
    audit = reverse("admin:ftpserver_core_auditevent_changelist")
    day = f"time__year={today.year}&amp;time__month={today.month}&amp;time__day={today.day}"
    assert f'href="{audit}?event__exact=login_failed&amp;{day}"' in html
    # ... and the changelist finds the same records there.
    link = f"{audit}?event__exact=login_failed&{day.replace('&amp;', '&')}"
    listed = audit_viewer.get(link).context["cl"].result_list
    assert sorted(e.time for e in listed) == [at(today, 8, 1), at(today, 8, 2)]


def test_an_empty_day(audit_viewer):
    add(record(at(timezone.localdate() - datetime.timedelta(days=2)), "login"))
    html = index_html(audit_viewer)
    assert figure(html, "logins") == ("0", None, None)
    assert figure(html, "failed-logins") == ("0", None, None)
    assert 'class="figure" id="dashboard-failed-logins"' in html
    assert figure(html, "bytes-up") == (size("0 bytes"), "0 bytes", "0 files")
    assert figure(html, "bytes-down") == (size("0 bytes"), "0 bytes", "0 files")
    assert top_users(html) == [["No transfers today."]]
    days = bars(html)
    assert len(days) == 30
    assert all(d["up"] == d["down"] == (136.0, 0.0) for d in days)


# The busiest users --------------------------------------------------------------


def test_busiest_users_today_by_bytes_up_and_down(audit_viewer):
    today = timezone.localdate()
    noon = at(today, 12)
    add(
        record(noon, "upload", "ulla", 5 * MIB),
        record(noon, "download", "dora", 2 * MIB),
        record(noon, "download_incomplete", "dora", 2 * MIB),  # dora: 4 MiB
        record(noon, "upload", "bea", 3 * MIB),
        record(noon, "download", "bea", 3 * MIB),  # bea: 6 MiB, the most
        record(noon, "upload", "carl", MIB),
        record(noon, "upload", "abel", MIB),  # carl and abel tie: by name
        record(noon, "download", "zed", KIB),  # sixth: not shown
        record(noon, "login", "zed"),
        record(noon, "delete", "ivan", 100 * MIB),  # not a transfer
        # Yesterday's bytes do not count.
        record(at(today) - datetime.timedelta(seconds=1), "upload", "yuri", 50 * MIB),
    )
    html = index_html(audit_viewer)
    rows = top_users(html)
    assert rows == [
        ["bea", size("3.0 MB"), size("3.0 MB"), size("6.0 MB")],
        ["ulla", size("5.0 MB"), size("0 bytes"), size("5.0 MB")],
        ["dora", size("0 bytes"), size("4.0 MB"), size("4.0 MB")],
        ["abel", size("1.0 MB"), size("0 bytes"), size("1.0 MB")],
        ["carl", size("1.0 MB"), size("0 bytes"), size("1.0 MB")],
    ]
    # Each name opens today's transfers of that user in the report.
    day = today.isoformat()
    assert (
        f'href="{reverse("ftpadmin:transfers")}?user=bea&amp;date_from={day}'
        f'&amp;date_to={day}"' in html
    )
    assert 'title="6,291,456 bytes"' in element(html, "dashboard-top-users", "table")


# The chart ----------------------------------------------------------------------


def test_chart_has_thirty_days_with_titles_and_proportional_bars(audit_viewer):
    today = timezone.localdate()
    first = today - datetime.timedelta(days=29)
    add(
        # The first day of the chart, from its midnight on.
        record(at(first), "upload", "alice", 2 * MIB),
        record(at(first, 23, 59), "download_incomplete", "bob", MIB),
        # The day before it, and 40 days ago: outside, however big.
        record(at(first) - datetime.timedelta(microseconds=1), "upload", "a", 10**12),
        record(at(today - datetime.timedelta(days=40)), "download", "bob", 10**12),
        # Ten days ago: the tallest bar.
        record(at(today - datetime.timedelta(days=10), 6), "download", "bob", 8 * MIB),
        record(at(today - datetime.timedelta(days=10), 7), "upload", "bob", 512 * KIB),
        # Today, and a day of logins only; tomorrow is not in the chart.
        record(at(today, 0, 0, 1), "upload_incomplete", "alice", 6 * MIB),
        record(at(today + datetime.timedelta(days=1)), "upload", "alice", 10**12),
        record(at(today - datetime.timedelta(days=3)), "login", "alice"),
    )
    days = bars(index_html(audit_viewer))
    assert [d["date"] for d in days] == [
        first + datetime.timedelta(days=n) for n in range(30)
    ]
    expected = {
        first: (2 * MIB, MIB, "2.0 MB", "1.0 MB"),
        today - datetime.timedelta(days=10): (512 * KIB, 8 * MIB, "512.0 KB", "8.0 MB"),
        today: (6 * MIB, 0, "6.0 MB", "0 bytes"),
    }
    tallest = 8 * MIB
    for d in days:
        up, down, up_text, down_text = expected.get(
            d["date"], (0, 0, "0 bytes", "0 bytes")
        )
        assert d["title"] == size(title(d["date"], up_text, down_text))
        assert d["role"] == "img"
        for (y, height), value in ((d["up"], up), (d["down"], down)):
            assert height == pytest.approx(120 * value / tallest, abs=0.005)
            assert y + height == pytest.approx(136)  # standing on the baseline
    assert days[-10 - 1]["down"][1] == 120  # the tallest bar fills the plot
    assert days[0]["up"][1] == 30  # 2 MiB of 8 MiB


def test_chart_scale_and_description_are_shown(audit_viewer):
    add(record(at(timezone.localdate(), 1), "download", "bob", 3 * MIB))
    html = index_html(audit_viewer)
    svg = chart_svg(html)
    assert f'<text class="scale" x="2" y="12">3.0{NBSP}MB</text>' in svg
    assert f"the tallest bar is 3.0{NBSP}MB." in svg
    assert 'aria-labelledby="dashboard-chart-caption"' in svg
    # The figures are also given as a table, for those who cannot see the bars.
    table = re.search(r'<table class="dashboard-days">.*?</table>', html, re.S)
    assert len(re.findall(r"<tr>", table.group(0))) == 31  # header + 30 days
    # No script, no third-party file: the chart is our markup and CSS.
    assert "<script" not in element(html, "ftpadmin-dashboard")


# At any moment one of UTC+14 and UTC-11 is not on the date of UTC; Kolkata is
# half an hour off UTC's hours.
@pytest.mark.parametrize(
    "zone", ["Asia/Tokyo", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kolkata"]
)
def test_days_are_those_of_the_time_zone(audit_viewer, zone):
    """Rows near midnight fall on the day of TIME_ZONE, not of UTC.

    In Tokyo (UTC+9) 00:30 today is 15:30 UTC the day before, like 23:30
    yesterday: grouped in UTC they would make one day.
    """
    with override_settings(TIME_ZONE=zone):
        today = timezone.localdate()
        yesterday = today - datetime.timedelta(days=1)
        add(
            record(at(today), "login", "alice"),
            record(at(today, 0, 30), "upload", "alice", MIB),
            record(at(today, 23, 30), "upload", "alice", 2 * MIB),
            record(at(yesterday, 23, 59, 59, 999_999), "login", "bob"),
            record(at(yesterday, 23, 30), "upload", "bob", 4 * MIB),
            record(at(yesterday, 0, 10), "download", "bob", MIB),
        )
        html = index_html(audit_viewer)
    assert figure(html, "logins")[0] == "1"
    assert figure(html, "bytes-up")[:2] == (size("3.0 MB"), "3,145,728 bytes")
    assert top_users(html) == [
        ["alice", size("3.0 MB"), size("0 bytes"), size("3.0 MB")]
    ]
    days = bars(html)
    assert days[-1]["date"] == today
    assert days[-1]["title"] == size(title(today, "3.0 MB", "0 bytes"))
    assert days[-2]["title"] == size(title(yesterday, "4.0 MB", "1.0 MB"))
    assert days[-1]["up"][1] == 90 and days[-2]["up"][1] == 120


# Days of the current time zone, whichever way the rows are grouped -------------


@pytest.mark.parametrize("method", ["trunc", "case"])
@pytest.mark.parametrize(
    ("zone", "change"),
    [
        ("America/New_York", datetime.date(2026, 11, 1)),  # a 25-hour day
        ("Europe/Paris", datetime.date(2026, 3, 29)),  # a 23-hour day
    ],
)
def test_per_day_across_a_daylight_saving_change(db, method, zone, change):
    with override_settings(TIME_ZONE=zone):
        days = [change + datetime.timedelta(days=n) for n in (-1, 0, 1)]
        records = []
        for n, day in enumerate(days):
            first, last = 10 ** (2 * n), 10 ** (2 * n + 1)
            records += [
                record(at(day), "upload", size=first),
                record(at(day, 23, 59, 59, 999_999), "download", size=last),
            ]
        add(*records)
        found = dashboard.per_day(
            days[0] - datetime.timedelta(days=5), days[-1], method
        )
    assert {
        day: (row["bytes_up"], row["bytes_down"]) for day, row in found.items()
    } == {
        days[0]: (1, 10),
        days[1]: (100, 1_000),
        days[2]: (10_000, 100_000),
    }
    assert all(row["files_up"] == row["files_down"] == 1 for row in found.values())


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "America/Los_Angeles"])
def test_both_ways_of_grouping_agree(db, zone):
    """The query this database does not use is checked against the other."""
    with override_settings(TIME_ZONE=zone):
        today = timezone.localdate()
        start = at(today - datetime.timedelta(days=31))
        add(
            *(
                record(
                    start + datetime.timedelta(minutes=97 * n),
                    AuditEvent.TRANSFERS[n % 4],
                    size=n,
                )
                for n in range(32 * 24 * 60 // 97)
            )
        )
        first = today - datetime.timedelta(days=29)
        trunc = dashboard.per_day(first, today, "trunc")
        case = dashboard.per_day(first, today, "case")
        default = dashboard.per_day(first, today)
    assert len(trunc) == 30
    assert trunc == case == default


# Who sees it, and what it costs -------------------------------------------------


def test_not_shown_without_the_audit_permission(client, db):
    user = get_user_model().objects.create_user("clerk", password="x", is_staff=True)
    client.force_login(user)
    add(record(at(timezone.localdate(), 1), "login"))
    with CaptureQueriesContext(connection) as queries:
        html = index_html(client)
    assert 'id="ftpadmin-dashboard"' not in html
    assert "ftpadmin/dashboard.css" not in html
    assert not [q for q in queries if AUDIT_TABLE in q["sql"]]


def test_the_superuser_sees_it(admin_client):
    html = index_html(admin_client)
    assert 'id="ftpadmin-dashboard"' in html
    assert "ftpadmin/dashboard.css" in html


def test_queries_do_not_grow_with_rows_users_or_days(audit_viewer):
    today = timezone.localdate()

    def fill(users, days):
        add(
            *(
                record(
                    at(today - datetime.timedelta(days=day), 1, minute),
                    event,
                    f"user{minute}",
                    minute + 1,
                )
                for day in range(days)
                for minute in range(users)
                for event in ("login", "login_failed", *AuditEvent.TRANSFERS)
            )
        )

    def queries():
        with CaptureQueriesContext(connection) as captured:
            html = index_html(audit_viewer)
        audit = [q["sql"] for q in captured if AUDIT_TABLE in q["sql"]]
        return len(captured), len(audit), len(top_users(html))

    fill(users=2, days=1)
    total, audit, shown = queries()
    assert (audit, shown) == (3, 2)
    fill(users=12, days=35)
    assert queries() == (total, 3, 5)


@pytest.mark.urls("tests.project_urls")
def test_links_follow_where_the_project_mounts_the_admin(admin_client):
    today = timezone.localdate()
    add(record(at(today, 1), "upload", "alice", KIB))
    html = index_html(admin_client, "/backoffice/")
    day = today.isoformat()
    assert (
        f'href="/backoffice/ftp/transfers/?user=alice&amp;date_from={day}'
        f'&amp;date_to={day}"' in html
    )
    assert (
        'href="/backoffice/ftpserver_core/auditevent/?event__exact=login&amp;' in html
    )
