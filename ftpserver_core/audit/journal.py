"""The journal: every audit record on local disk before its reply leaves.

Records are appended as JSON lines to segment files
``journal-<database id>-<instance>-<n>.jsonl`` in the journal directory.
The IO loop buffers the records of one reply (see ``batch()`` in
``audit/__init__.py``) and writes them with one ``write()`` before the reply
is sent: a process killed at any moment leaves every acknowledged event on
disk (in the page cache; ``FTPSERVER_AUDIT_FSYNC`` adds ``fsync`` for power
loss). The writer thread trims segments once the database has their records.

A process holds an exclusive ``flock`` on each of its segments while it
lives; any process of the same database recovers the segments of a process
that is gone (their locks are free), skipping records already in the
database (every record has a unique ``uid``). File names carry the database
identity, so a journal is only ever replayed into its own database.

Besides records, the journal holds the uploads in progress: a ``_begin``
line (the record the upload gets if the process dies, with its temporary
file) and an ``_end`` line written with the upload's own record. Recovery
records the begins that have no end as ``upload_incomplete`` and removes the
temporary files of atomic uploads.
"""

import collections
import datetime
import fcntl
import hashlib
import json
import json.encoder
import logging
import os
import re
import secrets
import threading

logger = logging.getLogger("ftpserver_core.audit")

# A segment is closed (and a new one started) past this size.
SEGMENT_BYTES = 8 << 20
# A segment's file is given this size (sparse) when it is born, and written
# with pwrite() inside it: an append that grows a file makes ext4 update its
# inode in the journal of the filesystem each time, and wait behind the
# database's fsync() (small-file STOR 0.65x bare on ext4, 0.86x on tmpfs).
# Readers stop at the zeros after the last line.
PREALLOCATE = 2 * SEGMENT_BYTES

_NAME_RE = re.compile(
    r"^journal-(?P<db>[0-9a-f]+)-(?P<instance>[0-9a-f]+)-(?P<n>\d+)\.jsonl$"
)


def _default(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot be journaled: {value!r}")


try:
    # The C encoder made once: json.dumps() builds one per call (a third of
    # its cost on the IO loop). ASCII output: paths with undecodable bytes
    # (lone surrogates) stay encodable.
    _encode = json.encoder.c_make_encoder(
        None,
        _default,
        json.encoder.c_encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )

    def _dumps(record):
        return "".join(_encode(record, 0))

except TypeError:  # no C accelerator  # pragma: no cover
    _dumps = json.JSONEncoder(separators=(",", ":"), default=_default).encode


def database_id(settings_dict):
    """Return a short identity of a database from its connection settings."""
    name = str(settings_dict.get("NAME") or "")
    engine = settings_dict.get("ENGINE", "")
    if engine.endswith("sqlite3") and name and not name.startswith(":memory:"):
        name = os.path.realpath(name)
    identity = "|".join(
        (
            engine.rsplit(".", 1)[-1],
            str(settings_dict.get("HOST") or ""),
            str(settings_dict.get("PORT") or ""),
            name,
        )
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class _Segment:
    __slots__ = ("path", "fd", "size", "allocated", "max_seq", "replay")

    def __init__(self, path, fd):
        self.path = path
        self.fd = fd
        self.size = 0
        self.allocated = 0
        self.max_seq = -1
        # True once its records are no longer in the writer's queue: they
        # must be read back from disk.
        self.replay = False


class Journal:
    """This process's journal segments in one directory, for one database."""

    def __init__(self, directory, database, fsync=False, max_queue=100_000):
        self.directory = os.fspath(directory)
        self.database = database
        self.fsync = fsync
        self.instance = secrets.token_hex(8)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._buffer = []  # encoded lines not written yet
        self._buffer_records = []  # their records that are not queued
        self._buffer_seq = 0
        self._batching = 0
        # The writer's queue (None while it reads the journal back instead)
        # and where records go when the journal cannot be written.
        self.queue = None
        self.fallback = collections.deque()
        self.max_queue = max_queue
        # Set when a record was journaled but not queued because the queue
        # was full: the writer reads the journal back.
        self.overflowed = False
        self.dropped = 0  # records lost: no database, no disk, no memory left
        self._buffer_queued = []  # records of the buffer also in the queue
        self.memory_only = set()  # uids of queued records no segment holds
        self._seq = 0
        self._segno = 0
        self._current = None
        self._closed = []  # _Segment, oldest first
        self._open_begins = {}  # uid -> encoded _begin line
        self.broken = None  # the OSError of the last failed write, if any
        self.released = False
        self.committed = 0

    # --- names

    @staticmethod
    def seq_of(uid):
        return int(uid[16:], 16)

    def _segment_path(self, number):
        return os.path.join(
            self.directory,
            f"journal-{self.database}-{self.instance}-{number:06d}.jsonl",
        )

    # --- writing (any thread; the IO loop in practice)

    def add(self, record):
        """Give ``record`` a uid and journal it; queue it for the writer.

        Written at once unless a batch is open. While the writer reads the
        journal back instead (``queue`` is None: the database is down), the
        record stays on disk only; if the disk fails too, it goes to
        ``fallback`` (memory).
        """
        with self._lock:
            self._seq += 1
            record["uid"] = f"{self.instance}{self._seq:016x}"
            line = _dumps(record)
            # The writer sends the same JSON to the database (rows.py): made
            # once, here, rather than again in the writer, under the GIL.
            record["_json"] = line
            self._buffer.append(line + "\n")
            self._buffer_seq = self._seq
            queue = self.queue
            if queue is not None and len(queue) < self.max_queue:
                queue.append(record)
                self._buffer_queued.append(record)
            else:
                if queue is not None:
                    self.overflowed = True
                self._buffer_records.append(record)
            if not self._batching:
                self._sync_locked()

    def begin(self, record):
        """Journal an upload in progress (kept in every new segment until its end).

        Return its uid, which its final record reuses.
        """
        with self._lock:
            self._seq += 1
            uid = record["uid"] = f"{self.instance}{self._seq:016x}"
            line = _dumps({**record, "_begin": 1}) + "\n"
            self._open_begins[uid] = line
            if self._current is not None:
                self._buffer.append(line)
            # else: the segment opened for it starts with every open upload.
            if not self._batching:
                self._sync_locked()
            return uid

    def end(self, uid):
        """Journal the end of an upload (batched with its record)."""
        with self._lock:
            if self._open_begins.pop(uid, None) is None:
                return
            self._buffer.append(_dumps({"_end": uid}) + "\n")
            if not self._batching:
                self._sync_locked()

    def start_batch(self):
        with self._lock:
            self._batching += 1

    def end_batch(self):
        """Close a batch; write its lines (one write) when it is the outermost."""
        with self._lock:
            self._batching -= 1
            if not self._batching and self._buffer:
                self._sync_locked()

    def _sync_locked(self):
        data = "".join(self._buffer).encode()
        try:
            segment = self._current or self._open_segment()
            end = segment.size + len(data)
            try:
                if end > segment.allocated:
                    os.ftruncate(segment.fd, end + PREALLOCATE)
                    segment.allocated = end + PREALLOCATE
                _pwrite_all(segment.fd, data, segment.size)
                if self.fsync:
                    os.fdatasync(segment.fd)
            except OSError:
                # No half line that would glue to the next one: zeros, as
                # after the last line.
                try:
                    os.pwrite(segment.fd, bytes(len(data)), segment.size)
                except OSError:
                    pass
                raise
        except OSError as exc:
            self.broken = exc
            self._keep_in_memory(self._buffer_records)
            # Queued records that are not on disk either: the writer must
            # not drop them when it clears its queue.
            self.memory_only.update(r["uid"] for r in self._buffer_queued)
        else:
            segment.size += len(data)
            segment.max_seq = self._buffer_seq
            self.broken = None
            if self.released:
                # A late batch of a journal given up: its file is an orphan
                # for the next recovery.
                os.close(segment.fd)
                self._current = None
        self._buffer.clear()
        self._buffer_records.clear()
        self._buffer_queued.clear()

    def _keep_in_memory(self, records):
        # With self._lock held: the last place left, bounded too.
        room = self.max_queue - len(self.fallback)
        if len(records) > room:
            self.dropped += len(records) - max(0, room)
            records = records[: max(0, room)]
        self.fallback.extend(records)

    def _open_segment(self):
        # With self._lock held.
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._segno += 1
        path = self._segment_path(self._segno)
        # Born under a name no recoverer looks at, locked, then renamed: a
        # recoverer never sees a segment its process does not hold yet.
        birth = os.path.join(self.directory, "." + os.path.basename(path) + ".new")
        fd = os.open(
            birth,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
            0o600,
        )
        segment = _Segment(path, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, PREALLOCATE)
            segment.allocated = PREALLOCATE
            if self._open_begins:
                # Uploads in progress stay findable in the newest segment.
                data = "".join(self._open_begins.values()).encode()
                _pwrite_all(fd, data, 0)
                segment.size = len(data)
            os.rename(birth, path)
        except OSError:
            # No segment that starts with a half line.
            os.close(fd)
            try:
                os.unlink(birth)
            except OSError:
                pass
            raise
        self._current = segment
        return segment

    # --- the writer thread's side

    def rotate(self, replay=False, queue=False):
        """Close the current segment (the next write opens a new one).

        With ``replay``, every closed segment is marked as no longer in
        memory; ``queue`` (the writer's deque, or None to stop queueing)
        replaces the journal's queue in the same step, the old one cleared
        of what is on disk. Records only in memory move to ``fallback``.
        Return the segments to replay.
        """
        with self._lock:
            if self._buffer:
                self._sync_locked()
            if queue is not False:
                old = self.queue
                if old is not None and replay:
                    self._keep_in_memory(self._only_in_memory(old))
                    old.clear()
                self.queue = queue
                self.overflowed = False
            if self._current is not None and self._current.size:
                self._closed.append(self._current)
                self._current = None
                if self._open_begins:
                    # The closed segment may be trimmed soon: uploads in
                    # progress must be on disk in a new one now.
                    try:
                        self._open_segment()
                    except OSError as exc:
                        self.broken = exc
            if replay:
                for segment in self._closed:
                    segment.replay = True
            return [s for s in self._closed if s.replay]

    def keep_in_memory(self, records):
        """Keep records that are in no segment (a failed batch) in ``fallback``."""
        with self._lock:
            self._keep_in_memory(self._only_in_memory(records))

    def _only_in_memory(self, records):
        if not self.memory_only:
            return []
        kept = [
            r
            for r in records
            if isinstance(r, dict) and r.get("uid") in self.memory_only
        ]
        self.memory_only.difference_update(r["uid"] for r in kept)
        return kept

    def written(self, records):
        """The database has ``records``: forget which of them were memory-only."""
        if self.memory_only:
            with self._lock:
                self.memory_only.difference_update(r.get("uid") for r in records)

    def current_size(self):
        current = self._current
        return current.size if current is not None else 0

    def trim_to(self, uid):
        """The database has every record up to ``uid``: trim what it makes useless."""
        if uid.startswith(self.instance):
            self.trim(self.seq_of(uid))

    def trim(self, committed_seq):
        """Remove closed segments whose records are all in the database."""
        with self._lock:
            self.committed = max(self.committed, committed_seq)
            keep = []
            for segment in self._closed:
                if not segment.replay and segment.max_seq <= committed_seq:
                    self._remove(segment)
                else:
                    keep.append(segment)
            self._closed = keep

    def replayed(self, segment):
        """Remove a segment whose records were read back into the database."""
        with self._lock:
            if segment in self._closed:
                self._closed.remove(segment)
                self._remove(segment)

    def settle(self):
        """Close the current segment and remove it if the database has it all."""
        self.rotate()
        self.trim(self.committed)

    def to_replay(self):
        """Return the closed segments whose records must be read back."""
        with self._lock:
            return [s for s in self._closed if s.replay]

    @staticmethod
    def _remove(segment):
        try:
            os.unlink(segment.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(segment.fd)

    def release(self):
        """Write what is buffered and let go of every segment (and its lock)."""
        with self._lock:
            self.released = True
            if self._buffer:
                self._sync_locked()
            self.queue = None
            for segment in [*self._closed, self._current]:
                if segment is not None:
                    os.close(segment.fd)
            self._closed = []
            self._current = None

    def close_inherited(self):
        """In a forked child: let go of the parent's files (not its locks)."""
        for segment in [*self._closed, self._current]:
            if segment is not None:
                try:
                    os.close(segment.fd)
                except OSError:
                    pass
        self._closed = []
        self._current = None

    # --- reading back

    def orphans(self):
        """Return {instance: [paths, oldest first]} of gone processes' segments."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return {}
        groups = {}
        for name in names:
            match = _NAME_RE.match(name)
            if not match or match["db"] != self.database:
                continue
            if match["instance"] == self.instance:
                continue
            groups.setdefault(match["instance"], []).append(
                (int(match["n"]), os.path.join(self.directory, name))
            )
        return {
            instance: [path for _, path in sorted(paths)]
            for instance, paths in groups.items()
        }


def lock_all(paths):
    """Open and lock every path that still exists.

    Return (fds, paths opened), or None if one of them is in use.
    """
    fds, present = [], []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # another recoverer took it since the listing
        fds.append(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            for other in fds:
                os.close(other)
            return None
        present.append(path)
    return fds, present


def read_lines(path, bad):
    """Yield the JSON objects of a segment; unreadable lines go to ``bad``."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if b"\x00" in raw:
                # The unwritten (zero) end of the segment.
                raw = raw.split(b"\x00", 1)[0]
                if raw.strip():
                    bad.append((path, number, raw, "incomplete last line"))
                break
            if not raw.strip():
                continue
            if not raw.endswith(b"\n"):
                # A line cut by a crash in the middle of a write: it was never
                # acknowledged (its reply waits for the write to finish).
                bad.append((path, number, raw, "incomplete last line"))
                continue
            try:
                item = json.loads(raw)
                if not isinstance(item, dict):
                    raise ValueError(f"a {type(item).__name__}, not a record")
            except ValueError as exc:
                bad.append((path, number, raw, str(exc)))
                continue
            yield item


def keep_bad(directory, lines):
    """Append unreadable or refused lines to ``bad-<pid>.jsonl.bad``."""
    if not lines:
        return None
    path = os.path.join(directory, f"bad-{os.getpid()}.jsonl.bad")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, b"".join(line.rstrip(b"\r\n") + b"\n" for line in lines))
    finally:
        os.close(fd)
    return path
