"""The scale-out recipe, live: two nodes, one database, one home root, HAProxy.

Two ``ftpserver`` processes (FTPSERVER_NODE_NAME "node-a" and "node-b", on
127.0.0.11 and 127.0.0.12) share the test database and the accounts' homes
(this test's directory). HAProxy (127.0.0.10) balances the control port
round-robin over them with PROXY protocol v2 and forwards each node's own
passive range to it (deploy/haproxy/haproxy.cfg is the production form).
Clients connect from 127.0.0.21 and up.
"""

import ftplib
import io
import re
import subprocess
import time
from pathlib import Path

import pytest

from ftpserver_core.models import AuditEvent, Ban, LiveSession

from .conftest import PASSWORD
from .haproxy import (  # noqa: F401  (fixture)
    BALANCER_HOST,
    CLIENT_HOSTS,
    HAPROXY,
    NODE_HOSTS,
    Balancer,
    Node,
    free_block,
    haproxy,
    node_args,
    node_env,
    requires_haproxy,
)
from .processes import REPO_ROOT
from .test_commands import ftpserver_cmd  # noqa: F401  (fixture)
from .test_haproxy import Frontend, client, events, greeting
from .test_state import wait_for
from .transfer_tools import payload

pytestmark = requires_haproxy

RECIPE = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
NAMES = ("node-a", "node-b")
PASSIVE_SIZE = 10
NODE_SETTINGS = {
    # Bans made elsewhere are seen within half a second (default: 1 s).
    "FTPSERVER_DEFENDER_POLL_INTERVAL": 0.5,
    # Three unknown user names (2 points each) ban an address.
    "FTPSERVER_DEFENDER_THRESHOLD": 6,
    # The probes of a ban's propagation are greetings without a login: were
    # they scored, the other node could ban the address on its own.
    "FTPSERVER_DEFENDER_SCORES": {"no_login": 0},
}


def start_nodes(ftpserver_cmd, haproxy, tmp_path, health=False):  # noqa: F811
    """Two nodes behind HAProxy: (frontend, {name: server}, haproxy, balancer).

    ``health``: each node serves /health (--metrics) on one port of its
    address, which HAProxy checks as the recipe does.
    """
    hosts = [BALANCER_HOST, *NODE_HOSTS]
    start = free_block(2 * PASSIVE_SIZE + 2, hosts)
    health_port = start + 2 * PASSIVE_SIZE + 1
    nodes, servers = [], {}
    for index, (name, host) in enumerate(zip(NAMES, NODE_HOSTS, strict=True)):
        first = start + index * PASSIVE_SIZE
        passive = (first, first + PASSIVE_SIZE - 1)
        metrics = ("--metrics", f"{host}:{health_port}") if health else ()
        servers[name] = ftpserver_cmd(
            *node_args(host, passive),
            *metrics,
            env=node_env(tmp_path / name, name, **NODE_SETTINGS),
        )
        nodes.append(Node(name, host, servers[name].port, passive))
    balancer = Balancer(
        BALANCER_HOST,
        start + 2 * PASSIVE_SIZE,
        nodes,
        balance="roundrobin",
        health_port=health_port if health else None,
        stats_socket=str(tmp_path / "haproxy.sock"),
    )
    proxy = haproxy(balancer)
    return Frontend(BALANCER_HOST, balancer.port), servers, proxy, balancer


@pytest.fixture
def two_nodes(ftpserver_cmd, haproxy, tmp_path):  # noqa: F811
    """Two nodes behind HAProxy; returns (frontend, {name: server}, haproxy)."""
    return start_nodes(ftpserver_cmd, haproxy, tmp_path)[:3]


def login(frontend, source, username="alice"):
    """The logged-in client from ``source``, or the reply of a refused login."""
    ftp = client(frontend, source)
    try:
        ftp.login(username, PASSWORD)
    except ftplib.error_perm as exc:
        ftp.close()
        return str(exc)
    return ftp


def node_of_login(source, username="alice"):
    """The node that recorded the login from ``source``."""
    record = wait_for(
        lambda: events("login", remote_ip=source, username=username).first()
    )
    return record.node


def test_clients_land_on_both_nodes_and_share_files_and_the_audit(
    two_nodes, make_account
):
    frontend, servers, proxy = two_nodes
    account = make_account("alice")
    sources = CLIENT_HOSTS[:10]
    clients = {source: login(frontend, source) for source in sources}
    nodes = {source: node_of_login(source) for source in sources}
    assert set(nodes.values()) == set(NAMES), nodes
    # Every client uploads a file of its own.
    files = {}
    for index, (source, ftp) in enumerate(clients.items()):
        name = f"from-{index}.bin"
        files[name] = (source, payload(50_000 + index, seed=index))
        ftp.storbinary(f"STOR {name}", io.BytesIO(files[name][1]))
    # ... which a client on the other node downloads: the same bytes.
    for name, (uploader, data) in files.items():
        source = next(s for s in sources if nodes[s] != nodes[uploader])
        got = io.BytesIO()
        clients[source].retrbinary(f"RETR {name}", got.write)
        assert got.getvalue() == data, name
    for ftp in clients.values():
        ftp.quit()
    # One home directory, on the shared root.
    assert sorted(p.name for p in Path(account.home_path).iterdir()) == sorted(files)

    # One audit: each node recorded its own sessions' events, with the
    # client's address.
    def transfers(event):
        rows = events(event).values_list("ftp_path", "node", "remote_ip")
        return len(rows) == len(files) and {path: (n, ip) for path, n, ip in rows}

    uploads = wait_for(lambda: transfers("upload"))
    downloads = wait_for(lambda: transfers("download"))
    for name, (uploader, _) in files.items():
        assert uploads[f"/{name}"] == (nodes[uploader], uploader)
        node, _ = downloads[f"/{name}"]
        assert node != nodes[uploader]
    assert set(events("login").values_list("node", flat=True)) == set(NAMES)
    assert not AuditEvent.objects.filter(remote_ip=BALANCER_HOST).exists()


def test_an_accounts_session_limit_holds_across_the_nodes(two_nodes, make_account):
    frontend, servers, proxy = two_nodes
    make_account("alice", max_sessions=2)
    one = login(frontend, "127.0.0.21")
    two = login(frontend, "127.0.0.22")
    assert not isinstance(one, str) and not isinstance(two, str), (one, two)
    # Round-robin: one session on each node.
    live = LiveSession.objects.filter(username="alice")
    assert set(live.values_list("process__node", flat=True)) == set(NAMES)
    # The next two connections land on one node each: both refuse.
    for source in ("127.0.0.23", "127.0.0.24"):
        refused = login(frontend, source)
        assert isinstance(refused, str) and refused.startswith(
            "530 Too many sessions of this account"
        ), refused
    failed = events("login_failed", reason="too_many_sessions")
    wait_for(lambda: failed.count() == 2)
    assert set(failed.values_list("node", flat=True)) == set(NAMES)
    one.quit()
    # Its end is written within a round of its node's state thread: then a
    # login gets in again, whichever node it lands on.
    again = wait_for(
        lambda: not isinstance(r := login(frontend, "127.0.0.25"), str) and r
    )
    again.quit()
    two.quit()


def test_a_ban_made_by_one_node_is_enforced_by_the_other(two_nodes, make_account):
    frontend, servers, proxy = two_nodes
    make_account("alice")
    attacker = "127.0.0.31"
    # Unknown user names from one address, through HAProxy: five attempts
    # alternate between the nodes (round robin), so one node scores 6 and
    # bans it, the other 4 and must learn the ban from the database.
    for _ in range(5):
        ftp = client(frontend, attacker)
        with pytest.raises((ftplib.error_perm, ftplib.error_temp)):
            ftp.login("nobody", "wrong")
        ftp.close()
    ban = wait_for(lambda: Ban.objects.filter(network=f"{attacker}/32").first())
    banned_at = time.monotonic()
    assert ban.created_by in NAMES
    (other,) = set(NAMES) - {ban.created_by}

    # Connections alternate between the nodes: soon both refuse it.
    def refused_by_both():
        greeting(frontend.host, frontend.port, attacker)
        return set(
            events("refused", reason="banned", remote_ip=attacker).values_list(
                "node", flat=True
            )
        ) == set(NAMES)

    wait_for(refused_by_both, timeout=20, interval=0.2)
    # The other node refused it by the ban it read, not one of its own.
    assert not events("ban", network=f"{attacker}/32", node=other).exists()
    print(
        f"the ban by {ban.created_by} refused by {other} after "
        f"{time.monotonic() - banned_at:.2f} s"
    )
    # Another client still gets in, on either node.
    for source in ("127.0.0.32", "127.0.0.33"):
        ftp = login(frontend, source)
        assert not isinstance(ftp, str), ftp
        ftp.quit()
    assert {node_of_login("127.0.0.32"), node_of_login("127.0.0.33")} == set(NAMES)


def test_haproxy_checks_each_nodes_health_and_stops_sending_to_a_stopped_one(
    ftpserver_cmd,  # noqa: F811
    haproxy,  # noqa: F811
    make_account,
    tmp_path,
):
    """The recipe's health check: GET /health on FTPSERVER_METRICS_ADDRESS."""
    pytest.importorskip("prometheus_client")
    make_account("alice")
    frontend, servers, proxy, balancer = start_nodes(
        ftpserver_cmd, haproxy, tmp_path, health=True
    )
    states = lambda: proxy.server_states(balancer.stats_socket)  # noqa: E731
    wait_for(lambda: states() == {"node-a": "UP", "node-b": "UP"})
    assert servers["node-b"].stop() == 0
    wait_for(lambda: states()["node-b"].startswith("DOWN"), timeout=30)
    # Every new session lands on the node that is left.
    sources = CLIENT_HOSTS[:4]
    for source in sources:
        ftp = login(frontend, source)
        assert not isinstance(ftp, str), ftp
        ftp.storbinary(f"STOR {source}.txt", io.BytesIO(source.encode()))
        ftp.quit()
    assert {node_of_login(source) for source in sources} == {"node-a"}
    # The checks never were FTP sessions: nothing recorded, nobody banned.
    assert not AuditEvent.objects.filter(remote_ip=BALANCER_HOST).exists()
    assert not Ban.objects.exists()


def test_the_shipped_haproxy_config_is_valid():
    done = subprocess.run(
        [HAPROXY, "-c", "-f", str(RECIPE)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr
    text = RECIPE.read_text()
    # Every node is reached with the PROXY protocol, control and data.
    servers = re.findall(r"^\s*server\s.*$", text, re.M)
    assert len(servers) == 4 and all("send-proxy-v2" in line for line in servers)
    # The nodes' passive ranges do not overlap.
    ranges = [
        range(int(first), int(last) + 1)
        for first, last in re.findall(r"^\s*bind\s+\S+:(\d+)-(\d+)", text, re.M)
    ]
    assert len(ranges) == 2 and not set(ranges[0]) & set(ranges[1])
