"""The transfers report: filters, totals, pages, and its CSV and xferlog streams."""

import csv
import datetime
import io
import math
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ftpadmin import exports
from ftpadmin.exports import xferlog_line
from ftpserver_core.models import AuditEvent, FTPUserGroup

UTC = datetime.UTC
REPORT = reverse("ftpadmin:transfers")
CSV_URL = reverse("ftpadmin:transfers_csv")
XFERLOG_URL = reverse("ftpadmin:transfers_xferlog")
UPLOADS = {"upload", "upload_incomplete"}
INCOMPLETE = {"upload_incomplete", "download_incomplete"}

# (time, event, username, group, ip, path, size, duration)
TRANSFERS = [
    ("2026-03-14 12:01", "upload", "alice", "staff", "192.0.2.10", "/in/report.pdf", 123_456, 0.25),
    ("2026-03-14 12:05", "download", "alice", "staff", "192.0.2.10", "/pub/big.iso", 7_000_000, 2.6),
    ("2026-03-15 09:00", "download", "bob", "guests", "198.51.100.7", "/pub/readme.txt", 42, 0.01),
    ("2026-03-15 09:30", "download_incomplete", "bob", "guests", "198.51.100.7", "/pub/big.iso", 1_000, 9.4),
    ("2026-02-03 08:00", "upload_incomplete", "carol", "staff", "2001:db8::7", "/in/my holiday photo.jpg", 500, 1.5),
    ("2025-12-31 23:59", "upload", "carol", "staff", "2001:db8::7", "/in/old.txt", 0, 0.0),
]  # fmt: skip


def _time(text):
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def transfers(db):
    FTPUserGroup.objects.create(name="staff")
    FTPUserGroup.objects.create(name="guests")
    objects = [
        AuditEvent(
            time=_time(when),
            event=event,
            username=user,
            group=group,
            remote_ip=ip,
            remote_port=50000,
            session_id=f"{user}-session".ljust(32, "0"),
            ftp_path=path,
            path="/srv/ftp" + path,
            size=size,
            duration=duration,
            tls=user == "alice",
            node="ftp1",
        )
        for when, event, user, group, ip, path, size, duration in TRANSFERS
    ]
    # Not transfers: never in the report.
    objects += [
        AuditEvent(time=_time("2026-03-14 12:00"), event="login", username="alice"),
        AuditEvent(
            time=_time("2026-03-14 12:10"),
            event="rename",
            username="alice",
            ftp_path="/in/report.pdf",
            ftp_path_to="/in/final.pdf",
        ),
        AuditEvent(
            time=_time("2026-03-14 12:11"),
            event="delete",
            username="alice",
            ftp_path="/pub/big.iso",
            size=7_000_000,
        ),
    ]
    AuditEvent.objects.bulk_create(objects)
    return list(AuditEvent.objects.filter(event__in=AuditEvent.TRANSFERS))


def shown(response):
    assert response.status_code == 200, response.status_code
    return {obj.pk for obj in response.context["page_obj"]}


def expected(transfers, keep=lambda t: True):
    return {t.pk for t in transfers if keep(t)}


# Access -------------------------------------------------------------------------


def test_report_in_the_admin_look_and_linked_from_the_index(audit_viewer, transfers):
    response = audit_viewer.get(REPORT)
    assert shown(response) == expected(transfers)
    html = response.content.decode()
    assert 'class="breadcrumbs"' in html
    assert reverse("admin:ftpserver_core_auditevent_changelist") in html
    assert str(response.context["site_header"]) in html
    assert "ftpadmin/report.css" in html
    assert f'href="{CSV_URL}"' in html
    assert (
        f'href="{REPORT}"' in audit_viewer.get(reverse("admin:index")).content.decode()
    )


@pytest.mark.parametrize("url", [REPORT, CSV_URL, XFERLOG_URL])
def test_anonymous_goes_to_the_admin_login(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("url", [REPORT, CSV_URL, XFERLOG_URL])
def test_staff_without_the_view_permission_gets_403(client, db, url):
    user = get_user_model().objects.create_user("clerk", password="x", is_staff=True)
    client.force_login(user)
    assert client.get(url).status_code == 403
    assert REPORT not in client.get(reverse("admin:index")).content.decode()


@pytest.mark.parametrize("url", [REPORT, CSV_URL])
def test_a_user_who_is_not_staff_goes_to_the_login(client, db, url):
    user = get_user_model().objects.create_user("ftponly", password="x")
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.urls("tests.project_urls")
def test_urls_included_by_a_project(admin_client, transfers):
    """The include line of the README, under another prefix than the suite's."""
    assert reverse("ftpadmin:transfers") == "/backoffice/ftp/transfers/"
    response = admin_client.get("/backoffice/ftp/transfers/")
    assert shown(response) == expected(transfers)
    assert 'href="/backoffice/"' in response.content.decode()
    assert (
        "/backoffice/ftp/transfers/"
        in admin_client.get("/backoffice/").content.decode()
    )


# Filters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("date_from=2026-03-15", lambda t: t.time >= _time("2026-03-15 00:00")),
        ("date_to=2026-03-14", lambda t: t.time < _time("2026-03-15 00:00")),
        (
            "date_from=2026-03-14&date_to=2026-03-14",
            lambda t: t.time.date() == datetime.date(2026, 3, 14),
        ),
        ("user=bob", lambda t: t.username == "bob"),
        ("group=staff", lambda t: t.group == "staff"),
        ("direction=upload", lambda t: t.event in UPLOADS),
        ("direction=download", lambda t: t.event not in UPLOADS),
        ("status=incomplete", lambda t: t.event in INCOMPLETE),
        ("status=complete", lambda t: t.event not in INCOMPLETE),
        ("direction=upload&status=complete", lambda t: t.event == "upload"),
        ("ip=198.51.100.7", lambda t: t.remote_ip == "198.51.100.7"),
        ("ip=2001:db8::7", lambda t: t.remote_ip == "2001:db8::7"),
        ("path=BIG.iso", lambda t: "big.iso" in t.ftp_path),
        ("size_min=1000", lambda t: t.size >= 1000),
        ("size_max=1000", lambda t: t.size <= 1000),
        ("size_min=42&size_max=500", lambda t: 42 <= t.size <= 500),
        (
            "user=alice&direction=download",
            lambda t: t.username == "alice" and t.event not in UPLOADS,
        ),
        ("user=nobody", lambda t: False),
    ],
)
def test_filters(audit_viewer, transfers, query, keep):
    want = expected(transfers, keep)
    assert want or query == "user=nobody"
    assert shown(audit_viewer.get(f"{REPORT}?{query}")) == want
    records = list(
        csv.DictReader(io.StringIO(_stream(audit_viewer, f"{CSV_URL}?{query}")))
    )
    assert {(r["time"], r["ftp_path"]) for r in records} == {
        (t.time.isoformat(), t.ftp_path) for t in transfers if t.pk in want
    }


def test_group_choices_come_from_the_groups_table(audit_viewer, transfers):
    field = audit_viewer.get(REPORT).context["filter"].form.fields["group"]
    assert [value for value, _ in field.choices] == ["", "guests", "staff"]


@pytest.mark.parametrize(
    "query", ["ip=not-an-ip", "size_min=-1", "date_from=yesterday", "direction=up"]
)
def test_invalid_filters_are_errors_not_everything(audit_viewer, transfers, query):
    response = audit_viewer.get(f"{REPORT}?{query}")
    assert shown(response) == set()
    assert response.context["filter"].errors
    assert "errornote" in response.content.decode()
    assert audit_viewer.get(f"{CSV_URL}?{query}").status_code == 400
    assert audit_viewer.get(f"{XFERLOG_URL}?{query}").status_code == 400


# Totals -------------------------------------------------------------------------


def _totals(rows):
    """The totals, computed here independently of the report."""
    per_user = {}
    for t in rows:
        up = t.event in UPLOADS
        user = per_user.setdefault(
            t.username,
            {"files_up": 0, "bytes_up": 0, "files_down": 0, "bytes_down": 0, "incomplete": 0},
        )  # fmt: skip
        user["files_up" if up else "files_down"] += 1
        user["bytes_up" if up else "bytes_down"] += t.size
        user["incomplete"] += t.event in INCOMPLETE
    return per_user


@pytest.mark.parametrize("query", ["", "group=staff", "date_from=2026-03-01"])
def test_totals(audit_viewer, transfers, query):
    response = audit_viewer.get(f"{REPORT}?{query}")
    rows = [t for t in transfers if t.pk in shown(response)]
    want = _totals(rows)
    got = {row.pop("username"): row for row in response.context["per_user"]}
    assert got == want
    totals = response.context["totals"]
    for key in ("files_up", "bytes_up", "files_down", "bytes_down", "incomplete"):
        assert totals[key] == sum(user[key] for user in want.values())
    assert totals["files"] == len(rows)
    if query == "":
        assert (totals["files_up"], totals["bytes_up"]) == (3, 123_956)
        assert (totals["files_down"], totals["bytes_down"]) == (3, 7_001_042)
        assert "7,001,042" in response.content.decode()


def test_totals_are_one_query_whatever_the_number_of_users(audit_viewer, db):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            response = audit_viewer.get(REPORT)
        return len(response.context["per_user"]), len(captured)

    def add(users):
        AuditEvent.objects.bulk_create(
            AuditEvent(
                time=_time("2026-03-14 12:00"),
                event="upload",
                username=f"user{n}",
                ftp_path=f"/f{n}",
                size=n,
            )
            for n in users
        )

    add(range(3))
    users3, queries3 = queries()
    add(range(3, 30))
    users30, queries30 = queries()
    assert (users3, users30) == (3, 30)
    assert queries30 == queries3


# Pages --------------------------------------------------------------------------


def test_pagination(audit_viewer, db):
    start = _time("2026-01-01 00:00")
    AuditEvent.objects.bulk_create(
        AuditEvent(
            time=start + datetime.timedelta(minutes=n),
            event="download",
            username="alice" if n % 2 else "bob",
            ftp_path=f"/f{n}",
            size=n,
        )
        for n in range(230)
    )
    first = audit_viewer.get(REPORT)
    paths = [e.ftp_path for e in first.context["page_obj"]]
    assert paths == [f"/f{n}" for n in range(229, 129, -1)]  # newest first
    assert first.context["paginator"].num_pages == 3
    last = audit_viewer.get(f"{REPORT}?page=3")
    assert [e.ftp_path for e in last.context["page_obj"]] == [
        f"/f{n}" for n in range(29, -1, -1)
    ]
    assert audit_viewer.get(f"{REPORT}?page=99").context["page_obj"].number == 3
    # Page links keep the filters.
    filtered = audit_viewer.get(f"{REPORT}?user=alice")
    assert filtered.context["paginator"].count == 115
    assert 'href="?user=alice&amp;page=2"' in filtered.content.decode()
    second = audit_viewer.get(f"{REPORT}?user=alice&page=2")
    assert {e.username for e in second.context["page_obj"]} == {"alice"}
    assert len(second.context["page_obj"]) == 15


# CSV ----------------------------------------------------------------------------


def _stream(client, url):
    response = client.get(url)
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Disposition"].startswith("attachment;")
    return b"".join(response.streaming_content).decode()


def test_csv_export(audit_viewer, transfers):
    text = _stream(audit_viewer, CSV_URL)
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    assert header == exports.CSV_HEADER
    # No "direction": it always agreed with the event (issue 13).
    assert "direction" not in header
    records = [dict(zip(header, row, strict=True)) for row in reader]
    assert len(records) == len(transfers)
    by_time = sorted(transfers, key=lambda t: (t.time, t.pk))
    for record, t in zip(records, by_time, strict=True):
        assert datetime.datetime.fromisoformat(record["time"]) == t.time
        assert record["time"].endswith("+00:00")
        assert int(record["size"]) == t.size
        assert float(record["duration"]) == t.duration
        assert record["event"] == t.event
        assert record["status"] == (
            "incomplete" if t.event in INCOMPLETE else "complete"
        )
        assert (record["username"], record["group"]) == (t.username, t.group)
        assert (record["remote_ip"], record["ftp_path"]) == (t.remote_ip, t.ftp_path)
        assert record["tls"] == str(t.tls)
    assert records[0]["ftp_path"] == "/in/old.txt"  # oldest first
    assert records[0]["size"] == "0"


def test_csv_streams_in_batches(audit_viewer, db, monkeypatch):
    monkeypatch.setattr(exports, "LINES_PER_YIELD", 10)
    AuditEvent.objects.bulk_create(
        AuditEvent(time=_time("2026-01-01 00:00"), event="upload", ftp_path=f"/f{n}")
        for n in range(95)
    )
    response = audit_viewer.get(CSV_URL)
    chunks = list(response.streaming_content)
    # The header, then nine batches of ten rows and one of five.
    assert [chunk.count(b"\n") for chunk in chunks] == [1] + [10] * 9 + [5]


# xferlog ------------------------------------------------------------------------


def test_xferlog_line_of_the_manual():
    line = xferlog_line(
        _time("2026-11-23 08:00"), 0.3, "127.0.0.1", 5, "/a.txt", "upload", "alice"
    )
    assert (
        line
        == "Mon Nov 23 08:00:00 2026 1 127.0.0.1 5 /a.txt b _ i r alice ftp 0 * c\n"
    )


def test_xferlog_escapes_what_would_split_a_field():
    line = xferlog_line(
        _time("2026-02-03 08:00"),
        12.6,
        "2001:db8::7",
        None,
        "/in/a b\tc\nd\u2028e",
        "download_incomplete",
        "",
    )
    assert line == (
        "Tue Feb  3 08:00:00 2026 13 2001:db8::7 0 /in/a_b_c_d_e b _ o r - ftp 0 * i\n"
    )


def test_xferlog_export(audit_viewer, transfers):
    text = _stream(audit_viewer, f"{XFERLOG_URL}?group=staff")
    lines = text.splitlines()
    staff = sorted(
        (t for t in transfers if t.group == "staff"), key=lambda t: (t.time, t.pk)
    )
    assert len(lines) == len(staff) == 4
    for line, t in zip(lines, staff, strict=True):
        fields = line.split(" ")
        fields = [f for f in fields if f]  # ctime pads the day with a space
        assert len(fields) == 18, line
        stamp = time.strptime(" ".join(fields[:5]), "%a %b %d %H:%M:%S %Y")
        assert datetime.datetime(*stamp[:6], tzinfo=UTC) == t.time
        (seconds, host, size, name, kind, action, direction, mode, user) = fields[5:14]
        assert int(seconds) == max(1, math.floor(t.duration + 0.5))
        assert (host, int(size), name) == (
            t.remote_ip,
            t.size,
            t.ftp_path.replace(" ", "_"),
        )
        assert (kind, action, mode, user) == ("b", "_", "r", t.username)
        assert direction == ("i" if t.event in UPLOADS else "o")
        assert fields[14:17] == ["ftp", "0", "*"]
        assert fields[17] == ("i" if t.event in INCOMPLETE else "c")
    assert lines[1] == (
        "Tue Feb  3 08:00:00 2026 2 2001:db8::7 500 /in/my_holiday_photo.jpg "
        "b _ i r carol ftp 0 * i"
    )
    assert lines[2] == (
        "Sat Mar 14 12:01:00 2026 1 192.0.2.10 123456 /in/report.pdf "
        "b _ i r alice ftp 0 * c"
    )
