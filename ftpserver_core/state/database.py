"""The database backend: state every process and node sharing the database sees.

Liveness is judged by the database's clock (``Now()``), so nodes whose
clocks differ agree on which process is alive. Session limits are checked
and the session inserted in one transaction that first locks the account's
row (SQLite: the database's write lock), so two processes never both take
an account's last session; on PostgreSQL an advisory lock on the client
address does the same for the per-address limit. Quota leases are granted
the same way, under the lock of the usage row.

On PostgreSQL a disconnect request is pushed with ``NOTIFY``: the state
thread of every process waits on ``LISTEN`` between rounds, so it reaches
its session in well under the poll interval; elsewhere it is polled.
"""

import datetime
import logging
import time
import zlib

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, DateTimeField, ExpressionWrapper, F, Q, Sum, Value
from django.db.models.functions import Now
from django.utils import timezone

from ..models import FTPUserAccount, LiveSession, QuotaLease, QuotaUsage, ServerProcess
from .base import LoginRefused, ProcessInfo, StateBackend

logger = logging.getLogger("ftpserver_core.state")

CHANNEL = "ftpserver_state"


def _ago(seconds):
    """The database's time ``seconds`` ago, as an expression."""
    return ExpressionWrapper(
        Now() - Value(datetime.timedelta(seconds=seconds)),
        output_field=DateTimeField(),
    )


class DatabaseBackend(StateBackend):
    def __init__(self, expiry=15.0):
        super().__init__(expiry)
        self._listener = None
        self._listen_failed = False

    @property
    def pushes(self):
        return connection.vendor == "postgresql" and not self._listen_failed

    def alive(self, prefix=""):
        """A filter of rows whose process heartbeats (``prefix``: the path to it)."""
        return Q(**{f"{prefix}heartbeat_at__gte": _ago(self.expiry)})

    # --- processes

    def register_process(self, node, pid, passive_ports=(), masquerade_address=None):
        process = ServerProcess.objects.create(
            node=node[:150],
            pid=pid,
            heartbeat_at=timezone.now(),
            passive_ports=[list(run) for run in passive_ports],
            masquerade_address=(masquerade_address or "")[:255],
        )
        ServerProcess.objects.filter(pk=process.pk).update(heartbeat_at=Now())
        return process.pk

    def live_processes(self):
        rows = ServerProcess.objects.filter(self.alive()).values_list(
            "pk", "node", "pid", "passive_ports", "masquerade_address"
        )
        return [
            ProcessInfo(
                key, node, pid, tuple(tuple(run) for run in ports or ()), masquerade
            )
            for key, node, pid, ports, masquerade in rows
        ]

    def heartbeat(self, process):
        return bool(ServerProcess.objects.filter(pk=process).update(heartbeat_at=Now()))

    def unregister_process(self, process):
        ServerProcess.objects.filter(pk=process).delete()

    def expire(self, retention):
        ServerProcess.objects.filter(
            heartbeat_at__lt=_ago(self.expiry + retention)
        ).delete()
        # Quota rows written while their account was being deleted (the
        # links are loose): the deletion's cascade could not see them.
        accounts = FTPUserAccount.objects.values("pk")
        QuotaLease.objects.exclude(account_id__in=accounts).delete()
        QuotaUsage.objects.exclude(account_id__in=accounts).delete()

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
        live = LiveSession.objects.filter(self.alive("process__"))
        account = session.account_id
        if account is not None:
            own = live.filter(account_id=account)
        else:
            # Without an account (anonymous FTP): the sessions of the same
            # user name without one.
            own = live.filter(account__isnull=True, username=session.username[:150])
        with transaction.atomic():
            if account is not None:
                # The row lock serializes the logins of one account on every
                # process (SQLite: this takes the database's write lock).
                FTPUserAccount.objects.filter(pk=account).update(
                    last_login_at=timezone.now(),
                    last_login_ip=session.remote_ip or None,
                )
            postgresql = connection.vendor == "postgresql"
            if (max_per_address or max_account_per_address) and postgresql:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_xact_lock(%s, %s)",
                        [0x465450, _lock_key(session.address_key)],
                    )
            if account is None and (
                max_sessions is not None or max_account_per_address
            ):
                # No account row to lock: the user name's own lock, taken
                # after the address's (as an account's logins do), so that
                # two logins never wait for each other in a circle.
                if postgresql:
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT pg_advisory_xact_lock(%s, %s)",
                            [0x414E4F, _lock_key(session.username)],
                        )
                else:
                    # A write, even of nothing: SQLite's write lock.
                    ServerProcess.objects.filter(pk=process).update(pid=F("pid"))
            if max_sessions is not None and own.count() >= max_sessions:
                raise LoginRefused("too_many_sessions", f"limit {max_sessions}")
            if (
                max_per_address
                and live.filter(address_key=session.address_key).count()
                >= max_per_address
            ):
                raise LoginRefused(
                    "too_many_sessions_per_address", f"limit {max_per_address}"
                )
            if (
                max_account_per_address
                and own.filter(address_key=session.address_key).count()
                >= max_account_per_address
            ):
                raise LoginRefused(
                    "too_many_sessions_per_address",
                    f"limit {max_account_per_address} of {session.username!r}",
                )
            row = LiveSession.objects.create(process_id=process, **_fields(session))
        return row.pk

    def record_sessions(self, process, sessions, logins):
        with transaction.atomic():
            # An account deleted since its login: the row is kept without it,
            # asking its process to end the session (the deletion's own
            # request found no row to mark).
            exist = set(
                FTPUserAccount.objects.filter(
                    pk__in={s.account_id for s in sessions if s.account_id}
                ).values_list("pk", flat=True)
            )
            rows = []
            for session in sessions:
                fields = _fields(session)
                if fields["account_id"] and fields["account_id"] not in exist:
                    fields["account_id"] = None
                    fields["kick_reason"] = "account_deleted"
                rows.append(LiveSession(process_id=process, **fields))
            LiveSession.objects.bulk_create(rows, ignore_conflicts=True)
            for account, (remote_ip, when) in logins.items():
                FTPUserAccount.objects.filter(pk=account).update(
                    last_login_at=when, last_login_ip=remote_ip or None
                )

    def address_counts(self, process):
        rows = (
            LiveSession.objects.filter(self.alive("process__"))
            .exclude(process_id=process)
            .values("address_key")
            .annotate(n=Count("id"))
            .values_list("address_key", "n")
        )
        return dict(rows)

    def restore_sessions(self, process, sessions):
        for session in sessions:
            try:
                with transaction.atomic():
                    LiveSession.objects.create(process_id=process, **_fields(session))
            except IntegrityError:
                pass  # still there

    def count_sessions(self, account_id):
        return LiveSession.objects.filter(
            self.alive("process__"), account_id=account_id
        ).count()

    def update_sessions(self, process, updates):
        rows = LiveSession.objects.filter(process_id=process)
        with transaction.atomic():
            for session_id, fields in updates.items():
                rows.filter(session_id=session_id).update(**fields)

    def close_sessions(self, process, session_ids):
        LiveSession.objects.filter(
            process_id=process, session_id__in=list(session_ids)
        ).delete()

    def kicks(self, process):
        rows = LiveSession.objects.filter(process_id=process).exclude(kick_reason="")
        return list(rows.values_list("session_id", "kick_reason", "kick_by"))

    def request_kick(self, reason, by="", **filters):
        count = LiveSession.objects.filter(kick_reason="", **filters).update(
            kick_reason=reason, kick_by=by[:150]
        )
        if count:
            self.notify()
        return count

    def notify(self):
        """Wake every process's state thread now (PostgreSQL; elsewhere a no-op)."""
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])

    # --- quotas

    def grant_quota(self, process, account_id, limits, want_bytes, want_files):
        quota_bytes, quota_files = limits
        with transaction.atomic():
            usage, _ = QuotaUsage.objects.get_or_create(account_id=account_id)
            # Lock the usage row: grants to one account are serialized
            # everywhere (SQLite: the write lock of the touch).
            QuotaUsage.objects.filter(pk=account_id).update(updated_at=timezone.now())
            usage.refresh_from_db(fields=["bytes", "files"])
            leased = QuotaLease.objects.filter(
                self.alive("process__"), account_id=account_id
            ).aggregate(b=Sum("bytes"), f=Sum("files"))
            grant_bytes, grant_files = want_bytes, want_files
            if quota_bytes is not None:
                room = quota_bytes - usage.bytes - (leased["b"] or 0)
                grant_bytes = max(0, min(want_bytes, room))
            if quota_files is not None:
                room = quota_files - usage.files - (leased["f"] or 0)
                grant_files = max(0, min(want_files, room))
            if grant_bytes or grant_files:
                lease, _ = QuotaLease.objects.get_or_create(
                    process_id=process, account_id=account_id
                )
                QuotaLease.objects.filter(pk=lease.pk).update(
                    bytes=F("bytes") + grant_bytes, files=F("files") + grant_files
                )
        return grant_bytes, grant_files

    def settle_quota(self, process, changes):
        with transaction.atomic():
            for account_id, (d_bytes, d_files, l_bytes, l_files) in changes.items():
                if d_bytes or d_files:
                    updated = QuotaUsage.objects.filter(pk=account_id).update(
                        bytes=F("bytes") + d_bytes, files=F("files") + d_files
                    )
                    if (
                        not updated
                        and FTPUserAccount.objects.filter(pk=account_id).exists()
                    ):
                        QuotaUsage.objects.create(
                            account_id=account_id, bytes=d_bytes, files=d_files
                        )
                if l_bytes or l_files:
                    QuotaLease.objects.filter(
                        process_id=process, account_id=account_id
                    ).update(bytes=F("bytes") - l_bytes, files=F("files") - l_files)

    def quota_usage(self, account_id):
        row = QuotaUsage.objects.filter(pk=account_id).values_list("bytes", "files")
        return tuple(row.first() or (0, 0))

    def set_quota_usage(self, account_id, used_bytes, used_files):
        QuotaUsage.objects.update_or_create(
            account_id=account_id,
            defaults={
                "bytes": used_bytes,
                "files": used_files,
                "scanned_at": timezone.now(),
            },
        )

    # --- bandwidth

    def publish_transfers(self, process, transfers):
        ServerProcess.objects.filter(pk=process).update(
            transfers={str(k): v for k, v in transfers.items()}
        )

    def transfer_counts(self):
        totals = {}
        rows = ServerProcess.objects.filter(self.alive()).exclude(transfers={})
        for transfers in rows.values_list("transfers", flat=True):
            for account, counts in transfers.items():
                total = totals.setdefault(_key(account), {})
                for direction, n in counts.items():
                    total[direction] = total.get(direction, 0) + n
        return totals

    # --- waiting

    def wait(self, timeout):
        if not self.pushes:
            _sleep(timeout)
            return False
        try:
            if self._listener is None:
                self._listener = self._listen()
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                return True
        except Exception as exc:
            # Polling still works: the push only makes it sooner.
            logger.info("LISTEN/NOTIFY unavailable (%s); polling instead.", exc)
            self.close()
            self._listen_failed = True
            _sleep(timeout)
        return False

    def _listen(self):
        import psycopg

        params = connection.get_connection_params()
        listener = psycopg.connect(**params, autocommit=True)
        listener.execute(f"LISTEN {CHANNEL}")
        return listener

    def close(self):
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except Exception as exc:
                logger.debug("Closing the LISTEN connection failed: %s", exc)


def _sleep(timeout):
    time.sleep(timeout)


def _lock_key(text):
    """A signed 32-bit key for pg_advisory_xact_lock(int, int)."""
    value = zlib.crc32(text.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


def _fields(session):
    return {
        "session_id": session.session_id,
        "account_id": session.account_id,
        "username": session.username[:150],
        "remote_ip": session.remote_ip,
        "address_key": session.address_key[:64],
        "tls": session.tls,
        "connected_at": session.connected_at,
    }


def _key(account):
    """An account id published as text back to an int; other keys stay text."""
    return int(account) if str(account).isdigit() else account
