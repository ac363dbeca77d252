"""Audit records from real FTP sessions, and a project's own receivers beside them.

Every test drives a real server with ftplib and reads the AuditEvent rows the
built-in receivers queued and the writer thread inserted.
"""

import ftplib
import hashlib
import io
import logging
import os
import socket

import pytest
from django.test import override_settings

from ftpserver_core import audit, signals
from ftpserver_core.handlers import DjangoFTPHandler
from ftpserver_core.models import AuditEvent

from .audit_tools import audit_rows, own_journal, wait_until
from .certs import make_certificate
from .conftest import PASSWORD
from .processes import ServerProcess, command_env, has_ipv6_loopback
from .receiver_app import receivers as project

BIG = 24 * 1024 * 1024  # more than loopback socket buffers hold

# The fields of a record that no event of the scripted session sets.
BLANK = {
    "ftp_path": "",
    "path": "",
    "ftp_path_to": "",
    "path_to": "",
    "size": None,
    "duration": None,
    "success": True,
    "reason": "",
    "sha256": "",
}


@pytest.fixture
def audit_journal(tmp_path):
    with own_journal(tmp_path / "journal") as directory:
        yield directory


@pytest.fixture(autouse=True)
def project_receivers():
    project.reset()
    yield
    project.reset()


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


def real(account, *parts):
    return os.path.join(os.path.realpath(account.home_path), *parts)


def read_reply(ftp):
    return ftp.getmultiline()


def flush():
    """Every record queued so far is in the database when this returns."""
    assert audit.writer.flush(), "the audit writer did not finish"


def check(row, **expected):
    """Compare ``row`` with ``expected`` plus BLANK for what is not given."""
    wanted = {**BLANK, **expected}
    got = {name: row[name] for name in wanted}
    assert got == wanted, row["event"]


def abort_download(ftp, name, at_least=64 * 1024):
    """RETR ``name``, read ``at_least`` bytes, then ABOR; return bytes read."""
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd(f"RETR {name}")
    got = 0
    while got < at_least:
        chunk = conn.recv(65536)
        assert chunk
        got += len(chunk)
    ftp.putcmd("ABOR")
    reply = read_reply(ftp)
    if reply.startswith("426"):
        reply = read_reply(ftp)
    assert reply[:3] in ("225", "226")
    conn.close()
    return got


@override_settings(FTPSERVER_NODE_NAME="node-a")
def test_a_scripted_session_leaves_exactly_the_expected_records(
    ftp_server, make_account, audit_journal, recorder
):
    account = make_account("alice", group="staff")
    home = os.path.realpath(account.home_path)
    with open(real(account, "down.txt"), "wb") as fh:
        fh.write(b"download me")
    with open(real(account, "big.bin"), "wb") as fh:
        fh.truncate(BIG)
    data = os.urandom(100_000)
    live = ftp_server()

    # Session A: a failed then a good login, and one of each file operation.
    a = live.client()
    a_port = a.sock.getsockname()[1]
    with pytest.raises(ftplib.error_perm, match="^530"):
        a.login("alice", "wrong")
    a.login("alice", PASSWORD)
    a.mkd("made")
    a.storbinary("STOR /made/up.bin", io.BytesIO(data))
    out = io.BytesIO()
    a.retrbinary("RETR down.txt", out.write)
    assert out.getvalue() == b"download me"
    aborted_after = abort_download(a, "big.bin")
    a.rename("/made/up.bin", "/made/renamed.bin")
    a.delete("/made/renamed.bin")
    a.rmd("/made")
    a.quit()
    recorder.wait_for("ftp_client_disconnected", 1)

    # Session B: an upload cut by closing the control connection.
    b = live.client("alice")
    b_port = b.sock.getsockname()[1]
    b.voidcmd("TYPE I")
    conn = b.transfercmd("STOR cut.bin")
    conn.sendall(b"c" * 100_000)
    cut_path = real(account, "cut.bin")
    wait_until(
        lambda: os.path.exists(cut_path) and os.path.getsize(cut_path) == 100_000
    )
    b.close()
    try:
        recorder.wait_for("ftp_file_received_incomplete")
    finally:
        conn.close()
    recorder.wait_for("ftp_client_disconnected", 2)

    # Session C: an unknown user.
    c = live.client()
    c_port = c.sock.getsockname()[1]
    with pytest.raises(ftplib.error_perm, match="^530"):
        c.login("mallory", "guess")
    c.quit()
    recorder.wait_for("ftp_client_disconnected", 3)

    flush()
    rows = audit_rows()
    assert [r["event"] for r in rows] == [
        "connect",
        "login_failed",
        "login",
        "mkdir",
        "upload",
        "download",
        "download_incomplete",
        "rename",
        "delete",
        "rmdir",
        "logout",
        "disconnect",
        "connect",
        "login",
        "upload_incomplete",
        "disconnect",
        "connect",
        "login_failed",
        "disconnect",
    ]
    ra, rb, rc = rows[:12], rows[12:16], rows[16:]

    # One session id per connection, a different one for each.
    ids = [{r["session_id"] for r in s} for s in (ra, rb, rc)]
    assert all(len(s) == 1 for s in ids)
    assert len(set.union(*ids)) == 3
    assert all(len(next(iter(s))) >= 8 for s in ids)
    for session, port in ((ra, a_port), (rb, b_port), (rc, c_port)):
        for r in session:
            assert r["remote_ip"] == "127.0.0.1", r["event"]
            assert r["remote_port"] == port, r["event"]
            assert r["tls"] is False, r["event"]
            assert r["node"] == "node-a", r["event"]

    # Microsecond times, in the order of the events.
    times = [r["time"] for r in rows]
    assert all(t.utcoffset() is not None for t in times)
    assert times == sorted(times) and len(set(times)) == len(times)
    assert any(t.microsecond % 1000 for t in times)  # not truncated to ms
    assert [r["id"] for r in AuditEvent.objects.order_by("time").values()] == [
        r["id"] for r in rows
    ]

    alice = {"username": "alice", "account_id": account.pk, "group": "staff"}
    anonymous = {"username": "", "account_id": None, "group": ""}
    connect, failed, login, mkdir, upload, download, partial = ra[:7]
    rename, delete, rmdir, logout, disconnect = ra[7:]
    check(connect, **anonymous)
    check(
        failed,
        username="alice",
        account_id=None,
        group="",
        success=False,
        reason="bad_credentials",
    )
    check(login, **alice)
    check(mkdir, **alice, ftp_path="/made", path=os.path.join(home, "made"))
    assert upload["duration"] >= 0
    check(
        upload,
        **alice,
        ftp_path="/made/up.bin",
        path=os.path.join(home, "made", "up.bin"),
        size=len(data),
        duration=upload["duration"],
        sha256=hashlib.sha256(data).hexdigest(),
    )
    assert download["duration"] >= 0
    check(
        download,
        **alice,
        ftp_path="/down.txt",
        path=os.path.join(home, "down.txt"),
        size=len(b"download me"),
        duration=download["duration"],
        # Sent with sendfile(): the server never saw the bytes, nor the
        # file arrive.
        sha256="",
    )
    assert aborted_after <= partial["size"] < BIG
    assert partial["duration"] >= 0
    check(
        partial,
        **alice,
        ftp_path="/big.bin",
        path=os.path.join(home, "big.bin"),
        size=partial["size"],
        duration=partial["duration"],
        success=False,
        reason="aborted",
    )
    check(
        rename,
        **alice,
        ftp_path="/made/up.bin",
        path=os.path.join(home, "made", "up.bin"),
        ftp_path_to="/made/renamed.bin",
        path_to=os.path.join(home, "made", "renamed.bin"),
    )
    check(
        delete,
        **alice,
        ftp_path="/made/renamed.bin",
        path=os.path.join(home, "made", "renamed.bin"),
    )
    check(rmdir, **alice, ftp_path="/made", path=os.path.join(home, "made"))
    check(logout, **alice)
    check(disconnect, **alice)

    connect, login, cut, disconnect = rb
    check(connect, **anonymous)
    check(login, **alice)
    assert cut["duration"] >= 0
    check(
        cut,
        **alice,
        ftp_path="/cut.bin",
        path=cut_path,
        size=100_000,
        duration=cut["duration"],
        success=False,
        reason="aborted",
    )
    check(disconnect, **alice)

    connect, failed, disconnect = rc
    check(connect, **anonymous)
    check(
        failed,
        **{**anonymous, "username": "mallory"},
        success=False,
        reason="bad_credentials",
    )
    check(disconnect, **anonymous)


def test_tls_sessions_are_marked_and_the_node_defaults_to_the_host_name(
    ftp_server, make_account, audit_journal, recorder, tls_cert
):
    account = make_account("bob")
    live = ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile)
    ftp = live.client("bob", tls=True)
    ftp.storbinary("STOR secret.txt", io.BytesIO(b"over TLS"))
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    flush()
    rows = audit_rows()
    assert [(r["event"], r["tls"]) for r in rows] == [
        ("connect", False),  # before AUTH TLS
        ("login", True),
        ("upload", True),
        ("logout", True),
        ("disconnect", True),
    ]
    assert {r["node"] for r in rows} == {socket.gethostname()}
    assert rows[2]["path"] == real(account, "secret.txt")
    assert rows[2]["size"] == len(b"over TLS")


def test_changing_user_logs_out_with_the_old_account_and_group(
    ftp_server, make_account, audit_journal, recorder
):
    alice = make_account("alice", group="staff")
    bob = make_account("bob")
    live = ftp_server()
    ftp = live.client("alice")
    ftp.login("bob", PASSWORD)  # USER bob: alice logs out first
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    flush()
    assert [
        (r["event"], r["username"], r["account_id"], r["group"]) for r in audit_rows()
    ] == [
        ("connect", "", None, ""),
        ("login", "alice", alice.pk, "staff"),
        ("logout", "alice", alice.pk, "staff"),
        ("login", "bob", bob.pk, ""),
        ("logout", "bob", bob.pk, ""),
        ("disconnect", "bob", bob.pk, ""),
    ]


@pytest.mark.parametrize(
    ("address", "shown"), [("127.0.0.1:0", "127.0.0.1:{}"), ("[::1]:0", "[::1]:{}")]
)
def test_server_start_and_stop_are_recorded_with_the_address(
    transactional_db, tmp_path, address, shown
):
    if address.startswith("[") and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    server = ServerProcess([address], tmp_path / "server", command_env())
    try:
        server.wait_started()
        assert server.stop(timeout=30) == 0
    finally:
        server.kill()
    assert [(r["event"], r["ftp_path"], r["remote_ip"]) for r in audit_rows()] == [
        ("server_started", shown.format(server.port), None),
        ("server_stopped", shown.format(server.port), None),
    ]


# --- a project's own receivers (tests/receiver_app)


def session_of(calls, name):
    return [kwargs["session_id"] for n, _, kwargs in calls if n == name]


def test_project_receivers_run_beside_the_built_in_ones(
    ftp_server, make_account, audit_journal, recorder
):
    account = make_account("alice")
    live = ftp_server()
    ftp = live.client("alice")
    ftp.storbinary("STOR up.txt", io.BytesIO(b"12345"))
    ftp.retrbinary("RETR up.txt", io.BytesIO().write)
    ftp.delete("up.txt")
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    flush()

    calls = project.calls()
    assert [name for name, _, _ in calls] == [
        "ftp_login",
        "ftp_file_received",
        "ftp_file_sent",
        "ftp_file_deleted",
        "ftp_client_disconnected",
    ]
    assert all(sender is DjangoFTPHandler for _, sender, _ in calls)
    assert project.LOGINS_BY_HANDLER == ["alice"]
    session_id = calls[0][2]["session_id"]
    assert {kwargs["session_id"] for _, _, kwargs in calls} == {session_id}
    received = calls[1][2]
    assert received["path"] == real(account, "up.txt")
    assert received["size"] == 5

    # The audit rows of the same session, for the same events.
    rows = audit_rows(session_id=session_id)
    assert [r["event"] for r in rows] == [
        "connect",
        "login",
        "upload",
        "download",
        "delete",
        "logout",
        "disconnect",
    ]
    upload = rows[2]
    assert (upload["path"], upload["ftp_path"], upload["size"]) == (
        received["path"],
        received["ftp_path"],
        received["size"],
    )


def test_a_project_receiver_that_raises_does_not_stop_the_audit(
    ftp_server, make_account, audit_journal, recorder, caplog
):
    # The failing receiver is connected before the built-in one (its app is
    # listed first), so the built-in one runs after it raised.
    uids = [key[0] for key, *_ in signals.ftp_file_received.receivers]
    assert uids.index("receiver_app.failing.ftp_file_received") < uids.index(
        "ftpserver_core.audit_upload"
    )
    project.FAIL.update({"ftp_login", "ftp_file_received", "ftp_client_disconnected"})
    make_account("alice")
    live = ftp_server()
    with caplog.at_level(logging.ERROR, logger="ftpserver_core.handlers"):
        ftp = live.client("alice")
        assert ftp.storbinary("STOR up.txt", io.BytesIO(b"data")).startswith("226")
        assert ftp.voidcmd("NOOP").startswith("200")
        ftp.quit()
        recorder.wait_for("ftp_client_disconnected")
    flush()

    assert [r["event"] for r in audit_rows()] == [
        "connect",
        "login",
        "upload",
        "logout",
        "disconnect",
    ]
    # The project's next receiver ran too.
    assert [name for name, _, _ in project.calls()] == [
        "ftp_login",
        "ftp_file_received",
        "ftp_client_disconnected",
    ]
    failures = [r for r in caplog.records if r.name == "ftpserver_core.handlers"]
    assert [type(r.exc_info[1]).__name__ for r in failures] == ["ReceiverFailed"] * 3
    assert all("failing" in r.getMessage() for r in failures)


# --- FTPSERVER_AUDIT_EVENTS and FTPSERVER_AUDIT_ENABLED


def busy_session(live):
    """A failed login, a login, and one of most operations."""
    ftp = live.client()
    with pytest.raises(ftplib.error_perm):
        ftp.login("alice", "wrong")
    ftp.login("alice", PASSWORD)
    ftp.mkd("d")
    ftp.storbinary("STOR d/one.txt", io.BytesIO(b"1"))
    ftp.storbinary("STOR d/two.txt", io.BytesIO(b"22"))
    ftp.retrbinary("RETR d/two.txt", io.BytesIO().write)
    ftp.rename("d/two.txt", "d/three.txt")
    ftp.delete("d/one.txt")
    ftp.quit()


def test_audit_events_setting_records_only_those_events(
    ftp_server, make_account, audit_journal, recorder
):
    make_account("alice")
    live = ftp_server()
    with override_settings(FTPSERVER_AUDIT_EVENTS=["upload"]):
        busy_session(live)
        recorder.wait_for("ftp_client_disconnected")
        flush()
    assert [(r["event"], r["ftp_path"], r["size"]) for r in audit_rows()] == [
        ("upload", "/d/one.txt", 1),
        ("upload", "/d/two.txt", 2),
    ]


def test_audit_disabled_records_nothing_but_signals_are_still_sent(
    ftp_server, make_account, audit_journal, recorder
):
    make_account("alice")
    live = ftp_server()
    with override_settings(FTPSERVER_AUDIT_ENABLED=False):
        busy_session(live)
        recorder.wait_for("ftp_client_disconnected")
        flush()
        live.stop()
    assert AuditEvent.objects.count() == 0
    assert not list(audit_journal.glob("spool-*"))
    assert [name for name, _, _ in project.calls()] == [
        "ftp_login_failed",
        "ftp_login",
        "ftp_file_received",
        "ftp_file_received",
        "ftp_file_sent",
        "ftp_file_deleted",
        "ftp_client_disconnected",
    ]
