"""The ``ftpserver`` command, run as a real process on real sockets."""

import datetime
import ftplib
import io
import ipaddress
import logging
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import django
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from ftpserver_core import privileges, signals

from .conftest import PASSWORD
from .processes import (
    REPO_ROOT,
    STARTUP_TIMEOUT,
    ServerProcess,
    command_env,
    has_ipv6_loopback,
)


@pytest.fixture
def ftpserver_cmd(transactional_db, tmp_path):
    """Start ``ftpserver`` processes: ``ftpserver_cmd(*args, env=None)``; waits
    for the banner unless ``wait=False``. Killed at teardown."""
    started = []

    def start(*args, env=None, wait=True):
        server = ServerProcess(
            args, tmp_path / f"server{len(started)}", env or command_env()
        )
        started.append(server)
        return server.wait_started() if wait else server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def run_ftpserver(transactional_db):
    """Run ``ftpserver ARGS`` expected to exit on its own; return the result."""

    def run(*args, env=None, timeout=STARTUP_TIMEOUT):
        return subprocess.run(
            [sys.executable, "-m", "django", "ftpserver", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env or command_env(),
            cwd=REPO_ROOT,
            timeout=timeout,
        )

    return run


def settings_module(tmp_path, **values):
    """Write a settings module extending tests.settings; return its directory."""
    directory = tmp_path / "extra_settings"
    directory.mkdir(exist_ok=True)
    lines = ["from tests.settings import *  # noqa: F403"]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    (directory / "cmd_settings.py").write_text("\n".join(lines) + "\n")
    return directory


def free_port(host="127.0.0.1"):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def passive_range(size=20):
    """A random range below the kernel's ephemeral ports (Linux: 32768+)."""
    start = random.randrange(20000, 32000 - size)
    return start, start + size - 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (cert path, key path)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def banner_lines(server):
    lines = server.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Django version"))
    end = next(i for i, line in enumerate(lines) if line.startswith("Quit the server"))
    return lines[start : end + 1]


# --- the banner


def test_banner_plain_ftp(ftpserver_cmd):
    server = ftpserver_cmd("127.0.0.1:0")
    assert server.port != 0
    assert server.stdout.startswith("Performing system checks...")
    assert "System check identified no issues (0 silenced)." in server.stdout
    assert banner_lines(server) == [
        f"Django version {django.get_version()}, using settings 'tests.settings'",
        f"Starting FTP server at ftp://127.0.0.1:{server.port}/",
        "TLS: off (plain FTP: passwords travel in clear text)",
        "Passive ports: any free port",
        "Masquerade address: none",
        "Worker processes: 1",
        f"Running as: {privileges.current()}",
        "Quit the server with CONTROL-C.",
    ]
    # The announced port is the real one.
    ftp = server.client()
    assert ftp.getwelcome() == "220 FTP server ready."
    ftp.quit()


def test_banner_passive_ports_and_masquerade(ftpserver_cmd):
    server = ftpserver_cmd(
        "127.0.0.1:0",
        "--passive-ports",
        "30000-30010",
        "--masquerade-address",
        "203.0.113.10",
    )
    lines = banner_lines(server)
    assert "Passive ports: 30000-30010 (11 ports)" in lines
    assert "Masquerade address: 203.0.113.10" in lines


def test_banner_shows_non_contiguous_passive_ports(ftpserver_cmd):
    server = ftpserver_cmd("127.0.0.1:0", "--passive-ports", "12345,30000-30002")
    assert "Passive ports: 12345,30000-30002 (4 ports)" in banner_lines(server)


def test_banner_tls_and_ftps_login(ftpserver_cmd, make_account, certificate):
    certfile, keyfile = certificate
    account = make_account("alice")
    server = ftpserver_cmd("127.0.0.1:0", "--certfile", certfile, "--keyfile", keyfile)
    assert server.scheme == "ftp"
    lines = banner_lines(server)
    # Explicit FTPS starts as plain FTP: its URL is ftp://.
    assert f"Starting FTP server at ftp://127.0.0.1:{server.port}/" in lines
    assert (
        "TLS: explicit FTPS (AUTH TLS), required on control and data channels, "
        "TLSv1.2 or newer"
    ) in lines

    context = ssl.create_default_context(cafile=certfile)
    ftp = ftplib.FTP_TLS(context=context, timeout=10)
    ftp.connect(server.host, server.port)
    ftp.auth()
    ftp.login("alice", PASSWORD)
    ftp.prot_p()
    ftp.storbinary("STOR secret.txt", io.BytesIO(b"over TLS"))
    ftp.quit()
    assert Path(account.home_path, "secret.txt").read_bytes() == b"over TLS"

    # TLS is required: a plain login is refused before the password.
    plain = server.client()
    with pytest.raises(ftplib.error_perm, match="^550"):
        plain.login("alice", PASSWORD)
    plain.close()


def test_certfile_that_is_not_a_certificate(run_ftpserver, tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    result = run_ftpserver("127.0.0.1:0", "--certfile", str(bogus))
    assert result.returncode == 1
    assert f"CommandError: --certfile: Certificate file {str(bogus)!r} could not" in (
        result.stderr
    )


def test_missing_certfile(run_ftpserver, tmp_path):
    missing = str(tmp_path / "missing.pem")
    result = run_ftpserver("127.0.0.1:0", "--certfile", missing)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        f"CommandError: --certfile: {missing!r} is not a readable file."
    )
    assert "Starting FTP server" not in result.stdout


# --- serving


def test_login_and_transfer(ftpserver_cmd, make_account):
    account = make_account("alice")
    server = ftpserver_cmd("127.0.0.1:0")
    ftp = server.client("alice")
    ftp.storbinary("STOR up.bin", io.BytesIO(b"\x00\x01payload" * 1000))
    data = io.BytesIO()
    ftp.retrbinary("RETR up.bin", data.write)
    assert ftp.nlst() == ["up.bin"]
    ftp.quit()
    assert data.getvalue() == b"\x00\x01payload" * 1000
    assert Path(account.home_path, "up.bin").read_bytes() == data.getvalue()

    with pytest.raises(ftplib.error_perm, match="^530"):
        server.client("alice", password="wrong")


def test_manage_py_runs_the_server(transactional_db, tmp_path):
    # The same command through the suite's manage.py.
    server = ServerProcess(
        ["127.0.0.1:0"], tmp_path / "manage", command_env(), program=["manage.py"]
    )
    try:
        server.wait_started()
        assert server.client().getwelcome() == "220 FTP server ready."
        assert server.stop() == 0
        assert "FTP server stopped." in server.stdout
    finally:
        server.kill()


# --- stopping


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(ftpserver_cmd, make_account, tmp_path, signum):
    make_account("alice")
    pidfile = tmp_path / "ftpserver.pid"
    server = ftpserver_cmd("127.0.0.1:0", "--pidfile", str(pidfile))
    assert pidfile.read_text() == f"{server.pid}\n"
    ftp = server.client("alice")
    assert ftp.pwd() == "/"

    assert server.stop(signum) == 0
    assert server.stdout.rstrip().endswith("FTP server stopped.")
    assert "Traceback" not in server.stderr
    assert "KeyboardInterrupt" not in server.stderr
    assert not pidfile.exists()
    # The logged-in client was disconnected, and nobody listens any more.
    with pytest.raises((EOFError, OSError)):
        ftp.sendcmd("NOOP")
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=2).close()


def test_idle_server_stops_on_sigterm_quickly(ftpserver_cmd):
    server = ftpserver_cmd("127.0.0.1:0")
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    assert "FTP server stopped." in server.stdout


def test_pidfile_that_cannot_be_written(run_ftpserver, tmp_path):
    pidfile = str(tmp_path / "no-such-dir" / "ftp.pid")
    result = run_ftpserver("127.0.0.1:0", "--pidfile", pidfile)
    assert result.returncode == 1
    assert f"CommandError: Cannot write the PID file {pidfile!r}: " in result.stderr


# --- the address


def test_port_already_in_use(run_ftpserver, tmp_path):
    pidfile = tmp_path / "ftp.pid"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_ftpserver(f"127.0.0.1:{port}", "--pidfile", str(pidfile))
    assert result.returncode == 1
    assert result.stderr.strip().endswith("CommandError: That port is already in use.")
    assert "That port is already in use." not in result.stdout
    assert "Starting FTP server" not in result.stdout
    assert not pidfile.exists()


def test_address_not_on_this_machine(run_ftpserver):
    result = run_ftpserver("192.0.2.1:0")  # TEST-NET-1: never a local address
    assert result.returncode == 1
    assert (
        result.stderr.strip() == "CommandError: That IP address can't be assigned to."
    )


def test_host_that_does_not_resolve(run_ftpserver):
    result = run_ftpserver("no-such-host.invalid:0")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "CommandError: Cannot resolve 'no-such-host.invalid': "
    )


@pytest.mark.parametrize(
    ("addrport", "message"),
    [
        (
            "nonsense:xx",
            "'nonsense:xx' is not a valid address; expected HOST:PORT, PORT or "
            "[IPv6]:PORT.",
        ),
        (
            "[::1",
            "'[::1' is not a valid address; expected HOST:PORT, PORT or [IPv6]:PORT.",
        ),
        ("70000", "'70000' is not a valid port; expected 0 to 65535."),
        ("127.0.0.1:65536", "'65536' is not a valid port; expected 0 to 65535."),
        ("[nonsense]:21", "'nonsense' is not a valid IPv6 address."),
    ],
)
def test_bad_addrport(run_ftpserver, addrport, message):
    result = run_ftpserver(addrport)
    assert result.returncode == 1
    assert result.stderr.strip() == f"CommandError: {message}"
    assert "Starting FTP server" not in result.stdout


@pytest.mark.skipif(not has_ipv6_loopback(), reason="the kernel has no ::1")
def test_ipv6_address(ftpserver_cmd):
    server = ftpserver_cmd("[::1]:0")
    assert server.host == "::1"
    assert f"Starting FTP server at ftp://[::1]:{server.port}/" in server.stdout
    ftp = ftplib.FTP(timeout=10)
    ftp.connect("::1", server.port)
    assert ftp.getwelcome() == "220 FTP server ready."
    ftp.quit()
    assert server.stop() == 0


def test_bare_port_zero_uses_default_host(ftpserver_cmd):
    server = ftpserver_cmd("0")
    assert server.host == "127.0.0.1"  # FTPSERVER_HOST's default
    assert server.client().getwelcome() == "220 FTP server ready."


def test_bare_port(ftpserver_cmd):
    port = free_port()
    server = ftpserver_cmd(str(port))
    assert (server.host, server.port) == ("127.0.0.1", port)
    assert f"Starting FTP server at ftp://127.0.0.1:{port}/" in server.stdout
    assert server.client().getwelcome() == "220 FTP server ready."


def test_no_addrport_uses_settings(ftpserver_cmd, tmp_path):
    port = free_port()
    env = command_env(settings_module(tmp_path, FTPSERVER_PORT=port))
    env["DJANGO_SETTINGS_MODULE"] = "cmd_settings"
    server = ftpserver_cmd(env=env)
    assert (server.host, server.port) == ("127.0.0.1", port)


# --- passive mode


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("30100-30000", "'30100-30000' in '30100-30000' is an empty range"),
        ("abc", "'abc' is not valid; expected ports or ranges"),
        ("0-5", "'0-5' is not valid: ports must be between 1 and 65535."),
    ],
)
def test_bad_passive_ports(run_ftpserver, value, message):
    result = run_ftpserver("127.0.0.1:0", f"--passive-ports={value}")
    assert result.returncode == 1
    assert f"CommandError: --passive-ports: {message}" in result.stderr
    assert "Starting FTP server" not in result.stdout


def test_passive_ports_are_used(ftpserver_cmd, make_account):
    make_account("alice")
    lo, hi = passive_range()
    server = ftpserver_cmd("127.0.0.1:0", "--passive-ports", f"{lo}-{hi}")
    assert f"Passive ports: {lo}-{hi} (20 ports)" in server.stdout
    ftp = server.client("alice")
    for _ in range(5):
        host, port = ftplib.parse227(ftp.sendcmd("PASV"))
        assert host == "127.0.0.1"
        assert lo <= port <= hi
    # A real transfer's data connection comes from the range too.
    ftp.storbinary("STOR a.txt", io.BytesIO(b"abc"))
    conn = ftp.transfercmd("RETR a.txt")
    assert lo <= conn.getpeername()[1] <= hi
    assert conn.makefile("rb").read() == b"abc"
    conn.close()
    assert ftp.voidresp().startswith("226")
    ftp.quit()


def test_masquerade_address_in_pasv_reply(ftpserver_cmd, make_account):
    make_account("alice")
    server = ftpserver_cmd("127.0.0.1:0", "--masquerade-address", "203.0.113.10")
    ftp = server.client("alice")
    host, port = ftplib.parse227(ftp.sendcmd("PASV"))
    assert host == "203.0.113.10"
    assert port > 0
    # ftplib connects to the control address, so transfers still work.
    ftp.storbinary("STOR m.txt", io.BytesIO(b"masq"))
    assert ftp.nlst() == ["m.txt"]
    ftp.quit()


def test_bad_masquerade_address(run_ftpserver):
    result = run_ftpserver("127.0.0.1:0", "--masquerade-address", "ftp.example.com")
    assert result.returncode == 1
    assert (
        "CommandError: --masquerade-address: 'ftp.example.com' is not an IPv4 address"
        in result.stderr
    )


# --- limits


def test_timeout_disconnects_idle_client(ftpserver_cmd):
    server = ftpserver_cmd("127.0.0.1:0", "--timeout", "1")
    ftp = server.client()
    started = time.monotonic()
    assert ftp.getline() == "421 Control connection timed out."
    assert 0.5 < time.monotonic() - started < 8
    assert ftp.file.readline() == ""  # then the server hangs up
    ftp.close()


def test_busy_client_is_not_timed_out(ftpserver_cmd):
    server = ftpserver_cmd("127.0.0.1:0", "--timeout", "1")
    ftp = server.client()
    for _ in range(5):
        time.sleep(0.4)
        assert ftp.sendcmd("NOOP").startswith("200")
    ftp.quit()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--timeout",
            "abc",
            "--timeout: 'abc' is not valid; expected a positive whole number.",
        ),
        ("--timeout", "0", "--timeout: '0' is not valid"),
        ("--max-connections", "0", "--max-connections: '0' is not valid"),
        (
            "--max-connections-per-ip",
            "-1",
            "--max-connections-per-ip: '-1' is not valid",
        ),
    ],
)
def test_bad_limit_option(run_ftpserver, option, value, message):
    result = run_ftpserver("127.0.0.1:0", f"{option}={value}")
    assert result.returncode == 1
    assert f"CommandError: {message}" in result.stderr


def connect_until_welcome(server, **kwargs):
    """Connect, retrying while the server still counts a closing session."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return server.client(**kwargs)
        except ftplib.error_temp:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_max_connections(ftpserver_cmd):
    server = ftpserver_cmd("127.0.0.1:0", "--max-connections", "1")
    first = server.client()
    assert first.getwelcome() == "220 FTP server ready."
    with pytest.raises(
        ftplib.error_temp,
        match=r"^421 Too many connections\. Service temporarily unavailable\.",
    ):
        server.client()
    # The first client is still served.
    assert first.sendcmd("NOOP").startswith("200")
    first.quit()
    # Its place is free again.
    again = connect_until_welcome(server)
    assert again.getwelcome() == "220 FTP server ready."
    again.quit()


def test_max_connections_counts_clients_not_server_sockets(ftpserver_cmd, make_account):
    make_account("alice")
    server = ftpserver_cmd("127.0.0.1:0", "--max-connections", "2")
    first = server.client("alice")
    second = server.client("alice")
    first.storbinary("STOR x.txt", io.BytesIO(b"x"))
    assert second.nlst() == ["x.txt"]
    with pytest.raises(ftplib.error_temp, match="^421"):
        server.client()
    first.quit()
    second.quit()


def test_max_connections_per_ip(ftpserver_cmd):
    server = ftpserver_cmd("127.0.0.1:0", "--max-connections-per-ip", "1")
    first = server.client()
    with pytest.raises(
        ftplib.error_temp, match=r"^421 Too many connections from the same IP address\."
    ):
        server.client()
    assert first.sendcmd("NOOP").startswith("200")
    # Another client address is not affected (all of 127/8 is loopback on Linux).
    try:
        other = server.client(source=("127.0.0.2", 0))
    except OSError as exc:
        if "Too many" in str(exc):
            raise
        pytest.skip(f"cannot use 127.0.0.2 as a source address: {exc}")
    assert other.getwelcome() == "220 FTP server ready."
    other.quit()
    first.quit()
    connect_until_welcome(server).quit()


def test_banner_option(ftpserver_cmd):
    server = ftpserver_cmd("127.0.0.1:0", "--banner", "Hello there")
    ftp = server.client()
    assert ftp.getwelcome() == "220 Hello there"
    ftp.quit()


def test_banner_setting_and_option_in_a_process(ftpserver_cmd, tmp_path):
    env = command_env(settings_module(tmp_path, FTPSERVER_BANNER="From settings"))
    env["DJANGO_SETTINGS_MODULE"] = "cmd_settings"
    from_setting = ftpserver_cmd("127.0.0.1:0", env=env)
    assert from_setting.client().getwelcome() == "220 From settings"
    from_option = ftpserver_cmd("127.0.0.1:0", "--banner", "From option", env=env)
    assert from_option.client().getwelcome() == "220 From option"


# --- in-process: options against settings, system checks


class InProcessServer:
    """``call_command('ftpserver', ...)`` in a thread of the test process."""

    def __init__(self, *args, **options):
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        self.started = threading.Event()
        self.server = None
        self.error = None
        signals.ftp_server_started.connect(self._on_started, weak=False)
        self.thread = threading.Thread(
            target=self._run, args=args, kwargs=options, daemon=True
        )
        self.thread.start()
        if not self.started.wait(20):
            self.thread.join(1)
            raise AssertionError(
                f"not started: {self.error!r} {self.stderr.getvalue()}"
            )

    def _on_started(self, sender, server, host, port, **kwargs):
        self.server, self.host, self.port = server, host, port
        self.started.set()

    def _run(self, *args, **options):
        try:
            call_command(
                "ftpserver", *args, stdout=self.stdout, stderr=self.stderr, **options
            )
        except BaseException as exc:
            self.error = exc
        finally:
            signals.ftp_server_started.disconnect(self._on_started)
            self.started.set()

    def stop(self):
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


def welcome(host, port):
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(host, port)
    text = ftp.getwelcome()
    ftp.quit()
    return text


def test_option_beats_setting():
    with override_settings(FTPSERVER_BANNER="from settings"):
        running = InProcessServer("127.0.0.1:0", banner="Hello there")
        try:
            assert running.error is None
            assert welcome(running.host, running.port) == "220 Hello there"
        finally:
            running.stop()
        assert running.stdout.getvalue().rstrip().endswith("FTP server stopped.")

        running = InProcessServer("127.0.0.1:0")
        try:
            assert welcome(running.host, running.port) == "220 from settings"
        finally:
            running.stop()


def test_stop_from_the_started_signal():
    # A receiver of ftp_server_started may stop the server straight away.
    def stop_now(sender, server, **kwargs):
        server.stop()

    signals.ftp_server_started.connect(stop_now, weak=False)
    stdout = io.StringIO()
    try:
        thread = threading.Thread(
            target=call_command,
            args=("ftpserver", "127.0.0.1:0"),
            kwargs={"stdout": stdout, "stderr": io.StringIO()},
            daemon=True,
        )
        thread.start()
        thread.join(20)
    finally:
        signals.ftp_server_started.disconnect(stop_now)
    assert not thread.is_alive()
    assert "Starting FTP server at ftp://127.0.0.1:" in stdout.getvalue()
    assert stdout.getvalue().rstrip().endswith("FTP server stopped.")


def test_system_checks_run_before_serving(recorder):
    stdout = io.StringIO()
    with (
        override_settings(FTPSERVER_PASSIVE_PORTS="bad"),
        pytest.raises(SystemCheckError) as info,
    ):
        call_command("ftpserver", "127.0.0.1:0", stdout=stdout, stderr=io.StringIO())
    assert "ftpserver_core.E002" in str(info.value)
    assert "FTPSERVER_PASSIVE_PORTS: 'bad' is not valid" in str(info.value)
    assert "Starting FTP server" not in stdout.getvalue()
    assert "ftp_server_started" not in recorder.names()


def test_system_check_error_in_a_process(run_ftpserver, tmp_path):
    env = command_env(
        settings_module(tmp_path, FTPSERVER_MASQUERADE_ADDRESS="nat.example")
    )
    env["DJANGO_SETTINGS_MODULE"] = "cmd_settings"
    result = run_ftpserver("127.0.0.1:0", env=env)
    assert result.returncode == 1
    assert "SystemCheckError: System check identified some issues:" in result.stderr
    assert (
        "(ftpserver_core.E003) FTPSERVER_MASQUERADE_ADDRESS: 'nat.example' is not an "
        "IPv4 address"
    ) in result.stderr
    assert "Starting FTP server" not in result.stdout


def test_debug_warns_but_serves(ftpserver_cmd, tmp_path):
    env = command_env(settings_module(tmp_path, DEBUG=True))
    env["DJANGO_SETTINGS_MODULE"] = "cmd_settings"
    server = ftpserver_cmd("127.0.0.1:0", env=env)
    assert "(ftpserver_core.W001) DEBUG is on" in server.stderr
    # A deployment check: reported by the server's second round of checks.
    assert "System check identified some issues:" in server.stderr
    assert server.client().getwelcome() == "220 FTP server ready."
    assert server.stop() == 0


def test_a_receiver_that_raises_at_start_and_stop_is_logged_and_the_server_runs(
    make_account, caplog
):
    # Under Restart=always a raising receiver used to make a crash loop.
    def broken(sender, **kwargs):
        raise RuntimeError("receiver broken on purpose")

    signals.ftp_server_started.connect(broken, weak=False)
    signals.ftp_server_stopped.connect(broken, weak=False)
    make_account("alice")
    try:
        with caplog.at_level(logging.DEBUG, logger="ftpserver_core.handlers"):
            running = InProcessServer("127.0.0.1:0")
            try:
                assert running.error is None
                ftp = ftplib.FTP(timeout=10)
                ftp.connect(running.host, running.port)
                ftp.login("alice", PASSWORD)
                assert ftp.voidcmd("NOOP").startswith("200")
                ftp.quit()
            finally:
                running.stop()
    finally:
        signals.ftp_server_started.disconnect(broken)
        signals.ftp_server_stopped.disconnect(broken)
    assert running.stdout.getvalue().rstrip().endswith("FTP server stopped.")
    failures = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and "failed" in r.getMessage()
    ]
    assert [r.getMessage().split(" of ")[-1] for r in failures] == [
        "ftp_server_started failed.",
        "ftp_server_stopped failed.",
    ]
    assert all(isinstance(r.exc_info[1], RuntimeError) for r in failures)
    # Both are in the DEBUG log, like every other event.
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(m.startswith("ftp_server_started ") for m in debug)
    assert any(m.startswith("ftp_server_stopped ") for m in debug)
