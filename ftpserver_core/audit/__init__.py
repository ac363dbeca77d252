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

import os
import socket

from ..conf import settings
from .spool import Spool
from .writer import AuditWriter

__all__ = ["AuditWriter", "Spool", "node_name", "record", "writer"]


_HOSTNAME = socket.gethostname()


def node_name():
    """Return this server node's name (FTPSERVER_NODE_NAME or the host name)."""
    return settings.NODE_NAME or _HOSTNAME


writer = AuditWriter()


def record(**fields):
    """Queue one audit record (called by the receivers, on the IO loop)."""
    writer.put(fields)


def _reset_in_child():
    # A forked worker must not share (or think it has) the parent's writer
    # thread, queue or spool file.
    writer.__init__()


os.register_at_fork(after_in_child=_reset_in_child)
