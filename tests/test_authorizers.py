"""Login through Django auth, session counts, and no SQL after login."""

import ftplib
import io
import os
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend
from django.db import connections
from django.db.backends.signals import connection_created
from django.test import override_settings
from django.utils import timezone

from ftpserver_core.authorizers import DjangoAuthorizer
from ftpserver_core.models import FTPUserAccount
from ftpserver_core.policy import SessionPolicy

from .conftest import PASSWORD

TOKEN = "fixed-token-4b7d"


class TokenBackend(BaseBackend):
    """Authenticate any existing user whose password is the fixed token."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if password != TOKEN:
            return None
        user_model = get_user_model()
        try:
            return user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            return None

    def get_user(self, user_id):
        return get_user_model()._default_manager.filter(pk=user_id).first()


class QueryCounter:
    """An execute wrapper counting the SQL of every connection it is put on."""

    def __init__(self):
        self._lock = threading.Lock()
        self.queries = []
        self.connections = 0

    def __call__(self, execute, sql, params, many, context):
        with self._lock:
            self.queries.append((threading.current_thread().name, sql))
        return execute(sql, params, many, context)

    def count(self):
        with self._lock:
            return len(self.queries)


@pytest.fixture
def query_counter(transactional_db):
    """Count the SQL queries of every thread, the server's workers included.

    Each connection a thread opens gets the counter as an execute wrapper
    (CONN_MAX_AGE is 0, so each login opens a new one); the test thread's
    open connections get it too.
    """
    counter = QueryCounter()
    wrapped = []

    def wrap(connection):
        if counter not in connection.execute_wrappers:
            connection.execute_wrappers.append(counter)
            wrapped.append(connection)

    def on_connection_created(sender, connection, **kwargs):
        if threading.current_thread().name in ("ftpserver-audit", "ftpserver-state"):
            # By design, on their own schedule: the audit writer inserts (see
            # test_audit.py), the shared state heartbeats and polls for
            # disconnects and bans (test_state.py, test_defender.py).
            return
        with counter._lock:
            counter.connections += 1
        wrap(connection)

    connection_created.connect(on_connection_created, weak=False)
    for connection in connections.all():
        wrap(connection)
    yield counter
    connection_created.disconnect(on_connection_created)
    for connection in wrapped:
        if counter in connection.execute_wrappers:
            connection.execute_wrappers.remove(counter)


def put(account, name, data):
    path = os.path.join(account.home_path, name)
    with open(path, "wb") as fh:
        fh.write(data)


# --- no SQL after login


def test_no_sql_query_for_any_command_after_login(
    live_ftp, make_account, query_counter
):
    account = make_account("alice")
    put(account, "seed.txt", b"seed")
    setup_queries = query_counter.count()
    connections_before = query_counter.connections

    ftp = live_ftp.client("alice")
    # The counter works: the login queried, from a new connection of a
    # server thread.
    login_queries = query_counter.count()
    assert login_queries > setup_queries
    assert query_counter.connections > connections_before
    assert all(
        name.startswith("ftpserver-auth")
        for name, _ in query_counter.queries[setup_queries:]
    ), query_counter.queries[setup_queries:]
    connections_after_login = query_counter.connections

    commands = 0
    for i in range(4):
        ftp.voidcmd("NOOP")
        ftp.pwd()
        ftp.mkd(f"d{i}")
        ftp.cwd(f"d{i}")
        ftp.storbinary(f"STOR f{i}.bin", io.BytesIO(b"x" * (100 + i)))
        ftp.voidcmd("TYPE I")
        assert ftp.size(f"f{i}.bin") == 100 + i
        ftp.sendcmd(f"MDTM f{i}.bin")
        out = io.BytesIO()
        ftp.retrbinary(f"RETR f{i}.bin", out.write)
        assert out.getvalue() == b"x" * (100 + i)
        ftp.retrlines("LIST", lambda _: None)
        assert ftp.nlst() == [f"f{i}.bin"]
        assert [name for name, _ in ftp.mlsd()] == [f"f{i}.bin"]
        ftp.rename(f"f{i}.bin", f"g{i}.bin")
        ftp.delete(f"g{i}.bin")
        ftp.cwd("/")
        ftp.rmd(f"d{i}")
        commands += 16
    ftp.retrbinary("RETR seed.txt", lambda _: None)
    ftp.sendcmd("SITE CHMOD 644 seed.txt")
    ftp.sendcmd("MFMT 20200101000000 seed.txt")
    ftp.sendcmd("MLST seed.txt")
    ftp.storbinary("APPE seed.txt", io.BytesIO(b"+"))
    commands += 5
    assert commands >= 50

    assert query_counter.count() == login_queries, query_counter.queries[login_queries:]
    assert query_counter.connections == connections_after_login
    ftp.quit()


def test_no_sql_query_for_commands_of_a_group_account_with_rules(
    live_ftp, make_account, query_counter
):
    account = make_account(
        "alice",
        group="staff",
        permission="elr",
        rules=[{"path": "inbox", "permission": "elradfmw", "recursive": True}],
    )
    os.mkdir(os.path.join(account.home_path, "inbox"))
    setup_queries = query_counter.count()
    ftp = live_ftp.client("alice")
    before = query_counter.count()
    assert before > setup_queries
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.storbinary("STOR top.bin", io.BytesIO(b"x"))  # denied by the rule set
    ftp.cwd("inbox")
    ftp.storbinary("STOR in.bin", io.BytesIO(b"x"))
    ftp.mkd("sub")
    ftp.storbinary("STOR sub/deep.bin", io.BytesIO(b"y"))
    ftp.delete("sub/deep.bin")
    ftp.rmd("sub")
    ftp.retrlines("LIST", lambda _: None)
    assert query_counter.count() == before
    ftp.quit()
    assert os.listdir(os.path.join(account.home_path, "inbox")) == ["in.bin"]


def test_a_first_login_queries_and_a_repeat_login_is_answered_from_memory(
    live_ftp, make_account, query_counter
):
    """The login cache (logincache.py, tests/test_logincache.py)."""
    make_account("alice")
    wait_until_validated(live_ftp)  # the first round sets the baseline
    setup_queries = query_counter.count()
    live_ftp.client("alice").quit()
    first = query_counter.count()
    assert first > setup_queries
    wait_until_validated(live_ftp)
    live_ftp.client("alice").quit()
    assert query_counter.count() == first


def wait_until_validated(live, timeout=10):
    """Wait for a round of the state thread to validate the login cache."""
    cache = live.server.handler.authorizer.logins
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cache._validated_at is not None and cache._validated_at > start:
            return
        time.sleep(0.02)
    raise AssertionError("the login cache was not validated in time")


# --- DjangoAuthorizer.login() on the real database


def test_login_returns_the_policy_and_updates_last_login(make_account):
    account = make_account(
        "alice", permission="elrw", rules=[{"path": "ro", "permission": "elr"}]
    )
    authorizer = DjangoAuthorizer()
    before = timezone.now()
    policy, reason = authorizer.login("alice", PASSWORD, "192.0.2.7", False)
    after = timezone.now()
    assert reason is None
    assert isinstance(policy, SessionPolicy)
    assert policy.username == "alice"
    assert policy.account_id == account.pk
    assert policy.user_id == account.user_id
    assert policy.home == os.path.realpath(account.home_path)
    assert policy.permission == "elrw"
    assert [(r.path, r.permission) for r in policy.rules] == [
        (os.path.join(policy.home, "ro"), "elr")
    ]
    assert policy.permission_for(os.path.join(policy.home, "ro", "f")) == "elr"
    assert policy.permission_for(os.path.join(policy.home, "f")) == "elrw"
    assert authorizer.session_count(account.pk) == 1
    account.refresh_from_db()
    assert account.last_login_ip == "192.0.2.7"
    assert before <= account.last_login_at <= after

    authorizer.close_session(policy)
    assert authorizer.session_count(account.pk) == 0
    authorizer.close_session(policy)  # closing twice never goes negative
    assert authorizer.session_count(account.pk) == 0


@pytest.mark.parametrize(
    ("fields", "username", "password", "remote_ip", "reason"),
    [
        ({}, "alice", "wrong", "127.0.0.1", "bad_credentials"),
        ({}, "nobody", PASSWORD, "127.0.0.1", "bad_credentials"),
        ({"is_enabled": False}, "alice", PASSWORD, "127.0.0.1", "account_disabled"),
        (
            {"expires_at": timezone.now() - timedelta(days=1)},
            "alice",
            PASSWORD,
            "127.0.0.1",
            "account_expired",
        ),
        ({"require_tls": True}, "alice", PASSWORD, "127.0.0.1", "tls_required"),
        (
            {"allowed_networks": "10.0.0.0/8"},
            "alice",
            PASSWORD,
            "127.0.0.1",
            "network_not_allowed",
        ),
        ({"allowed_networks": "10.0.0.0/8"}, "alice", PASSWORD, "10.1.2.3", None),
        ({"allowed_networks": "2001:db8::/32"}, "alice", PASSWORD, "2001:db8::1", None),
    ],
)
def test_login_refusals(make_account, fields, username, password, remote_ip, reason):
    account = make_account("alice", **fields)
    authorizer = DjangoAuthorizer()
    policy, got = authorizer.login(username, password, remote_ip, False)
    assert got == reason
    account.refresh_from_db()
    if reason is None:
        assert policy is not None
        assert authorizer.session_count(account.pk) == 1
        assert account.last_login_ip == remote_ip
    else:
        assert policy is None
        assert authorizer.session_count(account.pk) == 0
        assert account.last_login_at is None and account.last_login_ip is None


def test_login_with_tls_satisfies_require_tls(make_account):
    make_account("alice", require_tls=True)
    policy, reason = DjangoAuthorizer().login("alice", PASSWORD, "127.0.0.1", True)
    assert reason is None and policy.require_tls is True


def test_login_refuses_inactive_users_and_users_without_account(make_account):
    account = make_account("alice")
    account.user.is_active = False
    account.user.save()
    get_user_model().objects.create_user(username="webonly", password=PASSWORD)
    authorizer = DjangoAuthorizer()
    assert authorizer.login("alice", PASSWORD, "127.0.0.1", False) == (
        None,
        "inactive_user",
    )
    assert authorizer.login("webonly", PASSWORD, "127.0.0.1", False) == (
        None,
        "no_ftp_account",
    )


def test_login_counts_sessions_against_max_sessions(make_account):
    account = make_account("alice", max_sessions=2)
    authorizer = DjangoAuthorizer()
    one, _ = authorizer.login("alice", PASSWORD, "127.0.0.1", False)
    two, _ = authorizer.login("alice", PASSWORD, "127.0.0.1", False)
    assert one is not None and two is not None
    assert authorizer.session_count(account.pk) == 2
    assert authorizer.login("alice", PASSWORD, "127.0.0.1", False) == (
        None,
        "too_many_sessions",
    )
    assert authorizer.session_count(account.pk) == 2
    authorizer.close_session(one)
    three, reason = authorizer.login("alice", PASSWORD, "127.0.0.1", False)
    assert reason is None and three is not None
    assert authorizer.session_count(account.pk) == 2
    # An authorizer on its own (no server's shared state) counts alone.
    assert DjangoAuthorizer().session_count(account.pk) == 0


def test_group_max_sessions_is_inherited(make_account):
    from ftpserver_core.models import FTPUserGroup

    FTPUserGroup.objects.create(name="limited", max_sessions=1)
    account = make_account("alice", group="limited")
    authorizer = DjangoAuthorizer()
    policy, _ = authorizer.login("alice", PASSWORD, "127.0.0.1", False)
    assert policy.max_sessions == 1
    assert authorizer.login("alice", PASSWORD, "127.0.0.1", False)[1] == (
        "too_many_sessions"
    )
    authorizer.close_session(policy)
    assert authorizer.session_count(account.pk) == 0


def test_session_limit_holds_under_concurrent_logins(make_account):
    account = make_account("alice", max_sessions=3)
    authorizer = DjangoAuthorizer()
    results = []
    barrier = threading.Barrier(8)

    def login():
        barrier.wait(5)
        results.append(authorizer.login("alice", PASSWORD, "127.0.0.1", False))

    threads = [threading.Thread(target=login) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    reasons = sorted(str(reason) for _, reason in results)
    assert len(results) == 8
    assert reasons.count("None") == 3
    assert reasons.count("too_many_sessions") == 5
    assert authorizer.session_count(account.pk) == 3


class Broken(BaseBackend):
    """A backend that hits a database error."""

    def authenticate(self, request, **credentials):
        FTPUserAccount.objects.raw("SELECT * FROM no_such_table_xyz")[0]


def test_login_never_raises_on_a_database_error(make_account):
    make_account("alice")
    authorizer = DjangoAuthorizer()
    with override_settings(AUTHENTICATION_BACKENDS=["tests.test_authorizers.Broken"]):
        assert authorizer.login("alice", PASSWORD, "127.0.0.1", False) == (
            None,
            "server_error",
        )


# --- any AUTHENTICATION_BACKENDS backend


@override_settings(AUTHENTICATION_BACKENDS=["tests.test_authorizers.TokenBackend"])
def test_a_custom_backend_logs_in_over_ftp(live_ftp, make_account, recorder):
    account = make_account("alice")
    put(account, "f.txt", b"via token")
    # The usual password means nothing to this backend.
    ftp = live_ftp.client()
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp.login("alice", PASSWORD)
    assert ftp.login("alice", TOKEN).startswith("230")
    out = io.BytesIO()
    ftp.retrbinary("RETR f.txt", out.write)
    ftp.quit()
    assert out.getvalue() == b"via token"
    assert [kw["username"] for kw in recorder.of("ftp_login")] == ["alice"]
    assert recorder.of("ftp_login_failed")[0]["reason"] == "bad_credentials"
    # Written behind by the state thread, within a round.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        account.refresh_from_db()
        if account.last_login_ip:
            break
        time.sleep(0.05)
    assert account.last_login_ip == "127.0.0.1"


@override_settings(
    AUTHENTICATION_BACKENDS=[
        "tests.test_authorizers.TokenBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
)
def test_backends_are_tried_in_order(live_ftp, make_account):
    make_account("alice")
    for secret in (TOKEN, PASSWORD):
        ftp = live_ftp.client("alice", password=secret)
        assert ftp.pwd() == "/"
        ftp.quit()


@override_settings(AUTHENTICATION_BACKENDS=["tests.test_authorizers.TokenBackend"])
def test_a_custom_backend_still_needs_an_ftp_account(live_ftp, transactional_db):
    get_user_model().objects.create_user(username="webonly")
    ftp = live_ftp.client()
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp.login("webonly", TOKEN)
    ftp.close()


def test_the_server_session_count_follows_the_connections(live_ftp, make_account):
    account = make_account("alice")
    authorizer = live_ftp.server.handler.authorizer
    clients = [live_ftp.client("alice") for _ in range(3)]
    assert authorizer.session_count(account.pk) == 3
    clients[0].quit()
    clients[1].close()
    deadline = time.monotonic() + 5
    while authorizer.session_count(account.pk) != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert authorizer.session_count(account.pk) == 1
    clients[2].login("alice", PASSWORD)  # USER again: the old session ends
    assert authorizer.session_count(account.pk) == 1
    clients[2].quit()


# --- database connections of the login threads


@pytest.fixture
def login_connections():
    """Count the database connections the login threads open."""
    opened = []

    def on_connection_created(sender, connection, **kwargs):
        if threading.current_thread().name.startswith("ftpserver-auth"):
            opened.append(threading.current_thread().name)

    connection_created.connect(on_connection_created, weak=False)
    yield opened
    connection_created.disconnect(on_connection_created)


def logins(server, n):
    for _ in range(n):
        ftp = server.client("alice")
        ftp.quit()


@pytest.mark.parametrize("max_age, most", [(0, 6), (60, 2)])
def test_login_threads_follow_conn_max_age(
    settings, monkeypatch, ftp_server, make_account, login_connections, max_age, most
):
    # CONN_MAX_AGE 0: a connection per login, as per request; 60: each login
    # thread (two here) keeps its own across logins.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", max_age)
    settings.FTPSERVER_CREDENTIAL_CACHE_TTL = 0
    make_account("alice")
    server = ftp_server()
    logins(server, 6)
    assert 1 <= len(login_connections) <= most
    if max_age == 0:
        assert len(login_connections) == 6


@pytest.mark.skipif(
    connections["default"].vendor != "postgresql",
    reason="terminates PostgreSQL backends",
)
@pytest.mark.parametrize("checks", [True, False])
def test_a_login_thread_reconnects_when_its_kept_connection_died(
    settings, monkeypatch, ftp_server, make_account, checks
):
    # With persistent connections, the database may close one while it sits
    # in a login thread (restart, idle timeout): the next login must not fail,
    # with Django's health checks or without them.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)
    monkeypatch.setitem(connections.settings["default"], "CONN_HEALTH_CHECKS", checks)
    settings.FTPSERVER_CREDENTIAL_CACHE_TTL = 0
    make_account("alice")
    server = ftp_server()
    logins(server, 4)
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchall(), "no other connection to terminate"
    for _ in range(4):
        ftp = server.client()
        assert ftp.login("alice", PASSWORD).startswith("230")
        ftp.quit()
