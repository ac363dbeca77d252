"""Helpers of the audit tests: a spool per test, real database outages, waiting.

``database_outage()`` makes the database really unreachable for the
connections opened after ``down()`` and drops the open ones:

- PostgreSQL: Django's connection settings point (for the test) at a TCP
  proxy on 127.0.0.1 that forwards to the real server, refuses and cuts
  connections, or holds them without an answer (``hang()``).
- SQLite: another sqlite3 connection holds ``BEGIN EXCLUSIVE`` on the database
  file, and Django's connections get a short busy timeout (long for
  ``hang()``), so inserts fail with "database is locked".
"""

import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path

from django.db import connection
from django.test import override_settings

from ftpserver_core import audit
from ftpserver_core.models import AuditEvent

from .conftest import database_url
from .faults import TcpProxy

PYTHON = sys.executable


def wait_until(predicate, timeout=10.0, interval=0.02, message=None):
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"timed out waiting for {predicate}")
        time.sleep(interval)


def is_sqlite():
    return connection.vendor == "sqlite"


def audit_rows(**filters):
    """Every audit record (as dicts), in insertion order."""
    return list(AuditEvent.objects.filter(**filters).order_by("id").values())


def count_by_event(**filters):
    counts = {}
    for event in AuditEvent.objects.filter(**filters).values_list("event", flat=True):
        counts[event] = counts.get(event, 0) + 1
    return counts


def spool_files(directory):
    return sorted(Path(directory).glob("spool-*.jsonl"))


def spooled_records(directory):
    """Every record in the spool files of ``directory`` (parsed)."""
    records = []
    for path in spool_files(directory):
        try:
            text = path.read_text()
        except FileNotFoundError:  # replayed meanwhile
            continue
        # The last line may be being written: only complete lines count.
        for line in text.split("\n")[:-1]:
            if line.strip():
                records.append(json.loads(line))
    return records


@contextlib.contextmanager
def own_spool(directory):
    """Spool into ``directory``; the writer starts and ends idle."""
    audit.writer.flush()
    with override_settings(FTPSERVER_AUDIT_SPOOL_DIR=str(directory)):
        audit.writer.written = audit.writer.spooled = audit.writer.rejected = 0
        audit.writer.peak_pending = 0
        try:
            yield directory
        finally:
            audit.writer.flush()


# How long a database call takes to fail in an outage: SQLite's busy timeout
# while the file is locked (HANG_TIMEOUT in hang()), the proxy's delay before
# it refuses a connection. UP_TIMEOUT: SQLite's busy timeout otherwise.
UP_TIMEOUT, DOWN_TIMEOUT, HANG_TIMEOUT = 5.0, 0.3, 3.0


class Outage:
    """Make the test database unreachable (see the module docstring)."""

    def __init__(self):
        self.settings = connection.settings_dict  # shared by every thread
        self.saved = {
            "HOST": self.settings.get("HOST"),
            "PORT": self.settings.get("PORT"),
            "OPTIONS": dict(self.settings.get("OPTIONS") or {}),
        }
        self.proxy = None
        self.locker = None
        if is_sqlite():
            self.settings["OPTIONS"] = {**self.saved["OPTIONS"], "timeout": UP_TIMEOUT}
        else:
            self.proxy = TcpProxy(
                (self.saved["HOST"] or "127.0.0.1", int(self.saved["PORT"] or 5432))
            )
            self.settings["HOST"] = "127.0.0.1"
            self.settings["PORT"] = str(self.proxy.port)
        # This thread's connection too, so that it sees the outage like the
        # server's threads.
        connection.close()

    @property
    def address(self):
        """DATABASE_URL of the database as the outage sees it (for subprocesses)."""
        return database_url()

    def down(self, hang=False):
        connection.close()  # this thread's: reconnects after up()
        if self.proxy is not None:
            # What is open is cut; new connections are held without an answer,
            # or refused after DOWN_TIMEOUT (a thread that waited on the
            # database would be seen, as with a locked SQLite file).
            if hang:
                self.proxy.hang(cut_existing=True)
            else:
                self.proxy.refuse(cut_existing=True, delay=DOWN_TIMEOUT)
            return
        self.settings["OPTIONS"] = {
            **self.saved["OPTIONS"],
            "timeout": HANG_TIMEOUT if hang else DOWN_TIMEOUT,
        }
        if self.locker is None:
            self.locker = sqlite3.connect(
                self.settings["NAME"], timeout=20, isolation_level=None
            )
            self.locker.execute("BEGIN EXCLUSIVE")

    def up(self):
        connection.close()  # cut by down(): this thread reconnects
        if self.proxy is not None:
            self.proxy.recover()
            return
        self.settings["OPTIONS"] = {**self.saved["OPTIONS"], "timeout": UP_TIMEOUT}
        if self.locker is not None:
            self.locker.execute("ROLLBACK")
            self.locker.close()
            self.locker = None

    def restore(self):
        self.up()
        connection.close()
        self.settings["OPTIONS"] = self.saved["OPTIONS"]
        if self.proxy is not None:
            self.settings["HOST"] = self.saved["HOST"]
            self.settings["PORT"] = self.saved["PORT"]
            self.proxy.close()


@contextlib.contextmanager
def database_outage():
    """Switch the database off and on: ``down()``, ``up()``; restored at exit."""
    control = Outage()
    try:
        yield control
    finally:
        control.restore()
