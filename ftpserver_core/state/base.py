"""The interface every shared-state backend implements.

A backend is the store of what must hold across server processes and nodes.
Its methods may block (they run in the state thread or in a login worker
thread, never on the IO loop) and raise on a storage failure; the callers
retry on the next round. ``process`` is what :meth:`register_process`
returned; ``session`` is a :class:`SessionInfo`.
"""

import dataclasses
import datetime

from ..policy import LoginRefused


@dataclasses.dataclass(frozen=True, slots=True)
class SessionInfo:
    """What is registered about a session when it logs in."""

    session_id: str
    account_id: int | None
    username: str
    remote_ip: str
    address_key: str
    tls: bool
    connected_at: datetime.datetime
    # policy.password_stamp: the thread ends the session when it changes.
    password_stamp: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A live process as the others see it: where its data connections are reached."""

    key: object
    node: str
    pid: int
    # ((first, last), ...) runs of passive ports; empty: any free port.
    passive_ports: tuple = ()
    masquerade_address: str = ""


class StateBackend:
    """Processes, live sessions, quota usage and leases, bandwidth shares, kicks."""

    #: True when other processes see this backend's state.
    shared = True
    #: True when :meth:`wait` returns early on changes made elsewhere.
    pushes = False

    def __init__(self, expiry=15.0):
        # Seconds without a heartbeat after which a process counts as dead.
        self.expiry = expiry

    # --- processes

    def register_process(self, node, pid, **where):
        """Register a running process; return its key.

        ``where`` holds, only when set, ``passive_ports`` (runs ``[[first,
        last], ...]``) and ``masquerade_address``: where its data connections
        are reached, for :meth:`live_processes`.
        """
        raise NotImplementedError

    def live_processes(self):
        """Return a :class:`ProcessInfo` of every live process.

        Empty when the backend cannot tell (a process alone, a backend of a
        project's): other nodes' passive ports are then not checked.
        """
        return []

    def heartbeat(self, process):
        """Say ``process`` is alive; return False if it was expired meanwhile."""
        raise NotImplementedError

    def unregister_process(self, process):
        """Forget ``process`` with its sessions and leases (a clean stop)."""
        raise NotImplementedError

    def expire(self, retention):
        """Delete processes silent for ``expiry + retention`` seconds, with their state."""
        raise NotImplementedError

    # --- sessions

    def open_session(
        self,
        process,
        session,
        *,
        max_sessions,
        max_per_address,
        max_account_per_address=None,
    ):
        """Register ``session`` unless a limit is reached (atomically, everywhere).

        ``max_sessions`` counts the sessions of ``session.account_id``; for a
        session without an account (anonymous FTP), those without one with
        the same ``username``. ``max_per_address`` counts every session from
        the client's address; ``max_account_per_address`` (given only when
        set) those of the same account, or user name, from it.

        Raise :class:`~ftpserver_core.policy.LoginRefused` with
        ``too_many_sessions`` or ``too_many_sessions_per_address``. Also
        records the account's last login. Return the session's key.
        """
        raise NotImplementedError

    def record_sessions(self, process, sessions, logins):
        """Register ``sessions`` already admitted; record ``logins``.

        ``logins`` is ``{account_id: (remote_ip, aware datetime)}``: the last
        login of each account (a session may have ended already). Written
        behind by the state thread: sessions of accounts without a session
        limit are admitted from memory (see ``SharedState``).
        """
        raise NotImplementedError

    def address_counts(self, process):
        """Return ``{address_key: n}`` of the live sessions of every *other* process."""
        raise NotImplementedError

    def restore_sessions(self, process, sessions):
        """Register ``sessions`` again, without limits (the process was expired)."""
        raise NotImplementedError

    def count_sessions(self, account_id):
        """Return how many live sessions the account has on every live process."""
        raise NotImplementedError

    def update_sessions(self, process, updates):
        """Store live details: ``{session_id: {field: value}}``."""
        raise NotImplementedError

    def close_sessions(self, process, session_ids):
        """Forget sessions that ended."""
        raise NotImplementedError

    def kicks(self, process):
        """Return ``[(session_id, reason, by)]`` of sessions asked to end."""
        raise NotImplementedError

    def request_kick(self, reason, by="", **filters):
        """Ask the sessions matching ``filters`` (session fields) to end."""
        raise NotImplementedError

    # --- quotas

    def grant_quota(self, process, account_id, limits, want_bytes, want_files):
        """Reserve room within the account's quota for ``process``.

        ``limits`` is ``(quota_bytes, quota_files)`` (None: no quota of that
        kind). Return ``(bytes, files)`` granted, at most what was wanted.
        """
        raise NotImplementedError

    def settle_quota(self, process, changes):
        """Apply usage changes: ``{account_id: (bytes, files, leased_bytes, leased_files)}``.

        ``bytes``/``files`` are added to the usage; the leases shrink by
        ``leased_*`` (room used or given back).
        """
        raise NotImplementedError

    def quota_usage(self, account_id):
        """Return ``(bytes, files)`` the account's home holds."""
        raise NotImplementedError

    def set_quota_usage(self, account_id, used_bytes, used_files):
        """Replace the account's usage with a scan's result."""
        raise NotImplementedError

    # --- bandwidth

    def publish_transfers(self, process, transfers):
        """Publish ``{account_id: {"up": n, "down": n}}``: this process's limited transfers."""
        raise NotImplementedError

    def transfer_counts(self):
        """Return ``{account_id: {"up": n, "down": n}}`` over every live process."""
        raise NotImplementedError

    # --- waiting

    def wait(self, timeout):
        """Sleep up to ``timeout`` seconds, less when a change is pushed (then True)."""
        raise NotImplementedError

    def close(self):
        """Release what the backend holds (connections)."""


__all__ = ["LoginRefused", "ProcessInfo", "SessionInfo", "StateBackend"]
