"""The FTP commands, the login and its refusals, against a real server and ftplib."""

import calendar
import ftplib
import io
import logging
import os
import socket
import stat
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.test import override_settings
from django.utils import timezone

from ftpserver_core.models import FTPUserAccount

from .conftest import PASSWORD

# --- helpers


def real(account, *parts):
    """Return the real path of ``parts`` inside the account's home."""
    return os.path.join(os.path.realpath(account.home_path), *parts)


def put(account, name, data):
    """Write ``data`` to ``name`` in the account's home, behind the server's back."""
    path = real(account, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def content(path):
    with open(path, "rb") as fh:
        return fh.read()


def download(ftp, name, rest=None):
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", out.write, rest=rest)
    return out.getvalue()


def wait_until(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def refused(live, username, password=PASSWORD):
    """Try a login; return the server's reply to PASS (expected a 530)."""
    ftp = live.client()
    try:
        with pytest.raises(ftplib.error_perm) as info:
            ftp.login(username, password)
        ftp.voidcmd("NOOP")  # the connection stays usable after one failure
    finally:
        ftp.close()
    return str(info.value)


# --- listing


def test_list_shows_names_sizes_and_kinds(live_ftp, make_account):
    account = make_account("alice")
    put(account, "a.txt", b"12345")
    put(account, "big.bin", b"x" * 4321)
    os.mkdir(real(account, "sub"))
    ftp = live_ftp.client("alice")
    lines = []
    ftp.retrlines("LIST", lines.append)
    ftp.quit()
    by_name = {line.split()[-1]: line for line in lines}
    assert set(by_name) == {"a.txt", "big.bin", "sub"}
    assert by_name["a.txt"].startswith("-")
    assert by_name["a.txt"].split()[4] == "5"
    assert by_name["big.bin"].split()[4] == "4321"
    assert by_name["sub"].startswith("d")


def test_list_of_a_sub_directory(live_ftp, make_account):
    account = make_account("alice")
    put(account, "sub/inner.txt", b"abc")
    put(account, "top.txt", b"abc")
    ftp = live_ftp.client("alice")
    lines = []
    ftp.retrlines("LIST sub", lines.append)
    ftp.quit()
    assert [line.split()[-1] for line in lines] == ["inner.txt"]


def test_nlst_returns_exactly_the_names(live_ftp, make_account):
    account = make_account("alice")
    for name in ("one.txt", "two.txt", "three.log"):
        put(account, name, b"-")
    os.mkdir(real(account, "dir"))
    ftp = live_ftp.client("alice")
    names = ftp.nlst()
    ftp.quit()
    assert sorted(names) == ["dir", "one.txt", "three.log", "two.txt"]


def test_mlsd_gives_type_and_size_facts(live_ftp, make_account):
    account = make_account("alice")
    put(account, "data.csv", b"a,b\n1,2\n")
    os.mkdir(real(account, "folder"))
    ftp = live_ftp.client("alice")
    entries = dict(ftp.mlsd(facts=["type", "size"]))
    ftp.quit()
    assert entries["data.csv"]["type"] == "file"
    assert entries["data.csv"]["size"] == "8"
    assert entries["folder"]["type"] == "dir"
    assert {k for k in entries if entries[k]["type"] not in ("cdir", "pdir")} == {
        "data.csv",
        "folder",
    }


def test_mlst_describes_one_file(live_ftp, make_account):
    account = make_account("alice")
    put(account, "report.pdf", b"%PDF" + b"0" * 96)
    ftp = live_ftp.client("alice")
    reply = ftp.sendcmd("MLST report.pdf")
    ftp.quit()
    assert reply.startswith("250-")
    fact_line = reply.splitlines()[1]
    facts, _, name = fact_line.strip().partition(" ")
    assert name == "/report.pdf"
    parsed = dict(f.split("=", 1) for f in facts.rstrip(";").split(";"))
    assert parsed["type"] == "file"
    assert parsed["size"] == "100"


# --- transfers


def test_stor_writes_the_exact_bytes(live_ftp, make_account):
    account = make_account("alice")
    data = bytes(range(256)) * 400 + b"\r\n\x00tail"
    ftp = live_ftp.client("alice")
    reply = ftp.storbinary("STOR upload.bin", io.BytesIO(data))
    ftp.quit()
    assert reply.startswith("226")
    assert content(real(account, "upload.bin")) == data


def test_stor_replaces_an_existing_file(live_ftp, make_account):
    account = make_account("alice")
    put(account, "f.txt", b"old content that is longer")
    ftp = live_ftp.client("alice")
    ftp.storbinary("STOR f.txt", io.BytesIO(b"new"))
    ftp.quit()
    assert content(real(account, "f.txt")) == b"new"


def test_retr_returns_the_exact_bytes(live_ftp, make_account):
    account = make_account("alice")
    data = os.urandom(300_000)
    put(account, "sub/blob.bin", data)
    ftp = live_ftp.client("alice")
    got = download(ftp, "sub/blob.bin")
    ftp.quit()
    assert got == data


def test_appe_appends(live_ftp, make_account):
    account = make_account("alice")
    put(account, "log.txt", b"line1\n")
    ftp = live_ftp.client("alice")
    ftp.storbinary("APPE log.txt", io.BytesIO(b"line2\n"))
    ftp.storbinary("APPE new.txt", io.BytesIO(b"created"))
    ftp.quit()
    assert content(real(account, "log.txt")) == b"line1\nline2\n"
    assert content(real(account, "new.txt")) == b"created"


def test_rest_resumes_an_upload(live_ftp, make_account):
    account = make_account("alice")
    put(account, "part.bin", b"A" * 60)
    put(account, "mid.bin", b"A" * 200)
    ftp = live_ftp.client("alice")
    ftp.storbinary("STOR part.bin", io.BytesIO(b"B" * 70), rest=60)
    # Resuming inside a file overwrites from the offset and keeps the rest.
    ftp.storbinary("STOR mid.bin", io.BytesIO(b"B" * 20), rest=50)
    ftp.quit()
    assert content(real(account, "part.bin")) == b"A" * 60 + b"B" * 70
    assert content(real(account, "mid.bin")) == b"A" * 50 + b"B" * 20 + b"A" * 130


def test_rest_beyond_the_end_is_refused(live_ftp, make_account):
    account = make_account("alice")
    put(account, "short.bin", b"12345")
    ftp = live_ftp.client("alice")
    with pytest.raises(ftplib.error_perm, match="^554"):
        download(ftp, "short.bin", rest=10)
    ftp.quit()
    assert content(real(account, "short.bin")) == b"12345"


def test_rest_resumes_a_download(live_ftp, make_account):
    account = make_account("alice")
    data = bytes(range(256)) * 100
    put(account, "file.bin", data)
    ftp = live_ftp.client("alice")
    tail = download(ftp, "file.bin", rest=1000)
    whole = download(ftp, "file.bin")  # REST applies to one transfer only
    ftp.quit()
    assert tail == data[1000:]
    assert whole == data


def test_stou_stores_under_a_unique_name(live_ftp, make_account):
    account = make_account("alice")
    put(account, "report", b"existing")
    ftp = live_ftp.client("alice")
    names = []
    for payload in (b"first", b"second"):
        ftp.voidcmd("TYPE I")
        host, port = ftp.makepasv()
        with socket.create_connection((host, port), timeout=10) as data_sock:
            reply = ftp.sendcmd("STOU report")
            # 125 when the data connection is already up, else 150.
            assert reply[:3] in ("125", "150") and reply[3:10] == " FILE: "
            names.append(reply[10:].strip())
            data_sock.sendall(payload)
        assert ftp.voidresp().startswith("226")
    ftp.quit()
    assert names[0] != names[1]
    assert all(name.startswith("report.") for name in names)
    assert content(real(account, names[0])) == b"first"
    assert content(real(account, names[1])) == b"second"
    assert content(real(account, "report")) == b"existing"


def test_stou_needs_write_permission(live_ftp, make_account):
    account = make_account("reader", permission="elr")
    ftp = live_ftp.client("reader")
    ftp.voidcmd("TYPE I")
    host, port = ftp.makepasv()
    with (
        socket.create_connection((host, port), timeout=10),
        pytest.raises(ftplib.error_perm, match="^550"),
    ):
        ftp.sendcmd("STOU")
    ftp.quit()
    assert os.listdir(real(account)) == []


# --- file information


def test_size(live_ftp, make_account):
    account = make_account("alice")
    put(account, "f.bin", b"z" * 12345)
    ftp = live_ftp.client("alice")
    ftp.voidcmd("TYPE I")
    assert ftp.size("f.bin") == 12345
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.size("missing.bin")
    ftp.quit()


def test_mdtm_reports_the_mtime_in_utc(live_ftp, make_account):
    account = make_account("alice")
    path = put(account, "old.txt", b"x")
    stamp = calendar.timegm((2001, 2, 3, 4, 5, 6, 0, 0, 0))
    os.utime(path, (stamp, stamp))
    ftp = live_ftp.client("alice")
    reply = ftp.sendcmd("MDTM old.txt")
    ftp.quit()
    assert reply == "213 20010203040506"


def test_mfmt_sets_the_mtime_on_disk(live_ftp, make_account):
    account = make_account("alice")
    path = put(account, "f.txt", b"x")
    before = os.stat(path).st_mtime
    ftp = live_ftp.client("alice")
    reply = ftp.sendcmd("MFMT 20200102030405 f.txt")
    ftp.quit()
    assert reply.startswith("213 Modify=20200102030405")
    expected = calendar.timegm((2020, 1, 2, 3, 4, 5, 0, 0, 0))
    assert os.stat(path).st_mtime == expected != before


def test_mfmt_needs_the_T_permission(live_ftp, make_account):  # noqa: N802
    account = make_account("alice", permission="elradfmw")
    path = put(account, "f.txt", b"x")
    before = os.stat(path).st_mtime
    ftp = live_ftp.client("alice")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.sendcmd("MFMT 20200102030405 f.txt")
    ftp.quit()
    assert os.stat(path).st_mtime == before


def test_site_chmod_sets_the_mode_on_disk(live_ftp, make_account):
    account = make_account("alice")
    path = put(account, "script.sh", b"#!/bin/sh\n")
    os.chmod(path, 0o600)
    ftp = live_ftp.client("alice")
    assert ftp.sendcmd("SITE CHMOD 755 script.sh").startswith("200")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    assert ftp.sendcmd("SITE CHMOD 640 script.sh").startswith("200")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    with pytest.raises(ftplib.error_perm, match="^501"):
        ftp.sendcmd("SITE CHMOD 999 script.sh")
    ftp.quit()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


# --- file and directory operations


def test_dele_removes_the_file(live_ftp, make_account):
    account = make_account("alice")
    put(account, "gone.txt", b"x")
    put(account, "kept.txt", b"y")
    ftp = live_ftp.client("alice")
    assert ftp.delete("gone.txt").startswith("250")
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.delete("gone.txt")
    ftp.quit()
    assert sorted(os.listdir(real(account))) == ["kept.txt"]


def test_rnfr_rnto_renames_files_and_directories(live_ftp, make_account):
    account = make_account("alice")
    put(account, "a.txt", b"payload")
    put(account, "dir/inner.txt", b"inner")
    ftp = live_ftp.client("alice")
    assert ftp.rename("a.txt", "b.txt").startswith("250")
    assert ftp.rename("dir", "moved").startswith("250")
    ftp.mkd("target")
    assert ftp.rename("b.txt", "target/c.txt").startswith("250")
    ftp.quit()
    assert not os.path.exists(real(account, "a.txt"))
    assert content(real(account, "target", "c.txt")) == b"payload"
    assert content(real(account, "moved", "inner.txt")) == b"inner"
    assert not os.path.exists(real(account, "dir"))


def test_rnto_without_rnfr_is_a_bad_sequence(live_ftp, make_account):
    make_account("alice")
    ftp = live_ftp.client("alice")
    with pytest.raises(ftplib.error_perm, match="^503"):
        ftp.sendcmd("RNTO x")
    ftp.quit()


def test_mkd_and_rmd(live_ftp, make_account):
    account = make_account("alice")
    ftp = live_ftp.client("alice")
    assert ftp.mkd("newdir") == "/newdir"
    assert ftp.mkd("newdir/deeper") == "/newdir/deeper"
    assert os.path.isdir(real(account, "newdir", "deeper"))
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.mkd("newdir")  # exists already
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.rmd("newdir")  # not empty
    assert ftp.rmd("newdir/deeper").startswith("250")
    assert ftp.rmd("newdir").startswith("250")
    ftp.quit()
    assert os.listdir(real(account)) == []


def test_cwd_pwd_and_cdup_stay_in_the_home(live_ftp, make_account):
    account = make_account("alice")
    os.makedirs(real(account, "a", "b"))
    put(account, "a/b/f.txt", b"deep")
    ftp = live_ftp.client("alice")
    assert ftp.pwd() == "/"
    ftp.cwd("a/b")
    assert ftp.pwd() == "/a/b"
    assert download(ftp, "f.txt") == b"deep"
    ftp.cwd("..")
    assert ftp.pwd() == "/a"
    ftp.cwd("../../..")  # cannot climb above the home
    assert ftp.pwd() == "/"
    assert sorted(ftp.nlst()) == ["a"]
    ftp.quit()


def test_permissions_deny_writes_to_a_read_only_account(live_ftp, make_account):
    account = make_account("reader", permission="elr")
    put(account, "f.txt", b"keep")
    ftp = live_ftp.client("reader")
    assert download(ftp, "f.txt") == b"keep"
    for call in (
        lambda: ftp.storbinary("STOR new.txt", io.BytesIO(b"x")),
        lambda: ftp.storbinary("APPE f.txt", io.BytesIO(b"x")),
        lambda: ftp.delete("f.txt"),
        lambda: ftp.mkd("d"),
        lambda: ftp.rename("f.txt", "g.txt"),
        lambda: ftp.sendcmd("SITE CHMOD 777 f.txt"),
    ):
        with pytest.raises(ftplib.error_perm, match="^550"):
            call()
    ftp.quit()
    assert os.listdir(real(account)) == ["f.txt"]
    assert content(real(account, "f.txt")) == b"keep"


# --- login off the IO loop

GATE = threading.Event()
GATE_ENTERED = threading.Event()


class GatedBackend(ModelBackend):
    """Django's backend, but logins of users named 'gated*' wait for GATE."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username and username.startswith("gated"):
            GATE_ENTERED.set()
            GATE.wait(10)
        return super().authenticate(
            request, username=username, password=password, **kwargs
        )


@override_settings(AUTHENTICATION_BACKENDS=["tests.test_handlers.GatedBackend"])
def test_a_slow_login_does_not_block_other_clients(ftp_server, make_account):
    GATE.clear()
    GATE_ENTERED.clear()
    account = make_account("bob")
    make_account("gated")
    make_account("carol")
    put(account, "f.txt", b"bob's file")
    live = ftp_server(auth_workers=4)
    bob = live.client("bob")
    bob.sock.settimeout(3)

    slow = live.client()
    outcome = []
    thread = threading.Thread(
        target=lambda: outcome.append(slow.login("gated", PASSWORD)), daemon=True
    )
    thread.start()
    try:
        assert GATE_ENTERED.wait(5), "the gated login never reached the backend"
        # The login is stuck in a worker; the loop must still serve everyone.
        assert bob.voidcmd("NOOP").startswith("200")
        assert download(bob, "f.txt") == b"bob's file"
        carol = live.client("carol", timeout=3)
        assert carol.pwd() == "/"
        carol.quit()
        assert thread.is_alive() and outcome == []
    finally:
        GATE.set()
    thread.join(10)
    assert outcome and outcome[0].startswith("230")
    assert slow.pwd() == "/"
    slow.quit()
    bob.quit()


def test_many_concurrent_logins_while_a_session_works(ftp_server, make_account):
    names = [f"user{i}" for i in range(10)]
    for name in names:
        make_account(name)
    watcher = make_account("watcher")
    put(watcher, "w.txt", b"w")
    live = ftp_server(auth_workers=2)
    busy = live.client("watcher")
    results, errors = {}, []
    barrier = threading.Barrier(len(names))

    def login(name):
        try:
            ftp = live.client()
            barrier.wait(5)
            results[name] = ftp.login(name, PASSWORD)
            results[name + ":pwd"] = ftp.pwd()
            ftp.quit()
        except Exception as exc:  # reported below
            errors.append((name, exc))

    threads = [threading.Thread(target=login, args=(n,)) for n in names]
    for t in threads:
        t.start()
    noops = 0
    while any(t.is_alive() for t in threads):
        assert busy.voidcmd("NOOP").startswith("200")
        noops += 1
    for t in threads:
        t.join(10)
    assert download(busy, "w.txt") == b"w"
    busy.quit()
    assert errors == []
    assert all(results[name].startswith("230") for name in names)
    assert all(results[name + ":pwd"] == "/" for name in names)
    assert noops >= 1


def pipelined(live, text, replies):
    """Send ``text`` in one write; return the next ``replies`` reply lines."""
    with socket.create_connection((live.host, live.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220")
        sock.sendall(text.encode())
        return [reader.readline().decode().rstrip("\r\n") for _ in range(replies)]


def test_commands_pipelined_after_pass_wait_for_the_login(live_ftp, make_account):
    make_account("alice")
    replies = pipelined(
        live_ftp, f"USER alice\r\nPASS {PASSWORD}\r\nPWD\r\nNOOP\r\nQUIT\r\n", 5
    )
    assert [r[:3] for r in replies] == ["331", "230", "257", "200", "221"]
    assert replies[2] == '257 "/" is the current directory.'


def test_commands_pipelined_after_a_failed_pass_wait_for_the_verdict(
    live_ftp, make_account
):
    make_account("alice")
    replies = pipelined(
        live_ftp,
        f"USER alice\r\nPASS wrong\r\nPWD\r\n"
        f"USER alice\r\nPASS {PASSWORD}\r\nPWD\r\nQUIT\r\n",
        7,
    )
    assert [r[:3] for r in replies] == ["331", "530", "530", "331", "230", "257", "221"]


def test_a_command_split_across_packets_after_pass(live_ftp, make_account):
    make_account("alice")
    with socket.create_connection((live_ftp.host, live_ftp.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(f"USER alice\r\nPASS {PASSWORD}\r\nPW".encode())
        assert reader.readline().startswith(b"331")
        assert reader.readline().startswith(b"230")
        sock.sendall(b"D\r\n")
        assert reader.readline() == b'257 "/" is the current directory.\r\n'


@override_settings(AUTHENTICATION_BACKENDS=["tests.test_handlers.GatedBackend"])
def test_a_client_gone_during_its_login_holds_no_session(ftp_server, make_account):
    GATE.clear()
    GATE_ENTERED.clear()
    account = make_account("gated", max_sessions=1)
    live = ftp_server()
    authorizer = live.server.handler.authorizer
    ftp = live.client()
    ftp.sendcmd("USER gated")
    ftp.putcmd("PASS " + PASSWORD)
    try:
        assert GATE_ENTERED.wait(5)
        ftp.close()  # gone while the worker checks the password
        time.sleep(0.2)
    finally:
        GATE.set()
    # The login succeeds in the worker (it records the login)...
    wait_until(
        lambda: FTPUserAccount.objects.get(pk=account.pk).last_login_at is not None
    )
    # ...and then the loop releases the session of the vanished client.
    wait_until(lambda: authorizer.session_count(account.pk) == 0)
    again = live.client("gated")  # max_sessions=1 is free again
    again.quit()


@override_settings(AUTHENTICATION_BACKENDS=["tests.test_handlers.GatedBackend"])
def test_a_session_closed_by_the_server_during_its_login_is_released(
    ftp_server, make_account, recorder
):
    GATE.clear()
    GATE_ENTERED.clear()
    account = make_account("gated", max_sessions=1)
    live = ftp_server(timeout=1)
    authorizer = live.server.handler.authorizer
    ftp = live.client()
    ftp.sendcmd("USER gated")
    ftp.putcmd("PASS " + PASSWORD)
    try:
        assert GATE_ENTERED.wait(5)
        # The idle timeout closes the session while the worker is busy.
        assert recorder.wait_for("ftp_client_disconnected")[0]["username"] is None
    finally:
        GATE.set()
    ftp.close()
    wait_until(
        lambda: FTPUserAccount.objects.get(pk=account.pk).last_login_at is not None
    )
    wait_until(lambda: authorizer.session_count(account.pk) == 0)
    assert "ftp_login" not in recorder.names()
    live.client("gated").quit()


# --- session limits


def test_max_sessions_refuses_a_second_session_until_the_first_quits(
    live_ftp, make_account
):
    account = make_account("solo", max_sessions=1)
    authorizer = live_ftp.server.handler.authorizer
    first = live_ftp.client("solo")
    assert authorizer.session_count(account.pk) == 1
    second = live_ftp.client()
    with pytest.raises(ftplib.error_perm, match="^530"):
        second.login("solo", PASSWORD)
    assert first.voidcmd("NOOP").startswith("200")  # the first is untouched
    first.quit()
    wait_until(lambda: authorizer.session_count(account.pk) == 0)
    assert second.login("solo", PASSWORD).startswith("230")
    assert authorizer.session_count(account.pk) == 1
    second.quit()
    wait_until(lambda: authorizer.session_count(account.pk) == 0)


def test_max_sessions_counts_a_dropped_connection_as_closed(live_ftp, make_account):
    account = make_account("solo", max_sessions=1)
    authorizer = live_ftp.server.handler.authorizer
    first = live_ftp.client("solo")
    first.close()  # no QUIT: the connection just drops
    wait_until(lambda: authorizer.session_count(account.pk) == 0)
    second = live_ftp.client("solo")
    second.quit()


def test_max_sessions_two_allows_two(live_ftp, make_account):
    make_account("duo", max_sessions=2)
    a = live_ftp.client("duo")
    b = live_ftp.client("duo")
    assert "530" in refused(live_ftp, "duo")
    a.quit()
    b.quit()


# --- refused logins


def test_wrong_password_is_refused(live_ftp, make_account):
    make_account("alice")
    assert refused(live_ftp, "alice", "not-the-password").startswith("530")


def test_unknown_user_is_refused(live_ftp, make_account):
    assert refused(live_ftp, "nobody").startswith("530")


def test_disabled_account_is_refused(live_ftp, make_account):
    make_account("alice", is_enabled=False)
    assert refused(live_ftp, "alice").startswith("530")


def test_expired_account_is_refused(live_ftp, make_account):
    make_account("alice", expires_at=timezone.now() - timedelta(minutes=1))
    assert refused(live_ftp, "alice").startswith("530")


def test_account_expiring_later_logs_in(live_ftp, make_account):
    make_account("alice", expires_at=timezone.now() + timedelta(days=1))
    live_ftp.client("alice").quit()


def test_inactive_django_user_is_refused(live_ftp, make_account):
    account = make_account("alice")
    account.user.is_active = False
    account.user.save()
    assert refused(live_ftp, "alice").startswith("530")


def test_user_without_ftp_account_is_refused(live_ftp, transactional_db):
    get_user_model().objects.create_user(username="webonly", password=PASSWORD)
    assert refused(live_ftp, "webonly").startswith("530")


def test_client_outside_the_allowed_networks_is_refused(live_ftp, make_account):
    make_account("alice", allowed_networks="10.0.0.0/8 192.168.0.0/16")
    assert refused(live_ftp, "alice").startswith("530")


def test_client_inside_the_allowed_networks_logs_in(live_ftp, make_account):
    make_account("alice", allowed_networks="10.0.0.0/8, 127.0.0.0/8")
    ftp = live_ftp.client("alice")
    assert ftp.pwd() == "/"
    ftp.quit()


def test_commands_need_a_login(live_ftp, make_account):
    account = make_account("alice")
    put(account, "f.txt", b"x")
    ftp = live_ftp.client()
    for cmd in ("PWD", "CWD /", "SIZE f.txt", "DELE f.txt", "MKD d"):
        with pytest.raises(ftplib.error_perm, match="^530"):
            ftp.sendcmd(cmd)
    with pytest.raises(ftplib.error_perm, match="^503"):
        ftp.sendcmd("PASS " + PASSWORD)  # PASS before USER
    ftp.quit()
    assert os.listdir(real(account)) == ["f.txt"]


def test_three_failed_logins_close_the_connection(live_ftp, make_account):
    make_account("alice")
    ftp = live_ftp.client()
    for _ in range(2):
        with pytest.raises(ftplib.error_perm, match="^530"):
            ftp.login("alice", "wrong")
    assert ftp.voidcmd("NOOP").startswith("200")
    with pytest.raises(ftplib.error_perm, match="^530.*Disconnecting"):
        ftp.login("alice", "wrong")
    with pytest.raises((EOFError, OSError)):
        ftp.voidcmd("NOOP")
    ftp.close()


def test_max_login_attempts_option(ftp_server, make_account):
    make_account("alice")
    live = ftp_server(max_login_attempts=1)
    ftp = live.client()
    with pytest.raises(ftplib.error_perm, match="^530.*Disconnecting"):
        ftp.login("alice", "wrong")
    with pytest.raises((EOFError, OSError)):
        ftp.voidcmd("NOOP")
    ftp.close()


def test_a_good_login_after_failures_resets_the_count(live_ftp, make_account):
    make_account("alice")
    ftp = live_ftp.client()
    for _ in range(2):
        with pytest.raises(ftplib.error_perm, match="^530"):
            ftp.login("alice", "wrong")
    assert ftp.login("alice", PASSWORD).startswith("230")
    assert ftp.pwd() == "/"
    ftp.quit()


def test_login_records_last_login_time_and_ip(live_ftp, make_account):
    account = make_account("alice")
    assert account.last_login_at is None and account.last_login_ip is None
    before = timezone.now()
    ftp = live_ftp.client("alice")
    after = timezone.now()
    ftp.quit()
    # Written behind by the state thread, within a round.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        account = FTPUserAccount.objects.get(pk=account.pk)
        if account.last_login_ip:
            break
        time.sleep(0.05)
    assert account.last_login_ip == "127.0.0.1"
    assert before <= account.last_login_at <= after


def test_failed_login_does_not_touch_last_login(live_ftp, make_account):
    account = make_account("alice")
    refused(live_ftp, "alice", "wrong")
    account = FTPUserAccount.objects.get(pk=account.pk)
    assert account.last_login_at is None and account.last_login_ip is None


def test_username_is_case_sensitive(live_ftp, make_account):
    account = make_account("MixedCase")
    put(account, "f.txt", b"mine")
    ftp = live_ftp.client("MixedCase")
    assert download(ftp, "f.txt") == b"mine"
    ftp.quit()
    assert refused(live_ftp, "mixedcase").startswith("530")
    assert refused(live_ftp, "MIXEDCASE").startswith("530")


def test_user_command_switches_account(live_ftp, make_account):
    alice = make_account("alice")
    bob = make_account("bob")
    put(alice, "alice.txt", b"a")
    put(bob, "bob.txt", b"b")
    ftp = live_ftp.client("alice")
    assert ftp.nlst() == ["alice.txt"]
    assert ftp.login("bob", PASSWORD).startswith("230")
    assert ftp.nlst() == ["bob.txt"]
    ftp.quit()


# --- the password stays secret


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_the_password_is_never_logged_signalled_or_kept(
    ftp_server, make_account, recorder
):
    secret = "Pa55-unique-7c1e9d"
    wrong = "Wr0ng-unique-3f8a2b"
    make_account("alice", password=secret)
    capture = ListHandler()
    loggers = [logging.getLogger(name) for name in ("ftpserver_core", "pyftpdlib")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(capture)
    try:
        live = ftp_server()
        ftp = live.client()
        with pytest.raises(ftplib.error_perm, match="^530"):
            ftp.login("alice", wrong)
        ftp.login("alice", secret)
        ftp.storbinary("STOR f.txt", io.BytesIO(b"x"))
        handler = recorder.wait_for("ftp_login")[0]["handler"]
        assert secret not in repr(vars(handler))
        assert handler.password == ""
        ftp.quit()
        recorder.wait_for("ftp_client_disconnected")
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(capture)
            lg.setLevel(level)

    texts = []
    for record in capture.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    joined = "\n".join(texts)
    # The capture worked: it saw the PASS commands, the login and the signals.
    assert "PASS ******" in joined
    assert "alice" in joined
    assert "ftp_login_failed" in joined
    assert secret not in joined
    assert wrong not in joined
    for _name, _sender, kwargs in recorder.events:
        assert secret not in repr(kwargs)
        assert wrong not in repr(kwargs)


@pytest.mark.parametrize("size", [2049, 10_000, 100_000])
def test_an_over_long_command_line_gets_one_reply(live_ftp, make_account, size):
    make_account("alice")
    ftp = live_ftp.client("alice")
    # One over-long line, then a normal command, in one write.
    ftp.sock.sendall(b"NOOP " + b"x" * size + b"\r\nPWD\r\n")
    assert ftp.getline() == "500 Command too long."
    # The next reply is PWD's: the replies are still in step.
    assert ftp.getline().startswith("257 ")
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.quit()


def test_a_line_just_under_the_limit_is_a_command(live_ftp, make_account):
    make_account("alice")
    ftp = live_ftp.client("alice")
    name = "d" * 200
    ftp.sock.sendall(f"SIZE {'x' * 2000}\r\nMKD {name}\r\n".encode())
    # SIZE's own answer (no such file), not "too long".
    assert ftp.getline().startswith("550 ")
    assert ftp.getline().startswith("257 ")
    ftp.quit()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("command", ["PASV", "EPSV"])
def test_a_full_passive_range_is_answered_425(ftp_server, make_account, command):
    make_account("alice")
    port = _free_port()
    live = ftp_server(passive_ports=str(port))
    first, second = live.client("alice"), live.client("alice")
    # The first session holds the range's only port.
    assert first.sendcmd(command)[:3] in ("227", "229")
    with pytest.raises(ftplib.error_temp, match="^425 No free passive port"):
        second.sendcmd(command)
    # The session goes on, and gets the port once it is free.
    assert second.voidcmd("NOOP").startswith("200")
    first.sendcmd("ABOR")
    reply = second.sendcmd(command)
    if command == "PASV":
        assert ftplib.parse227(reply)[1] == port
    else:
        assert ftplib.parse229(reply, ("127.0.0.1", 0))[1] == port
    first.quit()
    second.quit()


def test_the_old_fallback_to_a_kernel_port_is_a_setting(ftp_server, make_account):
    make_account("alice")
    port = _free_port()
    live = ftp_server(passive_ports=str(port), passive_ports_fallback=True)
    first, second = live.client("alice"), live.client("alice")
    first.sendcmd("EPSV")
    reply = second.sendcmd("EPSV")
    assert reply.startswith("229") and f"|{port}|" not in reply
    first.quit()
    second.quit()


def test_a_control_character_in_user_is_501_and_no_login_attempt(
    live_ftp, make_account, recorder
):
    make_account("alice")
    ftp = live_ftp.client()
    for name in ("al\0ice", "al\tice", "al\x1bice"):
        with pytest.raises(ftplib.error_perm, match="^501 User name contains"):
            ftp.sendcmd(f"USER {name}")
    # No PASS is expected after a refused USER.
    with pytest.raises(ftplib.error_perm, match="^503"):
        ftp.sendcmd("PASS x")
    ftp.login("alice", PASSWORD)
    ftp.quit()
    recorder.wait_for("ftp_client_disconnected")
    assert "ftp_login_failed" not in recorder.names()


def test_names_of_the_servers_temporary_files_are_refused(live_ftp, make_account):
    """Hidden from listings and from ftpquotascan, and taken by recovery for
    an upload's leftover: no client may create one."""
    account = make_account("alice")
    put(account, "f.txt", b"x")
    ftp = live_ftp.client("alice")
    for command in (
        lambda: ftp.storbinary("STOR .ftpupload-1234-x", io.BytesIO(b"x")),
        lambda: ftp.storbinary("APPE sub/.ftpupload-x", io.BytesIO(b"x")),
        lambda: ftp.mkd(".ftpupload-dir"),
        lambda: ftp.rename("f.txt", ".ftpupload-f.txt"),
    ):
        with pytest.raises(ftplib.error_perm, match="^553 .*reserved"):
            command()
    assert sorted(os.listdir(account.home_path)) == ["f.txt"]
    ftp.quit()
