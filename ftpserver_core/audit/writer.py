"""The audit writer thread: queued records become rows in batches."""

import atexit
import collections
import logging
import os
import tempfile
import threading
import time

from django.db import DataError, Error, IntegrityError, connection

from ..conf import settings
from . import rows
from .spool import Spool

logger = logging.getLogger("ftpserver_core.audit")

# Seconds after which the writer closes its unused database connection.
CONNECTION_IDLE = 30.0


def _bad_data(exc):
    """True when a failed insert says the data is wrong, not the database away.

    DataError and IntegrityError come from the values; so does anything that
    is no database error (a field that does not exist, a value Django cannot
    adapt). Every other database error (OperationalError, InterfaceError,
    ProgrammingError such as a missing table, ...) means "unavailable": keep
    the records and retry later.
    """
    return isinstance(exc, DataError | IntegrityError) or not isinstance(exc, Error)


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
        self._last_insert = 0.0
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
                    self._close_idle_connection()
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

    def _insert(self, batch):
        # The connection stays open while records flow (a connect per batch
        # costs PostgreSQL milliseconds of the loop's GIL time); one unused
        # for a while may have been dropped by the server: start afresh.
        now = time.monotonic()
        if now - self._last_insert > CONNECTION_IDLE:
            self._discard_connection()
        rows.insert(batch)
        self._last_insert = time.monotonic()

    def _close_idle_connection(self):
        if (
            connection.connection is not None
            and time.monotonic() - self._last_insert > CONNECTION_IDLE
        ):
            self._discard_connection()

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
