"""The shared-state layer: what must hold across server processes and nodes.

One :class:`~ftpserver_core.state.base.StateBackend` (chosen by
``FTPSERVER_STATE_BACKEND``) stores it; one :class:`SharedState` per server
talks to it from a daemon thread, so nothing on the IO loop waits for it:

- session limits are checked where a login already waits (its worker
  thread), in one transaction: an account's ``max_sessions`` and the
  per-address limit are never exceeded, on any number of processes and
  nodes;
- live sessions' details, the ends of sessions, heartbeats, quota usage and
  bandwidth counts are written by the thread each round; disconnects
  requested anywhere (the admin, an account change) are read each round and
  handed to the loop; participants (the defender's ban store, quotas,
  bandwidth) sync in the same rounds.

Consistency model: limits checked at login are exact; a process that dies
keeps its sessions and quota leases counted until it misses its heartbeat
for ``FTPSERVER_STATE_EXPIRY`` seconds (a login can be refused for that
long, never let past a limit); a disconnect or a ban reaches its session
within a poll interval (PostgreSQL: sooner, pushed by NOTIFY); live details
in the admin are at most a poll interval old. docs/state.rst has the rest.
"""

import logging
import os
import threading
import time

from django.db import close_old_connections
from django.utils import timezone
from django.utils.module_loading import import_string

from ..conf import settings
from ..scaleout import runs
from .base import LoginRefused, SessionInfo, StateBackend

logger = logging.getLogger("ftpserver_core.state")

__all__ = ["SessionInfo", "SharedState", "StateBackend", "get_backend"]

BACKENDS = {
    "database": "ftpserver_core.state.database.DatabaseBackend",
    "memory": "ftpserver_core.state.memory.MemoryBackend",
}

# Seconds the sessions of a process that stopped heartbeating stay in the
# admin (shown as lost) before any live process deletes them.
LOST_RETENTION = 60.0


def get_backend(name=None):
    """Return a new backend instance for ``name`` (default: the setting)."""
    name = name or settings.STATE_BACKEND
    path = BACKENDS.get(name, name)
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ValueError(
            f"FTPSERVER_STATE_BACKEND {name!r} cannot be imported ({exc}); "
            f"expected one of {', '.join(map(repr, BACKENDS))} or a dotted path."
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, StateBackend)):
        raise ValueError(
            f"FTPSERVER_STATE_BACKEND {name!r} is not a StateBackend subclass."
        )
    return cls(expiry=settings.STATE_EXPIRY)


class SharedState:
    """One server's link to the shared state: its process, its sessions, its thread."""

    def __init__(self, server, backend=None, node=None):
        self.server = server
        self.backend = backend or get_backend()
        self.node = node or _node_name()
        self.poll_interval = settings.STATE_POLL_INTERVAL
        # Rounds done: what was queued before round n began is written once
        # ``rounds`` passes n (tests wait on it instead of sleeping).
        self.rounds = 0
        self.heartbeat_interval = settings.STATE_HEARTBEAT
        self.participants = []
        self.process = None
        self._lock = threading.Lock()
        # Held while ends of sessions are written and while a connection
        # logs in again: its new registration never lands before the end of
        # its previous one.
        self._registering = threading.Lock()
        self._closing = {}  # ends being written by the thread (id -> account)
        self._opened = {}  # session_id -> SessionInfo admitted, to be written
        self._logins = {}  # account_id -> (ip, time) of its last login, to write
        self._address_counts = {}  # address key -> this process's sessions
        self._remote = {}  # address key -> other processes' sessions (last round)
        self._local = {}  # session_id -> SessionInfo of this process's sessions
        self._closed = {}  # session id -> account id, whose end is to be written
        self._updates = {}  # session_id -> fields, written next round
        self._kicked = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = None
        self._last_heartbeat = 0.0
        self._last_expire = 0.0
        self._failing = False

    # --- lifecycle

    def start(self):
        """Start the thread; its first round registers the process (off the loop)."""
        self._thread = threading.Thread(
            target=self._run, name="ftpserver-state", daemon=True
        )
        self._thread.start()

    def stop(self, timeout=2.0):
        """Stop the thread; flush participants and unregister within ``timeout``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self):
        """Run the next round now (from any thread)."""
        self._wake.set()

    def add_participant(self, participant):
        """Have ``participant.sync(state)`` run each round (``flush`` at the end)."""
        self.participants.append(participant)

    def ensure_process(self):
        """Return this process's key, registering it first if needed."""
        with self._lock:
            if self.process is None:
                self.process = self.backend.register_process(
                    self.node,
                    os.getpid(),
                    **where(getattr(self.server, "options", None)),
                )
            return self.process

    # --- from login threads

    def open_session(self, policy, handler_info, max_per_address):
        """Register a logged-in session; raise LoginRefused past a limit."""
        info = SessionInfo(
            session_id=handler_info["session_id"],
            account_id=policy.account_id,
            username=policy.username,
            remote_ip=handler_info["remote_ip"],
            address_key=handler_info["address_key"],
            tls=handler_info["tls"],
            connected_at=handler_info.get("connected_at") or timezone.now(),
            password_stamp=getattr(policy, "password_stamp", ""),
        )
        process = self.ensure_process()
        limits = {
            "max_sessions": policy.max_sessions,
            "max_per_address": max_per_address,
        }
        own_per_address = getattr(policy, "max_sessions_per_address", None)
        if own_per_address:
            # Anonymous FTP's own per-address limit (only then: a backend of
            # a project's need not know the argument).
            limits["max_account_per_address"] = own_per_address
        if self.backend.shared and len(limits) == 2 and limits["max_sessions"] is None:
            self._admit(info, max_per_address)
            return
        with self._lock:
            # Sessions of this process that ended and whose end the thread
            # has not written yet must not count against this login: their
            # ends are written first, here (and so is the previous login of
            # this very connection, at a USER again, before this one).
            ended = [*self._closed, *self._closing]
            self._closed.clear()
            self._closing.clear()
        if ended:
            with self._registering:
                try:
                    self.backend.close_sessions(process, ended)
                except Exception:
                    with self._lock:
                        self._closed.update(dict.fromkeys(ended))
                    raise
                self.backend.open_session(process, info, **limits)
        else:
            self.backend.open_session(process, info, **limits)
        with self._lock:
            self._add_local(info)

    def _admit(self, info, max_per_address):
        """Admit a session of an account without a session limit, from memory.

        The common short session (a scanner's, a camera's) pays no write:
        its registration and last login are written behind by the thread.
        The per-address limit counts this process's sessions exactly and the
        others' as of the last round (a login on another process since then
        can be missed: see the consistency model).
        """
        key = info.address_key
        with self._lock:
            if max_per_address:
                held = self._address_counts.get(key, 0) + self._remote.get(key, 0)
                if held >= max_per_address:
                    raise LoginRefused(
                        "too_many_sessions_per_address", f"limit {max_per_address}"
                    )
            self._add_local(info)
            self._opened[info.session_id] = info
            if info.account_id is not None:
                self._logins[info.account_id] = (info.remote_ip, timezone.now())

    def _add_local(self, info):
        self._local[info.session_id] = info
        key = info.address_key
        self._address_counts[key] = self._address_counts.get(key, 0) + 1

    def count_sessions(self, account_id):
        """Return the account's live sessions everywhere, this process's unwritten too."""
        with self._lock:
            unwritten = sum(i.account_id == account_id for i in self._opened.values())
            ending = [*self._closed.values(), *self._closing.values()]
        ended = sum(account == account_id for account in ending)
        return self.backend.count_sessions(account_id) + unwritten - ended

    # --- from the loop

    def session_closed(self, session_id):
        """Forget a session that ended (written by the thread)."""
        with self._lock:
            info = self._local.pop(session_id, None)
            if info is None:
                return
            key = info.address_key
            left = self._address_counts.get(key, 0) - 1
            if left > 0:
                self._address_counts[key] = left
            else:
                self._address_counts.pop(key, None)
            self._updates.pop(session_id, None)
            if self._opened.pop(session_id, None) is not None:
                return  # never written: nothing to remove
            if self.backend.shared:
                self._closed[session_id] = info.account_id
                return
        # Memory: a dictionary under a lock, nothing to wait for.
        self.backend.close_sessions(self.process, [session_id])

    def session_updates(self, updates):
        """Queue live details ``{session_id: fields}`` for the next round."""
        with self._lock:
            for session_id, fields in updates.items():
                if session_id in self._local:
                    self._updates.setdefault(session_id, {}).update(fields)

    # --- the thread

    def _run(self):
        while not self._stop.is_set():
            started = time.monotonic()
            self.round()
            spent = time.monotonic() - started
            if not self._stop.is_set():
                self._sleep(max(0.05, self.poll_interval - spent))
        self._finish()

    # Slices of a pushing backend's wait: a local wake() (a ban to write, a
    # quota grant to ask for) is seen within one.
    WAKE_SLICE = 0.05

    def _sleep(self, timeout):
        """Wait for the next round: ``timeout``, a push, or a local wake()."""
        if not self.backend.pushes:
            self._wake.wait(timeout)
            self._wake.clear()
            return
        deadline = time.monotonic() + timeout
        while not (self._wake.is_set() or self._stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0 or self.backend.wait(min(self.WAKE_SLICE, left)):
                break
        self._wake.clear()

    def round(self):
        """Do one round's work (the thread's; tests call it directly)."""
        close_old_connections()
        try:
            self._round()
            self.rounds += 1
        except Exception as exc:
            if not self._failing:
                logger.warning(
                    "The shared state cannot reach its store (%s); sessions go "
                    "on, limits hold from what is known, changes are written "
                    "when it answers.",
                    exc,
                )
            self._failing = True
        else:
            if self._failing:
                logger.warning("The shared state reaches its store again.")
            self._failing = False
        finally:
            close_old_connections()
        for participant in self.participants:
            try:
                participant.sync(self)
            except Exception:
                logger.exception("Shared-state participant %r failed.", participant)
            finally:
                close_old_connections()
        deliver = getattr(self.server, "call_on_loop", None)
        if deliver is not None:
            deliver(self._snapshot)

    def _round(self):
        process = self.ensure_process()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.heartbeat_interval:
            if not self.backend.heartbeat(process):
                process = self._reregister()
            self._last_heartbeat = now
        if now - self._last_expire >= LOST_RETENTION / 4:
            self.backend.expire(LOST_RETENTION)
            self._last_expire = now
        with self._lock:
            self._closing, self._closed = self._closed, {}
        if self._closing:
            with self._registering:
                with self._lock:
                    # Less what a new login on the connection took over.
                    closed = dict(self._closing)
                try:
                    self.backend.close_sessions(process, closed)
                except Exception:
                    with self._lock:
                        self._closed = {**closed, **self._closed}
                        self._closing = {}
                    raise
            with self._lock:
                self._closing = {}
            self._kicked.difference_update(closed)
        with self._lock:
            opened, self._opened = self._opened, {}
            logins, self._logins = self._logins, {}
        if opened or logins:
            try:
                self.backend.record_sessions(process, list(opened.values()), logins)
            except Exception:
                with self._lock:
                    for session_id, info in opened.items():
                        if session_id in self._local:
                            self._opened.setdefault(session_id, info)
                    self._logins = {**logins, **self._logins}
                raise
        remote = self.backend.address_counts(process)
        with self._lock:
            self._remote = remote
            updates, self._updates = self._updates, {}
        if updates:
            try:
                self.backend.update_sessions(process, updates)
            except Exception:
                with self._lock:
                    for session_id, fields in updates.items():
                        if session_id in self._local:
                            merged = {**fields, **self._updates.get(session_id, {})}
                            self._updates[session_id] = merged
                raise
        kicks = [k for k in self.backend.kicks(process) if k[0] not in self._kicked]
        kicks += self._ended_accounts()
        if kicks:
            self._kicked.update(k[0] for k in kicks)
            deliver = getattr(self.server, "call_on_loop", None)
            if deliver is not None:
                deliver(self._terminate, kicks)

    def _ended_accounts(self):
        """Kicks for local sessions whose account was disabled or expired since.

        The admin's bulk actions (and any ``update()``) send no model
        signal: what the receivers cannot see is found here, each round.
        """
        if not settings.END_SESSIONS_ON_ACCOUNT_CHANGE:
            return []
        with self._lock:
            local = [
                info
                for info in self._local.values()
                if info.account_id is not None and info.session_id not in self._kicked
            ]
        if not local:
            return []
        from django.contrib.auth import get_user_model

        from ..models import FTPUserAccount
        from ..policy import password_stamp

        # A custom user model may have no is_active field (then always active).
        user_fields = {f.name for f in get_user_model()._meta.concrete_fields}
        active = "user__is_active" if "is_active" in user_fields else "is_enabled"
        rows = FTPUserAccount.objects.filter(
            pk__in={info.account_id for info in local}
        ).values_list("pk", "is_enabled", "expires_at", active, "user__password")
        now = timezone.now()
        accounts = {row[0]: row[1:] for row in rows}
        kicks = []
        for info in local:
            row = accounts.get(info.account_id)
            if row is None:
                reason = "account_deleted"
            else:
                enabled, expires_at, is_active, password = row
                if not enabled or not is_active:
                    reason = "account_disabled"
                elif expires_at is not None and expires_at <= now:
                    reason = "account_expired"
                elif info.password_stamp and info.password_stamp != password_stamp(
                    password
                ):
                    reason = "password_changed"
                else:
                    continue
            kicks.append((info.session_id, reason, ""))
        return kicks

    def _reregister(self):
        """The process was expired (it stalled): register again, with its sessions."""
        logger.warning(
            "This server process was taken for dead (no heartbeat for %g s); "
            "registering it again with its sessions.",
            self.backend.expiry,
        )
        with self._lock:
            self.process = None
            sessions = list(self._local.values())
        process = self.ensure_process()
        self.backend.restore_sessions(process, sessions)
        return process

    def _finish(self):
        for participant in self.participants:
            flush = getattr(participant, "flush", None)
            if flush is None:
                continue
            try:
                flush(self)
            except Exception:
                logger.exception("Shared-state participant %r failed.", participant)
        close_old_connections()
        try:
            if self.process is not None:
                self.backend.unregister_process(self.process)
        except Exception as exc:
            logger.warning(
                "Could not unregister this server process (%s); its sessions "
                "expire in %g s.",
                exc,
                self.backend.expiry,
            )
        finally:
            self.backend.close()
            close_old_connections()

    # --- on the loop

    def _snapshot(self):
        """Collect the live details of this server's sessions that changed."""
        updates = {}
        for handler in list(getattr(self.server, "sessions", ())):
            details = getattr(handler, "live_details", None)
            if details is None:
                continue
            fields = details()
            if fields is not None:
                updates[handler.session_id] = fields
        if updates:
            self.session_updates(updates)

    def _terminate(self, kicks):
        by_id = {
            handler.session_id: handler
            for handler in list(getattr(self.server, "sessions", ()))
        }
        for session_id, reason, by in kicks:
            handler = by_id.get(session_id)
            if handler is None or handler._closed:
                self.session_closed(session_id)
                continue
            handler.terminate(reason, by)


def where(options):
    """Where a server's data connections are reached (only what is set).

    The keywords of ``register_process`` besides the node and the pid: a
    backend of a project's written before them still works without them.
    """
    found = {}
    if options is not None and getattr(options, "passive_ports", None):
        found["passive_ports"] = runs(options.passive_ports)
    if options is not None and getattr(options, "masquerade_address", None):
        found["masquerade_address"] = options.masquerade_address
    return found


def _node_name():
    from .. import audit

    return audit.node_name()
