"""The figures of the admin index dashboard, in three aggregate queries.

- today's logins, failed logins, and files and bytes up and down (one
  ``aggregate()`` over today's rows);
- the five users who moved the most bytes today (one ``GROUP BY``);
- the bytes up and down of each of the last 30 days (one ``GROUP BY`` of the
  day in the current time zone: ``TruncDate``, or on SQLite a ``CASE`` on the
  days' midnights; see ``per_day``).

"Today" and the days are calendar days of the current time zone: the
``TIME_ZONE`` setting, unless a middleware activated another one, as for
every date the admin shows. Each query filters on ``event`` and a ``time``
range, which the ``(event, time)`` or the ``time`` index of the audit table
answers (the database picks): only the rows of those days are read.

Bytes up and down count complete and incomplete transfers together (the
bytes that did cross the network); today's incomplete share is given apart.
"""

import datetime
from dataclasses import dataclass

from django.db import connections
from django.db.models import Case, Count, IntegerField, Q, Sum, Value, When
from django.db.models.functions import TruncDate
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.formats import date_format

from ftpadmin.filters import DOWNLOADS, UPLOADS, start_of_day, transfers
from ftpserver_core.models import AuditEvent

Event = AuditEvent.Event

#: Days in the chart, today included.
DAYS = 30
#: Rows in the table of the busiest users.
TOP_USERS = 5

# Geometry of the chart, in SVG user units (the SVG scales to its box).
SLOT = 20  # width of one day
BAR = 8  # width of one bar (two per day: up, then down)
TOP = 16  # room above the bars for the scale
PLOT = 120  # height of the tallest bar
BOTTOM = 16  # room below the bars for the dates
LABEL_EVERY = 7  # days between two date labels, counted back from today


def _num(value):
    """Return a number as SVG wants it: a dot, no exponent, few decimals."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Direction:
    """Today's transfers one way: all of them, and the incomplete ones."""

    files: int
    bytes: int
    incomplete_files: int
    incomplete_bytes: int


@dataclass(frozen=True)
class Day:
    """One day of the chart, with the geometry of its two bars."""

    date: datetime.date
    iso: str  # 2026-03-14
    name: str  # Sat 14 Mar 2026, in the active language
    bytes_up: int
    bytes_down: int
    files_up: int
    files_down: int
    up: str  # bytes up, human-readable ("1.2 MB")
    down: str
    x: str  # left edge of the day's slot
    x_up: str
    x_down: str
    y_up: str
    y_down: str
    height_up: str
    height_down: str
    label: bool  # whether the date is written under the bars
    x_label: str


@dataclass(frozen=True)
class Chart:
    days: list
    scale: int  # the bytes of the tallest bar (0: no transfers at all)
    width: int = DAYS * SLOT
    height: int = TOP + PLOT + BOTTOM
    top: int = TOP
    baseline: int = TOP + PLOT
    plot_height: int = PLOT
    slot: int = SLOT
    bar: int = BAR
    y_label: int = TOP + PLOT + BOTTOM - 4


@dataclass(frozen=True)
class Dashboard:
    today: datetime.date
    logins: int
    failed_logins: int
    up: Direction
    down: Direction
    top_users: list
    chart: Chart


def today_totals(start, end):
    """Return today's logins and transfers, in one aggregate query."""
    incomplete_up = Q(event=Event.UPLOAD_INCOMPLETE)
    incomplete_down = Q(event=Event.DOWNLOAD_INCOMPLETE)
    return AuditEvent.objects.filter(
        event__in=(Event.LOGIN, Event.LOGIN_FAILED, *AuditEvent.TRANSFERS),
        time__gte=start,
        time__lt=end,
    ).aggregate(
        logins=Count("pk", filter=Q(event=Event.LOGIN)),
        failed_logins=Count("pk", filter=Q(event=Event.LOGIN_FAILED)),
        files_up=Count("pk", filter=Q(event__in=UPLOADS)),
        bytes_up=Sum("size", filter=Q(event__in=UPLOADS), default=0),
        incomplete_files_up=Count("pk", filter=incomplete_up),
        incomplete_bytes_up=Sum("size", filter=incomplete_up, default=0),
        files_down=Count("pk", filter=Q(event__in=DOWNLOADS)),
        bytes_down=Sum("size", filter=Q(event__in=DOWNLOADS), default=0),
        incomplete_files_down=Count("pk", filter=incomplete_down),
        incomplete_bytes_down=Sum("size", filter=incomplete_down, default=0),
    )


def top_users(start, end, limit=TOP_USERS):
    """Return the ``limit`` users with the most bytes up and down in [start, end)."""
    return list(
        transfers()
        .filter(time__gte=start, time__lt=end)
        .values("username")
        .annotate(
            bytes_up=Sum("size", filter=Q(event__in=UPLOADS), default=0),
            bytes_down=Sum("size", filter=Q(event__in=DOWNLOADS), default=0),
            bytes=Sum("size", default=0),
            files=Count("pk"),
        )
        .order_by("-bytes", "username")[:limit]
    )


def day_buckets(starts):
    """Return an expression giving the index of the day of ``time``.

    ``starts`` are the midnights that open each day and close the last one;
    the rows are known to lie between the first and the last. A balanced tree
    of ``CASE WHEN time < midnight``: five comparisons a row for 30 days.
    """

    def bucket(lo, hi):
        if hi - lo == 1:
            return Value(lo)
        mid = (lo + hi) // 2
        return Case(
            When(time__lt=starts[mid], then=bucket(lo, mid)),
            default=bucket(mid, hi),
            output_field=IntegerField(),
        )

    return bucket(0, len(starts) - 1)


def per_day(first, last, method=None):
    """Return {date: row} of the transfers of the days first..last, one query.

    ``method`` says how rows are put in days of the current time zone:
    ``"trunc"`` groups by ``TruncDate`` (``AT TIME ZONE`` on PostgreSQL),
    ``"case"`` by comparing ``time`` with the days' midnights, computed here
    with zoneinfo. Both are exact across daylight saving changes. The default
    is ``"case"`` on SQLite, where ``TruncDate`` is a Python function called
    for every row (0.4 s for the 31,000 transfers of 30 days at a million
    audit rows, where the ``CASE`` takes 0.1 s), ``"trunc"`` elsewhere.
    """
    queryset = transfers()
    if method is None:
        method = "case" if connections[queryset.db].vendor == "sqlite" else "trunc"
    dates = [first + datetime.timedelta(days=n) for n in range((last - first).days + 1)]
    starts = [start_of_day(date) for date in dates] + [_end_of(last)]
    if method == "trunc":
        day = TruncDate("time", tzinfo=timezone.get_current_timezone())
    else:
        day = day_buckets(starts)
    rows = (
        queryset.filter(time__gte=starts[0], time__lt=starts[-1])
        .annotate(day=day)
        .values("day")
        .annotate(
            bytes_up=Sum("size", filter=Q(event__in=UPLOADS), default=0),
            bytes_down=Sum("size", filter=Q(event__in=DOWNLOADS), default=0),
            files_up=Count("pk", filter=Q(event__in=UPLOADS)),
            files_down=Count("pk", filter=Q(event__in=DOWNLOADS)),
        )
        .order_by("day")
    )
    if method == "trunc":
        return {row.pop("day"): row for row in rows}
    return {dates[row.pop("day")]: row for row in rows}


def _end_of(day):
    return start_of_day(day + datetime.timedelta(days=1))


def chart(today, days=DAYS):
    """Return the bars of the ``days`` days up to ``today``; no traffic is zero."""
    first = today - datetime.timedelta(days=days - 1)
    found = per_day(first, today)
    empty = {"bytes_up": 0, "bytes_down": 0, "files_up": 0, "files_down": 0}
    dates = [first + datetime.timedelta(days=n) for n in range(days)]
    rows = [(date, found.get(date)) for date in dates]
    scale = max(
        (max(row["bytes_up"], row["bytes_down"]) for _, row in rows if row),
        default=0,
    )

    def height(value):
        return value * PLOT / scale if scale else 0

    bars = []
    for n, (date, row) in enumerate(rows):
        row = row or empty
        up, down = height(row["bytes_up"]), height(row["bytes_down"])
        x = n * SLOT
        bars.append(
            Day(
                date=date,
                iso=date.isoformat(),
                name=date_format(date, "D j M Y"),
                bytes_up=row["bytes_up"],
                bytes_down=row["bytes_down"],
                files_up=row["files_up"],
                files_down=row["files_down"],
                # Formatted once here: the SVG and the table show them.
                up=filesizeformat(row["bytes_up"]),
                down=filesizeformat(row["bytes_down"]),
                x=_num(x),
                x_up=_num(x + SLOT / 2 - BAR),
                x_down=_num(x + SLOT / 2),
                y_up=_num(TOP + PLOT - up),
                y_down=_num(TOP + PLOT - down),
                height_up=_num(up),
                height_down=_num(down),
                label=(days - 1 - n) % LABEL_EVERY == 0,
                x_label=_num(x + SLOT / 2),
            )
        )
    return Chart(days=bars, scale=scale, width=days * SLOT)


def dashboard(today=None):
    """Return every figure of the dashboard (three queries)."""
    today = today or timezone.localdate()
    start, end = start_of_day(today), _end_of(today)
    totals = today_totals(start, end)

    def direction(way):
        return Direction(
            files=totals[f"files_{way}"],
            bytes=totals[f"bytes_{way}"],
            incomplete_files=totals[f"incomplete_files_{way}"],
            incomplete_bytes=totals[f"incomplete_bytes_{way}"],
        )

    return Dashboard(
        today=today,
        logins=totals["logins"],
        failed_logins=totals["failed_logins"],
        up=direction("up"),
        down=direction("down"),
        top_users=top_users(start, end),
        chart=chart(today),
    )
