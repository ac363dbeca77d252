"""Audit records as database rows: cleaned, then inserted in one statement.

The writer thread shares the GIL with the FTP loop, so every microsecond it
spends per row is taken from the loop. ``bulk_create`` builds a model instance
and adapts every field in Python (about 170 us a row). On PostgreSQL a batch
goes as one JSON array of the journal's own lines, which the server takes
apart (``json_to_recordset``), in its own process. On SQLite a record's values
are bound as they are, a statement per shape of record. In both, defaults,
length limits and the time's conversion are done in SQL. A batch that needs
Python's cleaning (a NUL, a lone surrogate, a time that is no timestamp, a
record read back without its line) and the other databases take the tuple
path: a row built from precomputed columns, sent by COPY on PostgreSQL and by
one prepared INSERT run for all rows elsewhere.
"""

import datetime
import json

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
    _unknown_fields(batch, {attname for attname, *_ in columns} | {"_json"})
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


def _no_empty(value):
    return value or None


def _copy_supported():
    # psycopg 3's COPY API (psycopg2 has none worth the second code path).
    return connection.vendor == "postgresql" and hasattr(
        connection.connection, "pgconn"
    )


# A batch as one JSON array: no ASCII escaping (cheaper, and a lone surrogate
# stays one, to be found by encode()), no NaN (not JSON: SQLite would call
# the array malformed, which looks like a database error).
_encode_batch = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode

# {(vendor, alias): (way, INSERT) of a batch, or None where there is none}
_FAST_SQL = {}


def _sqlite_column(attname, default, kind, limit, value):
    """Return the SQL of one column from ``value`` (a bound value, or None: missing)."""
    if value is None:
        if isinstance(default, bool):
            return str(int(default))
        return "''" if default == "" else "NULL"
    if kind is models.DateTimeField:
        # Django's text of the UTC time, as _sqlite_utc() writes it;
        # microseconds rounded as datetime.fromtimestamp() rounds them (but
        # for an exact half, which a double of these times is not).
        whole = f"CAST(floor({value}) AS INTEGER)"
        micro = f"CAST(round(({value} - floor({value})) * 1000000) AS INTEGER)"
        value = (
            f"datetime({whole} + {micro} / 1000000, 'unixepoch') || "
            f"CASE {micro} % 1000000 WHEN 0 THEN '' "
            f"ELSE printf('.%06d', {micro} % 1000000) END"
        )
    elif kind is models.GenericIPAddressField:
        value = f"nullif({value}, '')"
    elif limit:
        value = f"substr({value}, 1, {int(limit)})"
    if isinstance(default, bool):
        return f"coalesce({value}, {int(default)})"
    if default == "":
        return f"coalesce({value}, '')"
    return value


# {(alias, a record's keys): SQLite's INSERT of records with those keys}
_SHAPES = {}


def _sqlite_shape_sql(keys):
    """Return SQLite's INSERT of a row of a record's values, in its keys' order.

    The row is ``tuple(record.values())``: no Python per field, and no None
    for a field the record does not have (binding None or a bool costs the
    sqlite3 module an adapter lookup, about 2,000 instructions, under the
    GIL). SQL gives the missing fields their defaults, cuts a text at its
    limit and writes the time as Django's text; keys that are no column
    (``_json``) are bound and not used.
    """
    cache_key = (connection.alias, keys)
    sql = _SHAPES.get(cache_key)
    if sql is not None:
        return sql
    from ..models import AuditEvent

    quote = connection.ops.quote_name
    position = {key: index for index, key in enumerate(keys)}
    limits = _text_limits()
    columns = _columns()
    exprs = [
        _sqlite_column(
            attname,
            default,
            kind,
            limits.get(attname),
            f"c{position[attname]}" if attname in position else None,
        )
        for attname, _, default, kind in columns
    ]
    table = quote(AuditEvent._meta.db_table)
    names = ", ".join(quote(column) for _, column, _, _ in columns)
    params = ", ".join(f"? AS c{index}" for index in range(len(keys)))
    if len(_SHAPES) >= 256:
        _SHAPES.clear()  # records of unusual shapes: never many at once
    # Table and column names come from the model, quoted; the parameters are
    # sqlite3's own (the raw cursor: no %s to convert per call).
    sql = _SHAPES[cache_key] = (
        f"INSERT INTO {table} ({names}) SELECT {', '.join(exprs)} "  # noqa: S608
        f"FROM (SELECT {params})"
    )
    return sql


# PostgreSQL's type of each kind of field in json_to_recordset().
_PG_TYPES = {
    models.DateTimeField: "float8",
    models.CharField: "text",
    models.TextField: "text",
    models.GenericIPAddressField: "text",
    models.ForeignKey: "bigint",
    models.BigIntegerField: "bigint",
    models.PositiveIntegerField: "bigint",
    models.IntegerField: "bigint",
    models.FloatField: "float8",
    models.BooleanField: "boolean",
    models.UUIDField: "uuid",
}


def _postgresql_json_sql(table, columns, limits):
    """Return PostgreSQL's INSERT of a JSON array: json_to_recordset() makes the rows."""
    quote = connection.ops.quote_name
    fields, exprs = [], []
    for attname, _, default, kind in columns:
        if kind not in _PG_TYPES:
            return None
        fields.append(f"{quote(attname)} {_PG_TYPES[kind]}")
        value = f"r.{quote(attname)}"
        if kind is models.DateTimeField:
            value = f"to_timestamp({value})"
        elif kind is models.GenericIPAddressField:
            value = f"nullif({value}, '')::inet"
        elif limits.get(attname):
            value = f"left({value}, {int(limits[attname])})"
        if isinstance(default, bool):
            value = f"coalesce({value}, {str(default).lower()})"
        elif default == "":
            value = f"coalesce({value}, '')"
        elif default is not None:
            return None
        exprs.append(value)
    names = ", ".join(quote(column) for _, column, _, _ in columns)
    # ORDER BY the array's order: ids follow the records' order, as COPY's do.
    return (
        f"INSERT INTO {table} ({names}) SELECT {', '.join(exprs)} "  # noqa: S608
        f"FROM ROWS FROM (json_to_recordset(%s::json) AS ({', '.join(fields)})) "
        f"WITH ORDINALITY AS r({', '.join(quote(a) for a, *_ in columns)}, n) "
        "ORDER BY r.n"
    )


def _fast_sql():
    """Return this database's (way, INSERT) for a batch, or None (the tuple path).

    ``json``: PostgreSQL takes the whole batch as one JSON array (the
    journal's lines, parsed by the server, in its own process). ``plain``:
    SQLite takes rows of raw values, a statement per shape of record (its
    JSON functions cost four times more CPU a row, in this process).
    """
    vendor = connection.vendor
    if vendor == "sqlite" and not (
        django_settings.USE_TZ and connection.timezone_name == "UTC"
    ):
        return None  # times are written in local time: Python's adapter does it
    key = (vendor, connection.alias)
    try:
        return _FAST_SQL[key]
    except KeyError:
        pass
    from ..models import AuditEvent

    fast = None
    if vendor == "sqlite":
        fast = ("plain", None)  # a statement per shape: _sqlite_shape_sql()
    elif vendor == "postgresql":
        table = connection.ops.quote_name(AuditEvent._meta.db_table)
        sql = _postgresql_json_sql(table, _columns(), _text_limits())
        if sql is not None:
            fast = ("json", sql)
    _FAST_SQL[key] = fast
    return fast


def fields(record):
    """Return ``record`` without the JSON the journal keeps with it."""
    if "_json" not in record:
        return record
    return {name: value for name, value in record.items() if name != "_json"}


def _json_batch(batch):
    """Return ``batch`` as one JSON array, or None when Python must clean it."""
    lines = []
    for record in batch:
        value = record.get("time")
        if value.__class__ is not float and value.__class__ is not int:
            return None  # an ISO string or a datetime, from an old journal
        line = record.get("_json")
        if line is not None:
            lines.append(line)
    payload = None
    if len(lines) == len(batch):
        # The journal's lines (journal.add): ASCII, with NaN allowed and
        # every non-ASCII character escaped. Escapes of surrogates (a lone
        # one, or a pair that SQLite may not join) and NaN go the long way.
        payload = f"[{','.join(lines)}]"
        if "\\ud" in payload or "NaN" in payload or "Infinity" in payload:
            payload = None
    if payload is None:
        try:
            payload = _encode_batch([fields(record) for record in batch])
        except (TypeError, ValueError):
            return None  # a value JSON cannot hold, or NaN
    # json escapes a NUL as \u0000, which the database would store; the tuple
    # path replaces it (a literal backslash-u0000 in a path lands here too).
    if "\\u0000" in payload:
        return None
    if not payload.isascii():
        try:
            payload.encode("utf-8")
        except UnicodeEncodeError:
            return None  # a lone surrogate: the tuple path replaces it
    return payload


def _plain_runs(batch):
    """Return ``batch`` as [(keys, rows)], runs of records of one shape in order.

    None when Python must clean a record. A row is the record's values as
    they are; consecutive records with the same keys (one kind of event, from
    one receiver) share one statement.
    """
    runs = []
    last = None
    for record in batch:
        value = record.get("time")
        if value.__class__ is not float and value.__class__ is not int:
            return None  # an ISO string or a datetime, from an old journal
        # The journal's line (ASCII JSON) shows a surrogate or a NUL in any
        # value as an escape: a lone surrogate is no UTF-8 (a pair, rare,
        # goes along), and SQLite's text functions stop at a NUL.
        line = record.get("_json")
        if line is None or "\\ud" in line or "\\u0000" in line:
            return None
        keys = tuple(record)
        if keys != last:
            rows = []
            runs.append((keys, rows))
            last = keys
        rows.append(tuple(record.values()))
    return runs


def insert(batch):
    """Insert ``batch`` (a list of record dicts) in one transaction."""
    from ..models import AuditEvent

    columns = _columns()
    connection.ensure_connection()
    fast = _fast_sql()
    if fast is not None:
        way, sql = fast
        _unknown_fields(batch, {attname for attname, *_ in columns} | {"_json"})
        if way == "json":
            payload = _json_batch(batch)
            if payload is not None:
                # One statement: atomic in autocommit mode without a BEGIN
                # and a COMMIT (two more round trips).
                with connection.cursor() as cursor:
                    cursor.execute(sql, [payload])
                return
        else:
            runs = _plain_runs(batch)
            if runs is not None:
                # One transaction: in autocommit mode every row would be
                # its own commit. sqlite3's own cursor: Django's converts
                # the query's placeholders by a regular expression per call.
                with transaction.atomic(), connection.wrap_database_errors:
                    cursor = connection.connection.cursor()
                    try:
                        for keys, rows in runs:
                            cursor.executemany(_sqlite_shape_sql(keys), rows)
                    finally:
                        cursor.close()
                return
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    names = ", ".join(connection.ops.quote_name(column) for _, column, _, _ in columns)
    if _copy_supported():
        # An empty address is no address (as Django's adapter has it): COPY
        # would refuse the whole batch on it.
        rows = _tuples(batch, {models.GenericIPAddressField: _no_empty})
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
