"""The audit writer: FTP events become database rows, off the IO loop.

Receivers call :func:`record`, which appends a dict to an in-memory queue
(microseconds). A background thread bulk-inserts the queue every
``FTPSERVER_AUDIT_INTERVAL`` seconds or ``FTPSERVER_AUDIT_BATCH_SIZE``
records. When the database fails it retries; when it stays down, batches go
to a spool file (JSON lines) that is replayed once the database answers
again, and at the next start. A graceful stop flushes everything. The queue
is bounded: past ``FTPSERVER_AUDIT_MAX_QUEUE`` records, new ones go straight
to the spool, so memory stays bounded and nothing is dropped.
"""

import atexit
import collections
import datetime
import fcntl
import json
import logging
import os
import socket
import tempfile
import threading
import time

from django.db import DatabaseError, InterfaceError, close_old_connections, connection

from .conf import settings

logger = logging.getLogger(__name__)

_DATETIME_FIELDS = ("time",)


def node_name():
    """Return this server node's name (FTPSERVER_NODE_NAME or the host name)."""
    return settings.NODE_NAME or socket.gethostname()


def _encode(record):
    return json.dumps(
        {
            k: (v.isoformat() if isinstance(v, datetime.datetime) else v)
            for k, v in record.items()
        },
        separators=(",", ":"),
    )


def _decode(line):
    record = json.loads(line)
    for name in _DATETIME_FIELDS:
        if isinstance(record.get(name), str):
            record[name] = datetime.datetime.fromisoformat(record[name])
    return record


class Spool:
    """Append-only JSON-lines files that hold records while the database is down."""

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(
            directory, f"spool-{os.getpid()}-{time.time_ns()}.jsonl"
        )

    def append(self, records):
        """Write ``records`` durably to this process's spool file."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # A replayer may have taken and unlinked the file meanwhile.
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    continue
                data = "".join(_encode(r) + "\n" for r in records).encode()
                os.write(fd, data)
                os.fsync(fd)
                return
            finally:
                os.close(fd)

    def pending_files(self):
        """Return every spool file in the directory (this and other processes')."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        return [
            os.path.join(self.directory, n)
            for n in names
            if n.startswith("spool-") and n.endswith(".jsonl")
        ]

    def replay(self, write):
        """Hand every spooled record to ``write(batch)``; remove files it took.

        Returns the number of records replayed. Stops at the first failure,
        leaving the rest for later.
        """
        total = 0
        for path in self.pending_files():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process is writing or replaying it
                try:
                    if os.stat(path).st_ino != os.fstat(fd).st_ino:
                        continue
                except FileNotFoundError:
                    continue
                with os.fdopen(os.dup(fd), "r") as fh:
                    records = [_decode(line) for line in fh if line.strip()]
                batch_size = settings.AUDIT_BATCH_SIZE
                for start in range(0, len(records), batch_size):
                    if not write(records[start : start + batch_size]):
                        # Keep what is not in the database yet.
                        rest = records[start:]
                        tmp = path + ".tmp"
                        with open(tmp, "w") as out:
                            out.writelines(_encode(r) + "\n" for r in rest)
                            out.flush()
                            os.fsync(out.fileno())
                        os.replace(tmp, path)
                        return total
                    total += len(records[start : start + batch_size])
                os.unlink(path)
            finally:
                os.close(fd)
        return total


class AuditWriter:
    """A background thread that inserts queued audit records in batches."""

    def __init__(self):
        self._queue = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        self._stopping = False
        self._db_down_since = None
        self._spool = None
        self._atexit = False
        self.written = 0
        self.spooled = 0

    @property
    def spool(self):
        if self._spool is None:
            directory = settings.AUDIT_SPOOL_DIR or os.path.join(
                tempfile.gettempdir(), "ftpserver_core-audit-spool"
            )
            self._spool = Spool(os.fspath(directory))
        return self._spool

    # --- producer side (the IO loop)

    def put(self, record):
        """Queue one record (a dict of AuditEvent fields); never blocks on the DB."""
        if len(self._queue) >= settings.AUDIT_MAX_QUEUE:
            # The database has been slow for long: keep memory bounded.
            self.spool.append([record])
            self.spooled += 1
            return
        self._queue.append(record)
        if self._thread is None:
            self.start()
        if len(self._queue) >= settings.AUDIT_BATCH_SIZE:
            self._wake.set()

    def pending(self):
        """Return how many records wait in memory."""
        return len(self._queue)

    # --- lifecycle

    def start(self):
        """Start the writer thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="ftpserver-audit", daemon=True
            )
            self._thread.start()
            if not self._atexit:
                # The thread is a daemon: flush before the interpreter exits.
                atexit.register(self.flush)
                self._atexit = True

    def flush(self, timeout=30.0):
        """Write every queued record now; spool what the database refuses.

        Blocks until done (or ``timeout``); then the writer thread has stopped.
        A later put() starts it again.
        """
        with self._lock:
            thread = self._thread
            self._stopping = True
        self._wake.set()
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            if thread is not None and thread.is_alive():
                # The database hangs: do not lose what is still queued.
                self._spill_all()
                return
            self._thread = None
            self._stopping = False
        if self._queue:  # put() raced with the stop
            self._drain()

    # --- the writer thread

    def _run(self):
        try:
            self._replay()
            while True:
                self._wake.wait(settings.AUDIT_INTERVAL)
                self._wake.clear()
                self._drain()
                if self._db_down_since is None:
                    self._replay()
                if self._stopping and not self._queue:
                    return
        except Exception:
            logger.exception("The audit writer failed; spooling what is queued.")
            self._spill_all()
        finally:
            close_old_connections()

    def _drain(self):
        batch_size = settings.AUDIT_BATCH_SIZE
        while self._queue:
            batch = []
            while self._queue and len(batch) < batch_size:
                batch.append(self._queue.popleft())
            if not self._write(batch):
                self.spool.append(batch)
                self.spooled += len(batch)

    def _spill_all(self):
        batch = []
        while self._queue:
            batch.append(self._queue.popleft())
        if batch:
            self.spool.append(batch)
            self.spooled += len(batch)

    def _replay(self):
        count = self.spool.replay(self._write)
        if count:
            logger.info("Replayed %d spooled audit records.", count)

    def _write(self, batch):
        """Insert ``batch``; return False when the database stays unavailable."""
        from .models import AuditEvent

        # While the database is down, try once per batch (no long retries),
        # so the queue drains to the spool instead of piling up in memory.
        attempts = 1 if self._db_down_since else settings.AUDIT_RETRIES + 1
        for attempt in range(attempts):
            try:
                close_old_connections()
                AuditEvent.objects.bulk_create([AuditEvent(**r) for r in batch])
            except (DatabaseError, InterfaceError) as exc:
                self._discard_connection()
                if self._db_down_since is None:
                    logger.warning("Audit insert failed (%s); retrying.", exc)
                if attempt + 1 < attempts:
                    time.sleep(min(2.0, 0.2 * 2**attempt))
                continue
            if self._db_down_since is not None:
                logger.warning(
                    "The database is back after %.1f s; replaying the audit spool.",
                    time.monotonic() - self._db_down_since,
                )
                self._db_down_since = None
            self.written += len(batch)
            return True
        if self._db_down_since is None:
            self._db_down_since = time.monotonic()
            logger.error(
                "The database is unavailable: spooling audit records to %s.",
                self.spool.directory,
            )
        return False

    @staticmethod
    def _discard_connection():
        try:
            connection.close()
        except Exception:  # noqa: S110  (a broken connection may fail to close)
            pass


writer = AuditWriter()


def record(**fields):
    """Queue one audit record (called by the receivers, on the IO loop)."""
    writer.put(fields)
