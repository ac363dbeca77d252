"""Time the audit admin and the transfers report on a million audit rows.

usage: python -m tests.benchmarks.audit_admin [--db sqlite|postgres]
       [--rows 1000000] [--rounds 5] [--only changelist,report,exports]

Fills a benchmark database once (SQLite: $TMPDIR/ftpaudit-bench.sqlite3;
PostgreSQL: the ``ftpsuite_admin`` database) with generated AuditEvent rows
(bulk_create in batches: sessions of connect, login, transfers, a rename or
a delete, logout and disconnect over two calendar years, 500 users, 8
groups), then requests each page in this process with Django's test client
as a superuser and prints the median server time and the number of queries.
The streaming exports are read to the end, with their peak Python memory.
"""

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
import tracemalloc

import django

URLS = {
    "changelist": [
        ("unfiltered", ""),
        ("event=upload", "?event__exact=upload"),
        ("failed", "?success__exact=0"),
        ("tls", "?tls__exact=1"),
        ("group", "?group=group3"),
        ("user link", "?username=user42"),
        ("session link", "?session_id={session}"),
        ("year", "?time__year=2026"),
        ("month", "?time__year=2026&time__month=3"),
        ("day", "?time__year=2026&time__month=3&time__day=14"),
        ("event+month", "?event__exact=download&time__year=2026&time__month=3"),
        ("search user", "?q=user42"),
        ("search ip", "?q=10.0.1.7"),
        ("search path (rare)", "?q=file123457.dat"),
        ("search (no match)", "?q=nosuchthing"),
        ("page 10", "?p=10"),
        ("oldest first", "?o=1"),
    ],
    "report": [
        ("unfiltered", ""),
        ("one user", "?user=user42"),
        ("one month", "?date_from=2026-03-01&date_to=2026-03-31"),
        ("user+month", "?user=user42&date_from=2026-03-01&date_to=2026-03-31"),
        ("uploads, incomplete", "?direction=upload&status=incomplete"),
        ("path contains", "?path=dir7/"),
    ],
}
EVENTS_OF_SESSION = [
    "connect",
    "login",
    "upload",
    "download",
    "download",
    "upload",
    "download_incomplete",
    "upload_incomplete",
    "download",
    "rename",
    "logout",
    "disconnect",
]
START = datetime.datetime(2025, 7, 1, tzinfo=datetime.UTC)
STEP = datetime.timedelta(seconds=47)  # a million rows span about 18 months


def setup(db):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    if db == "sqlite":
        path = os.path.join(tempfile.gettempdir(), "ftpaudit-bench.sqlite3")
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    else:
        os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/ftpsuite_admin"
    django.setup()


def event_row(i):
    from ftpserver_core.models import AuditEvent

    session = i // len(EVENTS_OF_SESSION)
    event = EVENTS_OF_SESSION[i % len(EVENTS_OF_SESSION)]
    username = f"user{session % 500}"
    failed = event == "login" and session % 23 == 0
    transfer = event in (
        "upload",
        "download",
        "upload_incomplete",
        "download_incomplete",
    )
    path = f"/data/{username}/dir{i % 50}/file{i}.dat"
    return AuditEvent(
        time=START + i * STEP,
        event="login_failed" if failed else event,
        username=username,
        group=f"group{session % 8}",
        remote_ip=f"10.{session // 65536 % 256}.{session // 256 % 256}.{session % 256}",
        remote_port=40000 + session % 20000,
        session_id=f"{session:032x}",
        ftp_path=path if transfer or event == "rename" else "",
        path="/srv/ftp" + path if transfer else "",
        ftp_path_to=path + ".bak" if event == "rename" else "",
        size=(i * 7919) % 50_000_000 if transfer else None,
        duration=((i * 7919) % 50_000_000) / 1e7 if transfer else None,
        success=not failed,
        reason="bad_credentials" if failed else "",
        tls=session % 3 == 0,
        node="ftp1",
    )


def fill(rows, row=None):
    """Fill the audit table with ``rows`` records of ``row(i)`` (kept if there).

    Return the seconds spent inserting (0 when the table was already full).
    """
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction

    from ftpserver_core.models import AuditEvent, FTPUserGroup

    row = row or event_row
    call_command("migrate", verbosity=0)
    for n in range(8):
        FTPUserGroup.objects.get_or_create(name=f"group{n}")
    user_model = get_user_model()
    if not user_model.objects.filter(username="bench").exists():
        user_model.objects.create_superuser("bench", "bench@example.com", "bench")
    if AuditEvent.objects.count() == rows:
        return 0.0
    AuditEvent.objects.all().delete()
    started = time.perf_counter()
    batch = 10_000
    for offset in range(0, rows, batch):
        with transaction.atomic():
            AuditEvent.objects.bulk_create(
                [row(i) for i in range(offset, min(offset + batch, rows))]
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return time.perf_counter() - started


def measure(client, url, rounds):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    n_queries = len(queries)  # now: the next request empties the log
    assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), n_queries


def measure_stream(client, url):
    """Read a streaming export to the end: seconds, lines, bytes, peak memory.

    Timed without tracemalloc (which slows Python down three times), then
    read again under it for the peak of Python allocations.
    """

    def read():
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        assert response.streaming
        lines = size = 0
        for chunk in response.streaming_content:
            lines += chunk.count(b"\n")
            size += len(chunk)
        return lines, size

    started = time.perf_counter()
    lines, size = read()
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    read()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, lines, size, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="changelist,report,exports")
    args = parser.parse_args()
    setup(args.db)
    fill(args.rows)

    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from ftpserver_core.models import AuditEvent

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    session = AuditEvent.objects.order_by("pk").values_list("session_id", flat=True)[
        args.rows // 2
    ]
    only = args.only.split(",")
    bases = {
        "changelist": reverse("admin:ftpserver_core_auditevent_changelist"),
        "report": reverse("ftpadmin:transfers"),
    }
    print(f"{args.db}, {AuditEvent.objects.count():,} rows; median of {args.rounds}")
    for page, cases in URLS.items():
        if page not in only:
            continue
        for name, query in cases:
            url = bases[page] + query.format(session=session)
            median, worst, queries = measure(client, url, args.rounds)
            print(
                f"  {page:10s} {name:22s} {median:8.1f} ms (max {worst:7.1f})"
                f" {queries:3d} queries"
            )
            sys.stdout.flush()
    if "exports" in only:
        for name in ("transfers_csv", "transfers_xferlog"):
            elapsed, lines, size, peak = measure_stream(
                client, reverse(f"ftpadmin:{name}")
            )
            print(
                f"  {name:33s} {elapsed:6.1f} s, {lines:,} lines, "
                f"{size / 1e6:.0f} MB, peak Python memory {peak / 1e6:.1f} MB"
            )


if __name__ == "__main__":
    main()
