"""Review of issue 12 as a hostile client: listeners, PROXY protocol, implicit FTPS, /health."""

# ruff: noqa: F811  (pytest fixtures imported from test_commands)

import json
import socket
import ssl
import threading
import time
import urllib.request

import pytest

from ftpserver_core.proxyprotocol import ProxyHeaderError, parse

from .test_commands import (  # noqa: F401  (fixtures)
    certificate,
    ftpserver_cmd,
    settings_module,
)
from .test_listeners import implicit_server, v1_header, v2_header
from .test_state import wait_for

# --- PROXY v1: one address form for one client


@pytest.mark.parametrize(
    "line, source",
    [
        # A dual-stack proxy writes an IPv4 client as IPv4-mapped IPv6: v2
        # gave "203.0.113.7", v1 gave "::ffff:cb00:7107" (audit, data check).
        (b"PROXY TCP6 ::ffff:203.0.113.7 ::1 4000 21\r\n", ("203.0.113.7", 4000)),
        (b"PROXY TCP4 203.0.113.7 127.0.0.1 4000 21\r\n", ("203.0.113.7", 4000)),
    ],
)
def test_v1_mapped_address_is_the_ipv4_address_as_in_v2(line, source):
    assert parse(line) == (len(line), source)
    assert parse(v2_header("::ffff:203.0.113.7", port=4000))[1] == source


@pytest.mark.parametrize(
    "line",
    [
        # A scope id is no client address (it named an interface of the proxy).
        b"PROXY TCP6 fe80::1%eth0 ::1 4000 21\r\n",
        # Ports are decimal, 0-65535, without sign, underscore or leading zero.
        b"PROXY TCP4 203.0.113.7 127.0.0.1 +4000 21\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 4_000 21\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 04000 21\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 4000 -1\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 4000 70000\r\n",
        # The destination must be an address too.
        b"PROXY TCP4 203.0.113.7  4000 21\r\n",
    ],
)
def test_malformed_v1_lines_are_refused(line):
    with pytest.raises(ProxyHeaderError, match="malformed PROXY v1 line"):
        parse(line)


# --- implicit FTPS: admission before the handshake


def closed_within(sock, seconds):
    """True when the server closes ``sock`` within ``seconds`` (no bytes read)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_stalled_implicit_handshakes_obey_the_per_address_limit(
    ftpserver_cmd, certificate, tmp_path
):
    """One address holding handshakes open must not take every connection slot."""
    server = implicit_server(
        ftpserver_cmd,
        certificate,
        tmp_path,
        FTPSERVER_MAX_CONNECTIONS_PER_IP=2,
        FTPSERVER_MAX_CONNECTIONS=4,
    )
    socks = [socket.create_connection((server.host, server.port), 10) for _ in range(4)]
    try:
        # Never a ClientHello. Over the limit of 2 from one address: the
        # third and fourth are closed at once, as on a plain listener.
        assert [closed_within(s, 5) for s in socks[2:]] == [True, True]
        # And another client still gets in (the global limit is 4).
        context = ssl.create_default_context(cafile=certificate[0])
        with (
            socket.create_connection(
                (server.host, server.port), 10, source_address=("127.0.0.2", 0)
            ) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.settimeout(10)
            assert tls.recv(1024).startswith(b"220")
    finally:
        for sock in socks:
            sock.close()


def test_a_banned_address_gets_no_implicit_tls_handshake(
    ftpserver_cmd, certificate, tmp_path
):
    from ftpserver_core.models import Ban

    Ban.objects.create(network="127.0.0.9/32", reason="manual")
    server = implicit_server(ftpserver_cmd, certificate, tmp_path)
    context = ssl.create_default_context(cafile=certificate[0])

    def outcome():
        with socket.create_connection(
            (server.host, server.port), 10, source_address=("127.0.0.9", 0)
        ) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.settimeout(10)
                    reply = tls.recv(1024)
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                return "no handshake"
            # The ban list is read by the state thread: a session admitted
            # before it is gets its 220, or (the ban reaching it meanwhile)
            # the ban's 421 or a close, inside TLS. Only what is admitted
            # after counts.
            if not reply or reply.startswith((b"220", b"421")):
                return None
            return "handshake"

    assert wait_for(outcome) == "no handshake"


# --- PROXY header and TLS in one packet, pipelined commands


def test_a_proxy_header_and_a_client_hello_in_one_packet(
    ftpserver_cmd, certificate, tmp_path, make_account
):
    """What follows the header (a ClientHello) stays for the TLS handshake."""
    certfile, keyfile = certificate
    server = ftpserver_cmd(
        "--certfile",
        certfile,
        "--keyfile",
        keyfile,
        "--listen",
        "127.0.0.1:0,tls=implicit,proxy=required,trusted=127.0.0.0/8",
    )
    context = ssl.create_default_context(cafile=certfile)
    for make in (v1_header, v2_header):
        raw = socket.create_connection((server.host, server.port), 10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        # Header and ClientHello in one send().
        raw.sendall(make("203.0.113.7") + outgoing.read())
        raw.settimeout(10)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out := outgoing.read():
                    raw.sendall(out)
                chunk = raw.recv(65536)
                assert chunk, "closed during the handshake"
                incoming.write(chunk)
        if out := outgoing.read():
            raw.sendall(out)
        reply = b""
        while b"\r\n" not in reply:
            try:
                reply += tls.read(1024)
            except ssl.SSLWantReadError:
                incoming.write(raw.recv(65536))
        assert reply.startswith(b"220"), reply
        raw.close()


def test_pipelined_commands_after_a_header_split_in_pieces(ftpserver_cmd, tmp_path):
    server = ftpserver_cmd("--listen", "127.0.0.1:0,proxy=required,trusted=127.0.0.0/8")
    header = v2_header("203.0.113.7")
    with socket.create_connection((server.host, server.port), 10) as sock:
        sock.settimeout(10)
        cut = len(header) - 3
        for index in range(0, cut, 7):
            sock.sendall(header[index : min(index + 7, cut)])
            time.sleep(0.03)
        # The header's last bytes and two commands in one packet.
        sock.sendall(header[cut:] + b"NOOP\r\nSYST\r\n")
        data = b""
        while data.count(b"\r\n") < 3:
            chunk = sock.recv(1024)
            assert chunk, data
            data += chunk
    lines = data.decode().splitlines()
    assert lines[0].startswith("220") and lines[1].startswith("200"), lines
    assert lines[2].startswith("215"), lines


# --- the metrics and health endpoint


class CountingObserver:
    """The observer's interface, with a health check that takes a while."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.checks = 0
        self.lock = threading.Lock()

    def health(self):
        with self.lock:
            self.checks += 1
        time.sleep(self.seconds)
        return True, {"status": "ok"}

    def exposition(self):
        return "text/plain", b"up 1\n"


@pytest.fixture
def metrics_http():
    from ftpserver_core.metrics.http import MetricsHTTPServer

    servers = []

    def start(observer):
        server = MetricsHTTPServer(("127.0.0.1", 0), observer)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def get(url):
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
        return response.status, response.read()


def test_a_health_check_flood_costs_one_database_check_at_a_time(metrics_http):
    """200 concurrent or quick /health requests: each one opened a database
    connection, one after another behind health.lock (threads piled up)."""
    observer = CountingObserver(0.2)
    url = metrics_http(observer) + "/health"
    results = []

    def client():
        results.append(get(url))

    threads = [threading.Thread(target=client) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 40
    assert all(
        (status, json.loads(body)) == (200, {"status": "ok"})
        for status, body in results
    )
    # Sequential requests within the cache's second share an answer too.
    for _ in range(20):
        assert get(url)[0] == 200
    assert observer.checks <= 6, observer.checks


def test_the_health_answer_is_fresh_after_a_second(metrics_http):
    observer = CountingObserver(0)
    url = metrics_http(observer) + "/health"
    get(url)
    time.sleep(1.5)
    get(url)
    assert observer.checks == 2


def test_a_stalled_client_does_not_block_scrapes(metrics_http):
    observer = CountingObserver(0)
    base = metrics_http(observer)
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), 10) as slow:
        slow.sendall(b"GET /metr")  # and nothing more
        started = time.monotonic()
        assert get(base + "/metrics") == (200, b"up 1\n")
        assert time.monotonic() - started < 5


def test_an_overlong_request_line_gets_414_and_no_traceback(metrics_http, caplog):
    observer = CountingObserver(0)
    base = metrics_http(observer)
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), 10) as sock:
        sock.sendall(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(1024).startswith(b"HTTP/1.0 414")
    assert "Traceback" not in caplog.text
