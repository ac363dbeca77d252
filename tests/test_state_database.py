"""The database state backend against writers racing an account's deletion.

The state thread writes live sessions and quota rows behind the logins, on
its own connection; an admin may delete the account at the same moment.
Neither write may fail (it did on PostgreSQL: the deleter's COMMIT found a
session row written after its cascade had looked).
"""

import threading
from contextlib import contextmanager

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from ftpserver_core.models import (
    FTPUserAccount,
    LiveSession,
    QuotaLease,
    QuotaUsage,
    ServerProcess,
)
from ftpserver_core.state.base import SessionInfo
from ftpserver_core.state.database import DatabaseBackend

concurrent = pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="two concurrent writers: SQLite has one (the race cannot happen)",
)


@contextmanager
def deletion_paused(account):
    """Delete ``account`` in a thread that stops just before its row goes.

    Django's cascade has updated and deleted the related rows it found by
    then: rows written while the deletion waits are the race. Yield a
    function that lets the deletion commit and returns its error.
    """
    table = f'"{FTPUserAccount._meta.db_table}"'
    paused, go = threading.Event(), threading.Event()
    outcome = {}

    def pause(execute, sql, params, many, context):
        if sql.startswith("DELETE FROM") and sql.split()[2] == table:
            paused.set()
            go.wait(20)
        return execute(sql, params, many, context)

    def delete():
        try:
            with connection.execute_wrapper(pause), transaction.atomic():
                FTPUserAccount.objects.get(pk=account.pk).delete()
        except Exception as exc:  # noqa: BLE001  (the test reports it)
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=delete)
    thread.start()
    try:
        assert paused.wait(20), "the deletion never reached the account's row"

        def finish():
            go.set()
            thread.join(30)
            assert not thread.is_alive()
            return outcome.get("error")

        yield finish
    finally:
        go.set()
        thread.join(30)


def process_row():
    return ServerProcess.objects.create(node="n1", pid=1, heartbeat_at=timezone.now())


def session_of(account_id, username="alice"):
    return SessionInfo(
        session_id="s1",
        account_id=account_id,
        username=username,
        remote_ip="127.0.0.1",
        address_key="127.0.0.1",
        tls=False,
        connected_at=timezone.now(),
    )


@pytest.fixture
def parts(make_account):
    """An account, a live process row and the backend a state thread uses."""
    return make_account("alice"), process_row(), DatabaseBackend()


@concurrent
def test_a_session_written_during_the_deletion_fails_neither_write(parts):
    account, process, backend = parts
    with deletion_paused(account) as finish:
        # The state thread's write-behind of a login made just before.
        backend.record_sessions(process.pk, [session_of(account.pk)], {})
        assert finish() is None
    assert not FTPUserAccount.objects.filter(pk=account.pk).exists()
    row = LiveSession.objects.get(session_id="s1")
    # Its process is asked to end it, once the deletion is committed.
    assert row.kick_reason == "account_deleted"


def test_a_session_written_after_the_deletion_is_asked_to_end(parts):
    account, process, backend = parts
    pk = account.pk
    account.delete()
    backend.record_sessions(process.pk, [session_of(pk)], {})
    row = LiveSession.objects.get(session_id="s1")
    assert row.account_id is None
    assert row.kick_reason == "account_deleted"


@concurrent
def test_quota_rows_written_during_the_deletion_are_swept(parts):
    account, process, backend = parts
    with deletion_paused(account) as finish:
        backend.grant_quota(process.pk, account.pk, (10_000, 10), 4096, 1)
        backend.settle_quota(process.pk, {account.pk: (4096, 1, 4096, 1)})
        assert finish() is None
    assert QuotaUsage.objects.filter(account_id=account.pk).exists()
    backend.expire(60)
    assert not QuotaUsage.objects.filter(account_id=account.pk).exists()
    assert not QuotaLease.objects.filter(account_id=account.pk).exists()
