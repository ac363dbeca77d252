"""The spool: JSON-lines files that keep audit records while the database is down."""

import datetime
import fcntl
import itertools
import json
import logging
import os
import threading
import time

from ..conf import settings

logger = logging.getLogger("ftpserver_core.audit")

_DATETIME_FIELDS = ("time",)


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
