"""The admin audit changelist and the transfers CSV export, for run.py.

usage: python -m tests.benchmarks.admin_probe fill-admin ROWS
       python -m tests.benchmarks.admin_probe fill-export ROWS
       python -m tests.benchmarks.admin_probe changelist ROUNDS
       python -m tests.benchmarks.admin_probe export

Runs in a subprocess of run.py, on DATABASE_URL's database, with the
benchmark settings; prints one JSON object. Reuses audit_admin.py: its row
generator (sessions of connect, login, transfers, rename, logout and
disconnect, 500 users, 8 groups), its fill and its timings (the changelist
pages requested in-process with Django's test client as a superuser).

- ``fill-admin``: audit_admin's rows, ROWS of them (kept if already there).
- ``fill-export``: ROWS transfer records only (the same generator's upload
  and download rows), for the export of a million transfers.
- ``changelist``: every changelist case of audit_admin.URLS, median of
  ROUNDS requests after a first one (which counts the queries).
- ``export``: the transfers report's CSV view (``ftpadmin:transfers_csv``)
  read to the end once; wall time, lines, bytes and the process's peak RSS
  (VmHWM: Python, Django and the database driver, everything).
"""

import json
import os
import sys
import time

import django

from . import audit_admin

# Which changelist cases are list filters or drill-downs (the target), and
# which are searches (a LIKE over the whole table for a path).
SEARCHES = {"search user", "search ip", "search path (rare)", "search (no match)"}
NOT_FILTERED = {"unfiltered", "page 10", "oldest first"}
# Indexes, in a session of audit_admin.EVENTS_OF_SESSION, of the transfers.
TRANSFER_SLOTS = [
    i
    for i, event in enumerate(audit_admin.EVENTS_OF_SESSION)
    if event.startswith(("upload", "download"))
]


def setup():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.benchmarks.settings")
    django.setup()


def fill_admin(rows):
    audit_admin.fill(rows)
    from ftpserver_core.models import AuditEvent

    return {"rows": AuditEvent.objects.count()}


def transfer_row(j):
    """The j-th transfer record of audit_admin's generator."""
    per_session = len(TRANSFER_SLOTS)
    session, slot = divmod(j, per_session)
    return audit_admin.event_row(
        session * len(audit_admin.EVENTS_OF_SESSION) + TRANSFER_SLOTS[slot]
    )


def fill_export(rows):
    seconds = audit_admin.fill(rows, transfer_row)
    return {"rows": rows, "filled_s": seconds}


def client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    c = Client()
    c.force_login(get_user_model().objects.get(username="bench"))
    return c


def changelist(rounds):
    from django.urls import reverse

    from ftpserver_core.models import AuditEvent

    c = client()
    total = AuditEvent.objects.count()
    session = AuditEvent.objects.order_by("pk").values_list("session_id", flat=True)[
        total // 2
    ]
    base = reverse("admin:ftpserver_core_auditevent_changelist")
    cases = []
    for name, query in audit_admin.URLS["changelist"]:
        url = base + query.format(session=session)
        median, worst, queries = audit_admin.measure(c, url, rounds)
        kind = (
            "search"
            if name in SEARCHES
            else "other"
            if name in NOT_FILTERED
            else "filter"
        )
        cases.append(
            {
                "name": name,
                "kind": kind,
                "median_ms": median,
                "max_ms": worst,
                "queries": queries,
            }
        )
    return {"rows": total, "cases": cases}


def peak_rss():
    """This process's peak resident memory (VmHWM), in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def export():
    from django.urls import reverse

    from ftpserver_core.models import AuditEvent

    c = client()
    total = AuditEvent.objects.count()
    rss_before = peak_rss()
    started = time.perf_counter()
    response = c.get(reverse("ftpadmin:transfers_csv"))
    assert response.status_code == 200, response.status_code
    assert response.streaming
    lines = size = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
        size += len(chunk)
    elapsed = time.perf_counter() - started
    return {
        "rows": total,
        "csv_s": elapsed,
        "lines": lines,
        "bytes": size,
        "peak_rss_before": rss_before,
        "peak_rss": peak_rss(),
    }


def main():
    command, *args = sys.argv[1:]
    setup()
    if command == "fill-admin":
        result = fill_admin(int(args[0]))
    elif command == "fill-export":
        result = fill_export(int(args[0]))
    elif command == "changelist":
        result = changelist(int(args[0]))
    elif command == "export":
        result = export()
    else:
        sys.exit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
