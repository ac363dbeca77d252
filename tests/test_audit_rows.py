"""The writer's rows: the same values as clean() and Django's adapters, made faster."""

import datetime
import zoneinfo

import pytest
from django.db import connection, models

from ftpserver_core.audit import rows
from ftpserver_core.models import AuditEvent


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2026, 12, 2, 13, 0, 0, tzinfo=datetime.UTC),
        datetime.datetime(2026, 12, 2, 13, 0, 0, 1, tzinfo=datetime.UTC),
        datetime.datetime(
            2026, 3, 29, 2, 30, 5, 250000, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")
        ),
        datetime.datetime.fromtimestamp(1764680400.123456, datetime.UTC),
    ],
)
def test_the_sqlite_time_adapter_gives_djangos_text(value):
    if connection.vendor != "sqlite":
        pytest.skip("the fast adapter is SQLite's")
    assert rows._sqlite_utc(value) == connection.ops.adapt_datetimefield_value(value)


def _record(**fields):
    base = {
        "time": 1764680400.5,
        "event": AuditEvent.Event.UPLOAD,
        "username": "alice",
        "remote_ip": "127.0.0.1",
        "path": "/srv/ftp/alice/a.txt",
        "uid": "0123456789abcdef0000000000000001",
    }
    return {**base, **fields}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"username": "ev\x00il"},
        {"path": "/srv/ftp/caf\udce9.txt"},
        {"username": "x" * 400, "reason": "r" * 100},
        {"ftp_path": "/résumé.txt", "group": "équipe"},
        {"time": "2026-12-02T13:00:00.500000+01:00"},
        {"event": "download", "size": 4096, "_begin": 1},
    ],
)
def test_rows_hold_what_clean_makes_of_a_record(fields):
    record = _record(**fields)
    adapt = {models.DateTimeField: lambda value: value}
    (row,) = rows._tuples([record], adapt)
    cleaned = rows.clean(record)
    for (attname, _, default, _), value in zip(rows._columns(), row, strict=True):
        expected = cleaned.get(attname, default)
        assert value == expected, attname
        if isinstance(expected, str):
            assert type(value) is str, attname
