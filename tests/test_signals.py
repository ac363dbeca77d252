"""Every FTP signal with its exact arguments (spec/signals.rst), from a real server."""

import ftplib
import io
import logging
import os
import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from ftpserver_core import signals
from ftpserver_core.handlers import DjangoFTPHandler
from ftpserver_core.management.commands.ftpserver import Command
from ftpserver_core.models import HomeDirectory

from .conftest import PASSWORD

SPEC_SIGNALS = {
    "ftp_server_started",
    "ftp_server_stopped",
    "ftp_client_connected",
    "ftp_client_disconnected",
    "ftp_login",
    "ftp_login_failed",
    "ftp_logout",
    "ftp_file_received",
    "ftp_file_sent",
    "ftp_file_received_incomplete",
    "ftp_file_sent_incomplete",
    "ftp_file_deleted",
    "ftp_file_renamed",
    "ftp_directory_created",
    "ftp_directory_deleted",
}
# The defender's extension of the contract (documented in signals.py).
DEFENDER_SIGNALS = {
    "ftp_connection_refused",
    "ftp_address_banned",
    "ftp_address_unbanned",
}
# The account controls' (issue 11).
ACCOUNT_SIGNALS = {"ftp_session_terminated", "ftp_quota_exceeded"}

# Arguments of spec/signals.rst (besides sender), then our documented extras.
SESSION = {"session_id", "remote_port", "tls"}
SPEC_ARGS = {
    "ftp_client_connected": {"handler", "remote_ip", "remote_port"},
    "ftp_client_disconnected": {"handler", "username", "remote_ip"},
    "ftp_login": {"handler", "username", "remote_ip"},
    "ftp_login_failed": {"handler", "username", "remote_ip"},
    "ftp_logout": {"handler", "username", "remote_ip"},
    "ftp_file_received": {"handler", "username", "path", "remote_ip"},
    "ftp_file_sent": {"handler", "username", "path", "remote_ip"},
    "ftp_file_received_incomplete": {"handler", "username", "path", "remote_ip"},
    "ftp_file_sent_incomplete": {"handler", "username", "path", "remote_ip"},
    "ftp_file_deleted": {"handler", "username", "path", "remote_ip"},
    "ftp_file_renamed": {"handler", "username", "path_from", "path_to", "remote_ip"},
    "ftp_directory_created": {"handler", "username", "path", "remote_ip"},
    "ftp_directory_deleted": {"handler", "username", "path", "remote_ip"},
}
TRANSFER = {"ftp_path", "size", "duration"}
EXTRAS = {
    "ftp_login_failed": {"reason"},
    "ftp_file_received": TRANSFER | {"sha256"},
    "ftp_file_sent": TRANSFER | {"sha256"},
    "ftp_file_received_incomplete": TRANSFER | {"reason"},
    "ftp_file_sent_incomplete": TRANSFER | {"reason"},
    "ftp_file_deleted": {"ftp_path"},
    "ftp_directory_created": {"ftp_path"},
    "ftp_directory_deleted": {"ftp_path"},
    "ftp_file_renamed": {"ftp_path_from", "ftp_path_to"},
}
FILE_SIGNALS = {
    "ftp_file_received",
    "ftp_file_sent",
    "ftp_file_received_incomplete",
    "ftp_file_sent_incomplete",
    "ftp_file_deleted",
    "ftp_file_renamed",
    "ftp_directory_created",
    "ftp_directory_deleted",
}

BIG = 24 * 1024 * 1024  # more than loopback socket buffers hold


def real(account, *parts):
    return os.path.join(os.path.realpath(account.home_path), *parts)


def put(account, name, data):
    path = real(account, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def make_big(account, name="big.bin"):
    path = real(account, name)
    with open(path, "wb") as fh:
        fh.truncate(BIG)
    return path


def events_of(recorder, session_id):
    return [
        (name, sender, kwargs)
        for name, sender, kwargs in recorder.events
        if kwargs.get("session_id") == session_id
    ]


def check_args(name, kwargs):
    """The exact argument names: the spec's, the session's, the signal's extras."""
    got = set(kwargs) - {"signal"}
    assert got == SPEC_ARGS[name] | SESSION | EXTRAS.get(name, set()), name


def check_common(name, sender, kwargs, ftp=None):
    check_args(name, kwargs)
    assert sender is DjangoFTPHandler, name
    assert isinstance(kwargs["handler"], DjangoFTPHandler), name
    assert kwargs["remote_ip"] == "127.0.0.1", name
    assert kwargs["tls"] is False, name
    assert isinstance(kwargs["session_id"], str) and len(kwargs["session_id"]) >= 8
    if ftp is not None:
        assert kwargs["remote_port"] == ftp.sock.getsockname()[1], name


def sender_of(recorder, name):
    return next(sender for n, sender, _ in recorder.events if n == name)


def read_reply(ftp):
    """Read one reply without ftplib's error mapping."""
    return ftp.getmultiline()


def test_the_signal_module_has_exactly_the_spec_signals():
    assert set(signals.ALL_SIGNALS) == SPEC_SIGNALS | DEFENDER_SIGNALS | ACCOUNT_SIGNALS
    assert set(signals.LOGIN_FAILURE_REASONS) >= {
        "bad_credentials",
        "account_disabled",
        "account_expired",
        "inactive_user",
        "no_ftp_account",
        "network_not_allowed",
        "too_many_sessions",
    }


def test_a_full_session_sends_every_session_signal_with_its_arguments(
    live_ftp, make_account, recorder
):
    account = make_account("alice")
    home = os.path.realpath(account.home_path)
    data = b"0123456789" * 1000
    put(account, "dir/down.txt", b"download me")

    ftp = live_ftp.client()
    with pytest.raises(ftplib.error_perm):
        ftp.login("alice", "wrong")
    ftp.login("alice", PASSWORD)
    ftp.mkd("made")
    ftp.cwd("dir")
    ftp.storbinary("STOR file.txt", io.BytesIO(data))  # relative to /dir
    out = io.BytesIO()
    ftp.retrbinary("RETR down.txt", out.write)
    ftp.rename("file.txt", "/made/renamed.txt")
    ftp.delete("/made/renamed.txt")
    ftp.rmd("/made")
    port = ftp.sock.getsockname()[1]
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")

    assert recorder.names() == [
        "ftp_client_connected",
        "ftp_login_failed",
        "ftp_login",
        "ftp_directory_created",
        "ftp_file_received",
        "ftp_file_sent",
        "ftp_file_renamed",
        "ftp_file_deleted",
        "ftp_directory_deleted",
        "ftp_logout",
        "ftp_client_disconnected",
    ]
    session_ids = {kwargs["session_id"] for _, _, kwargs in recorder.events}
    assert len(session_ids) == 1
    handlers = {id(kwargs["handler"]) for _, _, kwargs in recorder.events}
    assert len(handlers) == 1
    for name, sender, kwargs in recorder.events:
        check_common(name, sender, kwargs)
        assert kwargs["remote_port"] == port

    ev = {name: kwargs for name, _, kwargs in recorder.events}
    assert ev["ftp_login_failed"]["username"] == "alice"
    assert ev["ftp_login_failed"]["reason"] == "bad_credentials"
    assert ev["ftp_login"]["username"] == "alice"
    assert ev["ftp_logout"]["username"] == "alice"
    assert ev["ftp_client_disconnected"]["username"] == "alice"

    made = ev["ftp_directory_created"]
    assert made["username"] == "alice"
    assert made["path"] == os.path.join(home, "made")
    assert made["ftp_path"] == "/made"

    received = ev["ftp_file_received"]
    assert received["username"] == "alice"
    assert received["path"] == os.path.join(home, "dir", "file.txt")
    assert received["ftp_path"] == "/dir/file.txt"
    assert received["size"] == len(data)
    assert isinstance(received["duration"], float) and received["duration"] >= 0

    sent = ev["ftp_file_sent"]
    assert sent["path"] == os.path.join(home, "dir", "down.txt")
    assert sent["ftp_path"] == "/dir/down.txt"
    assert sent["size"] == len(b"download me")
    assert isinstance(sent["duration"], float) and sent["duration"] >= 0

    renamed = ev["ftp_file_renamed"]
    assert renamed["path_from"] == os.path.join(home, "dir", "file.txt")
    assert renamed["path_to"] == os.path.join(home, "made", "renamed.txt")
    assert renamed["ftp_path_from"] == "/dir/file.txt"
    assert renamed["ftp_path_to"] == "/made/renamed.txt"

    deleted = ev["ftp_file_deleted"]
    assert deleted["path"] == os.path.join(home, "made", "renamed.txt")
    assert deleted["ftp_path"] == "/made/renamed.txt"

    removed = ev["ftp_directory_deleted"]
    assert removed["path"] == os.path.join(home, "made")
    assert removed["ftp_path"] == "/made"


def test_paths_are_real_absolute_paths_never_double_rooted(
    live_ftp, make_account, recorder
):
    account = make_account("alice")
    home = os.path.realpath(account.home_path)
    ftp = live_ftp.client("alice")
    ftp.mkd("/a")
    ftp.mkd("/a/b")
    ftp.cwd("/a/b")
    ftp.storbinary("STOR f.bin", io.BytesIO(b"123"))
    ftp.storbinary(f"STOR {'/a/g.bin'}", io.BytesIO(b"4567"))
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    paths = [kw["path"] for kw in recorder.of("ftp_directory_created")]
    paths += [kw["path"] for kw in recorder.of("ftp_file_received")]
    assert paths == [
        os.path.join(home, "a"),
        os.path.join(home, "a", "b"),
        os.path.join(home, "a", "b", "f.bin"),
        os.path.join(home, "a", "g.bin"),
    ]
    for path in paths:
        assert os.path.isabs(path) and os.path.exists(path)
        assert home + home not in path
    sizes = [kw["size"] for kw in recorder.of("ftp_file_received")]
    assert sizes == [3, 4]
    assert [kw["ftp_path"] for kw in recorder.of("ftp_file_received")] == [
        "/a/b/f.bin",
        "/a/g.bin",
    ]


def test_transfer_sizes_count_this_transfer_only(live_ftp, make_account, recorder):
    account = make_account("alice")
    put(account, "f.bin", b"x" * 5000)
    ftp = live_ftp.client("alice")
    ftp.retrbinary("RETR f.bin", lambda _: None, rest=1200)
    ftp.storbinary("APPE f.bin", io.BytesIO(b"y" * 300))
    ftp.storbinary("STOR f.bin", io.BytesIO(b"z" * 10), rest=5000)
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    assert [kw["size"] for kw in recorder.of("ftp_file_sent")] == [3800]
    assert [kw["size"] for kw in recorder.of("ftp_file_received")] == [300, 10]
    with open(real(account, "f.bin"), "rb") as fh:
        assert fh.read() == b"x" * 5000 + b"z" * 10 + b"y" * 290


def test_session_ids_differ_between_connections(live_ftp, make_account, recorder):
    make_account("alice")
    one = live_ftp.client("alice")
    two = live_ftp.client("alice")
    port_one = one.sock.getsockname()[1]
    port_two = two.sock.getsockname()[1]
    one.quit()
    two.quit()
    recorder.wait_for("ftp_client_disconnected", 2)
    logins = recorder.of("ftp_login")
    assert len(logins) == 2
    assert logins[0]["session_id"] != logins[1]["session_id"]
    by_port = {}
    for _, _, kwargs in recorder.events:
        by_port.setdefault(kwargs["remote_port"], set()).add(kwargs["session_id"])
    assert set(by_port) == {port_one, port_two}
    assert all(len(ids) == 1 for ids in by_port.values())
    for session_id in by_port[port_one] | by_port[port_two]:
        assert [name for name, _, _ in events_of(recorder, session_id)] == [
            "ftp_client_connected",
            "ftp_login",
            "ftp_logout",
            "ftp_client_disconnected",
        ]


def test_connect_and_disconnect_without_login(live_ftp, recorder):
    ftp = live_ftp.client()
    port = ftp.sock.getsockname()[1]
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    assert recorder.names() == ["ftp_client_connected", "ftp_client_disconnected"]
    for name, sender, kwargs in recorder.events:
        check_common(name, sender, kwargs)
        assert kwargs["remote_port"] == port
    assert recorder.of("ftp_client_disconnected")[0]["username"] is None


def test_user_without_pass_disconnects_with_username_none(live_ftp, recorder):
    ftp = live_ftp.client()
    ftp.sendcmd("USER someone")
    ftp.close()  # dropped, no QUIT
    kwargs = recorder.wait_for("ftp_client_disconnected")[0]
    assert kwargs["username"] is None
    assert "ftp_logout" not in recorder.names()


def test_dropped_session_disconnects_with_username_and_no_logout(
    live_ftp, make_account, recorder
):
    make_account("alice")
    ftp = live_ftp.client("alice")
    ftp.close()
    kwargs = recorder.wait_for("ftp_client_disconnected")[0]
    assert kwargs["username"] == "alice"
    assert recorder.names() == [
        "ftp_client_connected",
        "ftp_login",
        "ftp_client_disconnected",
    ]


def test_user_command_logs_out_then_in_again(live_ftp, make_account, recorder):
    make_account("alice")
    make_account("bob")
    ftp = live_ftp.client("alice")
    ftp.login("bob", PASSWORD)
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    assert [(name, kwargs.get("username")) for name, _, kwargs in recorder.events] == [
        ("ftp_client_connected", None),
        ("ftp_login", "alice"),
        ("ftp_logout", "alice"),
        ("ftp_login", "bob"),
        ("ftp_logout", "bob"),
        ("ftp_client_disconnected", "bob"),
    ]
    assert len({kw["session_id"] for _, _, kw in recorder.events}) == 1


# --- ftp_login_failed reasons


class RaisingBackend(ModelBackend):
    """A backend whose database is down."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        raise RuntimeError("directory server unreachable")


def failed_login(live, recorder, username, password=PASSWORD):
    ftp = live.client()
    with pytest.raises(ftplib.error_perm, match="^530") as info:
        ftp.login(username, password)
    ftp.close()
    kwargs = recorder.wait_for("ftp_login_failed")[-1]
    recorder.wait_for("ftp_client_disconnected")
    assert "ftp_login" not in recorder.names()
    assert not FILE_SIGNALS & set(recorder.names())
    return kwargs, str(info.value)


def assert_failed(name_sender_kwargs, username, reason):
    kwargs = name_sender_kwargs
    check_args("ftp_login_failed", kwargs)
    assert kwargs["username"] == username
    assert kwargs["reason"] == reason
    assert kwargs["remote_ip"] == "127.0.0.1"
    assert isinstance(kwargs["handler"], DjangoFTPHandler)


@pytest.mark.parametrize(
    ("setup", "username", "password", "reason"),
    [
        ("plain", "alice", "wrong", "bad_credentials"),
        ("plain", "ghost", PASSWORD, "bad_credentials"),
        ("disabled", "alice", PASSWORD, "account_disabled"),
        ("expired", "alice", PASSWORD, "account_expired"),
        ("inactive", "alice", PASSWORD, "inactive_user"),
        ("no_account", "alice", PASSWORD, "no_ftp_account"),
        ("network", "alice", PASSWORD, "network_not_allowed"),
        ("tls", "alice", PASSWORD, "tls_required"),
        ("no_home", "alice", PASSWORD, "home_unavailable"),
    ],
)
def test_login_failed_reasons(
    live_ftp, make_account, recorder, tmp_path, setup, username, password, reason
):
    if setup == "plain":
        make_account("alice")
    elif setup == "disabled":
        make_account("alice", is_enabled=False)
    elif setup == "expired":
        make_account("alice", expires_at=timezone.now() - timedelta(seconds=1))
    elif setup == "inactive":
        account = make_account("alice")
        account.user.is_active = False
        account.user.save()
    elif setup == "no_account":
        get_user_model().objects.create_user(username="alice", password=PASSWORD)
    elif setup == "network":
        make_account("alice", allowed_networks="192.0.2.0/24")
    elif setup == "tls":
        make_account("alice", require_tls=True)
    elif setup == "no_home":
        account = make_account("alice", home=str(tmp_path / "missing" / "{username}"))
        os.rmdir(account.home_path)
        HomeDirectory.objects.filter(pk=account.home_directory_id).update(
            create_on_login=False
        )
    kwargs, reply = failed_login(live_ftp, recorder, username, password)
    assert_failed(kwargs, username, reason)
    # One reply for every refusal (the reason is for the audit).
    assert reply == "530 Authentication failed."


def test_login_failed_too_many_sessions(live_ftp, make_account, recorder):
    make_account("alice", max_sessions=1)
    first = live_ftp.client("alice")
    second = live_ftp.client()
    with pytest.raises(ftplib.error_perm, match="^530"):
        second.login("alice", PASSWORD)
    kwargs = recorder.wait_for("ftp_login_failed")[0]
    assert_failed(kwargs, "alice", "too_many_sessions")
    assert kwargs["session_id"] != recorder.of("ftp_login")[0]["session_id"]
    second.close()
    first.quit()


@override_settings(AUTHENTICATION_BACKENDS=["tests.test_signals.RaisingBackend"])
def test_login_failed_server_error_when_a_backend_raises(
    live_ftp, make_account, recorder, caplog
):
    make_account("alice")
    with caplog.at_level(logging.ERROR, logger="ftpserver_core.authorizers"):
        kwargs, _ = failed_login(live_ftp, recorder, "alice")
    assert_failed(kwargs, "alice", "server_error")
    assert any(
        r.exc_info and "directory server unreachable" in str(r.exc_info[1])
        for r in caplog.records
        if r.name == "ftpserver_core.authorizers"
    )


def test_login_failed_username_as_typed(live_ftp, make_account, recorder):
    make_account("Alice")
    kwargs, _ = failed_login(live_ftp, recorder, "ALICE ")
    assert kwargs["username"] == "ALICE "
    assert kwargs["reason"] == "bad_credentials"


# --- incomplete transfers


def test_upload_aborted_with_abor_is_incomplete(live_ftp, make_account, recorder):
    account = make_account("alice")
    ftp = live_ftp.client("alice")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR part.bin")
    conn.sendall(b"p" * 200_000)
    ftp.putcmd("ABOR")
    reply = read_reply(ftp)
    if reply.startswith("426"):
        reply = read_reply(ftp)
    assert reply[:3] in ("225", "226")
    conn.close()
    kwargs = recorder.wait_for("ftp_file_received_incomplete")[0]
    assert "ftp_file_received" not in recorder.names()
    check_common(
        "ftp_file_received_incomplete",
        sender_of(recorder, "ftp_file_received_incomplete"),
        kwargs,
        ftp,
    )
    path = real(account, "part.bin")
    assert kwargs["username"] == "alice"
    assert kwargs["path"] == path
    assert kwargs["ftp_path"] == "/part.bin"
    assert 0 <= kwargs["size"] <= 200_000
    assert kwargs["reason"] == "aborted"
    # Written in place (the default upload mode): what arrived stays.
    assert kwargs["size"] == os.path.getsize(path)
    assert isinstance(kwargs["duration"], float) and kwargs["duration"] >= 0
    # The session goes on after the abort.
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.quit()


def test_upload_cut_by_closing_the_control_connection_is_incomplete(
    live_ftp, make_account, recorder
):
    account = make_account("alice")
    ftp = live_ftp.client("alice")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR cut.bin")
    conn.sendall(b"c" * 100_000)
    session_port = ftp.sock.getsockname()[1]
    ftp.close()  # the control connection drops mid-transfer
    try:
        kwargs = recorder.wait_for("ftp_file_received_incomplete")[0]
    finally:
        conn.close()
    recorder.wait_for("ftp_client_disconnected")
    assert "ftp_file_received" not in recorder.names()
    assert kwargs["path"] == real(account, "cut.bin")
    assert kwargs["ftp_path"] == "/cut.bin"
    assert kwargs["remote_port"] == session_port
    assert 0 <= kwargs["size"] <= 100_000
    assert kwargs["reason"] == "aborted"
    assert kwargs["size"] == os.path.getsize(kwargs["path"])


def test_download_aborted_with_abor_is_incomplete(live_ftp, make_account, recorder):
    account = make_account("alice")
    path = make_big(account)
    ftp = live_ftp.client("alice")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    got = 0
    while got < 64 * 1024:
        chunk = conn.recv(65536)
        assert chunk
        got += len(chunk)
    ftp.putcmd("ABOR")
    reply = read_reply(ftp)
    if reply.startswith("426"):
        reply = read_reply(ftp)
    assert reply[:3] in ("225", "226")
    conn.close()
    kwargs = recorder.wait_for("ftp_file_sent_incomplete")[0]
    assert "ftp_file_sent" not in recorder.names()
    check_common(
        "ftp_file_sent_incomplete",
        sender_of(recorder, "ftp_file_sent_incomplete"),
        kwargs,
        ftp,
    )
    assert kwargs["username"] == "alice"
    assert kwargs["path"] == path
    assert kwargs["ftp_path"] == "/big.bin"
    assert got <= kwargs["size"] < BIG
    assert isinstance(kwargs["duration"], float) and kwargs["duration"] >= 0
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.quit()


def test_download_cut_by_closing_the_data_connection_is_incomplete(
    live_ftp, make_account, recorder
):
    account = make_account("alice")
    path = make_big(account)
    ftp = live_ftp.client("alice")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    assert conn.recv(65536)
    conn.close()  # unread data: the kernel resets the connection
    with pytest.raises(ftplib.error_temp, match="^426"):
        ftp.voidresp()
    kwargs = recorder.wait_for("ftp_file_sent_incomplete")[0]
    assert "ftp_file_sent" not in recorder.names()
    assert kwargs["path"] == path
    assert 0 < kwargs["size"] < BIG
    ftp.quit()


def test_download_cut_by_closing_the_control_connection_is_incomplete(
    live_ftp, make_account, recorder
):
    account = make_account("alice")
    path = make_big(account)
    ftp = live_ftp.client("alice")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    assert conn.recv(65536)
    ftp.close()
    try:
        kwargs = recorder.wait_for("ftp_file_sent_incomplete")[0]
    finally:
        conn.close()
    assert kwargs["path"] == path
    assert kwargs["username"] == "alice"
    assert "ftp_file_sent" not in recorder.names()


def test_server_stop_during_a_download_sends_incomplete_and_disconnect(
    ftp_server, make_account, recorder
):
    account = make_account("alice")
    path = make_big(account)
    live = ftp_server()
    ftp = live.client("alice")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    assert conn.recv(65536)
    live.stop()
    conn.close()
    ftp.close()
    kwargs = recorder.wait_for("ftp_file_sent_incomplete")[0]
    assert kwargs["path"] == path
    assert recorder.wait_for("ftp_client_disconnected")[0]["username"] == "alice"


# --- no file signal for failed operations


def test_failed_operations_send_no_file_signal(live_ftp, make_account, recorder):
    account = make_account("alice")
    put(account, "full/inside.txt", b"x")
    put(account, "f.txt", b"x")
    os.mkdir(real(account, "exists"))
    ftp = live_ftp.client("alice")
    failing = [
        lambda: ftp.delete("missing.txt"),
        lambda: ftp.delete("exists"),  # a directory
        lambda: ftp.mkd("exists"),
        lambda: ftp.mkd("no/such/parent"),
        lambda: ftp.rmd("full"),  # not empty
        lambda: ftp.rmd("missing"),
        lambda: ftp.rmd("f.txt"),  # a file
        lambda: ftp.rename("missing.txt", "x.txt"),
        lambda: ftp.rename("f.txt", "no/such/dir/x.txt"),
        lambda: ftp.sendcmd("RNTO y.txt"),  # no RNFR
        lambda: ftp.retrbinary("RETR missing.txt", lambda _: None),
        lambda: ftp.retrbinary("RETR exists", lambda _: None),
        lambda: ftp.storbinary("STOR no/such/dir/f.txt", io.BytesIO(b"x")),
        lambda: ftp.storbinary("STOR exists", io.BytesIO(b"x")),
    ]
    for call in failing:
        with pytest.raises(ftplib.error_perm, match="^5"):
            call()
    # A successful operation: its signal arrives after any earlier one.
    ftp.mkd("ok")
    recorder.wait_for("ftp_directory_created")
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    assert [n for n in recorder.names() if n in FILE_SIGNALS] == [
        "ftp_directory_created"
    ]
    assert recorder.of("ftp_directory_created")[0]["path"] == real(account, "ok")
    assert os.path.exists(real(account, "f.txt"))


def test_operations_denied_by_permission_send_no_file_signal(
    live_ftp, make_account, recorder
):
    account = make_account("reader", permission="elr")
    put(account, "f.txt", b"keep")
    os.mkdir(real(account, "d"))
    ftp = live_ftp.client("reader")
    denied = [
        lambda: ftp.storbinary("STOR new.txt", io.BytesIO(b"x")),
        lambda: ftp.storbinary("APPE f.txt", io.BytesIO(b"x")),
        lambda: ftp.delete("f.txt"),
        lambda: ftp.mkd("m"),
        lambda: ftp.rmd("d"),
        lambda: ftp.rename("f.txt", "g.txt"),
    ]
    for call in denied:
        with pytest.raises(ftplib.error_perm, match="^550"):
            call()
    ftp.retrbinary("RETR f.txt", lambda _: None)
    recorder.wait_for("ftp_file_sent")
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    assert [n for n in recorder.names() if n in FILE_SIGNALS] == ["ftp_file_sent"]
    assert sorted(os.listdir(real(account))) == ["d", "f.txt"]


# --- receivers that fail


def test_a_failing_receiver_does_not_break_the_session(
    live_ftp, make_account, recorder, caplog
):
    account = make_account("alice")

    def boom(sender, **kwargs):
        raise RuntimeError("receiver exploded")

    hooked = [
        signals.ftp_client_connected,
        signals.ftp_login,
        signals.ftp_file_received,
        signals.ftp_directory_created,
    ]
    for signal in hooked:
        signal.connect(boom, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="ftpserver_core.handlers"):
            ftp = live_ftp.client("alice")
            assert ftp.mkd("d") == "/d"
            reply = ftp.storbinary("STOR d/f.txt", io.BytesIO(b"data"))
            assert reply.startswith("226")
            assert ftp.pwd() == "/"
            ftp.quit()
            recorder.wait_for("ftp_client_disconnected")
    finally:
        for signal in hooked:
            signal.disconnect(boom)
    with open(real(account, "d", "f.txt"), "rb") as fh:
        assert fh.read() == b"data"
    # The other receivers still ran.
    assert recorder.names() == [
        "ftp_client_connected",
        "ftp_login",
        "ftp_directory_created",
        "ftp_file_received",
        "ftp_logout",
        "ftp_client_disconnected",
    ]
    failures = [
        r
        for r in caplog.records
        if r.name == "ftpserver_core.handlers" and r.levelno == logging.ERROR
    ]
    assert len(failures) == 4
    for record, signal_name in zip(
        failures,
        [
            "ftp_client_connected",
            "ftp_login",
            "ftp_directory_created",
            "ftp_file_received",
        ],
        strict=True,
    ):
        assert signal_name in record.getMessage()
        assert isinstance(record.exc_info[1], RuntimeError)
        assert "receiver exploded" in str(record.exc_info[1])


# --- the debug log


def test_every_session_event_has_a_debug_log_record(
    live_ftp, make_account, recorder, caplog
):
    account = make_account("alice")
    make_big(account)
    caplog.set_level(logging.DEBUG, logger="ftpserver_core.handlers")
    ftp = live_ftp.client()
    with pytest.raises(ftplib.error_perm):
        ftp.login("alice", "wrong")
    ftp.login("alice", PASSWORD)
    ftp.mkd("d")
    ftp.storbinary("STOR d/f.txt", io.BytesIO(b"data"))
    ftp.retrbinary("RETR d/f.txt", lambda _: None)
    ftp.rename("d/f.txt", "d/g.txt")
    ftp.delete("d/g.txt")
    ftp.rmd("d")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    conn.recv(1024)
    ftp.putcmd("ABOR")
    if read_reply(ftp).startswith("426"):
        read_reply(ftp)
    conn.close()
    conn = ftp.transfercmd("STOR part.bin")
    conn.sendall(b"x" * 1000)
    ftp.putcmd("ABOR")
    if read_reply(ftp).startswith("426"):
        read_reply(ftp)
    conn.close()
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")

    names = recorder.names()
    assert set(names) == SPEC_SIGNALS - {"ftp_server_started", "ftp_server_stopped"}
    debug = [
        r.getMessage()
        for r in caplog.records
        if r.name == "ftpserver_core.handlers" and r.levelno == logging.DEBUG
    ]
    for name in set(names):
        logged = [m for m in debug if m.split(" ", 1)[0] == name]
        assert len(logged) == names.count(name), name
    # The record carries the arguments, e.g. the path of the upload.
    assert any(m.startswith("ftp_file_received ") and "/d/f.txt" in m for m in debug)


def test_no_debug_log_when_the_level_is_info(live_ftp, make_account, caplog):
    make_account("alice")
    caplog.set_level(logging.INFO, logger="ftpserver_core.handlers")
    live_ftp.client("alice").quit()
    assert not [
        r
        for r in caplog.records
        if r.name == "ftpserver_core.handlers" and r.levelno == logging.DEBUG
    ]


# --- server start and stop


def test_server_started_and_stopped_from_the_command(
    transactional_db, make_account, recorder
):
    make_account("alice")
    out = io.StringIO()
    failures = []

    def run():
        try:
            call_command("ftpserver", "127.0.0.1:0", stdout=out)
        except BaseException as exc:  # reported below
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started = recorder.wait_for("ftp_server_started", timeout=10)[0]
    server = started["server"]
    try:
        assert {k for k in started if k != "signal"} == {"server", "host", "port"}
        assert started["host"] == "127.0.0.1"
        assert started["port"] == server.port != 0
        assert sender_of(recorder, "ftp_server_started") is Command

        # The server it announced is really serving.
        ftp = ftplib.FTP(timeout=10)
        ftp.connect(started["host"], started["port"])
        ftp.login("alice", PASSWORD)
        assert ftp.pwd() == "/"
        ftp.quit()
        recorder.wait_for("ftp_client_disconnected")
        assert "ftp_server_stopped" not in recorder.names()
    finally:
        server.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert failures == []
    stopped = recorder.wait_for("ftp_server_stopped")[0]
    assert {k for k in stopped if k != "signal"} == {"server", "host", "port"}
    assert stopped["server"] is server
    assert stopped["host"] == "127.0.0.1"
    assert stopped["port"] == started["port"]
    assert sender_of(recorder, "ftp_server_stopped") is Command
    assert recorder.names()[-1] == "ftp_server_stopped"
    assert recorder.names().count("ftp_server_started") == 1
    assert "FTP server stopped." in out.getvalue()


def test_server_stop_disconnects_clients_before_stopped(
    transactional_db, make_account, recorder
):
    make_account("alice")
    thread = threading.Thread(
        target=call_command,
        args=("ftpserver", "127.0.0.1:0"),
        kwargs={"stdout": io.StringIO()},
        daemon=True,
    )
    thread.start()
    started = recorder.wait_for("ftp_server_started", timeout=10)[0]
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(started["host"], started["port"])
    ftp.login("alice", PASSWORD)
    started["server"].stop()
    thread.join(10)
    assert not thread.is_alive()
    ftp.close()
    names = recorder.names()
    assert names.index("ftp_client_disconnected") < names.index("ftp_server_stopped")
    assert recorder.of("ftp_client_disconnected")[0]["username"] == "alice"


def test_a_failing_receiver_is_logged_once_and_the_others_still_run(caplog):
    """One ERROR record with the traceback, on ftpserver_core.handlers
    (send_robust() logged it on django.dispatch too: two per failure)."""
    from django.dispatch import Signal

    seen = []

    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    def working(sender, **kwargs):
        seen.append(kwargs["username"])

    signal = Signal()
    signal.connect(broken)
    signal.connect(working)
    with caplog.at_level(logging.ERROR):
        signals.dispatch(signal, DjangoFTPHandler, username="u", path="/p")
    assert seen == ["u"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].name == "ftpserver_core.handlers"
    assert isinstance(errors[0].exc_info[1], RuntimeError)
