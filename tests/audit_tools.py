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
import socket
import sqlite3
import struct
import sys
import threading
import time
from pathlib import Path

from django.db import connection
from django.test import override_settings

from ftpserver_core import audit
from ftpserver_core.models import AuditEvent

from .conftest import database_url

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


class TcpProxy:
    """A TCP proxy on 127.0.0.1: ``up`` forwards, ``down`` cuts what is open
    and refuses (after DOWN_TIMEOUT), ``hang`` accepts and never answers."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so that close() ends the accept loop
        self.port = self.listener.getsockname()[1]
        self.mode = "up"
        self.accepted = 0
        self._lock = threading.Lock()
        self._open = []  # every socket to cut on down()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self.accepted += 1
                mode = self.mode
                if mode == "down":
                    # Refused after DOWN_TIMEOUT, like a locked SQLite file:
                    # a thread that waited on the database would be seen.
                    threading.Timer(DOWN_TIMEOUT, _reset, [conn]).start()
                    continue
                self._open.append(conn)
            if mode == "hang":
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(conn)
                continue
            with self._lock:
                self._open.append(upstream)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(
                    target=self._pump, args=(src, dst), daemon=True
                ).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def set_mode(self, mode):
        with self._lock:
            self.mode = mode
            if mode == "up":
                return
            # Cut what is open (held sockets too, when hang() ends).
            sockets, self._open = self._open, []
        for sock in sockets:
            _reset(sock)

    def close(self):
        self._closed = True
        self.set_mode("down")
        self.listener.close()
        self._thread.join(5)


def _reset(sock):
    """Close with an RST, so the peer fails at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


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
                self.saved["HOST"] or "127.0.0.1", int(self.saved["PORT"] or 5432)
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
            self.proxy.set_mode("hang" if hang else "down")
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
            self.proxy.set_mode("up")
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
