"""One node behind a real HAProxy sending PROXY protocol v2, control and data.

Clients connect from their own loopback addresses (127.0.0.21 and up) to
HAProxy (127.0.0.10); the node (127.0.0.11) requires the PROXY protocol
from HAProxy's address only. PASV answers HAProxy's address (the node's
masquerade address) and HAProxy forwards the passive range to the node.
"""

import ftplib
import io
import socket
import subprocess
import time

import pytest

from ftpserver_core.models import AuditEvent, Ban

from .conftest import PASSWORD
from .haproxy import (  # noqa: F401  (fixture)
    BALANCER_HOST,
    NODE_HOSTS,
    Balancer,
    Node,
    free_block,
    haproxy,
    node_args,
    node_env,
    requires_haproxy,
)
from .test_clients import CURL, LFTP_PLAIN
from .test_commands import ftpserver_cmd  # noqa: F401  (fixture)
from .test_state import wait_for
from .transfer_tools import payload, run_lftp

pytestmark = requires_haproxy

PASSIVE_SIZE = 10


class Frontend:
    """HAProxy's control frontend, as run_lftp wants a server."""

    def __init__(self, host, port):
        self.host, self.port = host, port


@pytest.fixture
def behind_haproxy(ftpserver_cmd, haproxy, make_account, tmp_path):  # noqa: F811
    """A node behind HAProxy; returns (frontend, node, haproxy)."""
    node_host = NODE_HOSTS[0]
    start = free_block(PASSIVE_SIZE + 1, [BALANCER_HOST, node_host])
    passive = (start, start + PASSIVE_SIZE - 1)
    make_account("alice")
    node = ftpserver_cmd(
        *node_args(node_host, passive),
        env=node_env(tmp_path / "n1", "n1", FTPSERVER_DEFENDER_POLL_INTERVAL=0.5),
    )
    assert node.host == node_host
    proxy = haproxy(
        Balancer(
            BALANCER_HOST,
            start + PASSIVE_SIZE,
            [Node("n1", node_host, node.port, passive)],
        )
    )
    return Frontend(BALANCER_HOST, start + PASSIVE_SIZE), node, proxy


def client(frontend, source, timeout=20):
    """An ftplib client of ``frontend``, connected from ``source``."""
    ftp = ftplib.FTP(timeout=timeout, source_address=(source, 0))
    ftp.connect(frontend.host, frontend.port)
    return ftp


def greeting(host, port, source):
    """The first reply line a client from ``source`` gets."""
    with socket.create_connection(
        (host, port), timeout=20, source_address=(source, 0)
    ) as sock:
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            reply += chunk
    return reply.decode()


def events(event, **filters):
    return AuditEvent.objects.filter(event=event, **filters)


def test_ftplib_curl_and_lftp_are_audited_with_their_own_addresses(
    behind_haproxy, tmp_path
):
    frontend, node, proxy = behind_haproxy
    # ftplib from .21: PASV (HAProxy's address) and data through HAProxy.
    ftp = client(frontend, "127.0.0.21")
    ftp.login("alice", PASSWORD)
    data = payload(300_000, seed=1)
    ftp.storbinary("STOR ftplib.bin", io.BytesIO(data))
    got = io.BytesIO()
    ftp.retrbinary("RETR ftplib.bin", got.write)
    assert got.getvalue() == data
    ftp.quit()

    # curl from .22 (EPSV: its data goes to the control connection's
    # address, HAProxy's): --interface binds control and data.
    upload = tmp_path / "curl.bin"
    upload.write_bytes(payload(200_000, seed=2))
    base = [
        CURL,
        "--silent",
        "--show-error",
        "--max-time",
        "30",
        "--interface",
        "127.0.0.22",
        "-u",
        f"alice:{PASSWORD}",
    ]
    url = f"ftp://{frontend.host}:{frontend.port}/"
    done = subprocess.run(
        [*base, "-T", str(upload), url], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*base, f"{url}ftplib.bin"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data

    # lftp from .23: its sockets bound to that address.
    local = tmp_path / "lftp"
    local.mkdir()
    (local / "lftp.bin").write_bytes(payload(100_000, seed=3))
    done = run_lftp(
        frontend,
        "put lftp.bin; get curl.bin -o back.bin",
        LFTP_PLAIN + "set net:socket-bind-ipv4 127.0.0.23; ",
        "alice",
        PASSWORD,
        cwd=local,
    )
    assert done.returncode == 0, done.stderr
    assert (local / "back.bin").read_bytes() == upload.read_bytes()

    expected = {"127.0.0.21", "127.0.0.22", "127.0.0.23"}
    # The audit is written behind, in batches: wait for all four logins
    # (curl's two runs are two sessions).
    wait_for(lambda: events("login").count() == 4)
    assert set(events("login").values_list("remote_ip", flat=True)) == expected
    uploads = wait_for(
        lambda: (
            events("upload").count() == 3
            and dict(events("upload").values_list("ftp_path", "remote_ip"))
        )
    )
    assert uploads == {
        "/ftplib.bin": "127.0.0.21",
        "/curl.bin": "127.0.0.22",
        "/lftp.bin": "127.0.0.23",
    }
    downloads = wait_for(
        lambda: (
            events("download").count() == 3
            and sorted(events("download").values_list("remote_ip", flat=True))
        )
    )
    assert downloads == ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
    # HAProxy's address is nowhere in the audit.
    assert not AuditEvent.objects.filter(remote_ip=BALANCER_HOST).exists()
    assert events("upload", ftp_path="/ftplib.bin").get().size == len(data)


def test_a_connection_straight_to_the_node_is_refused_and_recorded(
    behind_haproxy,
):
    frontend, node, proxy = behind_haproxy
    # A client that bypasses HAProxy: not a trusted proxy, refused at once.
    assert greeting(node.host, node.port, "127.0.0.21").startswith("421 ")
    # HAProxy's own address without a header: refused too (bytes that are
    # not a header).
    with socket.create_connection(
        (node.host, node.port), timeout=20, source_address=(BALANCER_HOST, 0)
    ) as sock:
        sock.sendall(b"USER alice\r\n")
        assert sock.recv(1024).startswith(b"421 ")
    refused = events("refused", reason="proxy_protocol")
    wait_for(lambda: refused.count() == 2)
    assert sorted(refused.values_list("remote_ip", flat=True)) == [
        BALANCER_HOST,
        "127.0.0.21",
    ]
    assert set(refused.values_list("node", flat=True)) == {"n1"}
    # Through HAProxy the same client gets in.
    ftp = client(frontend, "127.0.0.21")
    ftp.login("alice", PASSWORD)
    ftp.quit()


def test_a_ban_of_one_client_refuses_it_through_haproxy_and_not_another(
    behind_haproxy,
):
    frontend, node, proxy = behind_haproxy
    assert greeting(frontend.host, frontend.port, "127.0.0.24").startswith("220")
    Ban.objects.create(network="127.0.0.24/32", reason="manual")
    # The node polls the database for bans (every 0.5 s here).
    wait_for(
        lambda: greeting(frontend.host, frontend.port, "127.0.0.24").startswith(
            "421 Your address is banned"
        )
    )
    ftp = client(frontend, "127.0.0.25")
    assert ftp.login("alice", PASSWORD).startswith("230")
    ftp.quit()
    refused = wait_for(lambda: events("refused", reason="banned").first(), timeout=10)
    assert refused.remote_ip == "127.0.0.24"
    assert not events("refused", remote_ip="127.0.0.25").exists()


def test_health_checks_of_the_ftp_port_do_not_get_haproxy_banned(
    ftpserver_cmd,  # noqa: F811
    haproxy,  # noqa: F811
    make_account,
    tmp_path,
):
    """HAProxy checks the FTP port itself, expecting the 220 (tcp-check).

    With send-proxy-v2 and no check port, each check starts with a LOCAL
    header (the proxy speaking for itself) and closes after the greeting.
    """
    node_host = NODE_HOSTS[0]
    start = free_block(PASSIVE_SIZE + 1, [BALANCER_HOST, node_host])
    passive = (start, start + PASSIVE_SIZE - 1)
    make_account("alice")
    node = ftpserver_cmd(
        *node_args(node_host, passive),
        # Six connections without a login ban an address (default: 15).
        env=node_env(tmp_path / "n1", "n1", FTPSERVER_DEFENDER_THRESHOLD=6),
    )
    stats = tmp_path / "haproxy.sock"
    frontend = Frontend(BALANCER_HOST, start + PASSIVE_SIZE)
    proxy = haproxy(
        Balancer(
            BALANCER_HOST,
            frontend.port,
            [Node("n1", node_host, node.port, passive)],
            check="check inter 200ms fall 2 rise 1",
            extra_backend=["option tcp-check", "tcp-check expect string 220"],
            stats_socket=str(stats),
        )
    )
    # Twenty checks at 200 ms; a loaded machine still makes the six a ban
    # takes.
    time.sleep(4)
    assert not Ban.objects.filter(network=f"{BALANCER_HOST}/32").exists(), list(
        Ban.objects.values_list("network", "reason", "created_by")
    )
    assert proxy.server_states(stats) == {"n1": "UP"}, proxy.log
    ftp = client(frontend, "127.0.0.21")
    assert ftp.login("alice", PASSWORD).startswith("230")
    ftp.quit()
