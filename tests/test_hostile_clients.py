"""Clients that break the protocol on purpose, while a login is pending or
around AUTH TLS (the hostile review's attacks).

Clients bind to distinct loopback addresses (127.0.0.x): 127.0.0.1 is on the
suite's safelist (tests/settings.py). A slow authentication backend
(tests/slow_auth.py) keeps a login pending for as long as a test needs.
"""

import ftplib
import os
import socket
import ssl

import pytest

from tests.certs import make_certificate

from .audit_tools import wait_until
from .conftest import PASSWORD
from .test_admission import disconnected, slow_logins  # noqa: F401 (fixture)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(ftp_server, tls_cert):
    def start(**overrides):
        return ftp_server(
            certfile=tls_cert.certfile, keyfile=tls_cert.keyfile, **overrides
        )

    return start


def client_context(tls_cert):
    context = ssl.create_default_context(cafile=tls_cert.certfile)
    context.check_hostname = False
    return context


class Lines:
    """Read CRLF-terminated replies from a socket (plain or TLS)."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def line(self):
        """Return the next line, or "" at the end of the connection."""
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                rest, self.buffer = self.buffer, b""
                return rest.decode(errors="replace")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def rest(self):
        """Every line until the end of the connection."""
        lines = []
        while line := self.line():
            lines.append(line)
        return lines


def raw(live, source):
    """A socket connected from ``source``, its 220 read; and its line reader."""
    sock = socket.create_connection(
        (live.host, live.port), timeout=10, source_address=(source, 0)
    )
    lines = Lines(sock)
    assert lines.line().startswith("220")
    return sock, lines


def pending_login(live, source, slow_logins, password=PASSWORD):  # noqa: F811
    """A socket whose PASS is being checked (by SlowBackend) right now."""
    sock, lines = raw(live, source)
    sock.sendall(b"USER alice\r\n")
    assert lines.line().startswith("331")
    sock.sendall(f"PASS {password}\r\n".encode())
    wait_until(lambda: len(slow_logins.calls) == 1)
    return sock, lines


# --- FTPS


def test_a_tls_error_while_a_login_is_pending_releases_its_login_slot(
    slow_logins,  # noqa: F811
    tls_server,
    tls_cert,
    make_account,
    recorder,
):
    """pyftpdlib closes a session with a TLS error past the handler's close():
    its login slot stayed counted, and LOGINS_PER_ADDRESS such sessions
    locked the address out for good."""
    make_account("alice")
    live = tls_server(logins_per_address=1)
    sock, lines = raw(live, "127.0.0.70")
    sock.sendall(b"AUTH TLS\r\n")
    assert lines.line().startswith("234")
    tls = client_context(tls_cert).wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"USER alice\r\nPASS wrong\r\n")
    wait_until(lambda: live.server.logins_in_flight["127.0.0.70/32"] == 1)
    # A TLS record that cannot be decrypted, while the login is checked.
    plain = socket.socket(fileno=tls.detach())
    plain.sendall(b"\x17\x03\x03\x00\x20" + b"A" * 32)
    wait_until(lambda: disconnected(recorder, "127.0.0.70"))
    plain.close()
    wait_until(
        lambda: not live.server.logins_in_flight,
        message=f"a login slot stayed taken: {live.server.logins_in_flight}",
    )
    ftp = ftplib.FTP_TLS(timeout=10, context=client_context(tls_cert))
    ftp.connect(live.host, live.port, source_address=("127.0.0.70", 0))
    assert ftp.login("alice", PASSWORD).startswith("230")
    ftp.quit()


@pytest.mark.parametrize("required", [False, True], ids=["optional", "required"])
def test_plain_text_behind_auth_tls_is_not_run_inside_tls(
    tls_server, tls_cert, make_account, recorder, required
):
    """Commands sent in clear in the AUTH TLS packet (the STARTTLS injection
    of CVE-2011-0411) are dropped, not run as if they came through TLS."""
    make_account("alice")
    live = tls_server(tls_required=required)
    sock, lines = raw(live, "127.0.0.71")
    sock.sendall(f"AUTH TLS\r\nUSER alice\r\nPASS {PASSWORD}\r\n".encode())
    assert lines.line().startswith("234")
    assert not lines.buffer
    tls = client_context(tls_cert).wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"PWD\r\n")
    assert Lines(tls).line().startswith("530")
    tls.close()
    assert not recorder.of("ftp_login")


# --- input while a login is pending


def test_more_than_16_kib_sent_while_a_login_is_pending_ends_the_session(
    slow_logins,  # noqa: F811
    ftp_server,
    make_account,
    recorder,
):
    """Reading stopped past 16 KiB of held input, but the poll is
    level-triggered: the loop spun at full CPU until the verdict."""
    slow_logins.reset(delay=3)
    make_account("alice")
    live = ftp_server(auth_workers=1)
    sock, lines = pending_login(live, "127.0.0.72", slow_logins)
    sock.sendall(b"NOOP\r\n" * 4000)  # 24,000 bytes
    # Answered and closed at once, not after the login's verdict.
    assert lines.rest() == ["421 Too many commands sent before the server's answer."]
    sock.close()
    wait_until(lambda: disconnected(recorder, "127.0.0.72"))
    wait_until(lambda: not live.server.logins_in_flight)


def test_a_line_started_while_a_login_is_pending_runs_after_the_held_ones(
    slow_logins,  # noqa: F811
    ftp_server,
    make_account,
):
    slow_logins.reset(delay=1.5)
    make_account("alice")
    live = ftp_server(auth_workers=1)
    sock, lines = pending_login(live, "127.0.0.73", slow_logins)
    # A whole line and the start of the next one, before the verdict...
    sock.sendall(b"PWD\r\nNO")
    assert lines.line().startswith("230")
    assert lines.line().startswith('257 "/"')
    # ... whose end comes after it.
    sock.sendall(b"OP\r\n")
    assert lines.line().startswith("200")
    sock.sendall(b"QUIT\r\n")
    assert lines.rest()[0].startswith("221")
    sock.close()


def test_an_over_long_line_started_while_a_login_is_pending_runs_nothing(
    slow_logins,  # noqa: F811
    ftp_server,
    make_account,
):
    """An over-long line still arriving at the verdict: one 500 for it, in
    order, and none of its bytes run as a command."""
    slow_logins.reset(delay=1.5)
    account = make_account("alice")
    live = ftp_server(auth_workers=1)
    sock, lines = pending_login(live, "127.0.0.74", slow_logins)
    sock.sendall(b"PWD\r\n" + b"X" * 3000)
    assert lines.line().startswith("230")
    assert lines.line().startswith('257 "/"')
    sock.sendall(b"MKD injected\r\nNOOP\r\n")
    assert lines.line() == "500 Command too long."
    assert lines.line().startswith("200")
    sock.sendall(b"QUIT\r\n")
    assert lines.rest()[0].startswith("221")
    sock.close()
    assert not os.path.exists(os.path.join(account.home_path, "injected"))
