"""The live sessions page: the list, its filters, lost sessions, the actions.

Rows are made with the ORM, as a server's state thread writes them, except
in the last tests, where a real server and a real client hold the session
the admin ends.
"""

import datetime
import ftplib
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from ftpserver_core.models import (
    AuditEvent,
    Ban,
    FTPUserAccount,
    FTPUserGroup,
    LiveSession,
    ServerProcess,
)

from .conftest import PASSWORD
from .test_defender import greeting

LIST = reverse("admin:ftpserver_core_livesession_changelist")


@pytest.fixture
def world(db):
    """Two processes (one lost), three sessions, an account in a group."""
    now = timezone.now()
    node_a = ServerProcess.objects.create(node="node-a", pid=101, heartbeat_at=now)
    node_b = ServerProcess.objects.create(
        node="node-b", pid=202, heartbeat_at=now - datetime.timedelta(seconds=120)
    )
    group = FTPUserGroup.objects.create(name="customers")
    user = get_user_model().objects.create_user("alice", password="x")
    account = FTPUserAccount.objects.create(user=user, group=group)

    def session(process, session_id, username, ip, **fields):
        return LiveSession.objects.create(
            process=process,
            session_id=session_id,
            username=username,
            remote_ip=ip,
            address_key=f"{ip}/32" if ":" not in ip else "2001:db8:1:2::/64",
            connected_at=now - datetime.timedelta(minutes=5),
            **fields,
        )

    return {
        "group": group,
        "alice": session(
            node_a,
            "s1",
            "alice",
            "192.0.2.10",
            account=account,
            tls=True,
            last_command="STOR big.bin",
            last_command_at=now - datetime.timedelta(seconds=30),
            transfer="upload /big.bin",
            transfer_bytes=3 * 1024 * 1024,
        ),
        "bob": session(node_a, "s2", "bob", "198.51.100.7", last_command="NOOP"),
        "ghost": session(node_b, "s3", "ghost", "2001:db8:1:2::99"),
    }


def rows(response):
    """The usernames of the changelist's rows, in order."""
    assert response.status_code == 200, response.status_code
    return sorted(s.username for s in response.context["cl"].result_list)


def run_action(client, action, *sessions):
    return client.post(
        LIST,
        {"action": action, "_selected_action": [s.pk for s in sessions]},
        follow=True,
    )


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


# --- the list --------------------------------------------------------------------


def test_the_list_shows_who_does_what_where(admin_client, world):
    response = admin_client.get(LIST)
    assert rows(response) == ["alice", "bob", "ghost"]
    html = response.content.decode()
    assert "node-a:101" in html and "node-b:202" in html
    assert "192.0.2.10" in html and "2001:db8:1:2::99" in html
    assert "STOR big.bin" in html
    assert "upload /big.bin" in html and "3.0\xa0MB" in html
    assert html.count('class="ftp-session-lost"') == 1
    assert html.count('class="ftp-session-live"') == 2
    # The reload's switch, its script, and no add button.
    assert 'id="live-refresh"' in html and 'data-seconds="5"' in html
    assert "ftpadmin/live_sessions.js" in html
    assert reverse("admin:ftpserver_core_livesession_add") not in html


def test_lost_is_judged_by_the_heartbeat(admin_client, world, settings):
    lost = admin_client.get(LIST, {"status": "lost"})
    assert rows(lost) == ["ghost"]
    assert rows(admin_client.get(LIST, {"status": "live"})) == ["alice", "bob"]
    # node-b's last heartbeat was 120 s ago: live again with a longer expiry.
    settings.FTPSERVER_STATE_EXPIRY = 300
    assert rows(admin_client.get(LIST, {"status": "lost"})) == []
    # And node-a is lost once its heartbeat is old enough.
    settings.FTPSERVER_STATE_EXPIRY = 15
    ServerProcess.objects.filter(node="node-a").update(
        heartbeat_at=timezone.now() - datetime.timedelta(seconds=16)
    )
    assert rows(admin_client.get(LIST, {"status": "lost"})) == [
        "alice",
        "bob",
        "ghost",
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"process__node": "node-a"}, ["alice", "bob"]),
        ({"process__node": "node-b"}, ["ghost"]),
        ({"tls__exact": "1"}, ["alice"]),
        ({"tls__exact": "0"}, ["bob", "ghost"]),
        ({"q": "198.51.100"}, ["bob"]),
        ({"q": "2001:db8"}, ["ghost"]),
        ({"q": "ali"}, ["alice"]),
        ({"status": "kicked"}, []),
    ],
)
def test_filters_and_search(admin_client, world, params, expected):
    assert rows(admin_client.get(LIST, params)) == expected


def test_the_group_filter(admin_client, world):
    response = admin_client.get(LIST, {"group": str(world["group"].pk)})
    assert rows(response) == ["alice"]
    assert "customers" in response.content.decode()


def test_the_list_costs_the_same_queries_for_more_sessions(admin_client, world):
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(LIST).status_code == 200
    process = ServerProcess.objects.get(node="node-a")
    now = timezone.now()
    LiveSession.objects.bulk_create(
        LiveSession(
            process=process,
            session_id=f"x{i}",
            username=f"user{i}",
            remote_ip=f"203.0.113.{i}",
            address_key=f"203.0.113.{i}/32",
            connected_at=now,
        )
        for i in range(20)
    )
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LIST)
    assert len(response.context["cl"].result_list) == 23
    assert len(many.captured_queries) == len(few.captured_queries)


def test_a_session_page_is_read_only(admin_client, world):
    change = reverse(
        "admin:ftpserver_core_livesession_change", args=[world["alice"].pk]
    )
    response = admin_client.get(change)
    assert response.status_code == 200
    html = response.content.decode()
    assert "STOR big.bin" in html and "node-a:101" in html
    assert 'name="_save"' not in html
    assert admin_client.post(change, {"username": "mallory"}).status_code == 403
    assert LiveSession.objects.get(pk=world["alice"].pk).username == "alice"
    add = reverse("admin:ftpserver_core_livesession_add")
    assert admin_client.get(add).status_code == 403
    delete = reverse(
        "admin:ftpserver_core_livesession_delete", args=[world["alice"].pk]
    )
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert LiveSession.objects.count() == 3


# --- the actions -----------------------------------------------------------------


def test_disconnect_asks_the_holding_process(admin_client, world):
    response = run_action(admin_client, "disconnect", world["alice"], world["bob"])
    assert messages_of(response) == [
        "Disconnecting 2 sessions; their clients get 421 within a second or so."
    ]
    kicked = dict(LiveSession.objects.values_list("username", "kick_reason"))
    assert kicked == {"alice": "admin", "bob": "admin", "ghost": ""}
    assert set(LiveSession.objects.values_list("kick_by", flat=True)) == {"admin", ""}
    # Shown as such, and not asked twice.
    assert "disconnecting (admin, by admin)" in response.content.decode()
    again = run_action(admin_client, "disconnect", world["alice"])
    assert messages_of(again) == [
        "No session to disconnect: the selected ones ended or are being "
        "disconnected already."
    ]
    assert rows(admin_client.get(LIST, {"status": "kicked"})) == ["alice", "bob"]


def test_disconnect_and_ban_bans_each_network_once(admin_client, world):
    # A second session from bob's address, not selected: the ban refuses it
    # too, so it is disconnected as well.
    LiveSession.objects.create(
        process=world["bob"].process,
        session_id="s4",
        username="bob2",
        remote_ip="198.51.100.7",
        address_key="198.51.100.7/32",
        connected_at=timezone.now(),
    )
    before = timezone.now()
    response = run_action(
        admin_client, "disconnect_and_ban", world["bob"], world["ghost"]
    )
    bans = {ban.network: ban for ban in Ban.objects.all()}
    assert set(bans) == {"198.51.100.7/32", "2001:db8:1:2::/64"}
    for ban in bans.values():
        assert ban.reason == Ban.Reason.MANUAL
        assert ban.created_by == "admin"
        assert ban.is_active()
        assert ban.expires_at - before >= datetime.timedelta(hours=23)
    assert messages_of(response) == [
        "Banned 2 addresses for 1 day: 198.51.100.7/32, 2001:db8:1:2::/64.",
        "Disconnecting 3 sessions; their clients get 421 within a second or so.",
    ]
    kicked = dict(LiveSession.objects.values_list("username", "kick_reason"))
    assert kicked == {"alice": "", "bob": "banned", "bob2": "banned", "ghost": "banned"}
    # The audit trail has the bans, by the admin user.
    events = AuditEvent.objects.filter(event="ban")
    assert sorted(events.values_list("network", "reason", "username")) == [
        ("198.51.100.7/32", "manual", "admin"),
        ("2001:db8:1:2::/64", "manual", "admin"),
    ]

    # An address banned already is not banned twice.
    LiveSession.objects.update(kick_reason="")
    again = run_action(admin_client, "disconnect_and_ban", world["bob"])
    assert Ban.objects.count() == 2
    assert messages_of(again)[0] == ("1 address was banned already: 198.51.100.7/32.")


# --- permissions -----------------------------------------------------------------


@pytest.fixture
def staff(client, db):
    def login(*codenames):
        user = get_user_model().objects.create_user(
            "delegate", password="x", is_staff=True
        )
        perms = Permission.objects.filter(
            content_type__app_label="ftpserver_core", codename__in=codenames
        )
        assert perms.count() == len(codenames)
        user.user_permissions.set(perms)
        client.force_login(user)
        return client

    return login


def offered_actions(response):
    form = response.context.get("action_form")
    if form is None:
        return []
    return [name for name, _ in form.fields["action"].choices if name]


def test_without_permission_there_is_no_page(staff, world):
    client = staff()
    assert client.get(LIST).status_code == 403


def test_view_permission_shows_the_list_but_no_action(staff, world):
    client = staff("view_livesession")
    response = client.get(LIST)
    assert rows(response) == ["alice", "bob", "ghost"]
    assert offered_actions(response) == []
    response = client.post(
        LIST, {"action": "disconnect", "_selected_action": [world["alice"].pk]}
    )
    assert LiveSession.objects.exclude(kick_reason="").count() == 0
    response = client.post(
        LIST, {"action": "disconnect_and_ban", "_selected_action": [world["bob"].pk]}
    )
    assert LiveSession.objects.exclude(kick_reason="").count() == 0
    assert Ban.objects.count() == 0


def test_change_permission_disconnects_but_bans_need_add_ban(staff, world):
    client = staff("view_livesession", "change_livesession")
    assert offered_actions(client.get(LIST)) == ["disconnect"]
    client.post(
        LIST, {"action": "disconnect_and_ban", "_selected_action": [world["bob"].pk]}
    )
    assert Ban.objects.count() == 0
    assert LiveSession.objects.exclude(kick_reason="").count() == 0
    run_action(client, "disconnect", world["bob"])
    assert LiveSession.objects.get(pk=world["bob"].pk).kick_reason == "admin"


def test_add_ban_alone_does_not_give_the_ban_action(staff, world):
    client = staff("view_livesession", "add_ban")
    assert offered_actions(client.get(LIST)) == []


def test_change_and_add_ban_give_both_actions(staff, world):
    client = staff("view_livesession", "change_livesession", "add_ban")
    assert offered_actions(client.get(LIST)) == ["disconnect", "disconnect_and_ban"]
    run_action(client, "disconnect_and_ban", world["alice"])
    assert list(Ban.objects.values_list("network", "created_by")) == [
        ("192.0.2.10/32", "delegate")
    ]


# --- with a real server and client ---------------------------------------------------


def wait_for_row(timeout=10.0, **filters):
    """Return the live session matching ``filters`` once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        row = LiveSession.objects.filter(**filters).first()
        if row is not None:
            return row
        assert time.monotonic() < deadline, f"no live session {filters}"
        time.sleep(0.1)


def wait_for_reply_error(ftp, timeout=10.0):
    """Send NOOP until the server answers with an error; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ftp.voidcmd("NOOP")
        except (ftplib.Error, EOFError, OSError) as exc:
            return exc
        time.sleep(0.05)
    raise AssertionError(f"the session was not ended within {timeout} s")


def test_a_real_session_is_listed_and_disconnected(
    live_ftp, make_account, client, django_user_model
):
    make_account("carol")
    ftp = live_ftp.client("carol")
    ftp.voidcmd("NOOP")
    root = django_user_model.objects.create_superuser("root", "", "x")
    client.force_login(root)
    # Registered at login (its details follow with the state thread's rounds).
    session = wait_for_row(username="carol")
    assert session.remote_ip == "127.0.0.1" and session.tls is False
    assert rows(client.get(LIST, {"status": "live"})) == ["carol"]
    response = run_action(client, "disconnect", session)
    assert messages_of(response)[0].startswith("Disconnecting 1 session;")
    error = wait_for_reply_error(ftp)
    assert str(error).startswith("421 Disconnected by an administrator"), error
    ftp.close()
    # The server writes the session's end: the row goes.
    deadline = time.monotonic() + 10
    while LiveSession.objects.filter(username="carol").exists():
        assert time.monotonic() < deadline, "the ended session stayed listed"
        time.sleep(0.1)


def test_disconnect_and_ban_ends_a_real_session_and_refuses_its_address(
    live_ftp, make_account, client, django_user_model
):
    """The admin's action on a real session's row: the client gets 421 and
    the server closes it; a new connection from its address gets 421; a
    session from another address goes on."""
    make_account("carol")
    banned_ip, other_ip = "127.0.0.41", "127.0.0.42"  # not the safelisted .1
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(live_ftp.host, live_ftp.port, source_address=(banned_ip, 0))
    ftp.login("carol", PASSWORD)
    other = ftplib.FTP(timeout=10)
    other.connect(live_ftp.host, live_ftp.port, source_address=(other_ip, 0))
    other.login("carol", PASSWORD)
    root = django_user_model.objects.create_superuser("root", "", "x")
    client.force_login(root)
    session = wait_for_row(username="carol", remote_ip=banned_ip)
    wait_for_row(username="carol", remote_ip=other_ip)
    assert greeting(live_ftp, banned_ip).startswith("220")

    started = time.monotonic()
    response = run_action(client, "disconnect_and_ban", session)
    assert messages_of(response) == [
        f"Banned 1 address for 1 day: {banned_ip}/32.",
        "Disconnecting 1 session; its client gets 421 within a second or so.",
    ]
    # Told and closed by the server, not at its own next command.
    ftp.sock.settimeout(10)
    reply = ftp.file.readline()
    assert ftp.file.readline() == "", "the banned session was kept open"
    elapsed = time.monotonic() - started
    print(f"disconnect and ban: the session closed after {elapsed:.2f} s")
    # The kick ("banned") or the defender's ban store, whichever comes first.
    assert reply.startswith("421") and "banned" in reply, reply
    ftp.close()
    # A reconnect is refused once the ban store's round has read the ban:
    # the kick can come first (see docs/state.rst, at most a round behind).
    deadline = time.monotonic() + 5
    while not (first := greeting(live_ftp, banned_ip)).startswith("421"):
        assert first.startswith("220"), first
        assert time.monotonic() < deadline, "the banned address still gets in"
        time.sleep(0.05)
    refused_after = time.monotonic() - started
    print(
        f"a new connection is refused {refused_after:.2f} s after the action "
        f"({refused_after - elapsed:.2f} s after the session closed)"
    )
    assert refused_after < 3.0
    ban = Ban.objects.get()
    assert (ban.network, ban.created_by, ban.reason) == (
        f"{banned_ip}/32",
        "root",
        Ban.Reason.MANUAL,
    )
    terminated = None
    deadline = time.monotonic() + 10
    while terminated is None:
        terminated = AuditEvent.objects.filter(
            event="terminated", session_id=session.session_id
        ).first()
        assert terminated is not None or time.monotonic() < deadline
        time.sleep(0.1)
    assert terminated.remote_ip == banned_ip
    # The other address is neither banned nor disconnected.
    assert other.voidcmd("NOOP").startswith("200")
    assert greeting(live_ftp, other_ip).startswith("220")
    other.quit()
    deadline = time.monotonic() + 10
    while LiveSession.objects.filter(remote_ip=banned_ip).exists():
        assert time.monotonic() < deadline, "the banned session stayed listed"
        time.sleep(0.1)
