"""Data-channel theft: another client connects first to a session's passive port.

The passive listener takes the session's first connection from the session's
own address and then closes; connections from other addresses are refused
without a reply on the session's control channel and without using up the
listener. Plain FTP (and FTPS without FTPSERVER_TLS_REQUIRE_SESSION_REUSE)
cannot tell two clients behind one address apart: the tests below show what
a second client on the same address gets there, and that with the option on
its data connection is refused (522), since only the session's own client
can resume the control connection's TLS session.

Clients on distinct addresses are bound to 127.0.0.x (``source_address``).
"""

import ftplib
import io
import logging
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest
from django.core import checks
from django.test import override_settings

from ftpserver_core.checks import ERROR_IDS
from ftpserver_core.options import OptionError, ServerOptions
from tests.certs import make_certificate
from tests.conftest import PASSWORD
from tests.transfer_tools import payload, read, run_lftp, write

CURL = "/usr/bin/curl"
REUSE_REPLY = "522 Data connection must reuse the control connection's TLS session."
SECRET = payload(200_000, seed=10)
LFTP_TLS = (
    "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; "
    "set net:reconnect-interval-base 0; set net:reconnect-interval-max 0; "
    "set xfer:clobber yes; set ftp:ssl-force true; "
    "set ftp:ssl-protect-data true; set ssl:verify-certificate no; "
)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def reuse_ftp(ftp_server, tls_cert):
    """An FTPS server that requires data connections to reuse the TLS session."""
    return ftp_server(
        certfile=tls_cert.certfile,
        keyfile=tls_cert.keyfile,
        tls_require_session_reuse=True,
    )


@pytest.fixture
def alice(make_account):
    account = make_account("alice")
    write(os.path.join(account.home_path, "secret.bin"), SECRET)
    return account


def client_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class ReusingFTP_TLS(ftplib.FTP_TLS):  # noqa: N801
    """ftplib's FTP_TLS whose data connections resume the control session,
    as lftp and curl do (ftplib itself does not)."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
        return conn, size


def ftps_client(live, username="alice", cls=ftplib.FTP_TLS):
    """An FTPS client logged in with PROT P (binary type)."""
    ftp = cls(context=client_context(), timeout=10)
    ftp.connect(live.host, live.port)
    ftp.auth()
    ftp.login(username, PASSWORD)
    ftp.prot_p()
    ftp.voidcmd("TYPE I")
    return ftp


def plain_client(live):
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(live.host, live.port)
    ftp.login("alice", PASSWORD)
    ftp.voidcmd("TYPE I")
    return ftp


def started(reply):
    """True for the preliminary reply of a transfer command: 125 when the
    server had accepted the data connection already, else 150."""
    return reply[:4] in ("125 ", "150 ")


def passive_port(ftp):
    """Send PASV; return the announced (host, port)."""
    return ftplib.parse227(ftp.sendcmd("PASV"))


def connect(address, source="127.0.0.1"):
    return socket.create_connection(address, timeout=10, source_address=(source, 0))


def read_all(sock):
    """Read until the peer closes; a reset or a TLS error ends it too."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (OSError, ssl.SSLError):
        pass
    return b"".join(chunks)


def refused(address, source="127.0.0.1"):
    """True when nothing listens at ``address`` any more."""
    try:
        sock = connect(address, source)
    except ConnectionRefusedError:
        return True
    sock.close()
    return False


def download(conn):
    data = read_all(conn)
    conn.close()
    return data


def stored(path):
    """The content of a file a client wrote, b"" when it wrote none."""
    return read(str(path)) if os.path.exists(path) else b""


def retr(ftp, name):
    data = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", data.write)
    return data.getvalue()


# --- the passive listener, plain FTP


def test_foreign_address_refused_without_reply_and_listener_kept(
    live_ftp, alice, caplog
):
    caplog.set_level(logging.WARNING)
    victim = plain_client(live_ftp)
    address = passive_port(victim)

    intruder = connect(address, source="127.0.0.2")
    # Closed by the server, not handed the transfer...
    assert read_all(intruder) == b""
    intruder.close()

    # ... and the listener still waits for the session's own connection.
    # pyftpdlib answered the intruder with an unsolicited "425 Rejected data
    # connection from foreign address" on the control channel: the session's
    # next command then read that as its reply, and every later one the
    # reply before its own.
    conn = connect(address)
    assert started(victim.sendcmd("RETR secret.bin"))
    assert download(conn) == SECRET
    assert victim.voidresp().startswith("226 ")
    assert victim.sendcmd("NOOP").startswith("200 ")
    victim.quit()
    assert any(
        "127.0.0.2" in record.getMessage() and "foreign address" in record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING
    ), [r.getMessage() for r in caplog.records]


def test_plain_ftp_same_address_takes_the_transfer_once(live_ftp, alice):
    """The documented limit of plain FTP: a second client on the session's
    address that connects first gets the data. What holds: it is the only
    one (the listener closes at the first connection) and the session's own
    client is refused, so its transfer fails rather than looking done."""
    victim = plain_client(live_ftp)
    address = passive_port(victim)
    thief = connect(address)
    assert started(victim.sendcmd("RETR secret.bin"))
    assert download(thief) == SECRET  # plain FTP cannot tell who it is
    assert victim.voidresp().startswith("226 ")
    assert refused(address)  # the session's client, and anyone else
    victim.quit()


def test_plain_ftp_same_address_cannot_take_a_second_transfer(live_ftp, alice):
    # A connection that arrives once the transfer has one is refused even
    # from the session's address: nothing reaches a second peer.
    victim = plain_client(live_ftp)
    address = passive_port(victim)
    conn = connect(address)
    assert started(victim.sendcmd("RETR secret.bin"))
    first = conn.recv(1000)  # the server has accepted the connection
    assert first and refused(address)
    assert first + download(conn) == SECRET
    assert victim.voidresp().startswith("226 ")
    victim.quit()


# --- FTPS: a stranger on the same address does its own TLS handshake


def tls_connect(address, source="127.0.0.1", resume=None):
    """Connect and complete a TLS handshake; ``resume``: an FTP_TLS client
    whose control session to resume (Python needs its context for that)."""
    if resume is None:
        return client_context().wrap_socket(connect(address, source))
    return resume.context.wrap_socket(
        connect(address, source), session=resume.sock.session
    )


def test_ftps_without_session_reuse_a_stranger_takes_the_transfer(
    ftp_server, tls_cert, alice
):
    """PROT P alone does not help: the server accepts the stranger's own
    handshake. This is what FTPSERVER_TLS_REQUIRE_SESSION_REUSE is for."""
    live = ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile)
    victim = ftps_client(live)
    address = passive_port(victim)
    thief = tls_connect(address)
    assert started(victim.sendcmd("RETR secret.bin"))
    assert download(thief) == SECRET
    assert victim.voidresp().startswith("226 ")
    victim.quit()


def test_failed_data_handshake_answers_the_next_transfer(ftp_server, tls_cert, alice):
    """A stranger that sends no TLS to a session's passive port: pyftpdlib
    answered "522 SSL handshake failed." at once, a reply to nothing, and
    the session's replies were one off from then on."""
    live = ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile)
    victim = ftps_client(live)
    address = passive_port(victim)
    stranger = connect(address)
    stranger.sendall(b"GET / HTTP/1.0\r\n\r\n")
    read_all(stranger)  # the server hung up: the handshake failed
    stranger.close()
    with pytest.raises(ftplib.error_perm) as info:
        victim.sendcmd("RETR secret.bin")
    assert str(info.value) == "522 SSL handshake failed."
    assert victim.sendcmd("NOOP").startswith("200 ")
    assert retr(victim, "secret.bin") == SECRET
    victim.quit()


def test_reuse_refuses_a_stranger_before_the_transfer_command(
    reuse_ftp, alice, recorder, caplog
):
    caplog.set_level(logging.WARNING)
    victim = ftps_client(reuse_ftp, cls=ReusingFTP_TLS)
    address = passive_port(victim)
    # The handshake succeeds (it is a full one), then the server hangs up.
    thief = tls_connect(address)
    assert thief.version() == "TLSv1.2"
    with pytest.raises(ftplib.error_perm) as info:
        victim.sendcmd("RETR secret.bin")
    assert str(info.value) == REUSE_REPLY
    assert download(thief) == b""
    # The session goes on: its own client gets the file.
    assert retr(victim, "secret.bin") == SECRET
    victim.quit()
    assert len(recorder.wait_for("ftp_file_sent")) == 1
    assert any("did not resume" in record.getMessage() for record in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


def test_reuse_refuses_a_stranger_after_the_transfer_command(
    reuse_ftp, alice, recorder
):
    victim = ftps_client(reuse_ftp, cls=ReusingFTP_TLS)
    address = passive_port(victim)
    assert victim.sendcmd("RETR secret.bin").startswith("150 ")
    thief = tls_connect(address)
    assert download(thief) == b""
    with pytest.raises(ftplib.error_perm) as info:
        victim.voidresp()
    assert str(info.value) == REUSE_REPLY
    (incomplete,) = recorder.wait_for("ftp_file_sent_incomplete")
    assert (incomplete["ftp_path"], incomplete["size"]) == ("/secret.bin", 0)
    assert victim.sendcmd("NOOP").startswith("200 ")
    victim.quit()


class HeldHandshake:
    """A TLS client over a socket whose last handshake flight (its Finished)
    is held until ``finish()``: a stranger's connection made ready to
    complete at a moment of the test's choosing."""

    def __init__(self, address):
        self.sock = connect(address)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = client_context().wrap_bio(self.incoming, self.outgoing)
        self._step()
        self.sock.sendall(self.outgoing.read())  # ClientHello
        while not self.outgoing.pending:  # until the server's flight is read
            data = self.sock.recv(65536)
            assert data, "the server hung up during the handshake"
            self.incoming.write(data)
            self._step()
        self.finished = self.outgoing.read()

    def _step(self):
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass

    def finish(self):
        self.sock.sendall(self.finished)

    def read_all(self):
        """What arrives after the handshake, until the server closes."""
        data = []
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.incoming.write_eof()
            else:
                self.incoming.write(chunk)
            try:
                self._step()
                while piece := self.tls.read(65536):
                    data.append(piece)
            except ssl.SSLWantReadError:
                if chunk:
                    continue
                break
            except ssl.SSLError:  # close_notify, EOF or an alert: the end
                break
            if not chunk:
                break
        self.sock.close()
        return b"".join(data)


def pause_loop(live, seconds):
    """Hold the server's IO loop for ``seconds``; return once it is held."""
    held = threading.Event()

    def hold():
        held.set()
        time.sleep(seconds)

    live.server.worker_pool.call_soon(hold)
    assert held.wait(10)


def test_reuse_nothing_is_sent_before_the_handshake_is_checked(reuse_ftp, alice):
    """The stranger's Finished and the session's RETR reach the server
    together: pyftpdlib pushes the file at once and OpenSSL's SSL_write()
    completes the pending handshake by itself and sends the first 16 KiB,
    before the session reuse could be checked."""
    victim = ftps_client(reuse_ftp, cls=ReusingFTP_TLS)
    address = passive_port(victim)
    stranger = HeldHandshake(address)
    pause_loop(reuse_ftp, 1.0)
    victim.putcmd("RETR secret.bin")  # ready first, so handled first
    stranger.finish()
    assert stranger.read_all() == b""
    assert victim.getresp().startswith("125 ")
    with pytest.raises(ftplib.error_perm) as info:
        victim.voidresp()
    assert str(info.value) == REUSE_REPLY
    victim.quit()


def test_reuse_refuses_another_clients_own_session(
    reuse_ftp, alice, make_account, caplog
):
    """A client of the server resuming its *own* control session on another
    session's port is refused: the session must be the control connection's."""
    caplog.set_level(logging.WARNING)
    mallory_account = make_account("mallory")
    write(os.path.join(mallory_account.home_path, "own.txt"), b"mallory's own")
    victim = ftps_client(reuse_ftp, cls=ReusingFTP_TLS)
    mallory = ftps_client(reuse_ftp, username="mallory", cls=ReusingFTP_TLS)
    address = passive_port(victim)
    thief = tls_connect(address, resume=mallory)
    assert thief.session_reused  # the server did resume mallory's session ...
    with pytest.raises(ftplib.error_perm) as info:
        victim.sendcmd("RETR secret.bin")
    assert str(info.value) == REUSE_REPLY  # ... and refused it here
    assert download(thief) == b""
    assert retr(mallory, "own.txt") == b"mallory's own"  # its session is unharmed
    mallory.quit()
    victim.quit()
    assert any(
        "resumed another TLS session" in record.getMessage()
        for record in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_reuse_refuses_a_stranger_planting_an_upload(reuse_ftp, alice, recorder):
    victim = ftps_client(reuse_ftp, cls=ReusingFTP_TLS)
    address = passive_port(victim)
    assert victim.sendcmd("STOR report.txt").startswith("150 ")
    planter = tls_connect(address)
    try:
        planter.sendall(b"planted by a stranger")
        planter.close()
    except OSError:
        pass  # the server may have hung up already
    with pytest.raises(ftplib.error_perm) as info:
        victim.voidresp()
    assert str(info.value) == REUSE_REPLY
    # Direct uploads leave what was stored of an incomplete one: nothing.
    assert read(os.path.join(alice.home_path, "report.txt")) == b""
    (incomplete,) = recorder.wait_for("ftp_file_received_incomplete")
    assert (incomplete["size"], incomplete["reason"]) == (0, "aborted")
    victim.quit()


# --- with the option on, clients that reuse sessions work, ftplib does not


def test_reuse_pins_both_channels_to_tls12(reuse_ftp, alice):
    ftp = ftps_client(reuse_ftp, cls=ReusingFTP_TLS)
    # The client offers TLS 1.3; a TLS 1.3 control session could not be
    # resumed by a TLS 1.2 data connection.
    assert ftp.sock.version() == "TLSv1.2"
    conn = ftp.transfercmd("RETR secret.bin")
    assert conn.version() == "TLSv1.2" and conn.session_reused
    assert download(conn) == SECRET
    ftp.voidresp()
    ftp.quit()


def test_reuse_reusing_ftplib_uploads_downloads_lists(reuse_ftp, alice):
    ftp = ftps_client(reuse_ftp, cls=ReusingFTP_TLS)
    big = payload(3 * 1024 * 1024 + 17, seed=11)
    assert ftp.storbinary("STOR big.bin", io.BytesIO(big)).startswith("226")
    assert retr(ftp, "big.bin") == big
    assert sorted(ftp.nlst()) == ["big.bin", "secret.bin"]
    ftp.quit()
    assert read(os.path.join(alice.home_path, "big.bin")) == big


def test_reuse_refuses_ftplib_with_the_reply(reuse_ftp, alice):
    ftp = ftps_client(reuse_ftp)  # ftplib: a full handshake per data connection
    for transfer in (lambda: retr(ftp, "secret.bin"), ftp.nlst):
        with pytest.raises(ftplib.error_perm) as info:
            transfer()
        assert str(info.value) == REUSE_REPLY
        # The refused connection leaves the session usable.
        assert ftp.sendcmd("NOOP").startswith("200 ")
    # An upload is refused too; ftplib's storbinary() then fails writing
    # (SSLEOFError) before it reads the reply, so read it here.
    conn = ftp.transfercmd("STOR up.bin")
    try:
        # The first megabytes may all fit in the sockets' buffers before
        # the server's hang-up is seen: write until it is.
        for _ in range(64):
            conn.sendall(b"x" * 1_000_000)
    except OSError:
        pass
    else:
        pytest.fail("a refused data connection took 64 MB")
    conn.close()
    with pytest.raises(ftplib.error_perm) as info:
        ftp.voidresp()
    assert str(info.value) == REUSE_REPLY
    ftp.quit()
    assert read(os.path.join(alice.home_path, "up.bin")) == b""


# --- real clients that reuse sessions: lftp and curl


SIZES = [0, 1, 70_000, 1024 * 1024 + 3, 5 * 1024 * 1024]


def test_reuse_lftp_uploads_and_downloads(reuse_ftp, alice, tmp_path):
    files = {f"f{size}.bin": payload(size, seed=size) for size in SIZES}
    for name, data in files.items():
        write(str(tmp_path / "up" / name), data)
    script = "; ".join(
        [f"put {tmp_path / 'up' / name} -o {name}" for name in files]
        + [f"get {name} -o {tmp_path / 'down' / name}" for name in files]
        + ["cls -1"]
    )
    os.makedirs(tmp_path / "down")
    done = run_lftp(reuse_ftp, script, LFTP_TLS, "alice", PASSWORD)
    assert done.returncode == 0, done.stderr
    for name, data in files.items():
        assert read(os.path.join(alice.home_path, name)) == data, name
        assert read(str(tmp_path / "down" / name)) == data, name
    assert sorted(done.stdout.decode().split()) == sorted([*files, "secret.bin"])


def test_reuse_lftp_mirror(reuse_ftp, alice, tmp_path):
    files = {f"d{i % 3}/m{i}.bin": payload(i * 9_000, seed=i) for i in range(30)}
    for name, data in files.items():
        write(str(tmp_path / "src" / name), data)
    done = run_lftp(
        reuse_ftp, f"mirror -R {tmp_path / 'src'} dst", LFTP_TLS, "alice", PASSWORD
    )
    assert done.returncode == 0, done.stderr
    for name, data in files.items():
        assert read(os.path.join(alice.home_path, "dst", name)) == data, name


def curl(*args):
    return subprocess.run(
        [CURL, "--silent", "--show-error", "--max-time", "60", *args],
        capture_output=True,
        timeout=90,
    )


def test_reuse_curl_uploads_downloads_lists(reuse_ftp, alice, tmp_path):
    url = f"ftp://127.0.0.1:{reuse_ftp.port}/"
    auth = ["--ssl-reqd", "-k", "-u", f"alice:{PASSWORD}"]
    for size in SIZES:
        data = payload(size, seed=size + 1)
        source = tmp_path / f"c{size}.bin"
        source.write_bytes(data)
        done = curl(*auth, "-T", str(source), url + source.name)
        assert done.returncode == 0, done.stderr
        assert read(os.path.join(alice.home_path, source.name)) == data
        target = tmp_path / f"back{size}.bin"
        done = curl(*auth, "-o", str(target), url + source.name)
        assert done.returncode == 0, done.stderr
        assert target.read_bytes() == data
    done = curl(*auth, "--list-only", url)
    assert done.returncode == 0, done.stderr
    assert "secret.bin" in done.stdout.decode().split()


def test_reuse_clients_told_not_to_reuse_are_refused(reuse_ftp, alice, tmp_path):
    url = f"ftp://127.0.0.1:{reuse_ftp.port}/"
    auth = ["--ssl-reqd", "-k", "--no-sessionid", "-u", f"alice:{PASSWORD}"]
    done = curl(*auth, "-o", str(tmp_path / "out.bin"), url + "secret.bin")
    assert (done.returncode, done.stderr) == (19, b"curl: (19) RETR response: 522\n")
    source = tmp_path / "up.bin"
    source.write_bytes(b"up")
    done = curl(*auth, "-T", str(source), url + "up.bin")
    assert (done.returncode, done.stderr) == (
        25,
        b"curl: (25) Failed FTP upload: 522\n",
    )
    done = run_lftp(
        reuse_ftp,
        f"set ftp:ssl-copy-sid no; get secret.bin -o {tmp_path / 'lftp.bin'}",
        LFTP_TLS,
        "alice",
        PASSWORD,
    )
    assert done.returncode == 1
    assert REUSE_REPLY.encode() in done.stderr, done.stderr
    assert stored(tmp_path / "out.bin") == stored(tmp_path / "lftp.bin") == b""


def test_reuse_stranger_racing_lftp_gets_nothing(reuse_ftp, alice, tmp_path):
    """A stranger on lftp's address that beats lftp to each passive port
    gets no data; lftp's transfer then fails (its connection is refused)."""
    stolen, thieves = [], []
    handler = reuse_ftp.server.handler
    original = handler.passive_dtp

    class Racing(original):
        # The stranger learns the port the moment the server listens on it
        # (a real one scans the passive range); its TCP connection is in the
        # accept queue before the server even answers lftp's PASV.
        def listen(self, num):
            super().listen(num)
            sock = connect(self.socket.getsockname()[:2])
            thread = threading.Thread(target=steal, args=(sock,), daemon=True)
            thieves.append(thread)
            thread.start()

    def steal(sock):
        try:
            conn = client_context().wrap_socket(sock)
        except OSError:
            # Refused or reset in the handshake (whether the server read its
            # part first is timing): nothing received.
            stolen.append(b"")
            return
        stolen.append(read_all(conn))
        conn.close()

    handler.passive_dtp = Racing
    try:
        done = run_lftp(
            reuse_ftp,
            f"get secret.bin -o {tmp_path / 'got.bin'}",
            LFTP_TLS,
            "alice",
            PASSWORD,
        )
    finally:
        handler.passive_dtp = original
    for thread in thieves:
        thread.join(10)
    assert thieves and stolen == [b""] * len(thieves), [len(d) for d in stolen]
    # lftp fails: either its own connection is refused (the listener took
    # the stranger's) or it reads the 522 first.
    assert done.returncode != 0
    assert stored(tmp_path / "got.bin") != SECRET


# --- the setting


def reuse_errors(**settings):
    with override_settings(**settings):
        issues = checks.run_checks(include_deployment_checks=False)
    return [i for i in issues if i.id == ERROR_IDS["TLS_REQUIRE_SESSION_REUSE"]]


def test_setting_is_checked(tls_cert):
    assert ERROR_IDS["TLS_REQUIRE_SESSION_REUSE"] == "ftpserver_core.E013"
    assert reuse_errors(FTPSERVER_TLS_REQUIRE_SESSION_REUSE=True) == []
    (error,) = reuse_errors(FTPSERVER_TLS_REQUIRE_SESSION_REUSE="yes")
    assert error.id == "ftpserver_core.E013"
    assert error.msg == (
        "FTPSERVER_TLS_REQUIRE_SESSION_REUSE: 'yes' is not valid; expected True "
        "or False."
    )
    (error,) = reuse_errors(
        FTPSERVER_TLS_REQUIRE_SESSION_REUSE=True, FTPSERVER_TLS_MIN_VERSION="TLSv1.3"
    )
    assert error.id == "ftpserver_core.E013"
    assert "'TLSv1.3'" in error.msg and "TLS 1.2" in error.msg
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(
            certfile=tls_cert.certfile,
            keyfile=tls_cert.keyfile,
            tls_require_session_reuse=True,
            tls_min_version="TLSv1.3",
        )
    assert info.value.name == "TLS_REQUIRE_SESSION_REUSE"
    assert ServerOptions.from_settings().tls_require_session_reuse is False
