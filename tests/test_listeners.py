"""Several listeners in one server: implicit and explicit FTPS, the PROXY protocol."""

# ruff: noqa: F811  (pytest fixtures imported from test_commands)

import ftplib
import io
import re
import socket
import ssl
import struct
import subprocess

import pytest

from ftpserver_core.listeners import parse_listeners
from ftpserver_core.models import AuditEvent
from ftpserver_core.options import OptionError
from ftpserver_core.proxyprotocol import ProxyHeaderError, parse

from .conftest import PASSWORD
from .processes import command_env
from .test_commands import (  # noqa: F401  (fixtures)
    certificate,
    ftpserver_cmd,
    run_ftpserver,
    settings_module,
)
from .test_state import wait_for

# --- clients


class ImplicitFTP_TLS(ftplib.FTP_TLS):  # noqa: N801
    """ftplib for implicit FTPS: TLS from the first byte."""

    def connect(self, host, port, timeout=None, source_address=None):
        self.host, self.port = host, port
        if timeout is not None:
            self.timeout = timeout
        sock = socket.create_connection((host, port), self.timeout)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def v1_header(source, port=40000, destination="127.0.0.1", destination_port=21):
    family = "TCP6" if ":" in source else "TCP4"
    return (
        f"PROXY {family} {source} {destination} {port} {destination_port}\r\n"
    ).encode()


def v2_header(source, port=40000, destination="127.0.0.1", destination_port=21):
    if ":" in source:
        family = 0x21
        body = (
            socket.inet_pton(socket.AF_INET6, source)
            + socket.inet_pton(socket.AF_INET6, "::1")
            + struct.pack("!HH", port, destination_port)
        )
    else:
        family = 0x11
        body = (
            socket.inet_aton(source)
            + socket.inet_aton(destination)
            + struct.pack("!HH", port, destination_port)
        )
    body += b"\x04\x00\x03abc"  # a TLV (PP2_TYPE_NOOP): skipped
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + bytes([0x21, family])
        + struct.pack("!H", len(body))
        + body
    )


class ProxiedFTP(ftplib.FTP):
    """ftplib that sends a PROXY header first, on control and data connections."""

    def __init__(self, header, data_header=None, **kwargs):
        self.header = header
        self.data_header = data_header if data_header is not None else header
        super().__init__(**kwargs)

    def connect(self, host, port, timeout=None, source_address=None):
        self.host, self.port = host, port
        if timeout is not None:
            self.timeout = timeout
        self.source_address = source_address
        self.sock = socket.create_connection(
            (host, port), self.timeout, source_address=source_address
        )
        self.af = self.sock.family
        self.sock.sendall(self.header)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def ntransfercmd(self, cmd, rest=None):
        host, port = self.makepasv()
        conn = socket.create_connection(
            (host, port), self.timeout, source_address=self.source_address
        )
        conn.sendall(self.data_header)
        try:
            if rest is not None:
                self.sendcmd(f"REST {rest}")
            resp = self.sendcmd(cmd)
            if resp[0] == "2":
                resp = self.getresp()
            if resp[0] != "1":
                raise ftplib.error_reply(resp)
        except BaseException:
            conn.close()
            raise
        return conn, None


def proxied(server, header, data_header=None, source=None):
    ftp = ProxiedFTP(header, data_header, timeout=10)
    ftp.connect(server.host, server.port, source_address=source)
    return ftp


def port_of(server, scheme):
    """The port of the banner's first listener URL with ``scheme``."""
    match = re.search(
        rf"(?:at|Also listening at) {scheme}://127\.0\.0\.1:(\d+)/", server.stdout
    )
    return int(match[1])


# --- parsing


@pytest.mark.parametrize("make", [v1_header, v2_header])
@pytest.mark.parametrize("source", ["203.0.113.7", "2001:db8::7"])
def test_headers_parse_whole_and_in_pieces(make, source):
    header = make(source, port=51234)
    assert parse(header + b"USER x\r\n") == (len(header), (source, 51234))
    for cut in range(1, len(header)):
        assert parse(header[:cut]) == (0, None)


@pytest.mark.parametrize(
    "data",
    [
        b"USER alice\r\n",
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello: no header
        b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 21\r\n",
        b"PROXY TCP4 2001:db8::1 5.6.7.8 1 21\r\n",
        b"PROXY TCP4 nonsense\r\n",
        b"PROXY " + b"9" * 120,
        b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x12\x00\x0c" + b"\x00" * 12,  # UDP
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",  # 64 KiB of header
    ],
)
def test_bad_headers_are_refused(data):
    with pytest.raises(ProxyHeaderError):
        parse(data)


def test_local_and_unknown_keep_the_proxy_address():
    local = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
    assert parse(local) == (16, None)
    assert parse(b"PROXY UNKNOWN\r\n") == (15, None)


def test_listener_specs():
    listeners = parse_listeners(
        ["0.0.0.0:21", "[::]:990,tls=implicit,proxy=required,trusted=10.0.0.0/8;::1"],
        "127.0.0.1",
        2121,
        True,
        (),
    )
    assert [(lis.host, lis.port, lis.tls, lis.proxy) for lis in listeners] == [
        ("0.0.0.0", 21, "explicit", "off"),
        ("::", 990, "implicit", "required"),
    ]
    assert [str(n) for n in listeners[1].trusted] == ["10.0.0.0/8", "::1/128"]
    assert listeners[1].scheme == "ftps" and listeners[0].scheme == "ftp"


@pytest.mark.parametrize(
    "specs, certificate, message",
    [
        (["127.0.0.1:990,tls=implicit"], False, "needs a certificate"),
        (["127.0.0.1:21,tls=fancy"], True, "tls='fancy' is not a mode"),
        (["127.0.0.1:21,proxy=yes"], False, "proxy='yes' is not a mode"),
        (["127.0.0.1:21,proxy=required"], False, "no trusted networks"),
        (["127.0.0.1:21,trusted=10.0.0.0/33,proxy=optional"], False, "'10.0.0.0/33'"),
        (["127.0.0.1:21", "127.0.0.1:21"], False, "listed twice"),
        (["127.0.0.1:21,color=red"], False, "'color=red'"),
        ([{"address": "127.0.0.1:21", "colour": 1}], False, "unknown key(s) 'colour'"),
        (["localhost"], False, "'localhost' is not a valid address"),
        ([42], False, "is not a listener"),
    ],
)
def test_bad_listener_specs_say_what_is_wrong(specs, certificate, message):
    with pytest.raises(OptionError) as exc:
        parse_listeners(specs, "127.0.0.1", 2121, certificate, ())
    assert message in exc.value.message


def test_a_bad_listen_option_is_a_command_error(run_ftpserver):
    result = run_ftpserver("--listen", "127.0.0.1:0,tls=implicit")
    assert result.returncode == 1
    assert (
        "--listen '127.0.0.1:0,tls=implicit': tls='implicit' needs a certificate"
        in result.stderr
    )
    result = run_ftpserver("127.0.0.1:0", "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert "give every address with --listen" in result.stderr


# --- implicit and explicit FTPS on one server


@pytest.fixture
def two_listeners(ftpserver_cmd, certificate, make_account):
    certfile, keyfile = certificate
    make_account("alice")
    server = ftpserver_cmd(
        "--certfile",
        certfile,
        "--keyfile",
        keyfile,
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0,tls=implicit",
    )
    server.explicit_port = port_of(server, "ftp")
    server.implicit_port = port_of(server, "ftps")
    server.certfile = certfile
    return server


def test_banner_lists_every_listener_with_its_mode(two_listeners):
    server = two_listeners
    lines = server.stdout.splitlines()
    explicit = f"ftp://127.0.0.1:{server.explicit_port}/"
    implicit = f"ftps://127.0.0.1:{server.implicit_port}/"
    assert f"Starting FTP server at {explicit}" in lines
    assert f"Also listening at {implicit}" in lines
    assert (
        f"TLS: explicit FTPS (AUTH TLS) at {explicit}, implicit FTPS (TLS from the "
        f"first byte) at {implicit}, required on control and data channels, "
        "TLSv1.2 or newer"
    ) in lines
    # An explicit-TLS listener is never shown as ftps://.
    assert f"ftps://127.0.0.1:{server.explicit_port}/" not in server.stdout


def test_implicit_ftps_with_ftplib(two_listeners):
    server = two_listeners
    context = ssl.create_default_context(cafile=server.certfile)
    ftp = ImplicitFTP_TLS(context=context, timeout=10)
    assert ftp.connect("127.0.0.1", server.implicit_port).startswith("220")
    ftp.login("alice", PASSWORD)
    with pytest.raises(ftplib.error_perm, match="503 Already using TLS"):
        ftp.sendcmd("AUTH TLS")
    ftp.prot_p()
    ftp.storbinary("STOR hello.txt", io.BytesIO(b"hello implicit"))
    chunks = []
    ftp.retrbinary("RETR hello.txt", chunks.append)
    assert b"".join(chunks) == b"hello implicit"
    ftp.quit()
    login = wait_for(
        lambda: AuditEvent.objects.filter(event="login", username="alice").first()
    )
    assert login.tls is True


def test_plain_text_on_the_implicit_port_gets_nothing(two_listeners):
    server = two_listeners
    data = b""
    with socket.create_connection(("127.0.0.1", server.implicit_port), 10) as sock:
        sock.sendall(b"USER alice\r\n")
        sock.settimeout(10)
        # No plain-text banner, no command run: the handshake fails, it closes.
        try:
            while chunk := sock.recv(1024):
                data += chunk
        except ConnectionResetError:
            pass
    assert b"220" not in data and b"331" not in data


@pytest.mark.parametrize("mode", ["implicit", "explicit"])
def test_curl_uploads_and_lists_on_each_listener(two_listeners, tmp_path, mode):
    server = two_listeners
    upload = tmp_path / f"{mode}.bin"
    upload.write_bytes(b"x" * 100_000)
    if mode == "implicit":
        url = f"ftps://127.0.0.1:{server.implicit_port}/"
        extra = []
    else:
        url = f"ftp://127.0.0.1:{server.explicit_port}/"
        extra = ["--ssl-reqd"]
    common = ["curl", "-sS", "--cacert", server.certfile, "-u", f"alice:{PASSWORD}"]
    result = subprocess.run(
        [*common, *extra, "-T", str(upload), url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listing = subprocess.run(
        [*common, *extra, "--list-only", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert f"{mode}.bin" in listing.stdout.split()
    uploaded = wait_for(
        lambda: AuditEvent.objects.filter(
            event="upload", path__endswith=f"{mode}.bin"
        ).first()
    )
    assert uploaded.size == 100_000
    assert uploaded.tls is True


def implicit_server(ftpserver_cmd, certificate, tmp_path, **settings):
    """Start a server with one implicit FTPS listener and ``settings``."""
    certfile, keyfile = certificate
    directory = settings_module(tmp_path, **settings)
    env = command_env(extra_path=directory, DJANGO_SETTINGS_MODULE="cmd_settings")
    return ftpserver_cmd(
        "--certfile",
        certfile,
        "--keyfile",
        keyfile,
        "--listen",
        "127.0.0.1:0,tls=implicit",
        env=env,
    )


def test_a_stalled_implicit_handshake_is_closed_after_the_login_grace(
    ftpserver_cmd,
    certificate,
    tmp_path,
):
    server = implicit_server(
        ftpserver_cmd, certificate, tmp_path, FTPSERVER_LOGIN_GRACE=1.0
    )
    with socket.create_connection((server.host, server.port), 10) as sock:
        sock.settimeout(20)
        assert sock.recv(1024) == b""  # closed, without a word
    refused = wait_for(
        lambda: AuditEvent.objects.filter(
            event="refused", reason="login_timeout"
        ).first()
    )
    assert refused.remote_ip == "127.0.0.1"


# --- the PROXY protocol


def proxy_server(ftpserver_cmd, tmp_path, mode, trusted="127.0.0.0/8", **settings):
    directory = settings_module(tmp_path, **settings)
    env = command_env(extra_path=directory, DJANGO_SETTINGS_MODULE="cmd_settings")
    return ftpserver_cmd(
        "--listen", f"127.0.0.1:0,proxy={mode},trusted={trusted}", env=env
    )


@pytest.mark.parametrize("make", [v1_header, v2_header])
def test_the_client_address_from_the_header_reaches_the_audit(
    ftpserver_cmd,
    tmp_path,
    make_account,
    make,
):
    make_account("alice")
    server = proxy_server(ftpserver_cmd, tmp_path, "required")
    assert (
        f"PROXY protocol: required at ftp://127.0.0.1:{server.port}/ from 127.0.0.0/8"
        in server.stdout
    )
    header = make("203.0.113.7", port=51000)
    ftp = proxied(server, header)
    assert ftp.welcome.startswith("220")
    ftp.login("alice", PASSWORD)
    # The data connection comes through the proxy too, with its own header.
    ftp.storbinary("STOR a.txt", io.BytesIO(b"through the proxy"))
    assert ftp.nlst() == ["a.txt"]
    ftp.quit()
    login = wait_for(lambda: AuditEvent.objects.filter(event="login").first())
    assert (login.remote_ip, login.remote_port) == ("203.0.113.7", 51000)
    upload = wait_for(lambda: AuditEvent.objects.filter(event="upload").first())
    assert upload.remote_ip == "203.0.113.7"


def test_a_connection_without_a_header_is_refused_when_it_is_required(
    ftpserver_cmd,
    tmp_path,
):
    server = proxy_server(ftpserver_cmd, tmp_path, "required")
    ftp = ftplib.FTP(timeout=10)
    # A trusted peer that sends no header: bytes that are not one.
    with socket.create_connection((server.host, server.port), 10) as sock:
        sock.sendall(b"USER alice\r\n")
        sock.settimeout(10)
        assert sock.recv(1024).startswith(b"421 ")
    # An untrusted peer (another loopback address) is refused at once.
    with pytest.raises(ftplib.error_temp, match="421"):
        ftp.connect(server.host, server.port, source_address=("127.0.0.5", 0))
        ftp.getresp()
    refusals = AuditEvent.objects.filter(event="refused", reason="proxy_protocol")
    wait_for(lambda: refusals.count() == 2)
    assert sorted(refusals.values_list("remote_ip", flat=True)) == [
        "127.0.0.1",
        "127.0.0.5",
    ]


def test_a_silent_trusted_peer_is_refused_after_the_proxy_timeout(
    ftpserver_cmd,
    tmp_path,
):
    server = proxy_server(
        ftpserver_cmd, tmp_path, "required", FTPSERVER_PROXY_TIMEOUT=1
    )
    with socket.create_connection((server.host, server.port), 10) as sock:
        sock.settimeout(20)
        assert sock.recv(1024).startswith(b"421 ")
    wait_for(
        lambda: AuditEvent.objects.filter(
            event="refused", reason="proxy_protocol"
        ).exists()
    )


def test_optional_serves_untrusted_peers_as_clients(
    ftpserver_cmd,
    tmp_path,
    make_account,
):
    make_account("alice")
    server = proxy_server(ftpserver_cmd, tmp_path, "optional", trusted="127.0.0.2/32")
    direct = ftplib.FTP(timeout=10)
    direct.connect(server.host, server.port, source_address=("127.0.0.3", 0))
    direct.login("alice", PASSWORD)
    assert direct.nlst() == []
    direct.quit()
    behind = proxied(server, v2_header("198.51.100.9"), source=("127.0.0.2", 0))
    behind.login("alice", PASSWORD)
    behind.quit()
    logins = AuditEvent.objects.filter(event="login")
    wait_for(lambda: logins.count() == 2)
    assert sorted(logins.values_list("remote_ip", flat=True)) == [
        "127.0.0.3",
        "198.51.100.9",
    ]


def test_a_ban_and_the_per_address_limit_see_the_header_address(
    ftpserver_cmd,
    tmp_path,
):
    from ftpserver_core.models import Ban

    Ban.objects.create(network="203.0.113.66/32", reason="manual")
    server = proxy_server(
        ftpserver_cmd, tmp_path, "required", FTPSERVER_MAX_CONNECTIONS_PER_IP=2
    )

    def banned():
        # The ban list is read by the state thread: at once, or just after.
        try:
            proxied(server, v1_header("203.0.113.66")).close()
        except ftplib.error_temp as exc:
            return "421 Your address is banned" in str(exc)
        return False

    wait_for(banned)
    # Two from one client behind the proxy, a third is over its limit; another
    # client behind the same proxy is not.
    first = proxied(server, v1_header("198.51.100.1", port=1))
    second = proxied(server, v1_header("198.51.100.1", port=2))
    with pytest.raises(ftplib.error_temp, match="421"):
        proxied(server, v1_header("198.51.100.1", port=3))
    other = proxied(server, v1_header("198.51.100.2"))
    assert other.welcome.startswith("220")
    for ftp in (first, second, other):
        ftp.close()


def test_a_data_connection_must_carry_the_sessions_address(
    ftpserver_cmd,
    tmp_path,
    make_account,
):
    """Another client behind the proxy cannot take a session's passive port."""
    make_account("alice")
    server = proxy_server(ftpserver_cmd, tmp_path, "required")
    ftp = proxied(
        server, v1_header("203.0.113.7"), data_header=v1_header("203.0.113.8")
    )
    ftp.login("alice", PASSWORD)
    with pytest.raises((TimeoutError, ftplib.Error, OSError)):
        ftp.sock.settimeout(3)
        ftp.nlst()
    assert "Refused data connection" in server.stderr or "foreign address" in (
        server.stderr
    )
    ftp.close()


# --- system checks


@pytest.mark.parametrize(
    "setting, value, check_id, message",
    [
        (
            "FTPSERVER_LISTENERS",
            ["127.0.0.1:2121", "127.0.0.1:2122,proxy=yes"],
            "ftpserver_core.E065",
            "FTPSERVER_LISTENERS[1]: proxy='yes' is not a mode",
        ),
        (
            "FTPSERVER_PROXY_TRUSTED",
            ["10.0.0.0/8", "proxy.example"],
            "ftpserver_core.E066",
            "FTPSERVER_PROXY_TRUSTED: 'proxy.example' is not a network",
        ),
        (
            "FTPSERVER_PROXY_TIMEOUT",
            0,
            "ftpserver_core.E067",
            "FTPSERVER_PROXY_TIMEOUT: ",
        ),
    ],
)
def test_bad_listener_settings_are_system_check_errors(
    settings, setting, value, check_id, message
):
    from django.core import checks

    setattr(settings, setting, value)
    issues = [
        issue for issue in checks.run_checks(tags=["ftpserver"]) if issue.id == check_id
    ]
    assert len(issues) == 1, issues
    assert issues[0].msg.startswith(message)


def test_every_listener_works_with_two_workers(
    ftpserver_cmd, certificate, make_account, tmp_path
):
    certfile, keyfile = certificate
    make_account("alice")
    server = ftpserver_cmd(
        "--workers",
        "2",
        "--certfile",
        certfile,
        "--keyfile",
        keyfile,
        "--listen",
        "127.0.0.1:0,proxy=required,trusted=127.0.0.0/8",
        "--listen",
        "127.0.0.1:0,tls=implicit",
    )
    implicit_port = port_of(server, "ftps")
    context = ssl.create_default_context(cafile=certfile)
    for n in range(4):
        ftp = ImplicitFTP_TLS(context=context, timeout=10)
        ftp.connect("127.0.0.1", implicit_port)
        ftp.login("alice", PASSWORD)
        ftp.quit()
        behind = proxied(server, v2_header(f"198.51.100.{n + 1}"))
        assert behind.welcome.startswith("220")
        behind.quit()
    logins = AuditEvent.objects.filter(event="login")
    connects = AuditEvent.objects.filter(event="connect", remote_ip__startswith="198.")
    try:
        wait_for(lambda: logins.count() >= 4 and connects.count() >= 4, timeout=60)
    except AssertionError:
        recorded = list(AuditEvent.objects.values_list("event", "remote_ip", "node"))
        raise AssertionError(f"{recorded}\n{server.stderr[-3000:]}") from None
    assert list(logins.values_list("remote_ip", flat=True)) == ["127.0.0.1"] * 4
    assert sorted(connects.values_list("remote_ip", flat=True)) == [
        f"198.51.100.{n + 1}" for n in range(4)
    ]


def test_listeners_from_one_string_as_the_environment_gives_them():
    listeners = parse_listeners(
        "0.0.0.0:21  0.0.0.0:990,tls=implicit", "127.0.0.1", 2121, True, ()
    )
    assert [(lis.port, lis.tls) for lis in listeners] == [
        (21, "explicit"),
        (990, "implicit"),
    ]


def test_the_proxys_own_health_checks_are_greeted_and_not_recorded(
    ftpserver_cmd, tmp_path
):
    """v2 LOCAL and v1 UNKNOWN: a 220 and a close; no audit, no score, no ban."""
    server = proxy_server(
        ftpserver_cmd,
        tmp_path,
        "required",
        FTPSERVER_DEFENDER_SCORES={"no_login": 5},
        FTPSERVER_DEFENDER_THRESHOLD=10,
    )
    local = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
    for header in [local, b"PROXY UNKNOWN\r\n"] * 10:
        with socket.create_connection((server.host, server.port), 10) as sock:
            sock.sendall(header)
            sock.settimeout(10)
            assert sock.recv(1024) == b"220 FTP server ready.\r\n"
    # A real session after them: the proxy is not banned, and is recorded.
    ftp = proxied(server, v1_header("203.0.113.9"))
    ftp.quit()
    connects = AuditEvent.objects.filter(event="connect")
    wait_for(lambda: connects.count() == 1)
    assert connects.get().remote_ip == "203.0.113.9"
    from ftpserver_core.models import Ban

    assert not Ban.objects.exists()
