"""Receivers that record their calls in module-level lists (or raise on demand)."""

import threading

from ftpserver_core import signals

WATCHED = (
    "ftp_login",
    "ftp_login_failed",
    "ftp_file_received",
    "ftp_file_sent",
    "ftp_file_deleted",
    "ftp_client_disconnected",
)

CALLS = []
"""(signal name, sender, kwargs without handler and signal), in call order."""

LOGINS_BY_HANDLER = []
"""Usernames seen by the ftp_login receiver connected with sender=DjangoFTPHandler."""

FAIL = set()
"""Names of the signals for which :func:`failing` raises."""

_lock = threading.Lock()
_NAMES = {id(signal): name for name, signal in signals.ALL_SIGNALS.items()}


class ReceiverFailed(Exception):
    pass


def _name(signal):
    return _NAMES[id(signal)]


def recording(sender, signal, handler, **kwargs):
    with _lock:
        CALLS.append((_name(signal), sender, dict(kwargs)))


def failing(sender, signal, **kwargs):
    if _name(signal) in FAIL:
        raise ReceiverFailed(f"receiver_app refuses {_name(signal)}")


def login_by_handler(sender, username, **kwargs):
    with _lock:
        LOGINS_BY_HANDLER.append(username)


def calls(name=None):
    with _lock:
        return [c for c in CALLS if name is None or c[0] == name]


def reset():
    with _lock:
        CALLS.clear()
        LOGINS_BY_HANDLER.clear()
        FAIL.clear()
