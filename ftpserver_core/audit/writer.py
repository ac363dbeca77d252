"""The audit writer thread: journaled records become rows in batches."""

import atexit
import collections
import logging
import os
import threading
import time

from django.db import (
    DEFAULT_DB_ALIAS,
    DataError,
    Error,
    IntegrityError,
    connection,
    connections,
)

from ..conf import settings
from . import journal as journals
from . import recovery, rows

logger = logging.getLogger("ftpserver_core.audit")

# Seconds after which the writer closes its unused database connection.
CONNECTION_IDLE = 30.0
# Seconds between two probes of a database that is down.
PROBE_INTERVAL = 1.0
# Seconds between two looks for the journals of processes that are gone.
RECOVER_INTERVAL = 60.0
# Seconds between two log lines about a journal that cannot be written.
BROKEN_LOG_INTERVAL = 60.0


def _bad_data(exc):
    """True when a failed insert says the data is wrong, not the database away.

    DataError and IntegrityError come from the values; so does anything that
    is no database error (a field that does not exist, a value Django cannot
    adapt). Every other database error (OperationalError, InterfaceError,
    ProgrammingError such as a missing table, ...) means "unavailable".
    """
    return isinstance(exc, DataError | IntegrityError) or not isinstance(exc, Error)


class _Marker:
    """Put in the queue by flush(): set once every record before it is handled."""

    __slots__ = ("done",)

    def __init__(self):
        self.done = threading.Event()


class AuditWriter:
    """A background thread that inserts journaled audit records in batches."""

    def __init__(self):
        self._queue = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        self._stopping = False
        self._journal = None
        self._journal_key = None
        self._down_since = None
        self._next_probe = 0.0
        self._next_recover = 0.0
        self._last_insert = 0.0
        self._broken_logged = 0.0
        self._atexit = False
        self.written = 0
        self.rejected = 0
        self.replayed = 0
        # The most records ever held in memory (never above AUDIT_MAX_QUEUE).
        self.peak_pending = 0

    # --- the journal (created on first use, for the current settings)

    @property
    def journal(self):
        """This process's journal in the configured directory, for this database."""
        # Called for every command that records: a cheap check first.
        db = connections.settings[DEFAULT_DB_ALIAS]
        current = self._journal
        if current is not None and self._journal_key == (
            settings.generation,
            db.get("NAME"),
        ):
            return current
        with self._lock:
            key = (settings.generation, db.get("NAME"))
            if self._journal is None or self._journal_key != key:
                self._switch_journal(journal_dir(), journals.database_id(db))
                self._journal_key = key
            return self._journal

    def _switch_journal(self, directory, database):
        # With self._lock held. Settings changed: keep the journal if it is
        # still the same directory and database.
        old = self._journal
        if old is not None and (old.directory, old.database) == (directory, database):
            old.fsync = settings.AUDIT_FSYNC
            old.max_queue = settings.AUDIT_MAX_QUEUE
            return
        journal = journals.Journal(
            directory,
            database,
            fsync=settings.AUDIT_FSYNC,
            max_queue=settings.AUDIT_MAX_QUEUE,
        )
        journal.queue = self._queue if self._down_since is None else None
        if old is not None:
            # Its files become another instance's: recovered (without
            # duplicates) by the next look for orphans.
            old.release()
            self._next_recover = 0.0
        self._journal = journal

    # --- producer side (the IO loop)

    def put(self, record):
        """Journal one record (a dict of AuditEvent fields) and queue it."""
        journal = self.journal
        journal.add(record)
        pending = len(self._queue)
        if pending > self.peak_pending:
            self.peak_pending = pending
        thread = self._thread
        # is_alive() costs a lock round per call: a writer that died (it
        # never should) is restarted within 64 records, which the journal
        # holds meanwhile.
        if (
            thread is None
            or self._stopping
            or (not pending & 63 and not thread.is_alive())
        ):
            self.start()
        if pending >= settings.AUDIT_BATCH_SIZE or pending >= settings.AUDIT_MAX_QUEUE:
            self._wake.set()

    def pending(self):
        """Return how many records wait in memory."""
        return len(self._queue) + (len(self._journal.fallback) if self._journal else 0)

    # --- for the metrics and the health check (read from another thread)

    def journal_segments(self):
        """Return how many journal segment files this process holds."""
        journal = self._journal
        if journal is None:
            return 0
        return len(journal._closed) + (journal._current is not None)

    def lag(self):
        """Return the seconds the oldest record not in the database has waited."""
        now = time.time()
        oldest = now
        journal = self._journal
        for queue in (self._queue, journal.fallback if journal else ()):
            # Peeked by index: iterating a deque the loop appends to raises.
            for index in range(2):  # a flush marker may come first
                try:
                    item = queue[index]
                except IndexError:
                    break
                if isinstance(item, dict):
                    oldest = min(oldest, item.get("time") or now)
                    break
        lag = now - oldest
        down_since = self._down_since
        # The database is down: records wait in the journal only.
        if (
            down_since is not None
            and journal is not None
            and (journal.to_replay() or journal.current_size())
        ):
            lag = max(lag, time.monotonic() - down_since)
        return max(0.0, lag)

    # --- lifecycle

    def start(self):
        """Start the writer thread (idempotent); it first recovers old journals."""
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
            atexit.register(self._at_exit)
            self._atexit = True
        return thread

    def _at_exit(self):
        # Every record is in the journal already: a short last chance only.
        self.flush(timeout=min(2.0, settings.SHUTDOWN_TIMEOUT))

    def flush(self, timeout=30.0):
        """Write every record queued so far to the database.

        Blocks until every record put before the call is in the database, or
        ``timeout`` seconds passed (the database is down or hangs): what is
        left stays in the journal, which the next start replays. Returns True
        when everything was written.
        """
        deadline = time.monotonic() + timeout
        marker = _Marker()
        with self._lock:
            self._queue.append(marker)
            self._stopping = True
            thread = self._start(stopping=True)
        self._wake.set()
        if not marker.done.wait(max(0.0, timeout)):
            logger.warning(
                "The database did not take every audit record in %.1f s: %d records "
                "stay in the journal in %s and are written at the next start.",
                timeout,
                self.pending(),
                self.journal.directory,
            )
            return False
        # Let the thread end (its stop is prompt) unless new records came.
        while thread.is_alive() and not self._queue:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            thread.join(min(left, 0.05))
        if self._down_since is not None:
            return False
        # Everything is in the database: no journal file is left for the next
        # start to read back.
        self.journal.settle()
        return True

    # --- the writer thread

    def _run(self):
        try:
            self._recover()
            while True:
                self._wake.wait(settings.AUDIT_INTERVAL)
                self._wake.clear()
                if self._down_since is not None:
                    self._probe()
                if self._down_since is None:
                    self._drain()
                self._release_markers()
                if not self._stopping:
                    self._housekeeping()
                with self._lock:
                    if self._stopping and (
                        not self._queue or self._down_since is not None
                    ):
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
        except Exception:
            logger.exception("The audit writer failed; records stay in the journal.")
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
        finally:
            self._release_markers(everything=True)
            self._discard_connection()

    def _release_markers(self, everything=False):
        """Wake flush() callers whose records are handled (or never will be)."""
        queue = self._queue
        if everything or self._down_since is not None:
            for item in self._markers():
                try:
                    queue.remove(item)
                except ValueError:
                    pass
                item.done.set()
        else:
            journal = self._journal
            if journal is not None and journal.overflowed:
                # Records journaled before the marker did not fit in the
                # queue: the marker waits for their replay (the next
                # _drain's), which starts at once. Released here, flush()
                # returned True with them still on disk only.
                self._wake.set()
                return
            while queue and isinstance(queue[0], _Marker):
                queue.popleft().done.set()

    def _markers(self):
        return [item for item in self._queue if isinstance(item, _Marker)]

    def _next_batch(self, size):
        """Pop up to ``size`` records, stopping at a flush marker."""
        batch = []
        queue = self._queue
        while queue and len(batch) < size:
            item = queue[0]
            if isinstance(item, _Marker):
                break
            batch.append(queue.popleft())
        return batch

    def _drain(self):
        journal = self.journal
        if journal.overflowed:
            # The queue was full: what did not fit is read back from disk.
            self._rotate_for_replay(journal)
        if journal.fallback:
            self._write_fallback(journal)
        if self._replay_own(journal) is False:
            return
        batch_size = max(1, settings.AUDIT_BATCH_SIZE)
        while self._down_since is None:
            self._release_markers()
            batch = self._next_batch(batch_size)
            if not batch:
                break
            if not self._write(batch, rows.insert):
                journal.keep_in_memory(batch)
                self._go_down(journal)
                return
            journal.written(batch)
            journal.trim_to(batch[-1]["uid"])
        if journal.current_size() > journals.SEGMENT_BYTES:
            journal.rotate()

    def _write_fallback(self, journal):
        # Records the journal could not hold: memory is all they have.
        batch = list(journal.fallback)
        if self._write(batch, rows.insert_new):
            for _ in batch:
                journal.fallback.popleft()

    def _go_down(self, journal):
        """The database is unavailable: records now live in the journal only."""
        # Before the rotation clears the queue, markers and all: a flush()
        # waiting behind the failed batch learns now that the database is
        # down (it waited its whole timeout, then the next stop's too).
        with self._lock:  # no flush() marker queued in between (see _drain)
            self._release_markers(everything=True)
            journal.rotate(replay=True, queue=None)

    def _probe(self):
        now = time.monotonic()
        if now < self._next_probe and not self._stopping:
            return
        self._next_probe = now + PROBE_INTERVAL
        try:
            self._check_connection()
        except Exception:
            self._discard_connection()
            return
        logger.warning(
            "The database is back after %.1f s; writing the journaled audit records.",
            now - self._down_since,
        )
        self._down_since = None
        # Resume queueing in the same step as closing the segment that holds
        # the records written meanwhile (all read back below).
        self._rotate_for_replay(self.journal)

    def _rotate_for_replay(self, journal):
        """Rotate ``journal`` for a replay and queue again; keep flush() markers.

        The rotation clears the queue: its flush() markers go back in after
        it, released once the replay has written. Under the lock flush()
        queues its marker with: one queued between a look at the queue and
        the rotation was cleared with it, and its flush() waited its whole
        timeout (a server's stop: 10 s, its thread outliving the stop).
        ``journal`` is taken before: the ``journal`` property may take the
        lock itself.
        """
        with self._lock:
            markers = self._markers()
            journal.rotate(replay=True, queue=self._queue)
            self._queue.extendleft(reversed(markers))

    def _check_connection(self):
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    def _replay_own(self, journal):
        """Read back this process's segments whose records left memory."""
        for segment in journal.to_replay():
            bad = []
            records = [
                item
                for item in journals.read_lines(segment.path, bad)
                if "_begin" not in item and "_end" not in item
            ]
            self._keep_bad(bad)
            if not self._write_all(records):
                self._go_down(journal)
                return False
            journal.replayed(segment)
        return True

    def _write_all(self, records):
        batch_size = max(1, settings.AUDIT_BATCH_SIZE)
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            if not self._write(batch, rows.insert_new):
                return False
            self.replayed += len(batch)
        return True

    def _housekeeping(self):
        now = time.monotonic()
        if now >= self._next_recover:
            self._next_recover = now + RECOVER_INTERVAL
            self._recover()
        journal = self._journal
        if (
            journal is not None
            and (journal.broken is not None or journal.dropped)
            and now - self._broken_logged >= BROKEN_LOG_INTERVAL
        ):
            self._broken_logged = now
            logger.error(
                "Cannot write the audit journal in %s (%s): %d records are "
                "held in memory only, %d lost (no database, disk or memory left).",
                journal.directory,
                journal.broken,
                len(journal.fallback),
                journal.dropped,
            )
        if (
            connection.connection is not None
            and now - self._last_insert > CONNECTION_IDLE
        ):
            self._discard_connection()

    def _recover(self):
        """Write the journals of processes that are gone into the database."""
        if self._down_since is not None:
            return
        try:
            journal = self.journal
            orphans = journal.orphans()
        except OSError as exc:
            logger.error("Cannot read the audit journal directory: %s", exc)
            return
        for instance, paths in orphans.items():
            try:
                count = recovery.recover(paths, self._write_all, self._keep_bad)
            except OSError as exc:
                logger.error("Cannot recover the audit journal %s: %s", paths, exc)
                continue
            if count is None:
                # The database failed meanwhile.
                self._mark_down(None)
                return
            if count:
                logger.warning(
                    "Recovered %d audit records from the journal of a process "
                    "that stopped (%s).",
                    count,
                    instance,
                )

    def _keep_bad(self, bad):
        if not bad:
            return
        path = journals.keep_bad(self.journal.directory, [raw for _, _, raw, _ in bad])
        for source, number, _raw, why in bad:
            logger.error(
                "Unreadable line %d of the audit journal %s (%s): kept in %s.",
                number,
                source,
                why,
                path,
            )

    def _write(self, batch, insert):
        """Insert ``batch``; False when the database is unavailable."""
        attempts = settings.AUDIT_RETRIES + 1
        error = None
        for attempt in range(attempts):
            if attempt:
                if self._stopping:
                    break
                time.sleep(min(2.0, 0.2 * 2 ** (attempt - 1)))
            try:
                self._insert(batch, insert)
            except Exception as exc:
                if _bad_data(exc):
                    return self._write_each(batch, insert)
                error = exc
                self._discard_connection()
                if attempt == 0:
                    logger.warning("Audit insert failed (%s); retrying.", exc)
                continue
            self.written += len(batch)
            return True
        self._mark_down(error)
        return False

    def _write_each(self, batch, insert):
        """Insert records one by one; put those the database refuses aside."""
        self._discard_connection()
        refused = []
        for record in batch:
            try:
                self._insert([record], rows.insert_new)
            except Exception as exc:
                self._discard_connection()
                if not _bad_data(exc):
                    self._mark_down(exc)
                    return False
                refused.append(record)
                logger.error("The database refused an audit record (%s).", exc)
                continue
            self.written += 1
        if refused:
            self.rejected += len(refused)
            path = journals.keep_bad(
                self.journal.directory,
                [journals._dumps(rows.fields(r)).encode() for r in refused],
            )
            logger.error("%d refused audit record(s) kept in %s.", len(refused), path)
        return True

    def _insert(self, batch, insert):
        # The connection stays open while records flow; one unused for a
        # while may have been dropped by the server: start afresh.
        if time.monotonic() - self._last_insert > CONNECTION_IDLE:
            self._discard_connection()
        insert(batch)
        self._last_insert = time.monotonic()

    def _mark_down(self, error):
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._next_probe = self._down_since + PROBE_INTERVAL
            logger.error(
                "The database is unavailable (%s): audit records are kept in the "
                "journal in %s until it is back.",
                error,
                self.journal.directory,
            )

    @staticmethod
    def _discard_connection():
        try:
            connection.close()
        except Exception:  # noqa: S110  (a broken connection may fail to close)
            pass


def journal_dir():
    """Return the journal directory: the setting, or one derived from the project."""
    from django.conf import settings as django_settings
    from django.core.exceptions import ImproperlyConfigured

    configured = settings.AUDIT_JOURNAL_DIR or settings.AUDIT_SPOOL_DIR
    if configured:
        return os.fspath(configured)
    for name, sub in (("DATA_DIR", "audit-journal"), ("BASE_DIR", "var/audit-journal")):
        base = getattr(django_settings, name, None)
        if base:
            return os.path.join(os.fspath(base), *sub.split("/"))
    raise ImproperlyConfigured(
        "FTPSERVER_AUDIT_JOURNAL_DIR is not set and the settings have no BASE_DIR "
        "to derive it from; set it to a directory of this project (not a "
        "temporary directory)."
    )
