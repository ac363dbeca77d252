"""The writer's rows: the same values as clean() and Django's adapters, made faster."""

import datetime
import zoneinfo

import pytest
from django.db import connection, models

from ftpserver_core.audit import journal, rows
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


def _stored(uids):
    """Return the rows of ``uids`` as dicts of every field but the id, in uid order."""
    names = [attname for attname, *_ in rows._columns()]
    return list(AuditEvent.objects.filter(uid__in=uids).order_by("uid").values(*names))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"time": 1764680400.0},
        {"time": 1764680400},
        {"time": 1764680400.999_999_7},
        {"time": 1764680400.000_000_4},
        {"time": 1764680400.123456},
        {"username": "x" * 400, "reason": "r" * 100, "group": "g" * 200},
        {"ftp_path": "/résumé 😀.txt", "group": "équipe"},
        {"remote_ip": ""},
        {"remote_ip": "::1", "remote_port": 40000, "session_id": "ab" * 16},
        {"success": False, "tls": True, "size": 2**40, "duration": 0.25},
        {"account_id": 7, "sha256": "f" * 64, "network": "office"},
        {"path": 'tab\tand\nnewline\x01"quote\\ \\u0041 \\ud83d NaN'},
        {"username": "ev\x00il", "path": "/a\x00b" + "c" * 10},
        {"reason": "\x00" + "r" * 70},
        {"event": "download", "size": 4096, "_begin": 1},
    ],
)
@pytest.mark.parametrize("journaled", [True, False], ids=["journal-line", "encoded"])
def test_a_fast_batch_stores_what_the_tuple_path_stores(fields, journaled, monkeypatch):
    """The database's own decoding and cleaning give the rows Python's cleaning gives."""
    fast = rows._fast_sql()
    if fast is None:
        pytest.skip(f"no fast batch insert on {connection.vendor}")
    first = _record(**fields, uid="0" * 31 + "1")
    second = _record(**fields, uid="0" * 31 + "2")
    if journaled:
        # As Journal.add() leaves a record: with its journal line.
        first["_json"] = journal._dumps(first)
        second["_json"] = journal._dumps(second)
    elif fast[0] == "plain":
        pytest.skip("a record without its journal line takes the tuple path")
    # A NUL (and, for SQLite, a surrogate) sends the batch the tuple way.
    has_nul = any(isinstance(v, str) and "\x00" in v for v in fields.values())
    if fast[0] == "json" and not has_nul:
        assert rows._json_batch([first]) is not None
    elif fast[0] == "plain" and not has_nul and "\\ud" not in first["_json"]:
        assert rows._plain_runs([first]) is not None
    rows.insert([first])
    monkeypatch.setattr(rows, "_fast_sql", lambda: None)
    rows.insert([second])
    by_fast, by_tuples = _stored([first["uid"], second["uid"]])
    by_fast.pop("uid")
    by_tuples.pop("uid")
    assert by_fast == by_tuples


@pytest.mark.parametrize(
    "fields",
    [
        {"username": "ev\x00il"},
        {"path": "/srv/ftp/caf\udce9.txt"},
        {"time": "2026-12-02T13:00:00.500000+01:00"},
        {"time": None},
        {"duration": float("nan")},
        {"size": object()},
    ],
)
def test_a_batch_that_needs_cleaning_takes_the_tuple_path(fields):
    assert rows._json_batch([_record(), _record(**fields)]) is None
    record = _record(**fields)
    try:
        record["_json"] = journal._dumps(record)
    except TypeError:
        return  # the journal refuses it: the writer never sees it
    assert rows._json_batch([record]) is None


def test_a_journal_line_is_sent_as_it_is():
    record = _record()
    record["_json"] = journal._dumps(record)
    assert (
        rows._json_batch([record, record]) == f"[{record['_json']},{record['_json']}]"
    )


@pytest.mark.parametrize(
    "fields",
    [{"ftp_path": "/😀.txt"}, {"duration": float("inf")}, {"username": "\ud800"}],
)
def test_a_journal_line_the_database_may_misread_is_encoded_again(fields):
    record = _record(**fields)
    record["_json"] = journal._dumps(record)
    payload = rows._json_batch([record])
    assert payload != f"[{record['_json']}]"
    if payload is not None:
        assert "_json" not in payload


@pytest.mark.django_db(transaction=True)
def test_a_fast_batch_keeps_the_records_order():
    if rows._fast_sql() is None:
        pytest.skip(f"no fast batch insert on {connection.vendor}")
    # Three shapes of record, mixed: runs of one shape keep the order too.
    batch = [
        _record(uid=f"{i:032x}", size=i, **({"reason": "r"} if i % 3 else {}))
        for i in range(1, 201)
    ]
    for record in batch[::7]:
        del record["username"]
    for record in batch:
        record["_json"] = journal._dumps(record)
    rows.insert(batch)
    sizes = list(AuditEvent.objects.order_by("id").values_list("size", flat=True))
    assert sizes == list(range(1, 201))


@pytest.mark.parametrize(
    "fields",
    [
        {"path": "/srv/ftp/caf\udce9.txt"},
        {"ftp_path": "/😀.txt"},
        {"time": "2026-12-02T13:00:00.500000+01:00"},
        {"time": None},
        {"username": "ev\x00il"},
    ],
)
def test_a_record_sqlite_cannot_take_raw_takes_the_tuple_path(fields):
    record = _record(**fields)
    record["_json"] = journal._dumps(record)
    assert rows._plain_runs([_record(_json="{}"), record]) is None
    assert rows._plain_runs([_record()]) is None  # no journal line: not checked


def test_records_are_sent_raw_to_sqlite_in_runs_of_one_shape():
    record = _record(username="évé", size=4096)
    record["_json"] = journal._dumps(record)
    other = _record(event="download")
    other["_json"] = journal._dumps(other)
    fewer = {k: v for k, v in record.items() if k != "size"}
    assert rows._plain_runs([record, record, fewer, record]) == [
        (tuple(record), [tuple(record.values())] * 2),
        (tuple(fewer), [tuple(fewer.values())]),
        (tuple(record), [tuple(record.values())]),
    ]
