"""``ftpserver --workers N``: prefork processes on one port, one clean stop."""

import io
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ftpserver_core.models import AuditEvent

from .test_commands import ftpserver_cmd  # noqa: F401  (fixture)


def children(pid):
    out = subprocess.run(
        ["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True
    ).stdout
    return sorted(int(p) for p in out.split())


def connection_count(pid, port, peers=None):
    """Count the established connections to ``port`` that process ``pid`` holds.

    Only the FTP port: a worker's other sockets (its audit writer's database
    connection, say) come and go on their own. With ``peers`` (client ports),
    only connections from those: another test running beside this one may
    reach the same port.
    """
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                established = fields[3] == "01"
                if peers is not None and remote_port not in peers:
                    continue
                if local_port == port and established and fields[9] in inodes:
                    count += 1
    return count


def wait_for(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def prefork(ftpserver_cmd, make_account):  # noqa: F811
    make_account("alice")
    # Every client here is 127.0.0.1: room beyond the default 20 per address
    # (per process), which the kernel's uneven spread of 30 clients can pass.
    server = ftpserver_cmd(
        "127.0.0.1:0", "--workers", "2", "--max-connections-per-ip", "100"
    )
    server.workers = wait_for(
        lambda: len(children(server.pid)) == 2 and children(server.pid)
    )
    return server


def upload(server, i):
    ftp = server.client("alice")
    ftp.storbinary(f"STOR f{i}.txt", io.BytesIO(b"x" * i))
    ftp.quit()
    return i


def test_banner_names_the_workers(prefork):
    assert "Worker processes: 2" in prefork.stdout


def test_both_workers_serve_clients(prefork):
    clients, held = [], {}
    try:
        # A worker still starting, or the kernel's wake-up order on the
        # shared socket, can hand a first batch all to one worker (30 of 30
        # once in CI): batches of 10 until both hold some, 60 at most.
        while len(clients) < 60:
            clients += [prefork.client("alice") for _ in range(10)]
            peers = {ftp.sock.getsockname()[1] for ftp in clients}
            held = {
                pid: connection_count(pid, prefork.port, peers)
                for pid in prefork.workers
            }
            assert sum(held.values()) == len(clients)
            if all(n > 0 for n in held.values()):
                break
            time.sleep(0.5)
        assert all(n > 0 for n in held.values()), held
    finally:
        for ftp in clients:
            ftp.quit()


def test_concurrent_uploads_all_land_and_all_are_audited(prefork):
    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(lambda i: upload(prefork, i), range(1, 41))) == list(
            range(1, 41)
        )
    assert prefork.stop() == 0
    assert "FTP server stopped." in prefork.stdout
    uploads = AuditEvent.objects.filter(event="upload")
    assert sorted(uploads.values_list("size", flat=True)) == list(range(1, 41))
    assert AuditEvent.objects.filter(event="login").count() == 40
    assert AuditEvent.objects.filter(event="server_started").count() == 1
    assert AuditEvent.objects.filter(event="server_stopped").count() == 1


def test_sigterm_stops_every_worker(prefork):
    workers = prefork.workers
    assert prefork.stop(signal.SIGTERM) == 0
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie_gone(pid)


def _is_zombie_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_a_dead_worker_is_replaced(prefork):
    victim = prefork.workers[0]
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(
        lambda: (
            (pids := children(prefork.pid))
            and len(pids) == 2
            and victim not in pids
            and pids
        )
    )
    assert victim not in replaced
    for i in range(4):  # both old and new workers keep serving
        upload(prefork, i + 1)
    assert prefork.stop() == 0


def test_workers_stop_when_the_supervisor_is_killed(prefork):
    workers = prefork.workers
    prefork.proc.kill()  # SIGKILL: no chance to stop its workers
    prefork.proc.wait(10)
    # Each notices within a second and then stops as on SIGTERM, within its
    # shutdown timeout (10 s): room for a machine under load.
    wait_for(
        lambda: all(
            _is_zombie_gone(pid) or not os.path.exists(f"/proc/{pid}")
            for pid in workers
        ),
        timeout=30,
    )
