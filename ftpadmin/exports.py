"""Streaming exports of transfer records: CSV, CSV for Excel and xferlog(5).

Both read the rows with ``values_list(...).iterator(chunk_size=...)`` (a
server-side cursor on PostgreSQL, chunked reads on SQLite) and yield text a
batch of lines at a time, so memory stays flat however many rows match.
"""

import csv
import io

from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from ftpadmin.filters import INCOMPLETE, UPLOADS
from ftpadmin.formats import BOM, spreadsheet_safe
from ftpserver_core.models import AuditEvent

CHUNK_SIZE = 2000
LINES_PER_YIELD = 1000

# ``event`` says the direction and the status both (upload_incomplete...);
# ``status`` repeats the second half, to filter on in a spreadsheet.
CSV_HEADER = [
    "time",
    "event",
    "status",
    "username",
    "group",
    "remote_ip",
    "remote_port",
    "ftp_path",
    "size",
    "duration",
    "tls",
    "session_id",
    "node",
    "sha256",
]
_CSV_COLUMNS = [
    "time",
    "event",
    "username",
    "group",
    "remote_ip",
    "remote_port",
    "ftp_path",
    "size",
    "duration",
    "tls",
    "session_id",
    "node",
    "sha256",
]


def csv_labels():
    """Return the headers of the CSV for Excel: the fields' verbose names."""
    fields = AuditEvent._meta
    return [
        _("Status")
        if name == "status"
        else capfirst(fields.get_field(name).verbose_name)
        for name in CSV_HEADER
    ]


def _status(event):
    return "incomplete" if event in INCOMPLETE else "complete"


def _blank_if_none(value):
    return "" if value is None else value


def _batched(lines):
    """Join lines into strings of LINES_PER_YIELD lines: fewer, larger writes."""
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) >= LINES_PER_YIELD:
            yield "".join(batch)
            batch.clear()
    if batch:
        yield "".join(batch)


def csv_lines(queryset, header=None):
    """Yield the transfers of ``queryset`` as CSV: a header, then one row each.

    Times are ISO 8601 with their UTC offset, sizes in bytes. The header is
    ``CSV_HEADER`` unless ``header`` is given.
    """
    tz = timezone.get_current_timezone()  # once: a lookup per row costs 20 us
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def drain():
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(header or CSV_HEADER)
    yield drain()
    rows = queryset.values_list(*_CSV_COLUMNS).iterator(chunk_size=CHUNK_SIZE)
    for count, row in enumerate(rows, 1):
        moment, event, *middle, size, duration, tls, session_id, node, sha256 = row
        username, group, remote_ip, remote_port, ftp_path = middle
        writer.writerow(
            [
                moment.astimezone(tz).isoformat(),
                event,
                _status(event),
                spreadsheet_safe(username),
                spreadsheet_safe(group),
                remote_ip or "",
                _blank_if_none(remote_port),
                spreadsheet_safe(ftp_path),
                _blank_if_none(size),
                _blank_if_none(duration),
                tls,
                session_id,
                spreadsheet_safe(node),
                sha256,
            ]
        )
        if count % LINES_PER_YIELD == 0:
            yield drain()
    if tail := drain():
        yield tail


def excel_csv_lines(queryset):
    """Yield the transfers as CSV for Excel: a UTF-8 byte order mark, labels."""
    lines = csv_lines(queryset, header=csv_labels())
    yield BOM + next(lines)
    yield from lines


# xferlog(5) -----------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


def xferlog_time(moment, tz=None):
    """Return ``moment`` as ctime(3) does, in English whatever the locale."""
    t = moment.astimezone(tz or timezone.get_current_timezone())
    return (
        f"{_DAYS[t.weekday()]} {_MONTHS[t.month - 1]} {t.day:2d} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} {t.year}"
    )


def _token(value):
    """Return ``value`` as one field: spaces and unprintable characters as ``_``.

    Python's ``isprintable()`` is false for control characters and for every
    Unicode separator but the ASCII space, i.e. whatever would split a field
    or a line.
    """
    if not value:
        return "-"
    if value.isprintable():
        return value.replace(" ", "_")
    return "".join(c if c.isprintable() and c != " " else "_" for c in value)


def xferlog_line(moment, duration, remote_ip, size, ftp_path, event, username, tz=None):
    """Return one xferlog(5) line (with its newline) for a transfer record.

    Fields: current-time transfer-time remote-host file-size filename
    transfer-type special-action-flag direction access-mode username
    service-name authentication-method authenticated-user-id
    completion-status. The transfer time is in whole seconds, at least 1;
    spaces (and control characters) in names become underscores, as ProFTPD
    writes them; the type is binary (b), the access mode a real user (r).
    """
    seconds = max(1, int((duration or 0) + 0.5))
    direction = "i" if event in UPLOADS else "o"
    status = "i" if event in INCOMPLETE else "c"
    return (
        f"{xferlog_time(moment, tz)} {seconds} {remote_ip or '-'} {size or 0} "
        f"{_token(ftp_path)} b _ {direction} r {_token(username)} ftp 0 * {status}\n"
    )


def xferlog_lines(queryset):
    """Yield the transfers of ``queryset`` as xferlog(5) lines."""
    rows = queryset.values_list(
        "time", "duration", "remote_ip", "size", "ftp_path", "event", "username"
    ).iterator(chunk_size=CHUNK_SIZE)
    tz = timezone.get_current_timezone()
    yield from _batched(xferlog_line(*row, tz=tz) for row in rows)
