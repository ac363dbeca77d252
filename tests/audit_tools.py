"""Helpers of the audit tests: a journal per test, real database outages, waiting.

``database_outage()`` makes the database really unreachable for the
connections opened after ``down()`` and drops the open ones:

- PostgreSQL: Django's connection settings point (for the test) at a TCP
  proxy on 127.0.0.1 that forwards to the real server, refuses and cuts
  connections, or holds them without an answer (``hang()``).
- SQLite: another sqlite3 connection holds ``BEGIN EXCLUSIVE`` on the database
  file, and Django's connections get a short busy timeout (long for
  ``hang()``), so inserts fail with "database is locked".
"""

import collections
import contextlib
import json
import os
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
from .processes import command_env

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


def journal_files(directory):
    """The journal segments in ``directory`` (every process's, every database's)."""
    return sorted(Path(directory).glob("journal-*.jsonl"))


def append_to_segment(path, data, journal=None):
    """Write ``data`` after the last line of a journal segment, as its process
    would (a segment is preallocated: its end is zeros, not the file's end).
    With the live ``journal`` of that segment, it writes after ``data``."""
    with open(path, "r+b") as fh:
        content = fh.read()
        end = content.find(b"\x00")
        end = len(content) if end < 0 else end
        fh.seek(end)
        fh.write(data)
    if journal is not None:
        journal._current.size = end + len(data)


def journal_lines(directory, files=None):
    """Every complete line of the journal segments of ``directory``, parsed.

    Records, and the ``_begin`` / ``_end`` lines of uploads. A segment being
    written may end with a line not complete yet: only complete lines count.
    """
    items = []
    for path in files if files is not None else journal_files(directory):
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:  # trimmed or replayed meanwhile
            continue
        for line in data.split(b"\n")[:-1]:
            if line.strip():
                items.append(json.loads(line))
    return items


def journal_records(directory, files=None):
    """The audit records in the journal of ``directory`` (no upload bookkeeping)."""
    return [
        item
        for item in journal_lines(directory, files)
        if "_begin" not in item and "_end" not in item
    ]


def uids_in_database():
    return {
        uid.hex
        for uid in AuditEvent.objects.exclude(uid=None).values_list("uid", flat=True)
    }


def journal_backlog(directory, stored=None):
    """The journaled records that are not in the database (yet).

    During an outage the database cannot say: pass ``stored``, the uids it
    had before (``uids_in_database()``).
    """
    if stored is None:
        stored = uids_in_database()
    return [r for r in journal_records(directory) if r["uid"] not in stored]


def bad_files(directory):
    return sorted(Path(directory).glob("bad-*.jsonl.bad"))


def bad_lines(directory):
    """The lines kept aside in ``bad-<pid>.jsonl.bad`` files, as bytes."""
    lines = []
    for path in bad_files(directory):
        lines.extend(path.read_bytes().splitlines())
    return lines


def duplicated_records():
    """Records written twice: the same uid, or the same event of a session.

    Return ``{key: count}`` of the keys seen more than once (empty: none).
    Server events (no session) are only compared by uid.
    """
    by_uid = collections.Counter(
        AuditEvent.objects.exclude(uid=None).values_list("uid", flat=True)
    )
    by_event = collections.Counter(
        AuditEvent.objects.exclude(session_id="").values_list(
            "event", "ftp_path", "session_id"
        )
    )
    counts = {("uid", str(k)): n for k, n in by_uid.items()}
    counts.update(by_event)
    return {key: n for key, n in counts.items() if n > 1}


def writer_is_down():
    """True while this process's audit writer counts the database as down."""
    return audit.writer._down_since is not None


def abandon(journal):
    """Let go of ``journal``'s files as a process that dies does: closed,
    unlocked, left on disk."""
    for segment in [*journal._closed, journal._current]:
        if segment is not None:
            os.close(segment.fd)
    journal._closed, journal._current = [], None


def write_settings(tmp_path, name="audit_settings", sqlite_timeout=0.3, **values):
    """A settings module extending tests.settings; return the subprocess env.

    ``name`` is the module's name (a directory each, so that two projects can
    have their own). On SQLite (as the process's DATABASE_URL says) the
    busy timeout is ``sqlite_timeout``: short, so that a locked database (an
    outage) fails fast, as the tests' own connections do.
    """
    directory = tmp_path / f"settings_{name}"
    directory.mkdir(exist_ok=True)
    lines = ["from tests.settings import *  # noqa: F403"]
    lines += [f"{key} = {value!r}" for key, value in values.items()]
    lines += [
        'if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405',
        f'    DATABASES["default"]["OPTIONS"] = {{"timeout": {sqlite_timeout!r}}}'
        "  # noqa: F405",
    ]
    (directory / f"{name}.py").write_text("\n".join(lines) + "\n")
    return command_env(directory, DJANGO_SETTINGS_MODULE=name)


@contextlib.contextmanager
def own_journal(directory):
    """Journal into ``directory``; the writer starts and ends idle."""
    audit.writer.flush()
    with override_settings(FTPSERVER_AUDIT_JOURNAL_DIR=str(directory)):
        audit.writer.written = audit.writer.rejected = audit.writer.replayed = 0
        audit.writer.peak_pending = 0
        try:
            yield directory
        finally:
            audit.writer.flush()


# The former name (tests/test_receivers.py).


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
