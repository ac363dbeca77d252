"""A hostile review of the account controls: quota drift and hidden files.

Each test is a reproduction of a way a client broke a control, with real
servers and ftplib clients; each failed before its fix.
"""

import ftplib
import os
import time

import pytest

from ftpserver_core.models import QuotaLease
from ftpserver_core.quotas import scan_home

from .test_quotas import BUFFER, settled, usage

KiB = 1024


def start_upload(ftp, cmd, data, rest=None):
    """Start an upload and send ``data``; return the open data connection."""
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd(cmd, rest)
    for start in range(0, len(data), BUFFER):
        conn.sendall(data[start : start + BUFFER])
    return conn


def finish_upload(ftp, conn, data=b""):
    """Send the rest, close the data connection; return the final reply."""
    with conn:
        conn.sendall(data)
    try:
        return ftp.voidresp()
    except (ftplib.error_perm, ftplib.error_temp) as exc:
        return str(exc)


def written_down(account, server, timeout=10):
    """Wait until the server wrote every usage change and gave its lease back.

    Then return the usage recorded and what the home holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        server.state.wake()
        quota = server.quotas.accounts.get(account.pk)
        idle = quota is None or (
            not any(quota.changes) and quota.idle() and quota.lease == [0, 0]
        )
        leased = QuotaLease.objects.filter(account=account.pk).exclude(bytes=0, files=0)
        if idle and not leased.exists():
            # The state thread may be writing what it just took from the
            # queue: wait until a whole round ran after this check.
            start = server.state.rounds
            while server.state.rounds < start + 2:
                server.state.wake()
                assert time.monotonic() < deadline, "no state round ran"
                time.sleep(0.02)
            return usage(account), scan_home(account.home_path)
        assert time.monotonic() < deadline, "the server kept its usage changes"
        time.sleep(0.05)


def wait_written(path, size):
    """Wait until the server wrote ``size`` bytes of an upload in place."""
    deadline = time.monotonic() + 10
    while os.stat(path).st_size < size:
        assert time.monotonic() < deadline, "the server did not write the data"
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["DELE", "RNTO"])
def test_resumed_upload_of_a_file_deleted_meanwhile_keeps_usage_exact(
    live_ftp, make_account, how
):
    # REST+STOR writes in place; a second session deletes (or renames) the
    # file meanwhile. The upload measured the path at its end (nothing
    # there) and took the whole file off the usage a second time: each
    # round freed the file's size and one file of quota for nothing. Under
    # a quota the file is now locked while it is written: the delete (or
    # rename) is answered 450 and works once the upload ended.
    account = make_account("alice", quota_bytes=10_000_000, quota_files=100)
    home = account.home_path
    writer, other = live_ftp.client("alice"), live_ftp.client("alice")
    first = os.urandom(300 * KiB)
    conn = start_upload(writer, "STOR f.bin", first)
    assert finish_upload(writer, conn).startswith("226")
    settled(account, live_ftp.server)

    conn = start_upload(writer, "STOR f.bin", b"x" * 1000, rest=1000)
    wait_written(os.path.join(home, "f.bin"), 300 * KiB)
    change = (
        (lambda: other.delete("f.bin"))
        if how == "DELE"
        else (lambda: other.rename("f.bin", "g.bin"))
    )
    with pytest.raises(ftplib.error_temp, match="^450"):
        change()
    assert finish_upload(writer, conn, b"y" * 1000).startswith("226")
    recorded, disk = written_down(account, live_ftp.server)
    assert recorded == disk == (300 * KiB, 1)
    change()
    recorded, disk = written_down(account, live_ftp.server)
    assert recorded == disk == ((0, 0) if how == "DELE" else (300 * KiB, 1))
    writer.quit()
    other.quit()


def test_fresh_upload_deleted_meanwhile_frees_nothing_twice(live_ftp, make_account):
    # STOU (always written in place) of a file another session deletes
    # mid-transfer: the delete freed it; its end must not free it again.
    # Under a quota the file is now locked while it is written: the delete
    # is answered 450 and frees it exactly once after the upload.
    account = make_account("alice", quota_bytes=10_000_000, quota_files=100)
    writer, other = live_ftp.client("alice"), live_ftp.client("alice")
    conn = start_upload(writer, "STOU", os.urandom(200 * KiB))
    names = os.listdir(account.home_path)
    assert len(names) == 1, names
    wait_written(os.path.join(account.home_path, names[0]), 200 * KiB)
    with pytest.raises(ftplib.error_temp, match="^450"):
        other.delete(names[0])
    assert finish_upload(writer, conn, b"z" * 5000).startswith("226")
    recorded, disk = written_down(account, live_ftp.server)
    assert recorded == disk == (200 * KiB + 5000, 1)
    other.delete(names[0])
    recorded, disk = written_down(account, live_ftp.server)
    assert recorded == disk == (0, 0)
    writer.quit()
    other.quit()


def test_stou_cannot_create_a_file_with_the_reserved_prefix(live_ftp, make_account):
    # STOU ".ftpupload-x" made ".ftpupload-x.<random>": a file hidden from
    # every listing and from ftpquotascan (whose scan then freed its room).
    account = make_account("alice", quota_bytes=10_000_000, quota_files=100)
    ftp = live_ftp.client("alice")
    ftp.voidcmd("TYPE I")
    with pytest.raises(ftplib.error_perm, match="^553"):
        ftp.transfercmd("STOU .ftpupload-hidden")
    assert os.listdir(account.home_path) == []
    assert usage(account) == (0, 0)
    ftp.quit()


def test_anonymous_symlink_out_of_its_home_is_not_followed(
    settings, tmp_path, live_ftp
):
    # An operator's symlink in the public directory pointing outside it:
    # neither a download, a listing nor a HASH goes through it.
    pub, secret = tmp_path / "pub", tmp_path / "private"
    pub.mkdir()
    secret.mkdir()
    (secret / "key.txt").write_bytes(b"not public")
    os.symlink(secret, pub / "link")
    os.symlink(secret / "key.txt", pub / "key.txt")
    settings.FTPSERVER_ANONYMOUS_ENABLED = True
    settings.FTPSERVER_ANONYMOUS_HOME = str(pub)
    ftp = live_ftp.client("anonymous", "=HYPERLINK(1)@x")
    for command in ("RETR link/key.txt", "RETR key.txt", "HASH key.txt"):
        got = []
        with pytest.raises(ftplib.error_perm, match="^550"):
            if command.startswith("RETR"):
                ftp.retrbinary(command, got.append)
            else:
                ftp.sendcmd(command)
        assert got == []
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.nlst("link")
    ftp.quit()


@pytest.mark.skipif(
    "sqlite" not in os.environ.get("DATABASE_URL", "sqlite"),
    reason="locks the SQLite database file",
)
def test_a_paused_upload_resumes_after_the_database_was_locked(
    settings, ftp_server, make_account
):
    # A round whose write of usage changes failed (the database locked)
    # dropped the grants asked in it: an upload paused for room waited for
    # a grant nobody asked for any more, until the stall timeout.
    import sqlite3
    import threading

    from django.db import connections

    settings.FTPSERVER_QUOTA_LEASE_BYTES = 64 * KiB
    account = make_account("alice", quota_bytes=100 * 1024 * KiB)
    live = ftp_server()
    big, other = live.client("alice", timeout=30), live.client("alice")
    conn = start_upload(other, "STOR small.bin", b"s" * 1000)
    assert finish_upload(other, conn).startswith("226")
    written_down(account, live.server)

    data = os.urandom(4 * 1024 * KiB)
    result = {}

    def upload():
        try:
            conn = start_upload(big, "STOR big.bin", data)
            result["reply"] = finish_upload(big, conn)
        except Exception as exc:  # the reply, or how the client gave up
            result["reply"] = repr(exc)

    database = connections["default"].settings_dict
    timeout = database["OPTIONS"].get("timeout")
    database["OPTIONS"]["timeout"] = 0.05  # fail fast while locked
    lock = sqlite3.connect(database["NAME"], isolation_level=None)
    try:
        thread = threading.Thread(target=upload)
        thread.start()
        time.sleep(0.3)  # the upload runs, pausing for room each 64 KiB
        lock.execute("BEGIN EXCLUSIVE")
        other.delete("small.bin")  # a usage change to write, which fails
        time.sleep(2.5)  # rounds fail meanwhile
        lock.execute("COMMIT")
    finally:
        lock.close()
        database["OPTIONS"]["timeout"] = timeout
    thread.join(60)
    assert result.get("reply", "").startswith("226"), result
    recorded, disk = written_down(account, live.server)
    assert recorded == disk
    big.quit()
    other.quit()
