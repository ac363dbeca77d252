"""Faults: a database that hangs or refuses, a killed server, a full disk, a
reset or stalled data connection.

The first tests check the fault tools themselves (the proxy against a tiny
echo server); the others run real servers (in this process, or as
``ftpserver`` processes whose database goes through the proxy) with real
ftplib clients, and check the replies, the signals and the audit table.
"""

import collections
import ftplib
import io
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from ftpserver_core.models import AuditEvent

from .audit_tools import wait_until
from .conftest import PASSWORD
from .faults import (
    TcpProxy,
    database_proxy,
    mount_tmpfs,
    proxied_database_url,
    reply_of,
    require_postgresql,
    server_env,
    start_server,
    upload_load,
)

MiB = 1024 * 1024


# --- the proxy itself, against an echo server


class EchoServer:
    """Echo every byte back; close after the client's FIN."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.connections = 0
        self.received = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        self.listener.settimeout(0.1)  # so that close() ends this loop
        while self.listener.fileno() != -1:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._echo, args=(sock,), daemon=True).start()

    def _echo(self, sock):
        with sock:
            try:
                while data := sock.recv(65536):
                    with self._lock:
                        self.received += len(data)
                    sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.listener.close()
        self._thread.join(5)


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo):
    with TcpProxy(echo.address) as proxy:
        yield proxy


def connect(proxy):
    return socket.create_connection(proxy.address, timeout=5)


def refused(proxy, timeout=5):
    """True when a new connection to ``proxy`` is reset or closed at once (the
    reset may come before connect() returns)."""
    try:
        sock = connect(proxy)
    except (ConnectionResetError, ConnectionRefusedError):
        return True
    with sock:
        return closed(sock, timeout)


def round_trip(sock, data=b"ping"):
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def closed(sock, timeout=5):
    """True when the peer closed or reset ``sock`` within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return True


def silent(sock, wait=0.5):
    """True when nothing (no byte, no close) arrives on ``sock`` for ``wait``."""
    sock.settimeout(wait)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    except OSError:
        return False
    return False


def test_the_proxy_forwards_both_ways(proxy, echo):
    socks = [connect(proxy) for _ in range(3)]
    for i, sock in enumerate(socks):
        assert round_trip(sock, b"hello %d" % i) == b"hello %d" % i
    # A large payload, sent while it is read back (more than every buffer).
    payload = os.urandom(4 * MiB)
    sender = threading.Thread(target=socks[0].sendall, args=(payload,))
    sender.start()
    received = bytearray()
    while len(received) < len(payload):
        received += socks[0].recv(65536)
    sender.join(10)
    assert received == payload
    # A FIN goes through, and the echo server's comes back.
    socks[1].shutdown(socket.SHUT_WR)
    assert socks[1].recv(10) == b""
    for sock in socks:
        sock.close()
    wait_until(lambda: proxy.open_connections == 0)
    assert proxy.accepted == echo.connections == 3
    assert proxy.mode == "forward"


def test_refuse_closes_new_connections_and_optionally_the_open_ones(proxy):
    before = connect(proxy)
    assert round_trip(before) == b"ping"
    proxy.refuse()
    assert refused(proxy)
    assert round_trip(before) == b"ping"  # the open one still works
    proxy.refuse(cut_existing=True)
    assert closed(before)
    assert refused(proxy)
    assert proxy.refused == 2
    proxy.forward()
    after = connect(proxy)
    assert round_trip(after) == b"ping"
    before.close()
    after.close()


def test_refuse_can_wait_before_closing(proxy):
    proxy.refuse(delay=1.0)
    sock = connect(proxy)
    assert silent(sock, 0.3)  # not before the delay
    assert closed(sock, 10)
    sock.close()


def test_cut_resets_the_open_connections_and_forwards_new_ones(proxy):
    socks = [connect(proxy) for _ in range(2)]
    for sock in socks:
        assert round_trip(sock) == b"ping"
    proxy.cut()
    assert all(closed(sock) for sock in socks)
    assert proxy.mode == "forward"
    after = connect(proxy)
    assert round_trip(after) == b"ping"
    for sock in [*socks, after]:
        sock.close()


def test_hang_holds_connections_without_an_answer_until_recover(proxy, echo):
    before = connect(proxy)
    assert round_trip(before) == b"ping"
    proxy.hang()
    before.sendall(b"lost")
    assert silent(before)  # neither an answer nor a close
    held = connect(proxy)
    held.sendall(b"hello")
    assert silent(held)
    assert echo.connections == 1  # the held one never reached the target
    assert echo.received == 4  # nor did what the stalled one sent
    assert proxy.hung_connections == 2
    proxy.recover()
    assert closed(before) and closed(held)
    assert proxy.hung_connections == 0
    after = connect(proxy)
    assert round_trip(after) == b"ping"
    for sock in (before, held, after):
        sock.close()


def test_forward_after_hang_resumes_the_held_connections(proxy, echo):
    before = connect(proxy)
    assert round_trip(before) == b"ping"
    proxy.hang()
    before.sendall(b"late")
    held = connect(proxy)
    held.sendall(b"queued")
    assert silent(before) and silent(held)
    proxy.forward()
    before.settimeout(5)
    held.settimeout(5)
    assert before.recv(10) == b"late"
    assert held.recv(10) == b"queued"
    assert echo.connections == 2
    before.close()
    held.close()


def test_hang_can_cut_the_open_connections_first(proxy):
    before = connect(proxy)
    assert round_trip(before) == b"ping"
    proxy.hang(cut_existing=True)
    assert closed(before)
    held = connect(proxy)
    assert silent(held)
    before.close()
    held.close()


def test_the_proxy_is_bounded(echo):
    with TcpProxy(echo.address, max_connections=2) as proxy:
        socks = [connect(proxy) for _ in range(2)]
        for sock in socks:
            assert round_trip(sock) == b"ping"
        assert refused(proxy)
        assert proxy.refused == 1
        for sock in socks:
            sock.close()


def test_a_closed_proxy_resets_its_connections_and_stops(echo):
    with TcpProxy(echo.address) as proxy:
        sock = connect(proxy)
        assert round_trip(sock) == b"ping"
        proxy.hang()
        held = connect(proxy)
        thread = proxy._thread
    assert not thread.is_alive()
    assert closed(sock) and closed(held)
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    sock.close()
    held.close()


def test_a_target_that_refuses_resets_the_client():
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    with TcpProxy(("127.0.0.1", port)) as proxy:
        assert refused(proxy)
        wait_until(lambda: proxy.failed == 1)


def test_the_proxy_only_proxies_to_loopback():
    with pytest.raises(ValueError, match="loopback"):
        TcpProxy(("192.0.2.1", 5432))


# --- helpers of the server tests


def login_reply(server, username, password=PASSWORD, timeout=30):
    """Log in on a new connection; return the last reply (or the error)."""
    ftp = ftplib.FTP(timeout=timeout)
    try:
        ftp.connect(server.host, server.port)
        return reply_of(ftp.login, username, password)
    finally:
        ftp.close()


def stor_raw(ftp, name, size, rst=False):
    """STOR ``size`` bytes on a raw data connection; with ``rst`` close it
    with an RST instead of a FIN. Return (bytes sent, the control reply)."""
    try:
        conn = ftp.transfercmd(f"STOR {name}")
    except ftplib.Error as exc:
        return 0, str(exc)
    block = b"\x5a" * 65536
    sent = 0
    try:
        while sent < size:
            conn.sendall(block[: size - sent])
            sent += min(len(block), size - sent)
    except OSError:
        pass  # the server closed the data connection (a full disk)
    if rst:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    return sent, reply_of(ftp.getresp)


def size_on_disk(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


# --- a database that hangs or refuses (PostgreSQL through the proxy)

OUTAGE_SETTINGS = {
    "LOGIN_TIMEOUT": 3,
    "SHUTDOWN_TIMEOUT": 5,
    "DATABASE_TIMEOUT": 2,
    "CREDENTIAL_CACHE_TTL": 0,
}


@pytest.mark.slow
def test_a_database_outage_fails_new_logins_with_421_keeps_sessions_and_loses_no_record(
    transactional_db, make_account, tmp_path, record_property
):
    require_postgresql()
    make_account("alice")
    make_account("bob")
    home = tmp_path / "homes" / "alice"
    with database_proxy() as proxy:
        env = server_env(
            proxied_database_url(proxy),
            AUDIT_JOURNAL_DIR=tmp_path / "journal",
            **OUTAGE_SETTINGS,
        )
        server = start_server(tmp_path / "first", env)
        try:
            alice = server.client("alice", timeout=30)
            wait_until(
                lambda: AuditEvent.objects.filter(event="login").exists(), timeout=20
            )

            # The database hangs: connections get no answer.
            proxy.hang()
            assert alice.voidcmd("NOOP").startswith("200")
            listing = []
            assert alice.retrlines("LIST", listing.append).startswith("226")
            reply = reply_of(
                alice.storbinary, "STOR during-hang.txt", io.BytesIO(b"hang" * 100)
            )
            assert reply.startswith("226"), reply
            assert (home / "during-hang.txt").read_bytes() == b"hang" * 100
            started = time.monotonic()
            reply = login_reply(server, "bob")
            took = time.monotonic() - started
            assert reply.startswith("421"), reply  # unavailable, never 530
            assert took < 25, f"the login was answered after {took:.1f}s"
            record_property("hung_login_seconds", round(took, 2))
            print(f"login with a hung database: {reply!r} after {took:.2f}s")
            assert alice.voidcmd("NOOP").startswith("200")

            # The database refuses connections (and cut the open ones).
            proxy.refuse(cut_existing=True)
            reply = login_reply(server, "bob")
            assert reply.startswith("421"), reply
            reply = reply_of(
                alice.storbinary, "STOR during-refuse.txt", io.BytesIO(b"refuse")
            )
            assert reply.startswith("226"), reply
            assert "during-refuse.txt" in alice.nlst()

            # Stopped while the database hangs: it still exits.
            proxy.hang()
            assert alice.voidcmd("NOOP").startswith("200")
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            try:
                code = server.proc.wait(timeout=30)
            except Exception:
                pytest.fail(
                    "the server did not exit within 30s of SIGTERM while the "
                    f"database hung:\n{tail(server.stderr)}"
                )
            took = time.monotonic() - started
            record_property("sigterm_exit_seconds", round(took, 2))
            record_property("sigterm_exit_code", code)
            print(f"SIGTERM with a hung database: exit {code} after {took:.2f}s")
            alice.close()
        finally:
            server.kill()

        # Back: a new start writes what the outage kept.
        proxy.recover()
        second = start_server(tmp_path / "second", env)
        try:

            def all_recorded():
                events = AuditEvent.objects
                return (
                    events.filter(event="login_failed").count() >= 2
                    and events.filter(
                        event="upload",
                        ftp_path__in=["/during-hang.txt", "/during-refuse.txt"],
                    ).count()
                    >= 2
                    and events.filter(event="server_stopped").count() >= 1
                    and events.filter(event="server_started").count() >= 2
                )

            wait_until(
                all_recorded,
                timeout=30,
                message="the outage's records did not reach the database: "
                f"{list(AuditEvent.objects.values_list('event', 'reason'))}"
                f"\n{tail(second.stderr)}",
            )
            assert second.stop(signal.SIGTERM, timeout=30) == 0
        finally:
            second.kill()

    failed = list(AuditEvent.objects.filter(event="login_failed").values())
    assert [(r["username"], r["reason"], r["success"]) for r in failed] == [
        ("bob", "database_unavailable", False)
    ] * 2
    (login,) = AuditEvent.objects.filter(event="login", username="alice")
    uploads = AuditEvent.objects.filter(event="upload").order_by("ftp_path")
    assert [(u.ftp_path, u.username, u.session_id, u.success) for u in uploads] == [
        ("/during-hang.txt", "alice", login.session_id, True),
        ("/during-refuse.txt", "alice", login.session_id, True),
    ]
    assert AuditEvent.objects.filter(event="server_started").count() == 2
    assert AuditEvent.objects.filter(event="server_stopped").count() == 2
    keys = collections.Counter(
        AuditEvent.objects.exclude(session_id="").values_list(
            "event", "ftp_path", "session_id"
        )
    )
    assert {key: n for key, n in keys.items() if n > 1} == {}


# --- a server killed under load


@pytest.mark.slow
def test_sigkill_under_load_loses_and_duplicates_no_acknowledged_upload(
    transactional_db, make_account, tmp_path
):
    make_account("alice")
    # Both processes share the journal: the second finds what the first left.
    env = server_env(AUDIT_JOURNAL_DIR=tmp_path / "journal")
    server = start_server(tmp_path / "first", env)
    stop = threading.Event()
    acknowledged, errors = [], []
    load = threading.Thread(
        target=upload_load,
        args=(server.host, server.port, "alice", PASSWORD, 2, stop),
        kwargs={"acknowledged": acknowledged, "errors": errors},
        daemon=True,
    )
    load.start()
    try:
        wait_until(
            lambda: len(acknowledged) >= 300 or not load.is_alive(),
            timeout=180,
            interval=0.01,
        )
        assert len(acknowledged) >= 300, (errors, tail(server.stderr))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    finally:
        stop.set()
        load.join(60)
        server.kill()
    assert not load.is_alive()
    expected = {f"/{name}" for name in acknowledged}
    assert len(expected) == len(acknowledged)

    second = start_server(tmp_path / "second", env)
    try:

        def upload_counts():
            return collections.Counter(
                AuditEvent.objects.filter(event="upload").values_list(
                    "ftp_path", flat=True
                )
            )

        deadline = time.monotonic() + 30
        while True:
            counts = upload_counts()
            if all(counts[path] == 1 for path in expected):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert second.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        second.kill()
    counts = upload_counts()
    missing = sorted(path for path in expected if counts[path] == 0)
    duplicated = sorted(path for path, n in counts.items() if n > 1)
    assert (len(missing), len(duplicated)) == (0, 0), (
        f"{len(acknowledged)} acknowledged uploads: {len(missing)} missing "
        f"(e.g. {missing[:5]}), {len(duplicated)} duplicated (e.g. {duplicated[:5]})"
    )


# --- a full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs; request it before ftp_server, so that the server is
    stopped (its files closed) before it is unmounted."""
    with mount_tmpfs(tmp_path / "tiny-disk", 1 * MiB) as path:
        yield Path(path)


def test_a_full_disk_fails_the_upload_with_452_and_the_session_goes_on(
    tiny_disk, ftp_server, make_account, recorder
):
    account = make_account("alice", home=str(tiny_disk / "{username}"))
    # "direct": the partial file stays where it was written (an atomic
    # upload's temporary file is removed), so its size can be compared.
    live = ftp_server(upload_mode="direct")
    ftp = live.client("alice", timeout=30)
    _, reply = stor_raw(ftp, "big.bin", 3 * MiB)
    assert reply[:3] in ("452", "552"), reply
    assert "space" in reply.lower(), reply
    # The next command gets its own reply: replies stay in order.
    assert ftp.voidcmd("NOOP").startswith("200")
    on_disk = size_on_disk(os.path.join(account.home_path, "big.bin"))
    assert on_disk <= 1 * MiB
    (incomplete,) = recorder.wait_for("ftp_file_received_incomplete", timeout=10)
    assert incomplete["reason"] == "disk_full"
    assert incomplete["size"] == on_disk
    assert "ftp_file_received" not in recorder.names()
    record = wait_until(
        lambda: AuditEvent.objects.filter(event="upload_incomplete").first(),
        timeout=10,
    )
    assert (record.success, record.reason, record.size) == (False, "disk_full", on_disk)
    assert record.ftp_path == "/big.bin"
    ftp.quit()


# --- a data connection reset or stalled


def test_a_reset_mid_upload_is_an_incomplete_upload(ftp_server, make_account, recorder):
    account = make_account("alice")
    live = ftp_server(upload_mode="direct")  # the partial file stays
    ftp = live.client("alice", timeout=30)
    sent, reply = stor_raw(ftp, "x", 3 * MiB, rst=True)
    assert sent == 3 * MiB
    assert not reply.startswith("226"), reply
    assert reply.startswith("426"), reply
    (incomplete,) = recorder.wait_for("ftp_file_received_incomplete", timeout=10)
    assert incomplete["reason"] == "connection_lost"
    assert incomplete["size"] == size_on_disk(os.path.join(account.home_path, "x"))
    assert "ftp_file_received" not in recorder.names()
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.quit()


@pytest.mark.slow
def test_a_stalled_download_times_out_with_426(ftp_server, make_account, recorder):
    account = make_account("alice")
    with open(os.path.join(account.home_path, "big.bin"), "wb") as fh:
        fh.truncate(50 * MiB)  # sparse
    live = ftp_server(data_timeout=2)
    ftp = live.client("alice", timeout=30)
    conn = ftp.transfercmd("RETR big.bin")
    try:
        # Never read: the server's sends stall once the buffers are full.
        reply = reply_of(ftp.getresp)
        assert reply.startswith("426"), reply
        (incomplete,) = recorder.wait_for("ftp_file_sent_incomplete", timeout=30)
        assert incomplete["reason"] == "data_timeout"
        assert incomplete["size"] < 50 * MiB
        assert "ftp_file_sent" not in recorder.names()
    finally:
        conn.close()
        ftp.close()
