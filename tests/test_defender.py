"""The defender, live: scores, bans, the lists, and bans shared through the database.

Clients bind to distinct loopback addresses (127.0.0.x): 127.0.0.1 is on the
suite's safelist (tests/settings.py), so each test scores its own addresses.
"""

import collections
import ftplib
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from ftpserver_core import audit
from ftpserver_core.defender import Defender, address_key
from ftpserver_core.defender.addresses import NetworkMap
from ftpserver_core.models import AuditEvent, Ban, NetworkRule

from .audit_tools import HANG_TIMEOUT, database_outage, own_journal, wait_until
from .conftest import PASSWORD
from .processes import command_env
from .test_commands import ftpserver_cmd  # noqa: F401  (fixture)
from .test_prefork import children, connection_count

# Quick polls: a test sees a ban made elsewhere within a fraction of a second.
FAST = {
    "FTPSERVER_DEFENDER_POLL_INTERVAL": 0.2,
    "FTPSERVER_DEFENDER_THRESHOLD": 6,
    "FTPSERVER_AUTH_FAILED_DELAY": 0,
}


def connect(live, source, timeout=10):
    """Return an ftplib client of ``live`` connected from ``source`` (127.0.0.x)."""
    ftp = ftplib.FTP(timeout=timeout)
    ftp.connect(live.host, live.port, source_address=(source, 0))
    return ftp


def greeting(live, source):
    """Return the first reply a client from ``source`` gets (220 or 421)."""
    with socket.create_connection(
        (live.host, live.port), timeout=10, source_address=(source, 0)
    ) as sock:
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            reply += chunk
        return reply.decode()


def fail_login(live, source, username="alice", password="wrong"):  # noqa: S107
    """Log in with a wrong password; return the reply (530, or 421 if it banned)."""
    ftp = connect(live, source)
    try:
        with pytest.raises((ftplib.error_perm, ftplib.error_temp)) as failed:
            ftp.login(username, password)
    finally:
        ftp.close()
    reply = str(failed.value)
    assert reply[:3] in ("530", "421"), reply
    return reply


def active_bans(network):
    return list(Ban.objects.active().filter(network=network))


# "Every process and every node that shares the database enforces a new ban
# within 2 s" (issue 10). The tests poll every 0.25 s (the defender's poll and
# the state thread's rounds that run it), so that 2 s is several rounds on a
# loaded machine; at the default 1 s the bound is one poll interval plus a
# round (docs/security.rst).
PROPAGATION_POLL = 0.25
PROPAGATION_BOUND = 2.0


@pytest.fixture
def fast_defender(settings):
    for name, value in FAST.items():
        setattr(settings, name, value)
    return settings


def ban_committed_at(network):
    """The wall-clock time of the INSERT of ``network``'s ban row.

    ``changed_at`` is stamped by save(), just before the INSERT and its
    commit: a propagation time measured from it is never shorter than the
    time from the commit.
    """
    ban = wait_until(
        lambda: Ban.objects.filter(network=network).order_by("changed_at").first(),
        timeout=10,
    )
    return ban.changed_at.timestamp()


def test_failed_logins_ban_the_address_and_others_still_log_in(
    fast_defender, ftp_server, make_account, recorder
):
    make_account("alice")
    live = ftp_server()
    # An unknown user scores 2: three make 6, the threshold. The third
    # attempt's own session is answered 421.
    replies = [fail_login(live, "127.0.0.2", username="nobody") for _ in range(3)]
    assert [r[:3] for r in replies] == ["530", "530", "421"]
    assert greeting(live, "127.0.0.2").startswith("421 Your address is banned")
    ftp = connect(live, "127.0.0.3")
    assert ftp.login("alice", PASSWORD).startswith("230")
    ftp.quit()

    ban = wait_until(lambda: active_bans("127.0.0.2/32"))[0]
    assert ban.reason == Ban.Reason.FAILED_LOGINS
    assert ban.score == 6 and ban.offence == 1
    assert ban.expires_at - ban.created_at == timedelta(seconds=1800)
    banned = recorder.wait_for("ftp_address_banned")[0]
    assert banned["network"] == "127.0.0.2/32" and banned["remote_ip"] == "127.0.0.2"
    refused = recorder.wait_for("ftp_connection_refused")[0]
    assert refused["reason"] == "banned" and refused["remote_ip"] == "127.0.0.2"
    live.stop()
    assert AuditEvent.objects.filter(event="ban", network="127.0.0.2/32").count() == 1
    assert AuditEvent.objects.filter(
        event="refused", remote_ip="127.0.0.2", reason="banned"
    ).exists()


def test_an_unknown_user_scores_more_than_a_wrong_password(
    fast_defender, ftp_server, make_account
):
    make_account("alice")
    live = ftp_server()
    # Five wrong passwords: 5 points, below 6.
    for _ in range(5):
        fail_login(live, "127.0.0.4")
    assert greeting(live, "127.0.0.4").startswith("220")
    # Three unknown users: 6 points.
    for _ in range(3):
        fail_login(live, "127.0.0.5", username="mallory")
    assert greeting(live, "127.0.0.5").startswith("421")


def test_the_safelist_is_never_banned_and_the_blocklist_always_refused(
    fast_defender, ftp_server, make_account
):
    make_account("alice")
    NetworkRule.objects.create(network="127.0.0.6/32", kind="safelist")
    NetworkRule.objects.create(network="127.0.0.8/31", kind="blocklist")
    live = ftp_server()
    wait_until(lambda: live.server.defender.blocklist.lookup("127.0.0.8"))
    for _ in range(8):
        fail_login(live, "127.0.0.6", username="nobody")
    assert greeting(live, "127.0.0.6").startswith("220")
    assert greeting(live, "127.0.0.8").startswith("421 Connections from your address")
    assert greeting(live, "127.0.0.9").startswith("421 Connections from your address")
    assert greeting(live, "127.0.0.10").startswith("220")


def test_the_configured_safelist_is_never_banned(
    fast_defender, ftp_server, make_account
):
    make_account("alice")
    # 127.0.0.1 is safelisted by tests/settings.py.
    live = ftp_server()
    for _ in range(8):
        fail_login(live, "127.0.0.1", username="nobody")
    assert greeting(live, "127.0.0.1").startswith("220")
    assert not Ban.objects.exists()


def test_a_ban_made_in_the_database_closes_open_sessions_and_is_enforced_quickly(
    fast_defender, ftp_server, make_account
):
    make_account("alice")
    live = ftp_server()
    ftp = connect(live, "127.0.0.11")
    ftp.login("alice", PASSWORD)
    other = connect(live, "127.0.0.12")
    other.login("alice", PASSWORD)
    started = time.monotonic()
    Ban.objects.create(
        network="127.0.0.11/32", expires_at=timezone.now() + timedelta(hours=1)
    )
    # The session is told and closed by the server, not by its own next command.
    reply = ftp.getline()
    elapsed = time.monotonic() - started
    assert reply.startswith("421 Your address is banned")
    assert ftp.sock.recv(1) == b""
    print(f"ban enforced on an open session after {elapsed:.2f} s")
    assert other.voidcmd("NOOP").startswith("200")
    assert greeting(live, "127.0.0.11").startswith("421")


def test_a_ban_made_by_one_server_is_enforced_by_another(
    fast_defender, ftp_server, make_account
):
    """Two servers on one database: the other one refuses the address within
    2 s of the ban row's commit."""
    fast_defender.FTPSERVER_DEFENDER_POLL_INTERVAL = PROPAGATION_POLL
    fast_defender.FTPSERVER_STATE_POLL_INTERVAL = PROPAGATION_POLL
    # The probes of the second server are connections that never log in:
    # scored, they would have it ban the address on its own.
    fast_defender.FTPSERVER_DEFENDER_SCORES = {"no_login": 0}
    make_account("alice")
    first, second = ftp_server(), ftp_server()
    assert greeting(second, "127.0.0.13").startswith("220")
    for _ in range(3):
        fail_login(first, "127.0.0.13", username="nobody")
    assert greeting(first, "127.0.0.13").startswith("421")
    wait_until(
        lambda: greeting(second, "127.0.0.13").startswith("421"),
        timeout=10,
        interval=0.02,
    )
    refused_at = time.time()
    elapsed = refused_at - ban_committed_at("127.0.0.13/32")
    print(f"ban enforced by the other server {elapsed:.2f} s after its commit")
    assert elapsed < PROPAGATION_BOUND, f"the other server took {elapsed:.2f} s"
    assert Ban.objects.filter(network="127.0.0.13/32").count() == 1


def test_a_ban_made_by_one_worker_process_is_enforced_by_every_worker(
    ftpserver_cmd,  # noqa: F811
    make_account,
):
    """Two prefork workers: a ban one worker makes closes the address's
    sessions on both, within 2 s of the ban row's commit."""
    make_account("alice")
    env = command_env(
        DJANGO_SETTINGS_MODULE="tests.fault_settings",
        FTPSERVER_DEFENDER_THRESHOLD="6",
        FTPSERVER_AUTH_FAILED_DELAY="0",
        FTPSERVER_DEFENDER_POLL_INTERVAL=str(PROPAGATION_POLL),
        FTPSERVER_STATE_POLL_INTERVAL=str(PROPAGATION_POLL),
    )
    server = ftpserver_cmd("127.0.0.1:0", "--workers", "2", env=env)
    workers = wait_until(
        lambda: len(children(server.pid)) == 2 and children(server.pid)
    )
    live = type("Live", (), {"host": server.host, "port": server.port})
    # Sessions of the address on both workers (the kernel spreads them).
    sessions = []
    while not all(connection_count(pid, server.port) for pid in workers):
        assert len(sessions) < 40, "the sessions all went to one worker"
        ftp = connect(live, "127.0.0.24")
        ftp.login("alice", PASSWORD)
        sessions.append(ftp)
    for _ in range(12):
        if fail_login(live, "127.0.0.24", username="nobody").startswith("421"):
            break
    else:
        pytest.fail("no ban after 12 failed logins")
    banned_at = time.monotonic()
    # Each getline() returns when that session's 421 arrives: after the
    # loop, every session of the address, on both workers, has had its 421.
    for ftp in sessions:
        assert ftp.getline().startswith("421 Your address is banned")
    closed_at = time.time()
    print(
        f"{len(sessions)} sessions on 2 workers closed "
        f"{time.monotonic() - banned_at:.2f} s after the banning 421"
    )
    elapsed = closed_at - ban_committed_at("127.0.0.24/32")
    print(f"... {elapsed:.2f} s after the ban row's commit")
    assert elapsed < PROPAGATION_BOUND, f"the other worker took {elapsed:.2f} s"
    # New connections of the address are refused, whichever worker takes them.
    for _ in range(6):
        assert greeting(live, "127.0.0.24").startswith("421 Your address is banned")
    assert greeting(live, "127.0.0.25").startswith("220")


def test_a_lifted_ban_lets_the_address_back(fast_defender, ftp_server, make_account):
    make_account("alice")
    ban = Ban.objects.create(
        network="127.0.0.14", expires_at=timezone.now() + timedelta(hours=1)
    )
    ban.full_clean()
    live = ftp_server()
    wait_until(lambda: greeting(live, "127.0.0.14").startswith("421"))
    ban.lifted_at = timezone.now()
    ban.lifted_by = "admin"
    ban.save()
    wait_until(lambda: greeting(live, "127.0.0.14").startswith("220"), timeout=10)


def test_an_expired_ban_no_longer_refuses(fast_defender, ftp_server):
    Ban.objects.create(
        network="127.0.0.15/32", expires_at=timezone.now() + timedelta(seconds=1)
    )
    live = ftp_server()
    wait_until(lambda: greeting(live, "127.0.0.15").startswith("421"))
    wait_until(lambda: greeting(live, "127.0.0.15").startswith("220"), timeout=10)


def test_repeat_offences_ban_longer(fast_defender, ftp_server, make_account):
    fast_defender.FTPSERVER_DEFENDER_BAN_TIME = 1
    make_account("alice")
    live = ftp_server()
    for _offence in (1, 2):
        wait_until(lambda: greeting(live, "127.0.0.16").startswith("220"), timeout=10)
        for _ in range(3):
            fail_login(live, "127.0.0.16", username="nobody")
        assert greeting(live, "127.0.0.16").startswith("421")
    bans = wait_until(
        lambda: (lambda b: b if len(b) == 2 else None)(
            list(Ban.objects.filter(network="127.0.0.16/32").order_by("id"))
        )
    )
    assert [b.offence for b in bans] == [1, 2]
    # Growth 100 %: the second ban is twice as long.
    assert [(b.expires_at - b.created_at).total_seconds() for b in bans] == [1, 2]


def test_connections_that_never_log_in_are_scored(
    fast_defender, ftp_server, make_account
):
    live = ftp_server()
    for _ in range(6):
        ftp = connect(live, "127.0.0.17")
        ftp.close()
    wait_until(lambda: greeting(live, "127.0.0.17").startswith("421"), timeout=10)
    ban = wait_until(lambda: active_bans("127.0.0.17/32"))[0]
    assert ban.reason == Ban.Reason.NO_LOGIN


def test_over_long_command_lines_score_as_abuse(fast_defender, ftp_server):
    live = ftp_server()
    ftp = connect(live, "127.0.0.18")
    ftp.putline("NOOP " + "x" * 5000)
    assert ftp.getline().startswith("500")
    assert ftp.voidcmd("NOOP").startswith("200")
    # 2 x 3 points: banned, this session included.
    ftp.putline("NOOP " + "x" * 5000)
    assert ftp.getline().startswith("500")
    assert ftp.getline().startswith("421 Your address is banned")
    ftp.close()
    assert greeting(live, "127.0.0.18").startswith("421")
    assert wait_until(lambda: active_bans("127.0.0.18/32"))[0].reason == "abuse"


def test_a_banned_address_reconnecting_is_recorded_once(
    fast_defender, ftp_server, recorder
):
    Ban.objects.create(network="127.0.0.19/32")
    live = ftp_server()
    wait_until(lambda: greeting(live, "127.0.0.19").startswith("421"))
    for _ in range(20):
        assert greeting(live, "127.0.0.19").startswith("421")
    assert len(recorder.of("ftp_connection_refused")) == 1


@pytest.fixture
def database_calls(monkeypatch):
    """Record the thread of every database call: connecting, and each query."""
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.utils import CursorWrapper

    calls = []
    ensure_connection = BaseDatabaseWrapper.ensure_connection
    execute = CursorWrapper._execute_with_wrappers

    def traced_connection(self):
        calls.append((threading.get_ident(), "connect"))
        return ensure_connection(self)

    def traced_execute(self, sql, *args, **kwargs):
        calls.append((threading.get_ident(), sql))
        return execute(self, sql, *args, **kwargs)

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", traced_connection)
    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", traced_execute)
    return calls


def test_a_known_ban_is_enforced_at_accept_from_memory_while_the_database_hangs(
    fast_defender, ftp_server, database_calls, tmp_path
):
    """Enforcement at accept asks the database nothing: with the database
    hung (PostgreSQL behind a proxy that holds every connection, or SQLite
    locked), a known ban still gets its 421 at once and another address its
    220, and the IO loop's thread makes no database call meanwhile."""
    fast_defender.FTPSERVER_STATE_POLL_INTERVAL = 0.2
    with database_outage() as outage, own_journal(tmp_path / "journal"):
        Ban.objects.create(
            network="127.0.0.30/32", expires_at=timezone.now() + timedelta(hours=1)
        )
        live = ftp_server()
        wait_until(lambda: greeting(live, "127.0.0.30").startswith("421"))
        loop = live.thread.ident
        outage.down(hang=True)
        del database_calls[:]
        answers = []
        for source in ["127.0.0.30", "127.0.0.31"] * 5:
            started = time.monotonic()
            answers.append((source, greeting(live, source)[:3]))
            took = time.monotonic() - started
            # A call to the hung database would wait HANG_TIMEOUT (SQLite's
            # busy timeout) or for ever (the proxy).
            assert took < HANG_TIMEOUT * 0.8, f"{source} answered after {took:.2f} s"
        assert answers == [("127.0.0.30", "421"), ("127.0.0.31", "220")] * 5
        # The tracer sees the calls of the other threads (the state thread's
        # rounds keep trying): none of them is the loop's.
        wait_until(lambda: any(t != loop for t, _ in database_calls), timeout=10)
        on_loop = [sql for thread, sql in database_calls if thread == loop]
        assert on_loop == [], on_loop
        outage.up()

        # The refusals are audited: the writer met the hung database too.
        # Let it write them before the server stops (as the next start would).
        def written():
            audit.writer.start()
            return audit.writer.flush(timeout=2)

        wait_until(written, timeout=60, interval=0.1)


def test_a_sprayed_user_name_is_slowed_down_not_locked(
    fast_defender, ftp_server, make_account
):
    fast_defender.FTPSERVER_DEFENDER_USERNAME_THRESHOLD = 3
    fast_defender.FTPSERVER_DEFENDER_THRESHOLD = 100
    make_account("alice")
    live = ftp_server()
    # Three addresses, one wrong password each: none of them near a ban.
    for source in ("127.0.0.20", "127.0.0.21", "127.0.0.22"):
        fail_login(live, source)
    ftp = connect(live, "127.0.0.23")
    ftp.sendcmd("USER alice")
    started = time.monotonic()
    # The real user still gets in, after the delay (1 s for the first excess).
    assert ftp.sendcmd(f"PASS {PASSWORD}").startswith("230")
    assert time.monotonic() - started >= 0.9
    ftp.quit()
    # Another name is not slowed.
    defender = live.server.defender
    assert defender.login_delay("bob") == 0
    assert defender.login_delay("alice") == 1.0


# --- units of the defender's memory


def test_address_keys_score_ipv6_by_its_64():
    assert address_key("203.0.113.7") == "203.0.113.7/32"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7/32"
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_key("not an address") is None


def test_the_network_map_finds_the_most_specific_network():
    networks = NetworkMap(
        [("10.0.0.0/8", "wide"), ("10.1.2.0/24", "narrow"), ("2001:db8::/64", "v6")]
    )
    assert networks.lookup("10.1.2.3") == ("10.1.2.0/24", "narrow")
    assert networks.lookup("10.9.9.9") == ("10.0.0.0/8", "wide")
    assert networks.lookup("11.0.0.1") is None
    assert networks.lookup("2001:db8::5") == ("2001:db8::/64", "v6")
    assert networks.lookup("2001:db8:0:1::5") is None
    networks.discard("10.1.2.0/24")
    assert networks.lookup("10.1.2.3") == ("10.0.0.0/8", "wide")
    assert len(networks) == 2


class _Server:
    sessions = ()
    signal_sender = None
    worker_pool = None


@pytest.mark.parametrize(
    "growth, expected",
    [(100, [60, 120, 240, 300]), (50, [60, 90, 135, 202.5]), (0, [60, 60, 60, 60])],
)
def test_ban_time_grows_with_repeat_offences(settings, growth, expected):
    settings.FTPSERVER_DEFENDER_BAN_TIME = 60
    settings.FTPSERVER_DEFENDER_BAN_GROWTH = growth
    settings.FTPSERVER_DEFENDER_MAX_BAN_TIME = 300
    defender = Defender(_Server())
    assert [defender.ban_duration(n) for n in (1, 2, 3, 4)] == expected


@override_settings(FTPSERVER_DEFENDER_USERNAME_THRESHOLD=2)
def test_username_delays_double_up_to_the_maximum(settings):
    settings.FTPSERVER_DEFENDER_USERNAME_MAX_DELAY = 10
    defender = Defender(_Server())
    delays = []
    for _ in range(8):
        delays.append(defender.login_delay("alice"))
        defender.usernames.add("alice", 1, time.monotonic())
    assert delays == [0, 0, 1, 2, 4, 8, 10, 10]


def test_scores_are_bounded_in_memory_and_forget_the_window():
    from ftpserver_core.defender.scores import BUCKETS, ScoreBoard

    board = ScoreBoard(window=300, max_keys=3)
    for second in range(0, 3000):
        board.add("sprayed", 1, float(second))
    # Ten windows of events, at most one window (+ one bucket) kept.
    assert len(board._keys["sprayed"]) <= BUCKETS + 1
    assert 300 <= board.total("sprayed", 2999.0) <= 310
    assert board.total("sprayed", 2999.0 + 400) == 0
    for key in ("a", "b", "c"):
        board.add(key, 1, 0.0)
    assert len(board) == 3 and board.total("sprayed", 0.0) == 0


# --- the hostile review


def score(live, source):
    """The defender's score of ``source``'s address."""
    return live.server.defender.scores.total(address_key(source), time.monotonic())


def refused_login(live, source, password):
    """Log in and be refused (530); return the session, still open."""
    ftp = connect(live, source)
    ftp.sendcmd("USER alice")
    with pytest.raises(ftplib.error_perm, match="530"):
        ftp.sendcmd(f"PASS {password}")
    return ftp


def test_a_session_limit_refusal_is_not_scored(
    fast_defender, ftp_server, make_account, recorder
):
    """A script retrying while its other sessions run is not an attacker:
    the 530 says the limit is reached, and the address collects no points
    (a wrong password still does)."""
    make_account("alice", max_sessions=1)
    live = ftp_server()
    held = connect(live, "127.0.0.1")
    held.login("alice", PASSWORD)
    right = connect(live, "127.0.0.26")
    right.sendcmd("USER alice")
    with pytest.raises(ftplib.error_perm, match="^530 Too many sessions"):
        right.sendcmd(f"PASS {PASSWORD}")
    wrong = refused_login(live, "127.0.0.27", "wrong")
    failed = recorder.wait_for("ftp_login_failed", count=2)
    assert [f["reason"] for f in failed] == ["too_many_sessions", "bad_credentials"]
    assert score(live, "127.0.0.26") == 0
    assert score(live, "127.0.0.27") == 1
    right.quit()
    wrong.quit()
    recorder.wait_for("ftp_client_disconnected", count=2)
    assert score(live, "127.0.0.26") == 0
    held.quit()


def test_a_full_reload_of_many_bans_is_parsed_by_the_store_not_on_the_loop(
    db, monkeypatch
):
    """An IPv6 /48 holds 65,536 /64s to ban: parsing them all in apply()
    stalled every session for seconds at each full reload."""
    import ipaddress

    now = timezone.now()
    Ban.objects.bulk_create(
        Ban(
            network=f"2001:db8:0:{number:x}::/64",
            reason="abuse",
            created_at=now,
            expires_at=now + timedelta(hours=1),
            created_by="test",
        )
        for number in range(1, 20_001)
    )
    defender = Defender(_Server())
    # A ban this server made that the store has not written yet.
    defender.bans.set(
        "2001:db8:ffff::/64",
        {
            "id": None,
            "network": "2001:db8:ffff::/64",
            "reason": "abuse",
            "expires": time.time() + 3600,
            "active": True,
            "offence": 1,
        },
    )
    changes = defender.store._sync()  # the store's thread's work
    parsed = []
    ip_network = ipaddress.ip_network

    def counted(value, *args, **kwargs):
        parsed.append(str(value))
        return ip_network(value, *args, **kwargs)

    monkeypatch.setattr(ipaddress, "ip_network", counted)
    defender.apply(changes)  # the loop's
    monkeypatch.undo()
    on_loop = [network for network in parsed if network.startswith("2001:db8:0:")]
    assert not on_loop, f"{len(on_loop)} parses of the loaded bans on the loop"
    assert len(defender.bans) == 20_001
    assert defender.refusal("2001:db8:0:4e20::7") == "banned"
    assert defender.refusal("2001:db8:ffff::1") == "banned"
    assert defender.refusal("2001:db8:1::1") is None


def test_a_ban_shortened_in_the_database_is_shortened_by_the_server_that_made_it(
    fast_defender, ftp_server
):
    live = ftp_server()
    ftp = connect(live, "127.0.0.28")
    ftp.putline("USER a\x01b")  # 3 points
    assert ftp.getline().startswith("501")
    ftp.putline("USER a\x01b")  # 6: banned
    assert ftp.getline().startswith("421 Your address is banned")
    ftp.close()
    ban = wait_until(lambda: active_bans("127.0.0.28/32"))[0]
    assert ban.expires_at - ban.created_at == timedelta(seconds=1800)
    # The admin's edit: the ban ends in 2 s.
    ban.expires_at = timezone.now() + timedelta(seconds=2)
    ban.save()
    wait_until(lambda: greeting(live, "127.0.0.28").startswith("220"), timeout=15)


def test_the_connection_that_crosses_the_threshold_at_the_per_address_limit_is_refused_once(
    fast_defender, ftp_server, recorder
):
    """Its ban refused it again from within the limit's refusal: a second
    ftp_connection_refused, and a 421 ban in place of its 421 limit."""
    live = ftp_server(max_connections_per_ip=1)
    held = connect(live, "127.0.0.29")
    # 3 points per connection over the limit: the second one bans.
    replies = [greeting(live, "127.0.0.29") for _ in range(2)]
    for reply in replies:
        assert reply.startswith("421 Too many connections from the same IP"), reply
    assert held.getline().startswith("421 Your address is banned")
    held.close()
    assert greeting(live, "127.0.0.29").startswith("421 Your address is banned")
    refused = recorder.of("ftp_connection_refused")
    per_session = collections.Counter(r["session_id"] for r in refused)
    assert set(per_session.values()) == {1}, refused
    assert [r["reason"] for r in refused][:3] == [
        "too_many_connections_per_ip",
        "too_many_connections_per_ip",
        "banned",
    ]
