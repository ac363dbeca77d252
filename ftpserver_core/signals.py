"""The FTP events, as Django signals.

The names and arguments follow ``spec/signals.rst`` exactly. ``sender`` is the
handler class selected by ``FTPSERVER_HANDLER`` / ``FTPSERVER_TLSHANDLER``
(the command class for server start and stop). File signals are sent only when
the operation succeeded; ``path`` is the file's real location on disk.

Every signal sent from a session also carries these extra keyword arguments,
so receivers must accept ``**kwargs``:

- ``session_id``: a random id shared by every event of one connection.
- ``remote_port``: the client's TCP port.
- ``tls``: True when the control channel is encrypted.

Transfer signals add ``ftp_path`` (the path as the client saw it), ``size``
(bytes stored on disk for an upload, bytes sent for a download) and
``duration`` (seconds); complete transfers add ``sha256`` (the file's digest
as it streamed, or "" when the server could not compute it), incomplete
ones add ``reason`` (one of :data:`TRANSFER_FAILURE_REASONS`); delete,
mkdir and rmdir add ``ftp_path``; rename adds ``ftp_path_from`` and
``ftp_path_to``; ``ftp_login_failed`` adds ``reason``. No signal carries a
password.

Receivers run on the server's IO loop: a slow receiver stalls every client.
Hand heavy work to a queue (Celery, a thread) instead of doing it inline.
"""

import logging

from django.dispatch import Signal

logger = logging.getLogger("ftpserver_core.handlers")

# use_caching: senders are classes (as for Django's model signals), so the
# receivers of a sender are cached; a send then skips resolving every
# receiver's weak reference, which is most of its cost on the loop.

ftp_server_started = Signal(use_caching=True)
"""Sent when the server starts. Arguments: sender, server, host, port."""

ftp_server_stopped = Signal(use_caching=True)
"""Sent when the server stops. Arguments: sender, server, host, port."""

ftp_client_connected = Signal(use_caching=True)
"""Sent when a client connects. Arguments: sender, handler, remote_ip,
remote_port."""

ftp_client_disconnected = Signal(use_caching=True)
"""Sent when a client disconnects. Arguments: sender, handler, username (None
unless logged in), remote_ip."""

ftp_login = Signal(use_caching=True)
"""Sent after a successful login. Arguments: sender, handler, username,
remote_ip; extra: anonymous_email (anonymous FTP only: the password given,
by convention an e-mail address; never sent for an account)."""

ftp_login_failed = Signal(use_caching=True)
"""Sent after a failed login. Arguments: sender, handler, username (as typed),
remote_ip; extra: reason (one of :data:`LOGIN_FAILURE_REASONS`)."""

ftp_logout = Signal(use_caching=True)
"""Sent when a user logs out with QUIT, or with USER to change account.
Arguments: sender, handler, username, remote_ip."""

ftp_file_received = Signal(use_caching=True)
"""Sent when an upload completed. Arguments: sender, handler, username, path,
remote_ip."""

ftp_file_sent = Signal(use_caching=True)
"""Sent when a download completed. Arguments: sender, handler, username, path,
remote_ip."""

ftp_file_received_incomplete = Signal(use_caching=True)
"""Sent when an upload was interrupted. Arguments: sender, handler, username,
path, remote_ip."""

ftp_file_sent_incomplete = Signal(use_caching=True)
"""Sent when a download was interrupted. Arguments: sender, handler, username,
path, remote_ip."""

ftp_file_deleted = Signal(use_caching=True)
"""Sent after DELE removed a file. Arguments: sender, handler, username, path,
remote_ip."""

ftp_file_renamed = Signal(use_caching=True)
"""Sent after RNFR/RNTO renamed a file or directory. Arguments: sender,
handler, username, path_from, path_to, remote_ip."""

ftp_directory_created = Signal(use_caching=True)
"""Sent after MKD created a directory. Arguments: sender, handler, username,
path, remote_ip."""

ftp_directory_deleted = Signal(use_caching=True)
"""Sent after RMD removed a directory. Arguments: sender, handler, username,
path, remote_ip."""

# --- the defender (an extension of the contract, with its conventions)

ftp_connection_refused = Signal(use_caching=True)
"""Sent when a connection is refused before its greeting, or closed by a
ban. Arguments: sender (the handler class), handler, remote_ip; extra:
remote_port, session_id, tls, reason (one of
:data:`CONNECTION_REFUSAL_REASONS`). A banned address that keeps
reconnecting is reported once per FTPSERVER_DEFENDER_REFUSED_LOG_INTERVAL."""

ftp_address_banned = Signal(use_caching=True)
"""Sent when an address or network is banned. Arguments: sender (the handler
class on the server; :class:`~ftpserver_core.models.Ban` from the admin),
network (CIDR), reason (a ``Ban.Reason`` value), remote_ip (the address
that crossed the threshold, or None), expires_at (aware datetime, or None:
never), duration (seconds, or None), offence (1 for a first ban), score
(the points that led to it, or None), by (the node or the admin user).
Sent from the FTP server also with ``server``."""

ftp_address_unbanned = Signal(use_caching=True)
"""Sent when a ban is lifted in the admin. Arguments: sender
(:class:`~ftpserver_core.models.Ban`), network, reason (the ban's), by (the
admin user's name), ban (the Ban row)."""

# --- account controls (an extension of the contract, with its conventions)

ftp_session_terminated = Signal(use_caching=True)
"""Sent when the server ends a logged-in session for a reason of its own, before
its ``ftp_client_disconnected``. Arguments: sender, handler, username,
remote_ip; extra: remote_port, session_id, tls, reason (one of
:data:`TERMINATION_REASONS`), by (the admin user's name, or "")."""

ftp_quota_exceeded = Signal(use_caching=True)
"""Sent when an upload is refused or cut short by a limit. Arguments: sender,
handler, username, path, remote_ip; extra: ftp_path, remote_port,
session_id, tls, reason (one of :data:`QUOTA_REASONS`), limit (bytes or
files), used (what the home held, or the upload's size)."""

LOGIN_FAILURE_REASONS = (
    "bad_credentials",  # unknown user or wrong password (indistinguishable)
    "inactive_user",  # the Django user's is_active is False
    "no_ftp_account",  # the Django user has no FTP account
    "account_disabled",
    "account_expired",
    "tls_required",  # the account requires TLS and the session has none
    "network_not_allowed",  # the client IP is outside the allowed networks
    "too_many_sessions",  # the account's session limit is reached
    "too_many_sessions_per_address",  # the per-address limit, on every process
    "too_many_logins",  # FTPSERVER_LOGINS_PER_ADDRESS logins already in progress
    "login_queue_full",  # FTPSERVER_LOGIN_QUEUE logins already wait for a worker
    "home_unavailable",  # no home directory, or it is missing or unsafe
    "database_unavailable",  # the database failed or did not answer in time
    "server_error",  # a backend failed; see the log
)
"""The values of ``reason`` in ``ftp_login_failed``."""

CONNECTION_REFUSAL_REASONS = (
    "banned",  # the address is banned (models.Ban)
    "blocklisted",  # the address is on the blocklist
    "too_many_connections",  # FTPSERVER_MAX_CONNECTIONS sessions are open
    "too_many_connections_per_ip",  # FTPSERVER_MAX_CONNECTIONS_PER_IP from it
    "login_timeout",  # no login within FTPSERVER_LOGIN_GRACE seconds
    "proxy_protocol",  # a PROXY header missing, malformed, or from an untrusted peer
)
"""The values of ``reason`` in ``ftp_connection_refused``."""

TRANSFER_FAILURE_REASONS = (
    "connection_lost",  # the data connection was reset or broke
    "data_timeout",  # no progress for FTPSERVER_DATA_TIMEOUT seconds
    "disk_full",  # no space left (ENOSPC) or the disk quota (EDQUOT)
    "quota_exceeded",  # the account's quota or maximum upload size (552)
    "write_error",  # another error writing the file
    "read_error",  # an error reading the file being sent
    "aborted",  # ABOR, or the session ended during the transfer
    "server_stopped",  # the server stopped during the transfer
    "server_crashed",  # found in the journal of a process that died
)
"""The values of ``reason`` in ``ftp_file_*_incomplete``."""

TERMINATION_REASONS = (
    "admin",  # disconnected from the admin's live sessions
    "banned",  # disconnected and its address banned from the admin
    "account_disabled",  # the account was disabled while logged in
    "account_expired",  # the account's expiry passed while logged in
    "password_changed",  # the user's password changed while logged in
    "account_deleted",  # the account or its user was deleted
)
"""The values of ``reason`` in ``ftp_session_terminated``."""

QUOTA_REASONS = (
    "quota_bytes",  # the home would hold more than its byte quota
    "quota_files",  # the home would hold more files than its file quota
    "max_upload_size",  # the file would grow past the maximum upload size
)
"""The values of ``reason`` in ``ftp_quota_exceeded``."""

ALL_SIGNALS = {
    name: signal for name, signal in globals().items() if isinstance(signal, Signal)
}


def _name(signal):
    return _NAMES.get(id(signal), repr(signal))


_NAMES = {id(signal): name for name, signal in ALL_SIGNALS.items()}


def dispatch(signal, sender, **kwargs):
    """Send ``signal`` to every receiver; a receiver that raises is logged.

    Every event is logged at DEBUG on ``ftpserver_core.handlers``, as the
    signal contract promises.
    """
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s %s", _name(signal), kwargs)
    if not signal.receivers:
        return
    # send_robust()'s work without its extras, on the IO loop for every
    # event: it also logged each failure itself (twice with ours) and
    # builds a result list nobody reads. _live_receivers() is Django's
    # private API (weak references resolved, sender filtered; a pair of
    # lists since Django 5.0): the Django pin in pyproject.toml keeps it.
    receivers, async_receivers = signal._live_receivers(sender)
    if async_receivers:
        # Django runs them in an event loop of its own: its send_robust(),
        # which logs a failure itself (on django.dispatch).
        signal.send_robust(sender=sender, **kwargs)
        return
    for receiver in receivers:
        try:
            receiver(signal=signal, sender=sender, **kwargs)
        except Exception as exc:
            logger.error(
                "Receiver %r of %s failed.",
                receiver,
                _name(signal),
                exc_info=exc,
            )
