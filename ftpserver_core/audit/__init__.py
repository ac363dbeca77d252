"""The audit trail: FTP events become database rows, never lost on the way.

Receivers call :func:`record`. The record gets a unique ``uid`` and goes to
the local journal (``audit/journal.py``) and to an in-memory queue; a
background thread (``audit/writer.py``) inserts the queue in batches every
``FTPSERVER_AUDIT_INTERVAL`` seconds or ``FTPSERVER_AUDIT_BATCH_SIZE``
records, and then trims the journal. On the IO loop, :func:`batch` holds the
replies of a command until its records are written to the journal (one
``write()``), so an acknowledged event survives a kill at any moment.

While the database is down (or the queue is full), records live in the
journal only and are read back when it answers again. The journal of a
process that died is written into the database by the next process that
starts on the same database and directory, without duplicates.
"""

import contextlib
import os
import socket
import time

from ..conf import settings
from .writer import AuditWriter, journal_dir

__all__ = [
    "AuditWriter",
    "batch",
    "begin_upload",
    "enabled",
    "end_upload",
    "journal_dir",
    "node_name",
    "now",
    "insert_now",
    "record",
    "writer",
]


_HOSTNAME = socket.gethostname()


def node_name():
    """Return this server node's name (FTPSERVER_NODE_NAME or the host name)."""
    return settings.NODE_NAME or _HOSTNAME


writer = AuditWriter()

# A record's time, as journaled: a POSIX timestamp (cheap to make and to
# encode on the IO loop; the writer makes the datetime).
now = time.time


def enabled(event):
    """True when events of type ``event`` are recorded (FTPSERVER_AUDIT_*)."""
    if not settings.AUDIT_ENABLED:
        return False
    wanted = settings.AUDIT_EVENTS
    return wanted is None or event in wanted


def record(fields=None, /, **more):
    """Journal and queue one audit record (called by the receivers, on the loop).

    The record is a dict of AuditEvent fields (taken over: it gets its
    ``uid``), or keyword arguments.
    """
    if fields is None:
        fields = more
    elif more:
        fields = {**fields, **more}
    writer.put(fields)


def insert_now(fields):
    """Insert one record at once, outside the server (the admin's ban actions)."""
    import uuid

    from ..models import AuditEvent
    from .rows import clean

    AuditEvent.objects.create(uid=uuid.uuid4(), **clean(fields))


@contextlib.contextmanager
def batch():
    """Write the records made inside the block to the journal in one go, at its end."""
    journal = writer.journal
    journal.start_batch()
    try:
        yield
    finally:
        journal.end_batch()


def begin_upload(fields):
    """Journal an upload in progress; return the uid its final record takes."""
    return writer.journal.begin(fields)


def end_upload(uid):
    """Journal that the upload ``uid`` ended (its record says how)."""
    writer.journal.end(uid)


def _reset_in_child():
    # A forked worker must not share (or think it has) the parent's writer
    # thread, queue or journal files.
    journal = writer._journal
    if journal is not None:
        journal.close_inherited()
    writer.__init__()


os.register_at_fork(after_in_child=_reset_in_child)
