"""The audit writer: FTP events become database rows, off the IO loop.

Receivers call :func:`record`, which appends a dict to an in-memory queue
(microseconds). A background thread bulk-inserts the queue every
``FTPSERVER_AUDIT_INTERVAL`` seconds or ``FTPSERVER_AUDIT_BATCH_SIZE``
records. When the database fails it retries; when it stays down, batches go
to a spool file (JSON lines) that is replayed once the database answers
again, and at the next start. A graceful stop flushes everything. The queue
is bounded: past ``FTPSERVER_AUDIT_MAX_QUEUE`` records, new ones go straight
to the spool, so memory stays bounded and nothing is dropped.

Spool files are ``spool-<pid>-<n>.jsonl`` in ``FTPSERVER_AUDIT_SPOOL_DIR``;
any process may replay any of them (it holds an exclusive ``flock`` on the
file while it does). A writer never waits for that lock: when a replayer holds
its file, it starts a new one. A line that cannot be read back goes, as is, to
``<spool file>.bad``; a record that the database refuses as invalid even
after cleaning goes to ``rejected-<pid>-<n>.jsonl.bad``. Both are logged;
fix such a file and rename it to ``spool-<anything>.jsonl`` to replay it.
"""

import atexit
import collections
import datetime
import fcntl
import itertools
import json
import logging
import os
import socket
import tempfile
import threading
import time

from django.db import (
    DataError,
    Error,
    IntegrityError,
    close_old_connections,
    connection,
)

from .conf import settings

logger = logging.getLogger(__name__)

_DATETIME_FIELDS = ("time",)


def _bad_data(exc):
    """True when a failed insert says the data is wrong, not the database away.

    DataError and IntegrityError come from the values; so does anything that
    is no database error (a field that does not exist, a value Django cannot
    adapt). Every other database error (OperationalError, InterfaceError,
    ProgrammingError such as a missing table, ...) means "unavailable": keep
    the records and retry later.
    """
    return isinstance(exc, DataError | IntegrityError) or not isinstance(exc, Error)


_HOSTNAME = socket.gethostname()


def node_name():
    """Return this server node's name (FTPSERVER_NODE_NAME or the host name)."""
    return settings.NODE_NAME or _HOSTNAME


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
    if not isinstance(record, dict):
        raise ValueError(f"a spool line holds a {type(record).__name__}, not a record")
    for name in _DATETIME_FIELDS:
        if isinstance(record.get(name), str):
            record[name] = datetime.datetime.fromisoformat(record[name])
    return record


_TEXT_LIMITS = None


def _text_limits():
    """Return {field name: max_length or None} of AuditEvent's text fields."""
    global _TEXT_LIMITS
    if _TEXT_LIMITS is None:
        from django.db import models

        from .models import AuditEvent

        _TEXT_LIMITS = {
            f.attname: f.max_length
            for f in AuditEvent._meta.concrete_fields
            if isinstance(f, models.CharField | models.TextField)
        }
    return _TEXT_LIMITS


def _clean(record):
    """Return ``record`` made storable: no NUL, valid UTF-8, within max_length.

    Client-supplied text (a username typed at USER, a path) may hold what a
    database refuses; the record is kept, with those characters replaced.
    """
    limits = _text_limits()
    cleaned = {}
    for name, value in record.items():
        if isinstance(value, str) and name in limits:
            value = str(value)
            if "\x00" in value:
                value = value.replace("\x00", "\ufffd")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates
                value = value.encode("utf-8", "replace").decode("utf-8")
            limit = limits[name]
            if limit and len(value) > limit:
                value = value[:limit]
        cleaned[name] = value
    return cleaned


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Spool:
    """Append-only JSON-lines files that hold records while the database is down."""

    _names = itertools.count()

    def __init__(self, directory):
        self.directory = directory
        self.pid = os.getpid()
        # Serializes this process's appenders (the IO loop and the writer
        # thread); they only ever wait for each other's disk writes.
        self._lock = threading.Lock()
        self.path = self._new_path("spool-", ".jsonl")
        self.rejected_path = self._new_path("rejected-", ".jsonl.bad")

    def _new_path(self, prefix, suffix):
        return os.path.join(
            self.directory,
            f"{prefix}{self.pid}-{time.time_ns()}-{next(self._names)}{suffix}",
        )

    def append(self, records):
        """Write ``records`` durably to this process's spool file.

        Never waits for another process: if a replayer holds the current
        file, the records go to a new one.
        """
        data = "".join(_encode(r) + "\n" for r in records).encode()
        with self._lock:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            while True:
                fd = os.open(
                    self.path,
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                    0o600,
                )
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        # A replayer is writing this file to the database.
                        self.path = self._new_path("spool-", ".jsonl")
                        continue
                    # A replayer may have taken and removed or replaced it.
                    try:
                        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                    except FileNotFoundError:
                        same = False
                    if not same:
                        continue
                    size = os.fstat(fd).st_size
                    try:
                        _write_all(fd, data)
                        os.fsync(fd)
                    except OSError:
                        # No half line that would glue to the next record.
                        try:
                            os.ftruncate(fd, size)
                        except OSError:
                            pass
                        raise
                    return
                finally:
                    os.close(fd)

    def reject(self, records, error):
        """Keep records the database refused, as JSON lines, in a .bad file."""
        logger.error(
            "The database refused %d audit record(s) (%s); kept in %s.",
            len(records),
            error,
            self.rejected_path,
        )
        self._keep_bad(self.rejected_path, [_encode(r).encode() for r in records])

    def _keep_bad(self, bad_path, lines):
        with self._lock:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(
                bad_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                _write_all(fd, b"".join(line.rstrip(b"\r\n") + b"\n" for line in lines))
                os.fsync(fd)
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

    def replay(self, write, stop=None):
        """Hand every spooled record to ``write(batch)``; remove files it took.

        ``write`` returns the records of ``batch`` it could not write (an
        empty list when all are in the database). Returns the number of
        records replayed. Stops at the first failure, or when ``stop()``
        turns true between batches, leaving the rest (in its file) for later.
        Files another process holds are skipped.
        """
        total = 0
        for path in self.pending_files():
            if stop is not None and stop():
                break
            count, complete = self._replay_file(path, write, stop)
            total += count
            if not complete:
                break
        return total

    def _replay_file(self, path, write, stop=None):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0, True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0, True  # another process is replaying it
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    return 0, True  # replaced meanwhile: the next pass takes it
            except FileNotFoundError:
                return 0, True
            batch_size = max(1, settings.AUDIT_BATCH_SIZE)
            total = 0
            bad = []  # (offset, line number, raw line, error)
            batch = []
            offset = 0
            with os.fdopen(os.dup(fd), "rb") as fh:
                lines = enumerate(fh, 1)
                for lineno, line in itertools.chain(lines, [(None, None)]):
                    if line is not None:
                        start, offset = offset, offset + len(line)
                        if not line.strip():
                            continue
                        try:
                            batch.append(_decode(line))
                        except ValueError as exc:
                            bad.append((start, lineno, line, exc))
                        if len(batch) < batch_size:
                            continue
                    elif not batch:
                        break
                    rest = write(batch)
                    total += len(batch) - len(rest)
                    batch = []
                    if rest or (line is not None and stop is not None and stop()):
                        # Keep what is not in the database yet: the rest of
                        # this batch, then the lines not read so far.
                        self._keep_bad_lines(path, [b for b in bad if b[0] < offset])
                        self._rewrite(path, rest, fh, offset)
                        return total, False
            self._keep_bad_lines(path, bad)
            os.unlink(path)
            return total, True
        finally:
            os.close(fd)

    def _keep_bad_lines(self, path, bad):
        if not bad:
            return
        for _, lineno, _line, exc in bad:
            logger.error(
                "Unreadable line %d of the audit spool %s (%s): kept in %s.bad.",
                lineno,
                path,
                exc,
                path,
            )
        self._keep_bad(path + ".bad", [line for _, _, line, _ in bad])

    @staticmethod
    def _rewrite(path, records, fh, offset):
        tmp = path + ".tmp"
        with open(tmp, "wb") as out:
            out.writelines((_encode(r) + "\n").encode() for r in records)
            fh.seek(offset)
            while chunk := fh.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)


class _Marker:
    """Put in the queue by flush(): set once every record before it is handled."""

    __slots__ = ("done",)

    def __init__(self):
        self.done = threading.Event()


class AuditWriter:
    """A background thread that inserts queued audit records in batches."""

    def __init__(self):
        self._queue = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        self._stopping = False
        self._db_down_since = None
        self._next_probe = 0.0
        self._spool = None
        self._spool_failed = False
        self._atexit = False
        # The batch the writer thread is inserting, since when, and whether
        # flush() gave up waiting and spooled it.
        self._inflight = None
        self._inflight_since = 0.0
        self._inflight_spooled = False
        self.written = 0
        self.spooled = 0
        self.rejected = 0
        # The most records ever held in memory (never above AUDIT_MAX_QUEUE).
        self.peak_pending = 0

    @property
    def spool(self):
        """The spool of this process in FTPSERVER_AUDIT_SPOOL_DIR (read each time)."""
        directory = os.fspath(
            settings.AUDIT_SPOOL_DIR
            or os.path.join(tempfile.gettempdir(), "ftpserver_core-audit-spool")
        )
        spool = self._spool
        if spool is None or spool.directory != directory or spool.pid != os.getpid():
            spool = self._spool = Spool(directory)
        return spool

    # --- producer side (the IO loop)

    def put(self, record):
        """Queue one record (a dict of AuditEvent fields); never blocks on the DB."""
        if len(self._queue) >= settings.AUDIT_MAX_QUEUE:
            # The database has been slow for long: keep memory bounded.
            try:
                self.spool.append([record])
            except OSError:
                # No database and no disk: memory is the last place left.
                if not self._spool_failed:
                    logger.exception(
                        "Cannot write the audit spool: keeping records in memory."
                    )
                    self._spool_failed = True
                self._queue.append(record)
            else:
                self.spooled += 1
        else:
            self._queue.append(record)
        pending = len(self._queue)
        if pending > self.peak_pending:
            self.peak_pending = pending
        thread = self._thread
        if thread is None or self._stopping or not thread.is_alive():
            # Under the lock: a stopping thread either sees this record or
            # has ended (then a new one starts).
            self.start()
        if pending >= settings.AUDIT_BATCH_SIZE:
            self._wake.set()

    def pending(self):
        """Return how many records wait in memory."""
        return len(self._queue)

    # --- lifecycle

    def start(self):
        """Start the writer thread (idempotent); it first replays the spool."""
        with self._lock:
            self._start()

    def _start(self, stopping=False):
        # With self._lock held.
        thread = self._thread
        if thread is not None and thread.is_alive():
            return thread
        self._stopping = stopping
        thread = self._thread = threading.Thread(
            target=self._run, name="ftpserver-audit", daemon=True
        )
        thread.start()
        if not self._atexit:
            # The thread is a daemon: flush before the interpreter exits.
            atexit.register(self.flush)
            self._atexit = True
        return thread

    def flush(self, timeout=30.0):
        """Write every record queued so far; spool what the database refuses.

        Blocks until every record put before the call is in the database or
        the spool, then lets the writer thread end unless records keep
        coming (a later put() starts it again). After ``timeout`` seconds
        (the database hangs), what is left goes to the spool, and False is
        returned.
        """
        deadline = time.monotonic() + timeout
        marker = _Marker()
        with self._lock:
            self._queue.append(marker)
            self._stopping = True
            thread = self._start(stopping=True)
        self._wake.set()
        if not marker.done.wait(timeout):
            with self._lock:
                # Also the batch the thread has been stuck with for long.
                stuck = time.monotonic() - self._inflight_since >= min(1.0, timeout)
                self._spill_all(with_inflight=stuck)
            marker.done.set()
            return False
        # Let the thread end (its stop is prompt) unless new records came.
        while thread.is_alive() and not self._queue:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            thread.join(min(left, 0.05))
        return True

    # --- the writer thread

    def _run(self):
        try:
            self._replay()
            while True:
                self._wake.wait(settings.AUDIT_INTERVAL)
                self._wake.clear()
                drained = self._drain()
                if not self._stopping:
                    self._maybe_replay()
                with self._lock:
                    if self._stopping and (not self._queue or not drained):
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
        except Exception:
            logger.exception("The audit writer failed; spooling what is queued.")
            with self._lock:
                self._spill_all()
        finally:
            self._discard_connection()

    def _next_batch(self, size):
        """Pop up to ``size`` records, stopping after a flush marker."""
        batch, markers = [], []
        while self._queue and len(batch) < size:
            item = self._queue.popleft()
            if isinstance(item, _Marker):
                markers.append(item)
                break
            batch.append(item)
        return batch, markers

    def _drain(self):
        """Write (or spool) the queue; False if a batch could go nowhere."""
        batch_size = max(1, settings.AUDIT_BATCH_SIZE)
        while self._queue:
            batch, markers = self._next_batch(batch_size)
            rest = []
            if batch:
                with self._lock:
                    self._inflight, self._inflight_spooled = batch, False
                    self._inflight_since = time.monotonic()
                try:
                    rest = self._write(batch)
                except Exception:
                    logger.exception("Unexpected error writing audit records.")
                    rest = batch
            with self._lock:
                self._inflight = None
                if self._inflight_spooled:
                    # flush() timed out and spooled this batch meanwhile.
                    if len(rest) < len(batch):
                        logger.warning(
                            "%d audit records were written after a flush gave up "
                            "waiting and spooled them: they will be duplicated.",
                            len(batch) - len(rest),
                        )
                elif rest and not self._to_spool(rest, markers):
                    return False
            for marker in markers:
                marker.done.set()
        return True

    def _to_spool(self, records, markers=()):
        """Spool ``records`` (lock held); on a disk error put them back."""
        try:
            self.spool.append(records)
        except OSError:
            logger.exception(
                "Cannot write the audit spool: keeping %d records in memory.",
                len(records),
            )
            self._spool_failed = True
            self._queue.extendleft(reversed([*records, *markers]))
            return False
        self._spool_failed = False
        self.spooled += len(records)
        return True

    def _spill_all(self, with_inflight=False):
        """Spool the queue (lock held), and the in-flight batch if asked."""
        batch, markers = [], []
        if with_inflight and self._inflight and not self._inflight_spooled:
            batch.extend(self._inflight)
            self._inflight_spooled = True
        while self._queue:
            item = self._queue.popleft()
            (markers if isinstance(item, _Marker) else batch).append(item)
        if batch:
            self._to_spool(batch)
        for marker in markers:
            marker.done.set()

    def _maybe_replay(self):
        # While the database is down, probe it (with the spool's first batch)
        # once a second at most, so the spool is replayed soon after it comes
        # back even when no new event arrives.
        now = time.monotonic()
        if self._db_down_since is None or now >= self._next_probe:
            self._next_probe = now + max(1.0, settings.AUDIT_INTERVAL)
            self._replay()

    def _replay(self):
        try:
            count = self.spool.replay(self._write, stop=lambda: self._stopping)
        except OSError:
            logger.exception("Cannot replay the audit spool.")
            return
        if count:
            logger.info("Replayed %d spooled audit records.", count)

    def _write(self, batch):
        """Insert ``batch``; return the records not written (database unavailable)."""
        # While the database is down, try once per batch (no long retries),
        # so the queue drains to the spool instead of piling up in memory.
        attempts = 1 if self._db_down_since else settings.AUDIT_RETRIES + 1
        error = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(2.0, 0.2 * 2 ** (attempt - 1)))
            try:
                self._insert(batch)
            except Exception as exc:
                if _bad_data(exc):
                    # One bad record must not hold back (or keep spooling)
                    # the others.
                    return self._write_each(batch)
                error = exc
                self._discard_connection()
                if self._db_down_since is None:
                    logger.warning("Audit insert failed (%s); retrying.", exc)
                continue
            self._mark_up()
            self.written += len(batch)
            return []
        self._mark_down(error)
        return batch

    def _write_each(self, batch):
        """Insert records one by one; put those the database refuses aside."""
        self._discard_connection()
        for index, record in enumerate(batch):
            try:
                self._insert([record])
            except Exception as exc:
                self._discard_connection()
                if not _bad_data(exc):
                    self._mark_down(exc)
                    return batch[index:]
                self.spool.reject([record], exc)
                self.rejected += 1
                continue
            self._mark_up()
            self.written += 1
        return []

    @staticmethod
    def _insert(batch):
        from .models import AuditEvent

        close_old_connections()
        AuditEvent.objects.bulk_create([AuditEvent(**_clean(r)) for r in batch])
        # As at the end of a request: with CONN_MAX_AGE = 0 no connection
        # stays open between batches.
        close_old_connections()

    def _mark_up(self):
        if self._db_down_since is not None:
            logger.warning(
                "The database is back after %.1f s; replaying the audit spool.",
                time.monotonic() - self._db_down_since,
            )
            self._db_down_since = None

    def _mark_down(self, error):
        if self._db_down_since is None:
            self._db_down_since = time.monotonic()
            self._next_probe = self._db_down_since + max(1.0, settings.AUDIT_INTERVAL)
            logger.error(
                "The database is unavailable (%s): spooling audit records to %s.",
                error,
                self.spool.directory,
            )

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


def _reset_in_child():
    # A forked worker must not share (or think it has) the parent's writer
    # thread, queue or spool file.
    writer.__init__()


os.register_at_fork(after_in_child=_reset_in_child)
