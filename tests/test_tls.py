"""FTPS (explicit TLS, RFC 4217) against a real server with a test certificate."""

import ftplib
import io
import os
import random
import re
import ssl
import subprocess
import warnings

import pytest

from ftpserver_core.options import OptionError, ServerOptions
from tests.certs import make_certificate
from tests.conftest import PASSWORD

CURL = "/usr/bin/curl"
AEAD_FS_TLS12 = re.compile(
    r"^(ECDHE|DHE)-(RSA|ECDSA)-(AES(128|256)-GCM|CHACHA20-POLY1305)"
)
TLS13_SUITES = {
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
}


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_ftp(ftp_server, tls_cert):
    """A server with TLS on and required (the default TLS_REQUIRED=True)."""
    return ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile)


def client_context(maximum=None, minimum=None, ciphers=None, cafile=None):
    """A client SSLContext; verifies the server against ``cafile`` when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        # TLSVersion.TLSv1_1 is deprecated: that is the point of the test.
        warnings.simplefilter("ignore", DeprecationWarning)
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
    if ciphers:
        context.set_ciphers(ciphers)
    return context


def tls_client(live, context=None, username="alice", prot_p=True):
    """An FTP_TLS client after AUTH TLS, login and (by default) PROT P."""
    ftp = ftplib.FTP_TLS(context=context or client_context(), timeout=10)
    ftp.connect(live.host, live.port)
    ftp.auth()
    if username:
        ftp.login(username, PASSWORD)
        if prot_p:
            ftp.prot_p()
    return ftp


def handshake_error(live, context):
    """Connect, send AUTH TLS and return the ssl.SSLError of the handshake."""
    ftp = ftplib.FTP_TLS(context=context, timeout=10)
    ftp.connect(live.host, live.port)
    try:
        with pytest.raises(ssl.SSLError) as info:
            ftp.auth()
    finally:
        ftp.close()
    return info.value


# No test lists an empty directory with ftplib over TLS: pyftpdlib may close
# that data connection without a TLS close_notify (it sends the empty listing
# before its handshake is done), and ftplib's unwrap() then fails with
# SHUTDOWN_WHILE_IN_INIT. curl and lftp do not mind.


def retr(ftp, name):
    data = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", data.write)
    return data.getvalue()


def assert_aead_forward_secret(cipher):
    name, version, bits = cipher
    if version == "TLSv1.3":
        assert name in TLS13_SUITES
    else:
        assert version == "TLSv1.2"
        assert AEAD_FS_TLS12.match(name), name
    assert bits >= 128


def curl(*args, timeout=60):
    return subprocess.run(
        [CURL, "--silent", "--show-error", "--max-time", "30", *args],
        capture_output=True,
        timeout=timeout,
    )


# --- ftplib over TLS


def test_ftps_upload_download_listing(tls_ftp, tls_cert, make_account, recorder):
    account = make_account("alice")
    payload = random.Random(1).randbytes(300_000)
    # Verify the server against the test certificate: it serves the one configured.
    ftp = tls_client(tls_ftp, client_context(cafile=tls_cert.certfile))
    assert ftp.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert ftp.sock.getpeercert()["subject"] == ((("commonName", "localhost"),),)

    assert ftp.storbinary("STOR big.bin", io.BytesIO(payload)).startswith("226")
    ftp.mkd("docs")
    ftp.cwd("docs")
    ftp.storlines("STOR notes.txt", io.BytesIO(b"line one\r\nline two\r\n"))
    lines = []
    ftp.retrlines("RETR notes.txt", lines.append)
    assert lines == ["line one", "line two"]
    ftp.cwd("/")
    assert retr(ftp, "big.bin") == payload
    listing = []
    ftp.retrlines("LIST", listing.append)
    assert sorted(ftp.nlst()) == ["big.bin", "docs"]
    assert any(line.endswith(" big.bin") and " 300000 " in line for line in listing)
    assert dict(ftp.mlsd("docs"))["notes.txt"]["type"] == "file"

    # The data connection itself is TLS.
    conn = ftp.transfercmd("NLST")
    assert isinstance(conn, ssl.SSLSocket)
    assert_aead_forward_secret(conn.cipher())
    assert conn.makefile("rb").read().split() == [b"big.bin", b"docs"]
    conn.close()
    ftp.voidresp()
    ftp.quit()

    with open(os.path.join(account.home_path, "big.bin"), "rb") as fh:
        assert fh.read() == payload
    with open(os.path.join(account.home_path, "docs", "notes.txt"), "rb") as fh:
        assert fh.read() == b"line one\nline two\n"
    received = recorder.wait_for("ftp_file_received", 2)
    assert [(e["ftp_path"], e["size"], e["tls"]) for e in received] == [
        ("/big.bin", len(payload), True),
        # ASCII mode: the wire has CRLF; size counts the bytes stored (LF).
        ("/docs/notes.txt", len(b"line one\nline two\n"), True),
    ]


@pytest.mark.parametrize(
    ("maximum", "version"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_tls12_and_tls13_clients_work(tls_ftp, make_account, maximum, version):
    account = make_account("alice")
    ftp = tls_client(tls_ftp, client_context(maximum=maximum))
    assert ftp.sock.version() == version
    assert_aead_forward_secret(ftp.sock.cipher())
    ftp.storbinary("STOR v.txt", io.BytesIO(version.encode()))
    assert retr(ftp, "v.txt") == version.encode()
    ftp.quit()
    with open(os.path.join(account.home_path, "v.txt"), "rb") as fh:
        assert fh.read() == version.encode()


def test_tls11_client_cannot_complete_handshake(tls_ftp, make_account, recorder):
    make_account("alice")
    # A client that really offers TLS 1.1 (the default security level would
    # refuse to send the hello at all: the server's alert proves it got it).
    old = client_context(
        minimum=ssl.TLSVersion.TLSv1_1,
        maximum=ssl.TLSVersion.TLSv1_1,
        ciphers="DEFAULT:@SECLEVEL=0",
    )
    assert handshake_error(tls_ftp, old).reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    # The server is unharmed and still serves modern clients.
    ftp = tls_client(tls_ftp)
    ftp.storbinary("STOR after.txt", io.BytesIO(b"after"))
    assert ftp.nlst() == ["after.txt"]
    ftp.quit()
    assert len(recorder.of("ftp_login")) == 1


def test_min_version_tls13_refuses_tls12_client(ftp_server, tls_cert, make_account):
    make_account("alice")
    live = ftp_server(
        certfile=tls_cert.certfile, keyfile=tls_cert.keyfile, tls_min_version="TLSv1.3"
    )
    tls12 = client_context(maximum=ssl.TLSVersion.TLSv1_2)
    assert handshake_error(live, tls12).reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    ftp = tls_client(live)
    assert ftp.sock.version() == "TLSv1.3"
    ftp.quit()


@pytest.mark.parametrize(
    "ciphers",
    [
        "AES128-SHA",  # RSA key exchange, CBC
        "AES256-GCM-SHA384",  # AEAD but RSA key exchange: no forward secrecy
        "ECDHE-RSA-AES128-SHA",  # forward secret but CBC
        "ECDHE-RSA-AES256-SHA384",
    ],
)
def test_tls12_without_aead_or_forward_secrecy_is_refused(tls_ftp, ciphers):
    weak = client_context(maximum=ssl.TLSVersion.TLSv1_2, ciphers=ciphers)
    assert handshake_error(tls_ftp, weak).reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"


@pytest.mark.parametrize(
    "ciphers",
    [
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ],
)
def test_tls12_forward_secret_aead_ciphers_work(tls_ftp, make_account, ciphers):
    make_account("alice")
    ftp = tls_client(
        tls_ftp, client_context(maximum=ssl.TLSVersion.TLSv1_2, ciphers=ciphers)
    )
    assert ftp.sock.cipher()[0] == ciphers
    ftp.storbinary("STOR c.txt", io.BytesIO(b"cipher"))
    assert retr(ftp, "c.txt") == b"cipher"
    ftp.quit()


# --- what TLS_REQUIRED enforces


def test_plain_login_refused_when_tls_required(tls_ftp, make_account, recorder):
    make_account("alice")
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(tls_ftp.host, tls_ftp.port)
    assert "AUTH TLS" in ftp.sendcmd("FEAT")
    with pytest.raises(
        ftplib.error_perm, match=r"^550 SSL/TLS required on the control channel"
    ):
        ftp.sendcmd("USER alice")
    with pytest.raises(
        ftplib.error_perm, match=r"^550 SSL/TLS required on the control channel"
    ):
        ftp.sendcmd(f"PASS {PASSWORD}")
    with pytest.raises(ftplib.error_perm, match=r"^550 "):
        ftp.login("alice", PASSWORD)
    # The session is still anonymous: nothing but the greeting commands work.
    with pytest.raises(ftplib.error_perm, match=r"^530 "):
        ftp.sendcmd("PWD")
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    assert "ftp_login" not in recorder.names()


def test_data_channel_requires_prot_p(tls_ftp, make_account):
    account = make_account("alice")
    ftp = tls_client(tls_ftp, prot_p=False)
    for command in ("PASV", "EPSV", "PORT 127,0,0,1,4,1", "EPRT |1|127.0.0.1|1025|"):
        with pytest.raises(
            ftplib.error_perm, match=r"^550 SSL/TLS required on the data channel"
        ):
            ftp.sendcmd(command)
    with pytest.raises(
        ftplib.error_perm, match=r"^550 SSL/TLS required on the data channel"
    ):
        ftp.storbinary("STOR clear.txt", io.BytesIO(b"clear"))
    # PROT C (clear data) is no better.
    ftp.sendcmd("PBSZ 0")
    ftp.sendcmd("PROT C")
    with pytest.raises(
        ftplib.error_perm, match=r"^550 SSL/TLS required on the data channel"
    ):
        ftp.nlst()
    assert os.listdir(account.home_path) == []
    ftp.prot_p()
    ftp.storbinary("STOR private.txt", io.BytesIO(b"private"))
    assert ftp.nlst() == ["private.txt"]
    ftp.quit()


def test_tls_optional_allows_plain_login(ftp_server, tls_cert, make_account, recorder):
    account = make_account("alice")
    live = ftp_server(
        certfile=tls_cert.certfile, keyfile=tls_cert.keyfile, tls_required=False
    )
    ftp = live.client("alice")  # no AUTH TLS at all
    assert not isinstance(ftp.sock, ssl.SSLSocket)
    ftp.storbinary("STOR plain.txt", io.BytesIO(b"in the clear"))
    assert retr(ftp, "plain.txt") == b"in the clear"
    ftp.quit()
    # TLS control with clear data (PROT C) is allowed too.
    ftp = tls_client(live, prot_p=False)
    assert retr(ftp, "plain.txt") == b"in the clear"
    ftp.quit()
    with open(os.path.join(account.home_path, "plain.txt"), "rb") as fh:
        assert fh.read() == b"in the clear"
    logins = recorder.wait_for("ftp_login", 2)
    assert [e["tls"] for e in logins] == [False, True]


def test_login_signal_reports_tls(tls_ftp, make_account, recorder):
    make_account("alice")
    ftp = tls_client(tls_ftp)
    ftp.storbinary("STOR s.txt", io.BytesIO(b"s"))
    ftp.quit()
    (login,) = recorder.wait_for("ftp_login")
    assert login["username"] == "alice"
    assert login["tls"] is True
    (logout,) = recorder.wait_for("ftp_logout")
    assert logout["tls"] is True
    assert recorder.wait_for("ftp_file_received")[0]["tls"] is True
    (disconnected,) = recorder.wait_for("ftp_client_disconnected")
    assert (disconnected["username"], disconnected["tls"]) == ("alice", True)
    # Connected before AUTH TLS: the control channel was still in the clear.
    assert recorder.of("ftp_client_connected")[0]["tls"] is False


def test_account_requiring_tls(ftp_server, tls_cert, make_account, recorder):
    make_account("alice", require_tls=True)
    make_account("bob")
    live = ftp_server(
        certfile=tls_cert.certfile, keyfile=tls_cert.keyfile, tls_required=False
    )

    ftp = live.client()
    with pytest.raises(ftplib.error_perm, match=r"^530 ") as info:
        ftp.login("alice", PASSWORD)
    # The reply of a wrong password: a right one sent in clear is not confirmed.
    assert str(info.value) == "530 Authentication failed."
    ftp.close()
    (failed,) = recorder.wait_for("ftp_login_failed")
    assert (failed["username"], failed["reason"], failed["tls"]) == (
        "alice",
        "tls_required",
        False,
    )

    # Another account logs in in the clear on the same server ...
    ftp = live.client("bob")
    ftp.quit()
    # ... and alice does once the control channel is encrypted.
    ftp = tls_client(live)
    ftp.storbinary("STOR ok.txt", io.BytesIO(b"ok"))
    ftp.quit()
    logins = recorder.wait_for("ftp_login", 2)
    assert [(e["username"], e["tls"]) for e in logins] == [
        ("bob", False),
        ("alice", True),
    ]
    assert len(recorder.of("ftp_login_failed")) == 1


def test_certificate_and_key_in_one_file(ftp_server, tls_cert, make_account):
    make_account("alice")
    options = ServerOptions.from_settings(certfile=tls_cert.combined)
    assert options.tls and options.keyfile is None
    live = ftp_server(certfile=tls_cert.combined)
    ftp = tls_client(live, client_context(cafile=tls_cert.certfile))
    ftp.storbinary("STOR one.txt", io.BytesIO(b"one file"))
    assert retr(ftp, "one.txt") == b"one file"
    ftp.quit()


# --- curl, explicit TLS


def test_curl_ftps_upload_download_list(tls_ftp, make_account, tmp_path):
    account = make_account("alice")
    url = f"ftp://127.0.0.1:{tls_ftp.port}/"
    auth = ["--ssl-reqd", "-k", "-u", f"alice:{PASSWORD}"]
    payload = random.Random(2).randbytes(150_000)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)

    done = curl(*auth, "-T", str(source), url + "up.bin")
    assert done.returncode == 0, done.stderr
    with open(os.path.join(account.home_path, "up.bin"), "rb") as fh:
        assert fh.read() == payload

    target = tmp_path / "down.bin"
    done = curl(*auth, "-o", str(target), url + "up.bin")
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == payload

    os.mkdir(os.path.join(account.home_path, "sub"))
    done = curl(*auth, url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2
    assert any(line.startswith("d") and line.endswith(" sub") for line in lines)
    assert any(line.endswith(" up.bin") and " 150000 " in line for line in lines)
    done = curl(*auth, "--list-only", url)
    assert sorted(done.stdout.decode().split()) == ["sub", "up.bin"]


def test_curl_verifies_the_test_certificate(tls_ftp, tls_cert, make_account):
    account = make_account("alice")
    with open(os.path.join(account.home_path, "hello.txt"), "wb") as fh:
        fh.write(b"hello over TLS")
    url = f"ftp://127.0.0.1:{tls_ftp.port}/hello.txt"
    done = curl(
        "--ssl-reqd", "--cacert", tls_cert.certfile, "-u", f"alice:{PASSWORD}", url
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello over TLS"
    # Without -k or the CA the self-signed certificate is rejected (60).
    done = curl("--ssl-reqd", "-u", f"alice:{PASSWORD}", url)
    assert done.returncode == 60, done.stderr


def test_curl_without_tls_is_refused(tls_ftp, make_account):
    account = make_account("alice")
    with open(os.path.join(account.home_path, "secret.txt"), "wb") as fh:
        fh.write(b"secret")
    done = curl("-u", f"alice:{PASSWORD}", f"ftp://127.0.0.1:{tls_ftp.port}/secret.txt")
    # 67: login denied, by the 550 answering USER.
    assert done.returncode == 67, done.stderr
    assert b"Access denied: 550" in done.stderr
    assert done.stdout == b""


# --- configuration errors


def test_garbage_certificate_file_is_reported(tls_cert):
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(certfile=tls_cert.garbage, keyfile=tls_cert.keyfile)
    assert info.value.name == "CERTFILE"
    assert repr(tls_cert.garbage) in str(info.value)
    assert "PEM certificate" in str(info.value)


def test_mismatched_key_is_reported(tls_cert):
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(
            certfile=tls_cert.certfile, keyfile=tls_cert.other_keyfile
        )
    assert info.value.name == "CERTFILE"
    assert repr(tls_cert.other_keyfile) in str(info.value)
    assert "does not match" in str(info.value)


def test_certificate_without_key_is_reported(tls_cert):
    # No KEYFILE: the key is looked for in the certificate file.
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(certfile=tls_cert.certfile)
    assert repr(tls_cert.certfile) in str(info.value)
    assert "Private key" in str(info.value)


def test_missing_certificate_file_is_reported(tmp_path, tls_cert):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(certfile=missing, keyfile=tls_cert.keyfile)
    assert info.value.name == "CERTFILE"
    assert str(info.value) == f"{missing!r} is not a readable file."
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(certfile=tls_cert.certfile, keyfile=missing)
    assert info.value.name == "KEYFILE"
    assert repr(missing) in str(info.value)


def test_key_without_certificate_is_reported(tls_cert):
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(keyfile=tls_cert.keyfile)
    assert info.value.name == "CERTFILE"
    assert "no certificate file" in str(info.value)


def test_unsupported_min_version_is_one_error(tls_cert):
    errors = ServerOptions.errors(
        certfile=tls_cert.certfile, keyfile=tls_cert.keyfile, tls_min_version="TLSv1.1"
    )
    assert [(e.name, e.message) for e in errors] == [
        (
            "TLS_MIN_VERSION",
            "'TLSv1.1' is not supported; expected one of TLSv1.2, TLSv1.3.",
        )
    ]
    with pytest.raises(OptionError) as info:
        ServerOptions.from_settings(
            certfile=tls_cert.certfile,
            keyfile=tls_cert.keyfile,
            tls_min_version="SSLv3",
        )
    assert info.value.name == "TLS_MIN_VERSION"


def test_require_tls_is_no_password_oracle_and_caches_nothing_sent_in_clear(
    ftp_server, tls_cert, make_account, recorder
):
    make_account("alice", require_tls=True)
    live = ftp_server(
        certfile=tls_cert.certfile, keyfile=tls_cert.keyfile, tls_required=False
    )
    credentials = live.server.handler.authorizer.credentials
    replies = []
    for password in (PASSWORD, "wrong-password"):
        ftp = live.client()
        with pytest.raises(ftplib.error_perm) as info:
            ftp.login("alice", password)
        replies.append(str(info.value))
        ftp.close()
    # The right password sent in clear gets the wrong one's reply...
    assert replies == ["530 Authentication failed."] * 2
    # ... and is not remembered: the next login hashes again.
    assert credentials._entries == {}
    reasons = [k["reason"] for k in recorder.wait_for("ftp_login_failed", 2)]
    assert reasons == ["tls_required", "bad_credentials"]
    # Over TLS the same account logs in (and is remembered).
    ftps = live.client("alice", tls=True)
    assert ftps.voidcmd("NOOP").startswith("200")
    ftps.quit()
    assert len(credentials._entries) == 1
