"""HAProxy in front of real server processes: the load balancer of a scale-out.

``haproxy`` (a fixture) writes a haproxy.cfg into the test's directory, runs
``haproxy -f CFG -db`` (in the foreground) and waits until every frontend
listens; the process is killed at teardown. ``balancer_config`` writes the
configuration of the scale-out recipe (deploy/haproxy/haproxy.cfg): the
control port balanced over the nodes, each node's passive range forwarded to
that node on the same port numbers, ``send-proxy-v2`` everywhere.

Loopback has every 127.x.y.z address: HAProxy and each node get their own,
so they bind the same passive port numbers side by side, and HAProxy
connects to the nodes *from* its address (``source``), the one the nodes
trust.
"""

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .processes import command_env

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
requires_haproxy = pytest.mark.skipif(
    HAPROXY is None,
    reason="haproxy is not installed (Debian/Ubuntu: apt-get install haproxy)",
)

# HAProxy's address; the nodes' are NODE_HOSTS, the clients' CLIENT_HOSTS.
BALANCER_HOST = "127.0.0.10"
NODE_HOSTS = ("127.0.0.11", "127.0.0.12")
CLIENT_HOSTS = tuple(f"127.0.0.{n}" for n in range(21, 41))
STARTUP_TIMEOUT = 20


def _free(host, port):
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_block(size, hosts, low=20000, high=32000, attempts=200):
    """Return the first port of ``size`` ports free on every one of ``hosts``.

    Below the kernel's ephemeral ports (Linux: 32768 and up), so no outgoing
    connection takes one meanwhile; random, so tests running in parallel
    (xdist) rarely try the same block, and bind-checked, so they never take
    one another's.
    """
    for _ in range(attempts):
        start = random.randrange(low, high - size)
        if all(_free(h, p) for p in range(start, start + size) for h in hosts):
            return start
    raise AssertionError(f"no {size} free ports on {hosts} in {low}-{high}")


def _listening():
    """Every (ip, port) listening over IPv4 on this machine (/proc/net/tcp)."""
    found = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # TCP_LISTEN
                continue
            address, port = local.split(":")
            ip = socket.inet_ntoa(bytes.fromhex(address)[::-1])
            found.add((ip, int(port, 16)))
    return found


@dataclass
class Node:
    """A server process behind the balancer: its name, address and ports."""

    name: str
    host: str
    port: int  # its control listener's port
    passive: tuple  # (first, last) of its passive range


@dataclass
class Balancer:
    """The HAProxy configuration of a scale-out: see ``balancer_config``."""

    host: str
    port: int
    nodes: list
    balance: str = "roundrobin"
    # The port of each node's /health (FTPSERVER_METRICS_ADDRESS): checked
    # as deploy/haproxy/haproxy.cfg does. None: no health checks.
    health_port: int | None = None
    check: str = ""  # appended to each control ``server`` line
    extra_backend: list = field(default_factory=list)  # lines of the backend
    stats_socket: str | None = None  # a path: HAProxy's runtime API there


def balancer_config(balancer):
    """Return haproxy.cfg text for ``balancer``; its frontends' addresses."""
    lines = [
        "global",
        "    maxconn 2000",
        *(
            [f"    stats socket {balancer.stats_socket} mode 600 level admin"]
            if balancer.stats_socket
            else []
        ),
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        "    timeout client 120s",
        "    timeout server 120s",
        "",
        "frontend ftp",
        f"    bind {balancer.host}:{balancer.port}",
        "    default_backend ftp_nodes",
        "",
        "backend ftp_nodes",
        f"    balance {balancer.balance}",
        # The nodes trust this address only (trusted=...): connect from it.
        f"    source {balancer.host}",
        *(f"    {line}" for line in balancer.extra_backend),
    ]
    check = balancer.check
    if balancer.health_port is not None:
        lines += [
            "    option httpchk GET /health",
            "    http-check expect status 200",
            "    default-server inter 300ms fall 2 rise 1",
        ]
        check = f"check port {balancer.health_port} {check}"
    lines += [
        f"    server {n.name} {n.host}:{n.port} send-proxy-v2 {check}".rstrip()
        for n in balancer.nodes
    ]
    addresses = [(balancer.host, balancer.port)]
    for node in balancer.nodes:
        first, last = node.passive
        lines += [
            "",
            f"frontend passive_{node.name}",
            f"    bind {balancer.host}:{first}-{last}",
            f"    default_backend passive_{node.name}",
            "",
            f"backend passive_{node.name}",
            f"    source {balancer.host}",
            # No port: the port the client connected to, the one PASV gave.
            f"    server {node.name} {node.host} send-proxy-v2"
            + (
                f" track ftp_nodes/{node.name}"
                if balancer.health_port is not None
                else ""
            ),
        ]
        addresses += [(balancer.host, port) for port in range(first, last + 1)]
    return "\n".join(lines) + "\n", addresses


class HAProxy:
    """``haproxy -f CFG -db`` with its output in a file."""

    def __init__(self, config, workdir):
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(config)
        self.log_path = workdir / "haproxy.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [HAPROXY, "-f", str(self.config_path), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, addresses, timeout=STARTUP_TIMEOUT):
        """Wait until every (ip, port) of ``addresses`` listens.

        Read from the kernel's table, not by connecting: a probe through a
        frontend would reach a node and be a session of its own.
        """
        wanted = set(addresses)
        deadline = time.monotonic() + timeout
        while True:
            missing = wanted - _listening()
            if not missing:
                return self
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"haproxy exited with {self.proc.returncode}:\n{self.log}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"haproxy does not listen on {sorted(missing)[:5]} after "
                    f"{timeout} s:\n{self.log}"
                )
            time.sleep(0.05)

    def command(self, text, socket_path):
        """Send ``text`` to the runtime API at ``socket_path``; return the answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(socket_path))
            sock.sendall(text.encode() + b"\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer.decode()

    def server_states(self, socket_path, backend="ftp_nodes"):
        """{server: status} of ``backend`` ("UP", "DOWN", ...)."""
        lines = self.command("show stat", socket_path).splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
        return {
            row["svname"]: row["status"]
            for row in rows
            if row.get("pxname") == backend
            and row.get("svname") not in ("FRONTEND", "BACKEND")
        }

    def kill(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def node_env(directory, name, **settings):
    """The environment of a node process: its FTPSERVER_NODE_NAME, ``settings``."""
    from .test_commands import settings_module

    directory.mkdir(parents=True, exist_ok=True)
    extra = settings_module(directory, FTPSERVER_NODE_NAME=name, **settings)
    return command_env(extra_path=extra, DJANGO_SETTINGS_MODULE="cmd_settings")


def node_args(node_host, passive, balancer_host=BALANCER_HOST):
    """``ftpserver`` arguments of a node behind HAProxy at ``balancer_host``.

    Its listener requires the PROXY protocol and trusts HAProxy's address
    only; PASV points clients at HAProxy, which forwards the port to it.
    """
    first, last = passive
    return (
        "--listen",
        f"{node_host}:0,proxy=required,trusted={balancer_host}/32",
        "--passive-ports",
        f"{first}-{last}",
        "--masquerade-address",
        balancer_host,
    )


@pytest.fixture
def haproxy(tmp_path):
    """Start HAProxy: ``haproxy(balancer)`` (a Balancer) or ``haproxy(config,
    addresses)``; returns it listening. Killed at teardown."""
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (Debian/Ubuntu: apt-get install haproxy)")
    started = []

    def start(balancer, addresses=None):
        if isinstance(balancer, Balancer):
            config, addresses = balancer_config(balancer)
        else:
            config = balancer
        proxy = HAProxy(config, tmp_path / f"haproxy{len(started)}")
        started.append(proxy)
        return proxy.wait_listening(addresses or ())

    yield start
    for proxy in started:
        proxy.kill()
