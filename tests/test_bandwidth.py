"""Bandwidth limits per account: real servers, real clients, generous bounds.

Rates are measured end to end (bytes over the time until the last ``226``)
and asserted within wide bounds only: the machine is small and the suite
runs in parallel. A slow machine can only make a limited transfer slower,
so the upper bounds are the behaviour under test; the lower ones catch a
transfer held far too long.
"""

import io
import threading
import time
from pathlib import Path

import pytest

from ftpserver_core.state.database import DatabaseBackend
from tests.certs import make_certificate
from tests.conftest import PASSWORD
from tests.test_commands import ftpserver_cmd  # noqa: F401  (fixture)

KIB = 1024
MIB = 1024 * KIB


def _home(account):
    return Path(account.home_path)


def make_file(path, size):
    path.write_bytes(bytes(range(256)) * (size // 256))
    return path


def download(ftp, name):
    """RETR ``name``; return (bytes received, seconds)."""
    received = 0

    def count(data):
        nonlocal received
        received += len(data)

    started = time.monotonic()
    reply = ftp.retrbinary(f"RETR {name}", count)
    assert reply.startswith("226"), reply
    return received, time.monotonic() - started


def upload(ftp, name, size):
    """STOR ``size`` bytes as ``name``; return seconds until the 226."""
    started = time.monotonic()
    reply = ftp.storbinary(f"STOR {name}", io.BytesIO(b"u" * size))
    assert reply.startswith("226"), reply
    return time.monotonic() - started


def in_parallel(jobs):
    """Run the callables at once; return their results and the overall seconds."""
    results = [None] * len(jobs)
    errors = []

    def run(i, job):
        try:
            results[i] = job()
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    elapsed = time.monotonic() - started
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a transfer did not end"
    return results, elapsed


def assert_rate(nbytes, seconds, limit, low=0.6, high=1.4):
    rate = nbytes / seconds
    assert low * limit <= rate <= high * limit, (
        f"{rate / KIB:.0f} KiB/s for a limit of {limit / KIB:.0f} KiB/s "
        f"({nbytes} bytes in {seconds:.2f} s); expected {low}x to {high}x"
    )


# --- one process


def test_single_session_download_is_limited(live_ftp, make_account):
    limit = 256 * KIB
    account = make_account("alice", download_rate=limit)
    make_file(_home(account) / "big", MIB)
    ftp = live_ftp.client("alice")
    received, seconds = download(ftp, "big")
    ftp.quit()
    assert received == MIB
    assert_rate(received, seconds, limit)


def test_single_session_upload_is_limited(live_ftp, make_account):
    limit = 256 * KIB
    account = make_account("alice", upload_rate=limit)
    ftp = live_ftp.client("alice")
    seconds = upload(ftp, "up", MIB)
    assert ftp.size("up") == MIB
    ftp.quit()
    assert (_home(account) / "up").stat().st_size == MIB
    assert_rate(MIB, seconds, limit)


def test_limit_is_per_direction(live_ftp, make_account):
    # An upload limit does not slow downloads down.
    account = make_account("alice", upload_rate=64 * KIB)
    make_file(_home(account) / "big", 8 * MIB)
    ftp = live_ftp.client("alice")
    received, seconds = download(ftp, "big")
    ftp.quit()
    assert received == 8 * MIB
    assert received / seconds > 20 * 64 * KIB


def test_unlimited_account_is_unaffected(live_ftp, make_account):
    slow = make_account("slow", download_rate=128 * KIB)
    fast = make_account("fast")
    make_file(_home(slow) / "big", 4 * MIB)
    make_file(_home(fast) / "big", 16 * MIB)
    slow_ftp = live_ftp.client("slow")
    fast_ftp = live_ftp.client("fast")
    done = threading.Event()

    def slow_job():
        try:
            return download(slow_ftp, "big")
        except Exception:
            if done.is_set():
                return None  # closed below, as planned
            raise

    thread = threading.Thread(target=slow_job)
    thread.start()
    try:
        time.sleep(0.5)  # the limited download is under way
        received, seconds = download(fast_ftp, "big")
        assert received == 16 * MIB
        # Loopback moves hundreds of MiB/s; 4 MiB/s is 32x the other's limit.
        assert received / seconds > 4 * MIB
        assert thread.is_alive(), "the limited download ended too soon"
    finally:
        done.set()
        slow_ftp.close()
        fast_ftp.close()
        thread.join(30)


def test_sessions_of_one_account_share_its_limit(live_ftp, make_account):
    limit = 384 * KIB
    account = make_account("alice", download_rate=limit)
    for i in range(3):
        make_file(_home(account) / f"f{i}", 512 * KIB)
    clients = [live_ftp.client("alice") for _ in range(3)]
    results, seconds = in_parallel(
        [lambda c=c, i=i: download(c, f"f{i}") for i, c in enumerate(clients)]
    )
    for ftp in clients:
        ftp.quit()
    assert [r[0] for r in results] == [512 * KIB] * 3
    assert_rate(3 * 512 * KIB, seconds, limit)


def test_throttled_transfer_is_not_taken_for_stalled(ftp_server, make_account):
    # Held 1.5 s at a time (a 1 KiB chunk at 600 B/s, more than the 1 s
    # stall timeout), the transfer still completes.
    live = ftp_server(data_timeout=1)
    account = make_account("alice", download_rate=600)
    make_file(_home(account) / "small", 2 * KIB)
    ftp = live.client("alice")
    received, _ = download(ftp, "small")
    ftp.quit()
    assert received == 2 * KIB


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    pytest.importorskip("OpenSSL")
    return make_certificate(tmp_path_factory.mktemp("bandwidth-tls"))


def test_tls_transfers_are_limited(ftp_server, make_account, tls_cert):
    live = ftp_server(certfile=tls_cert.certfile, keyfile=tls_cert.keyfile)
    limit = 256 * KIB
    account = make_account("alice", download_rate=limit, upload_rate=limit)
    make_file(_home(account) / "big", MIB)
    ftp = live.client("alice", tls=True)
    received, seconds = download(ftp, "big")
    assert received == MIB
    assert_rate(received, seconds, limit)
    seconds = upload(ftp, "up", MIB)
    assert ftp.size("up") == MIB
    ftp.quit()
    assert_rate(MIB, seconds, limit)


# --- several processes on one database


def _two_servers(ftpserver_cmd):  # noqa: F811
    first = ftpserver_cmd("127.0.0.1:0")
    second = ftpserver_cmd("127.0.0.1:0")
    return first, second


def _counts_seen(account, stop, seen):
    """Record the largest published transfer count of ``account`` until ``stop``."""
    from django.db import close_old_connections

    backend = DatabaseBackend()
    try:
        while not stop.is_set():
            counts = backend.transfer_counts().get(account.pk, {})
            seen.append(counts)
            stop.wait(0.3)
    finally:
        close_old_connections()


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_processes_share_an_account_limit(
    ftpserver_cmd,  # noqa: F811
    make_account,
    direction,
):
    limit = MIB
    size = 3 * MIB  # three of them: about 9 s at the limit
    field = "download_rate" if direction == "download" else "upload_rate"
    account = make_account("alice", **{field: limit})
    for i in range(3):
        make_file(_home(account) / f"f{i}", size)
    first, second = _two_servers(ftpserver_cmd)
    # Two sessions on one process, one on the other.
    clients = [
        first.client("alice", PASSWORD),
        first.client("alice", PASSWORD),
        second.client("alice", PASSWORD),
    ]
    if direction == "download":
        jobs = [lambda c=c, i=i: download(c, f"f{i}")[0] for i, c in enumerate(clients)]
    else:
        jobs = [lambda c=c, i=i: upload_size(c, f"u{i}") for i, c in enumerate(clients)]

        def upload_size(ftp, name):
            upload(ftp, name, size)
            return ftp.size(name)

    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=_counts_seen, args=(account, stop, seen))
    watcher.start()
    try:
        results, seconds = in_parallel(jobs)
    finally:
        stop.set()
        watcher.join(10)
    for ftp in clients:
        ftp.quit()
    assert results == [size] * 3
    # Both processes published their transfers: three of the account at once.
    key = "down" if direction == "download" else "up"
    assert max(c.get(key, 0) for c in seen) == 3, seen
    # One process alone would have let them through at twice the limit.
    assert_rate(3 * size, seconds, limit)


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_a_group_rate_limits_an_account_without_its_own(
    live_ftp, make_account, direction
):
    """The group's rate holds for an account leaving its own blank."""
    from ftpserver_core.models import FTPUserGroup

    limit = 256 * KIB
    field = f"{direction}_rate"
    group = FTPUserGroup.objects.create(name="customers", **{field: limit})
    account = make_account("alice", group=group)
    assert getattr(account, field) is None
    ftp = live_ftp.client("alice")
    if direction == "download":
        make_file(_home(account) / "big", MIB)
        received, seconds = download(ftp, "big")
        assert received == MIB
    else:
        seconds = upload(ftp, "up", MIB)
        assert ftp.size("up") == MIB
    ftp.quit()
    # Unlimited, loopback moves 1 MiB in a few milliseconds: 4 s at the rate.
    assert_rate(MIB, seconds, limit)
