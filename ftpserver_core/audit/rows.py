"""Audit records as database rows: cleaned, then inserted in one statement.

The writer thread shares the GIL with the FTP loop, so every microsecond it
spends per row is taken from the loop. ``bulk_create`` builds a model instance
and adapts every field in Python (about 170 us a row); here a row is a tuple
built from precomputed columns, sent by COPY on PostgreSQL (psycopg formats
rows in C) and by one prepared INSERT run for all rows elsewhere.
"""

import datetime

from django.conf import settings as django_settings
from django.db import connection, models, transaction

_COLUMNS = None


def _columns():
    """Return [(attname, default, adapt or None)] of AuditEvent, id excluded."""
    global _COLUMNS
    if _COLUMNS is None:
        from ..models import AuditEvent

        _COLUMNS = [
            (field.attname, field.column, field.get_default(), type(field))
            for field in AuditEvent._meta.concrete_fields
            if not field.primary_key
        ]
    return _COLUMNS


_TEXT_LIMITS = None


def _text_limits():
    """Return {field name: max_length or None} of AuditEvent's text fields."""
    global _TEXT_LIMITS
    if _TEXT_LIMITS is None:
        from ..models import AuditEvent

        _TEXT_LIMITS = {
            f.attname: f.max_length
            for f in AuditEvent._meta.concrete_fields
            if isinstance(f, models.CharField | models.TextField)
        }
    return _TEXT_LIMITS


def _clean_text(value, limit):
    """Return ``value`` as text a database stores: no NUL, valid UTF-8, cut at ``limit``."""
    value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            value = value.encode("utf-8", "replace").decode("utf-8")
    if limit and len(value) > limit:
        value = value[:limit]
    return value


def _to_datetime(value):
    """Return a record's ``time`` (POSIX timestamp, ISO string or datetime) as a datetime."""
    if isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    if isinstance(value, str):
        return datetime.datetime.fromisoformat(value)
    return value


def clean(record):
    """Return ``record`` made storable: no NUL, valid UTF-8, within max_length.

    Client-supplied text (a username typed at USER, a path) may hold what a
    database refuses; the record is kept, with those characters replaced.
    ``time`` may be a POSIX timestamp (what the receivers journal) or an
    aware datetime (what the journal gives back after an ISO string).
    """
    limits = _text_limits()
    cleaned = {}
    for name, value in record.items():
        if name[:1] == "_":
            continue  # journal bookkeeping, not a field
        if name == "time":
            value = _to_datetime(value)
        elif isinstance(value, str) and name in limits:
            value = _clean_text(value, limits[name])
        cleaned[name] = value
    return cleaned


def _unknown_fields(batch, names):
    for record in batch:
        if record.keys() <= names:
            continue  # the usual case, tested without building a set
        unknown = {k for k in record.keys() - names if k[:1] != "_"}
        if unknown:
            # As bulk_create would: a programming error, not "database down".
            raise TypeError(
                f"AuditEvent() got unexpected keyword arguments: {sorted(unknown)!r}"
            )


def _tuples(batch, adapt):
    """Return the rows of ``batch`` as tuples in column order, cleaned as clean() does."""
    columns = _columns()
    limits = _text_limits()
    _unknown_fields(batch, {attname for attname, *_ in columns})
    # The writer's Python time is taken from the IO loop (the GIL, and the
    # core it runs on): per row, one comprehension, then only the text
    # columns that need cleaning (a plain ASCII value within its limit is
    # checked by three C calls) and the columns that have an adapter.
    defaults = [(attname, default) for attname, _, default, _ in columns]
    texts = [
        (index, limits[attname])
        for index, (attname, *_) in enumerate(columns)
        if attname in limits
    ]
    time_index = next(i for i, (attname, *_) in enumerate(columns) if attname == "time")
    time_adapter = adapt.get(models.DateTimeField)
    adapters = [
        (index, adapt[kind])
        for index, (_, _, _, kind) in enumerate(columns)
        if kind in adapt and index != time_index
    ]
    result = []
    for record in batch:
        get = record.get
        row = [get(attname, default) for attname, default in defaults]
        for index, limit in texts:
            value = row[index]
            if value and (
                value.__class__ is not str
                or not value.isascii()
                or "\x00" in value
                or (limit and len(value) > limit)
            ):
                row[index] = _clean_text(value, limit)
        value = row[time_index]
        if value is not None:
            value = _to_datetime(value)
            row[time_index] = time_adapter(value) if time_adapter else value
        for index, adapter in adapters:
            value = row[index]
            if value is not None:
                row[index] = adapter(value)
        result.append(tuple(row))
    return result


def _sqlite_utc(value):
    """Adapt an aware datetime as Django's SQLite backend does for a UTC connection.

    The same text as ``adapt_datetimefield_value()`` in a third of its time
    (it runs once per row, in the writer).
    """
    if value.tzinfo is None:
        return connection.ops.adapt_datetimefield_value(value)
    return str(value.astimezone(datetime.UTC).replace(tzinfo=None))


def _copy_supported():
    # psycopg 3's COPY API (psycopg2 has none worth the second code path).
    return connection.vendor == "postgresql" and hasattr(
        connection.connection, "pgconn"
    )


def insert(batch):
    """Insert ``batch`` (a list of record dicts) in one statement."""
    from ..models import AuditEvent

    columns = _columns()
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    names = ", ".join(connection.ops.quote_name(column) for _, column, _, _ in columns)
    connection.ensure_connection()
    if _copy_supported():
        rows = _tuples(batch, {})
        sql = f"COPY {table} ({names}) FROM STDIN"
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
        return
    ops = connection.ops
    adapt_time = ops.adapt_datetimefield_value
    if (
        connection.vendor == "sqlite"
        and django_settings.USE_TZ
        and connection.timezone_name == "UTC"
    ):
        adapt_time = _sqlite_utc
    rows = _tuples(
        batch,
        {
            models.DateTimeField: adapt_time,
            models.GenericIPAddressField: ops.adapt_ipaddressfield_value,
        },
    )
    placeholders = ", ".join(["%s"] * len(columns))
    # One transaction: in autocommit mode every row would be its own commit.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            # Table and column names come from the model, quoted.
            f"INSERT INTO {table} ({names}) VALUES ({placeholders})",  # noqa: S608
            rows,
        )


def insert_new(batch):
    """Insert the records of ``batch`` whose uid is not in the table yet.

    For records read back from the journal: some may have reached the
    database before the process died or the connection failed.
    """
    from ..models import AuditEvent

    uids = [r["uid"] for r in batch if r.get("uid")]
    existing = set()
    for start in range(0, len(uids), 500):
        existing.update(
            str(uid).replace("-", "")
            for uid in AuditEvent.objects.filter(
                uid__in=uids[start : start + 500]
            ).values_list("uid", flat=True)
        )
    fresh = [r for r in batch if not r.get("uid") or r["uid"] not in existing]
    if fresh:
        insert(fresh)
