"""The in-process backend: one process only (tests, an embedded server).

Exact within its process and blind to every other one: with ``--workers``
or several nodes, use the database backend. The admin, another process,
sees none of it (no live sessions, no disconnects).
"""

import itertools
import threading
import time

from django.utils import timezone

from ..models import FTPUserAccount
from .base import LoginRefused, StateBackend


class MemoryBackend(StateBackend):
    shared = False
    pushes = True  # request_kick() wakes wait()

    def __init__(self, expiry=15.0):
        super().__init__(expiry)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ids = itertools.count(1)
        self._processes = {}  # key -> {"heartbeat": monotonic, "transfers": {}}
        self._sessions = {}  # (process, session_id) -> dict
        self._usage = {}  # account_id -> [bytes, files]
        self._leases = {}  # (process, account_id) -> [bytes, files]

    # --- processes

    def register_process(self, node, pid, **where):
        with self._lock:
            key = next(self._ids)
            self._processes[key] = {"heartbeat": time.monotonic(), "transfers": {}}
            return key

    def heartbeat(self, process):
        with self._lock:
            entry = self._processes.get(process)
            if entry is None:
                return False
            entry["heartbeat"] = time.monotonic()
            return True

    def unregister_process(self, process):
        with self._lock:
            self._drop(process)

    def _drop(self, process):
        self._processes.pop(process, None)
        for key in [k for k in self._sessions if k[0] == process]:
            del self._sessions[key]
        for key in [k for k in self._leases if k[0] == process]:
            del self._leases[key]

    def expire(self, retention):
        limit = time.monotonic() - self.expiry - retention
        with self._lock:
            for key, entry in list(self._processes.items()):
                if entry["heartbeat"] < limit:
                    self._drop(key)

    def _alive(self, process):
        entry = self._processes.get(process)
        return (
            entry is not None and time.monotonic() - entry["heartbeat"] <= self.expiry
        )

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
        with self._lock:
            live = [s for (p, _), s in self._sessions.items() if self._alive(p)]
            # The account's sessions; without an account (anonymous FTP),
            # those of the same user name without one.
            if session.account_id is not None:
                own = [s for s in live if s["account_id"] == session.account_id]
            else:
                own = [
                    s
                    for s in live
                    if s["account_id"] is None and s["username"] == session.username
                ]
            if max_sessions is not None and len(own) >= max_sessions:
                raise LoginRefused("too_many_sessions", f"limit {max_sessions}")
            if max_per_address and (
                sum(s["address_key"] == session.address_key for s in live)
                >= max_per_address
            ):
                raise LoginRefused(
                    "too_many_sessions_per_address", f"limit {max_per_address}"
                )
            if max_account_per_address and (
                sum(s["address_key"] == session.address_key for s in own)
                >= max_account_per_address
            ):
                raise LoginRefused(
                    "too_many_sessions_per_address",
                    f"limit {max_account_per_address} of {session.username!r}",
                )
            self._sessions[(process, session.session_id)] = self._row(session)
        if session.account_id is not None:
            FTPUserAccount.objects.filter(pk=session.account_id).update(
                last_login_at=timezone.now(), last_login_ip=session.remote_ip or None
            )
        return session.session_id

    @staticmethod
    def _row(session):
        return {
            "account_id": session.account_id,
            "username": session.username,
            "remote_ip": session.remote_ip,
            "address_key": session.address_key,
            "tls": session.tls,
            "connected_at": session.connected_at,
            "kick_reason": "",
            "kick_by": "",
        }

    def record_sessions(self, process, sessions, logins):
        self.restore_sessions(process, sessions)
        for account, (remote_ip, when) in logins.items():
            FTPUserAccount.objects.filter(pk=account).update(
                last_login_at=when, last_login_ip=remote_ip or None
            )

    def address_counts(self, process):
        counts = {}
        with self._lock:
            for (p, _), row in self._sessions.items():
                if p != process and self._alive(p):
                    key = row["address_key"]
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def restore_sessions(self, process, sessions):
        with self._lock:
            for session in sessions:
                self._sessions[(process, session.session_id)] = self._row(session)

    def count_sessions(self, account_id):
        with self._lock:
            return sum(
                row["account_id"] == account_id
                for (p, _), row in self._sessions.items()
                if self._alive(p)
            )

    def update_sessions(self, process, updates):
        with self._lock:
            for session_id, fields in updates.items():
                row = self._sessions.get((process, session_id))
                if row is not None:
                    row.update(fields)

    def close_sessions(self, process, session_ids):
        with self._lock:
            for session_id in session_ids:
                self._sessions.pop((process, session_id), None)

    def kicks(self, process):
        with self._lock:
            return [
                (session_id, row["kick_reason"], row["kick_by"])
                for (p, session_id), row in self._sessions.items()
                if p == process and row["kick_reason"]
            ]

    def request_kick(self, reason, by="", **filters):
        with self._lock:
            for (_, session_id), row in self._sessions.items():
                values = {**row, "session_id": session_id}
                if all(values.get(k) == v for k, v in filters.items()):
                    row["kick_reason"] = row["kick_reason"] or reason
                    row["kick_by"] = row["kick_by"] or by
        self._wake.set()

    def sessions(self):
        """Return every live session's row (for tests and the memory admin)."""
        with self._lock:
            return [
                {**row, "session_id": sid, "process": p}
                for (p, sid), row in self._sessions.items()
            ]

    # --- quotas

    def grant_quota(self, process, account_id, limits, want_bytes, want_files):
        quota_bytes, quota_files = limits
        with self._lock:
            used = self._usage.setdefault(account_id, [0, 0])
            leased = [0, 0]
            for (p, account), lease in self._leases.items():
                if account == account_id and self._alive(p):
                    leased[0] += lease[0]
                    leased[1] += lease[1]
            grant_bytes = want_bytes
            if quota_bytes is not None:
                grant_bytes = max(0, min(want_bytes, quota_bytes - used[0] - leased[0]))
            grant_files = want_files
            if quota_files is not None:
                grant_files = max(0, min(want_files, quota_files - used[1] - leased[1]))
            lease = self._leases.setdefault((process, account_id), [0, 0])
            lease[0] += grant_bytes
            lease[1] += grant_files
            return grant_bytes, grant_files

    def settle_quota(self, process, changes):
        with self._lock:
            for account_id, (d_bytes, d_files, l_bytes, l_files) in changes.items():
                used = self._usage.setdefault(account_id, [0, 0])
                used[0] += d_bytes
                used[1] += d_files
                lease = self._leases.get((process, account_id))
                if lease is not None:
                    lease[0] = max(0, lease[0] - l_bytes)
                    lease[1] = max(0, lease[1] - l_files)

    def quota_usage(self, account_id):
        with self._lock:
            return tuple(self._usage.get(account_id, (0, 0)))

    def set_quota_usage(self, account_id, used_bytes, used_files):
        with self._lock:
            self._usage[account_id] = [used_bytes, used_files]

    # --- bandwidth

    def publish_transfers(self, process, transfers):
        with self._lock:
            entry = self._processes.get(process)
            if entry is not None:
                entry["transfers"] = transfers

    def transfer_counts(self):
        totals = {}
        with self._lock:
            for key, entry in self._processes.items():
                if not self._alive(key):
                    continue
                for account, counts in entry["transfers"].items():
                    total = totals.setdefault(_key(account), {})
                    for direction, n in counts.items():
                        total[direction] = total.get(direction, 0) + n
        return totals

    # --- waiting

    def wait(self, timeout):
        woken = self._wake.wait(timeout)
        self._wake.clear()
        return woken


def _key(account):
    """An account id published as text back to an int; other keys stay text."""
    return int(account) if str(account).isdigit() else account
