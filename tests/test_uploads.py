"""Uploads: FTPSERVER_UPLOAD_MODE "atomic" (the default) and "direct".

Real servers (in this process, or ``ftpserver`` processes for the crashes)
and real clients: ftplib on raw data connections (to hold an upload open
half way, abort it or reset it), curl and lftp.

- atomic: an upload is written to ``.ftpupload-<token>-<name>`` next to its
  target and renamed once whole; nobody sees it before (os.path, LIST, NLST,
  MLSD); a failed fresh upload leaves nothing, a failed resumed one (REST +
  STOR, APPE) puts the file back with what was appended.
- direct: written in place, as classic FTP servers do.
- a crash (SIGKILL) mid-upload: the next server on the same database and
  journal removes the temporary file and records ``upload_incomplete``
  (``server_crashed``) with the bytes that had reached the disk.
"""

import ftplib
import io
import os
import signal
import subprocess

import pytest

from ftpserver_core.models import AuditEvent
from tests.transfer_tools import payload, read, write

from .audit_tools import wait_until
from .conftest import PASSWORD
from .faults import reply_of, reset, server_env, start_server

CURL = "/usr/bin/curl"
LFTP = "/usr/bin/lftp"
LFTP_SETTINGS = (
    "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; "
    "set net:reconnect-interval-base 1; set xfer:clobber yes; "
    "set ftp:ssl-allow no; "
)
TEMP_PREFIX = ".ftpupload-"
MODES = ("atomic", "direct")
FAILURES = ("abor", "rst", "control_dropped")


# --- helpers


@pytest.fixture
def live_ftp(ftp_server):
    """A server in atomic mode (the default is direct: see test_the_default)."""
    return ftp_server(upload_mode="atomic")


def test_the_default_upload_mode_is_direct(ftp_server):
    assert ftp_server().options.upload_mode == "direct"


def temps(directory):
    """Names of the atomic uploads' temporary files in ``directory``."""
    return sorted(n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX))


def size_of(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return -1


def wait_for(predicate, describe, timeout=10):
    """wait_until(), with ``describe()`` (the state at the time) on failure."""
    try:
        return wait_until(predicate, timeout=timeout)
    except AssertionError:
        raise AssertionError(describe()) from None


def wait_for_temp(directory, size, timeout=10):
    """Wait until one temporary file of ``size`` bytes is in ``directory``;
    return its path (the bytes sent so far reached the disk)."""

    def found():
        names = temps(directory)
        if len(names) == 1 and size_of(os.path.join(directory, names[0])) == size:
            return os.path.join(directory, names[0])
        return None

    return wait_for(
        found,
        lambda: (
            f"no temporary file of {size} bytes in {directory}: "
            f"{[(n, size_of(os.path.join(directory, n))) for n in os.listdir(directory)]}"
        ),
        timeout,
    )


def wait_for_size(path, size, timeout=10):
    wait_for(
        lambda: size_of(path) == size,
        lambda: f"{path} never reached {size} bytes (is {size_of(path)})",
        timeout,
    )


def wait_no_temps(directory, timeout=10):
    wait_for(
        lambda: temps(directory) == [],
        lambda: f"temporary files left in {directory}: {temps(directory)}",
        timeout,
    )


def login(live):
    """An ftplib client logged in as alice, in binary mode (SIZE needs it)."""
    ftp = live.client("alice")
    ftp.voidcmd("TYPE I")
    return ftp


def open_upload(ftp, command, rest=None):
    """Send ``command`` (binary) and return its data connection, left open."""
    ftp.voidcmd("TYPE I")
    return ftp.transfercmd(command, rest=rest)


def listing_names(ftp):
    """Every name LIST, NLST and MLSD show for the current directory."""
    lines = []
    ftp.retrlines("LIST", lines.append)
    listed = [line.split(None, 8)[-1] for line in lines]
    nlst = [os.path.basename(n) for n in ftp.nlst()]
    mlsd = [name for name, _ in ftp.mlsd() if name not in (".", "..")]
    ftp.voidcmd("TYPE I")  # retrlines() left it in ASCII
    return {"LIST": sorted(listed), "NLST": sorted(nlst), "MLSD": sorted(mlsd)}


def fail_upload(how, ftp, conn):
    """End an upload in progress abnormally; return the control replies seen."""
    if how == "abor":
        ftp.putcmd("ABOR")
        replies = [reply_of(ftp.getresp), reply_of(ftp.getresp)]
        conn.close()
        return replies
    if how == "rst":
        reset(conn)
        return [reply_of(ftp.getresp)]
    if how == "control_dropped":
        # The client goes away: its control connection closes, the data
        # connection is left open (the server must end it).
        ftp.close()
        return []
    raise AssertionError(how)


def close_quietly(*things):
    for thing in things:
        try:
            thing.close()
        except OSError:
            pass


def curl(*args, timeout=60):
    return subprocess.run(
        [CURL, "--silent", "--show-error", "--max-time", "30", *args],
        capture_output=True,
        timeout=timeout,
    )


def lftp(port, script):
    return subprocess.run(
        [
            LFTP,
            "-u",
            f"alice,{PASSWORD}",
            "-p",
            str(port),
            "-e",
            LFTP_SETTINGS + script + "; bye",
            "127.0.0.1",
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


# --- atomic: nobody sees an upload before it is whole


def test_atomic_upload_is_invisible_until_complete(live_ftp, make_account, recorder):
    account = make_account("alice")
    home = account.home_path
    write(os.path.join(home, "keep.txt"), b"keep")
    assert live_ftp.options.upload_mode == "atomic"
    data = payload(300_000, seed=1)
    target = os.path.join(home, "up.bin")

    ftp = login(live_ftp)
    other = login(live_ftp)
    conn = open_upload(ftp, "STOR up.bin")
    try:
        conn.sendall(data[:100_000])
        temp = wait_for_temp(home, 100_000)
        # Same directory, hidden name, the target's name at its end.
        assert os.path.dirname(temp) == home
        assert os.path.basename(temp).startswith(TEMP_PREFIX)
        assert os.path.basename(temp).endswith("-up.bin")
        assert not os.path.lexists(target)
        names = listing_names(other)
        assert names == {k: ["keep.txt"] for k in ("LIST", "NLST", "MLSD")}, names
        # Neither can another session open it by the target's name.
        with pytest.raises(
            ftplib.error_perm, match=r"^550 .*up\.bin is not retrievable"
        ):
            other.size("up.bin")
        conn.sendall(data[100_000:])
    finally:
        conn.close()
    assert ftp.voidresp().startswith("226")
    assert read(target) == data
    assert temps(home) == []
    assert listing_names(other)["NLST"] == ["keep.txt", "up.bin"]
    (received,) = recorder.wait_for("ftp_file_received")
    assert received["size"] == len(data)
    assert received["ftp_path"] == "/up.bin"
    ftp.quit()
    other.quit()


def test_atomic_upload_in_a_subdirectory(live_ftp, make_account):
    account = make_account("alice")
    sub = os.path.join(account.home_path, "sub dir")
    os.makedirs(sub)
    ftp = login(live_ftp)
    conn = open_upload(ftp, "STOR sub dir/up.bin")
    try:
        conn.sendall(b"x" * 10_000)
        wait_for_temp(sub, 10_000)
        assert temps(account.home_path) == []  # next to its target
    finally:
        conn.close()
    assert ftp.voidresp().startswith("226")
    assert read(os.path.join(sub, "up.bin")) == b"x" * 10_000
    assert temps(sub) == []
    ftp.quit()


def test_atomic_overwrite_keeps_the_old_content_until_complete(
    live_ftp, make_account, recorder
):
    account = make_account("alice")
    target = os.path.join(account.home_path, "f.bin")
    old = payload(50_000, seed=2)
    new = payload(200_000, seed=3)
    write(target, old)
    ftp = login(live_ftp)
    other = login(live_ftp)
    conn = open_upload(ftp, "STOR f.bin")
    try:
        conn.sendall(new[:120_000])
        wait_for_temp(account.home_path, 120_000)
        assert read(target) == old
        assert other.size("f.bin") == len(old)
        downloaded = io.BytesIO()
        other.retrbinary("RETR f.bin", downloaded.write)
        assert downloaded.getvalue() == old
        conn.sendall(new[120_000:])
    finally:
        conn.close()
    assert ftp.voidresp().startswith("226")
    assert read(target) == new
    assert temps(account.home_path) == []
    assert other.size("f.bin") == len(new)
    (received,) = recorder.wait_for("ftp_file_received")
    assert received["size"] == len(new)
    ftp.quit()
    other.quit()


# --- atomic: a failed upload


@pytest.mark.parametrize("how", FAILURES)
def test_atomic_failed_fresh_upload_leaves_nothing(
    live_ftp, make_account, recorder, how
):
    account = make_account("alice")
    home = account.home_path
    target = os.path.join(home, "up.bin")
    ftp = login(live_ftp)
    conn = open_upload(ftp, "STOR up.bin")
    try:
        conn.sendall(payload(80_000, seed=4))
        wait_for_temp(home, 80_000)
        replies = fail_upload(how, ftp, conn)
        (incomplete,) = recorder.wait_for("ftp_file_received_incomplete", timeout=10)
    finally:
        close_quietly(conn, ftp)
    if how == "abor":
        assert replies[0].startswith("426"), replies
        assert replies[1].startswith("226"), replies
    elif how == "rst":
        assert replies[0].startswith("426"), replies
    assert incomplete["size"] == 80_000
    assert incomplete["reason"] == ("connection_lost" if how == "rst" else "aborted")
    assert "ftp_file_received" not in recorder.names()
    wait_no_temps(home)
    assert not os.path.lexists(target)
    assert os.listdir(home) == []


@pytest.mark.parametrize("how", FAILURES)
@pytest.mark.parametrize("command", ["REST+STOR", "APPE"])
def test_atomic_failed_resumed_upload_keeps_the_file_in_place(
    live_ftp, make_account, recorder, command, how
):
    """A resumed upload writes in place, in atomic mode too: the file was
    visible before, and what reached it stays for the next resume."""
    account = make_account("alice")
    home = account.home_path
    target = os.path.join(home, "r.bin")
    original = payload(30_000, seed=5)
    more = payload(70_000, seed=6)
    write(target, original)
    ftp = login(live_ftp)
    if command == "APPE":
        conn = open_upload(ftp, "APPE r.bin")
    else:
        conn = open_upload(ftp, "STOR r.bin", rest=len(original))
    try:
        conn.sendall(more[:40_000])
        wait_for_size(target, len(original) + 40_000)
        assert temps(home) == []
        replies = fail_upload(how, ftp, conn)
        (incomplete,) = recorder.wait_for("ftp_file_received_incomplete", timeout=10)
    finally:
        close_quietly(conn, ftp)
    if how != "control_dropped":
        assert replies[0].startswith("426"), replies
    wait_no_temps(home)
    # Under its name, with what had been appended: the client resumes from
    # there.
    assert read(target) == original + more[:40_000]
    assert incomplete["size"] == 40_000
    assert os.listdir(home) == ["r.bin"]

    # ... and it does.
    ftp = login(live_ftp)
    assert ftp.size("r.bin") == 70_000
    ftp.storbinary("STOR r.bin", io.BytesIO(more[40_000:]), rest=70_000)
    assert read(target) == original + more
    ftp.quit()


# --- resuming


@pytest.mark.parametrize("mode", MODES)
def test_rest_stor_resumes(ftp_server, make_account, recorder, mode):
    account = make_account("alice")
    target = os.path.join(account.home_path, "r.bin")
    data = payload(250_000, seed=7)
    write(target, data[:100_000])
    live = ftp_server(upload_mode=mode)
    ftp = login(live)
    reply = ftp.storbinary("STOR r.bin", io.BytesIO(data[100_000:]), rest=100_000)
    assert reply.startswith("226"), reply
    assert read(target) == data
    (received,) = recorder.wait_for("ftp_file_received")
    assert received["size"] == 150_000
    assert temps(account.home_path) == []
    ftp.quit()


@pytest.mark.parametrize("mode", MODES)
def test_rest_stor_inside_the_file_overwrites_from_there(
    ftp_server, make_account, mode
):
    account = make_account("alice")
    target = os.path.join(account.home_path, "r.bin")
    write(target, b"a" * 100)
    live = ftp_server(upload_mode=mode)
    ftp = login(live)
    ftp.storbinary("STOR r.bin", io.BytesIO(b"b" * 10), rest=40)
    assert read(target) == b"a" * 40 + b"b" * 10 + b"a" * 50
    ftp.quit()


@pytest.mark.parametrize("mode", MODES)
def test_appe_appends_and_creates(ftp_server, make_account, recorder, mode):
    account = make_account("alice")
    home = account.home_path
    write(os.path.join(home, "a.bin"), b"first-")
    live = ftp_server(upload_mode=mode)
    ftp = login(live)
    assert ftp.storbinary("APPE a.bin", io.BytesIO(b"second")).startswith("226")
    assert read(os.path.join(home, "a.bin")) == b"first-second"
    # APPE of a file that does not exist creates it.
    assert ftp.storbinary("APPE new.bin", io.BytesIO(b"fresh")).startswith("226")
    assert read(os.path.join(home, "new.bin")) == b"fresh"
    sizes = [r["size"] for r in recorder.wait_for("ftp_file_received", count=2)]
    assert sizes == [6, 5]
    assert temps(home) == []
    ftp.quit()


@pytest.mark.parametrize("mode", MODES)
def test_curl_resumes_and_appends(ftp_server, make_account, tmp_path, recorder, mode):
    account = make_account("alice")
    home = account.home_path
    live = ftp_server(upload_mode=mode)
    url = f"ftp://127.0.0.1:{live.port}/"
    auth = ["-u", f"alice:{PASSWORD}"]
    data = payload(300_000, seed=8)
    local = tmp_path / "local.bin"
    local.write_bytes(data)

    write(os.path.join(home, "c.bin"), data[:111_111])
    done = curl(*auth, "-C", "-", "-T", str(local), url + "c.bin")
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(home, "c.bin")) == data
    (received,) = recorder.wait_for("ftp_file_received")
    assert received["size"] == len(data) - 111_111

    recorder.clear()
    extra = tmp_path / "extra.bin"
    extra.write_bytes(b"appended by curl")
    done = curl(*auth, "--append", "-T", str(extra), url + "c.bin")
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(home, "c.bin")) == data + b"appended by curl"
    (received,) = recorder.wait_for("ftp_file_received")
    assert received["size"] == len(b"appended by curl")
    assert temps(home) == []


@pytest.mark.parametrize("mode", MODES)
def test_lftp_put_continue(ftp_server, make_account, tmp_path, recorder, mode):
    account = make_account("alice")
    home = account.home_path
    live = ftp_server(upload_mode=mode)
    data = payload(400_000, seed=9)
    local = tmp_path / "local.bin"
    local.write_bytes(data)
    write(os.path.join(home, "l.bin"), data[:150_000])
    done = lftp(live.port, f"put -c {local} -o l.bin")
    assert done.returncode == 0, done.stderr
    assert read(os.path.join(home, "l.bin")) == data
    (received,) = recorder.wait_for("ftp_file_received")
    assert received["size"] == len(data) - 150_000  # only the rest was sent
    assert temps(home) == []


# --- refused uploads


@pytest.mark.parametrize("mode", MODES)
def test_rest_beyond_the_file_size_is_554(ftp_server, make_account, recorder, mode):
    account = make_account("alice")
    home = account.home_path
    write(os.path.join(home, "s.bin"), b"x" * 100)
    live = ftp_server(upload_mode=mode)
    ftp = login(live)
    with pytest.raises(ftplib.error_perm, match="^554"):
        ftp.storbinary("STOR s.bin", io.BytesIO(b"y"), rest=101)
    # A file that does not exist has no byte to resume from.
    with pytest.raises(ftplib.error_perm, match="^554"):
        ftp.storbinary("STOR none.bin", io.BytesIO(b"y"), rest=5)
    assert read(os.path.join(home, "s.bin")) == b"x" * 100
    assert sorted(os.listdir(home)) == ["s.bin"]
    # The session goes on, and REST does not stick to the next STOR.
    assert ftp.storbinary("STOR s.bin", io.BytesIO(b"z")).startswith("226")
    assert read(os.path.join(home, "s.bin")) == b"z"
    names = recorder.names()
    assert names.count("ftp_file_received") == 1
    assert "ftp_file_received_incomplete" not in names
    ftp.quit()


@pytest.mark.parametrize("mode", MODES)
def test_stor_onto_a_directory_is_550(ftp_server, make_account, recorder, mode):
    account = make_account("alice")
    home = account.home_path
    os.makedirs(os.path.join(home, "d"))
    live = ftp_server(upload_mode=mode)
    ftp = login(live)
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.storbinary("STOR d", io.BytesIO(b"data"))
    assert os.path.isdir(os.path.join(home, "d"))
    assert os.listdir(os.path.join(home, "d")) == []
    assert os.listdir(home) == ["d"]
    assert ftp.voidcmd("NOOP").startswith("200")
    assert not [n for n in recorder.names() if n.startswith("ftp_file_received")]
    ftp.quit()


@pytest.mark.parametrize("mode", MODES)
def test_stor_without_write_permission_is_550(ftp_server, make_account, mode):
    account = make_account("alice", permission="elr")
    home = account.home_path
    write(os.path.join(home, "ro.bin"), b"read only")
    live = ftp_server(upload_mode=mode)
    ftp = login(live)
    for command in ("STOR new.bin", "STOR ro.bin", "APPE ro.bin"):
        with pytest.raises(ftplib.error_perm, match="^550"):
            ftp.storbinary(command, io.BytesIO(b"data"))
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.storbinary("STOR ro.bin", io.BytesIO(b"data"), rest=3)
    assert os.listdir(home) == ["ro.bin"]
    assert read(os.path.join(home, "ro.bin")) == b"read only"
    ftp.quit()


# --- direct mode


def test_direct_upload_is_visible_while_in_progress(ftp_server, make_account):
    account = make_account("alice")
    home = account.home_path
    target = os.path.join(home, "d.bin")
    live = ftp_server(upload_mode="direct")
    data = payload(200_000, seed=10)
    ftp = login(live)
    other = login(live)
    conn = open_upload(ftp, "STOR d.bin")
    try:
        conn.sendall(data[:64_000])
        wait_for_size(target, 64_000)
        assert read(target) == data[:64_000]
        assert temps(home) == []
        assert listing_names(other)["NLST"] == ["d.bin"]
        assert other.size("d.bin") == 64_000
        conn.sendall(data[64_000:])
    finally:
        conn.close()
    assert ftp.voidresp().startswith("226")
    assert read(target) == data
    ftp.quit()
    other.quit()


@pytest.mark.parametrize("how", FAILURES)
def test_direct_failed_upload_leaves_the_partial_file(
    ftp_server, make_account, recorder, how
):
    account = make_account("alice")
    home = account.home_path
    target = os.path.join(home, "d.bin")
    live = ftp_server(upload_mode="direct")
    data = payload(90_000, seed=11)
    ftp = login(live)
    conn = open_upload(ftp, "STOR d.bin")
    try:
        conn.sendall(data)
        wait_for_size(target, len(data))
        fail_upload(how, ftp, conn)
        (incomplete,) = recorder.wait_for("ftp_file_received_incomplete", timeout=10)
    finally:
        close_quietly(conn, ftp)
    assert read(target) == data
    assert incomplete["size"] == len(data)
    assert temps(home) == []


# --- a crash mid-upload (server processes)


@pytest.fixture
def crash_servers(tmp_path):
    """Start ``ftpserver`` processes on the test database and one journal."""
    journal = tmp_path / "journal"
    started = []

    def start(mode, name):
        env = server_env(audit_journal_dir=journal, upload_mode=mode)
        server = start_server(tmp_path / name, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def upload_in_progress(server, command, data, sent, rest=None):
    """Open an upload on ``server`` and send ``data[:sent]``; return the
    control client and the data connection, both left open."""
    ftp = server.client("alice")
    conn = open_upload(ftp, command, rest=rest)
    conn.sendall(data[:sent])
    return ftp, conn


def sigkill(server, *clients):
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    close_quietly(*clients)


def crashed_record(ftp_path, timeout=30):
    return wait_until(
        lambda: AuditEvent.objects.filter(
            event="upload_incomplete", reason="server_crashed", ftp_path=ftp_path
        ).first(),
        timeout=timeout,
        message=f"no upload_incomplete/server_crashed record for {ftp_path}",
    )


def test_crash_atomic_upload_temp_removed_and_recorded(crash_servers, make_account):
    account = make_account("alice")
    home = account.home_path
    first = crash_servers("atomic", "first")
    data = payload(300_000, seed=12)
    ftp, conn = upload_in_progress(first, "STOR crash.bin", data, 123_456)
    temp = wait_for_temp(home, 123_456)
    sigkill(first, conn, ftp)
    assert os.path.exists(temp)  # a crash leaves it
    assert not os.path.lexists(os.path.join(home, "crash.bin"))
    assert not AuditEvent.objects.filter(event="upload_incomplete").exists()

    crash_servers("atomic", "second")
    record = crashed_record("/crash.bin")
    assert record.success is False
    assert record.size == 123_456
    assert record.username == "alice"
    assert record.path == os.path.join(home, "crash.bin")
    assert record.sha256 == ""
    wait_no_temps(home)
    assert os.listdir(home) == []
    assert AuditEvent.objects.filter(event="upload_incomplete").count() == 1
    assert not AuditEvent.objects.filter(event="upload").exists()


def test_crash_direct_upload_partial_file_stays_and_is_recorded(
    crash_servers, make_account
):
    account = make_account("alice")
    home = account.home_path
    target = os.path.join(home, "crash.bin")
    first = crash_servers("direct", "first")
    data = payload(300_000, seed=13)
    ftp, conn = upload_in_progress(first, "STOR crash.bin", data, 98_765)
    wait_for_size(target, 98_765)
    sigkill(first, conn, ftp)

    crash_servers("direct", "second")
    record = crashed_record("/crash.bin")
    assert record.success is False
    assert record.size == os.path.getsize(target) == 98_765
    assert read(target) == data[:98_765]
    assert temps(home) == []


@pytest.mark.parametrize("command", ["REST+STOR", "APPE"])
def test_crash_atomic_resumed_upload_keeps_the_file_in_place(
    crash_servers, make_account, command
):
    account = make_account("alice")
    home = account.home_path
    target = os.path.join(home, "r.bin")
    original = payload(20_000, seed=14)
    more = payload(100_000, seed=15)
    write(target, original)
    first = crash_servers("atomic", "first")
    if command == "APPE":
        ftp, conn = upload_in_progress(first, "APPE r.bin", more, 50_000)
    else:
        ftp, conn = upload_in_progress(
            first, "STOR r.bin", more, 50_000, rest=len(original)
        )
    wait_for_size(target, len(original) + 50_000)
    assert temps(home) == []
    sigkill(first, conn, ftp)

    crash_servers("atomic", "second")
    record = crashed_record("/r.bin")
    assert record.success is False
    assert read(target) == original + more[:50_000]
    assert temps(home) == []
    # The bytes this upload wrote, as a live failure records them (not the
    # size of the whole file).
    assert record.size == 50_000


def test_crash_atomic_appe_of_a_new_file_leaves_nothing(crash_servers, make_account):
    """APPE of a file that does not exist is a fresh upload: after a crash,
    as after a live failure, neither the target nor a temporary file stays."""
    account = make_account("alice")
    home = account.home_path
    first = crash_servers("atomic", "first")
    data = payload(100_000, seed=16)
    ftp, conn = upload_in_progress(first, "APPE new.bin", data, 60_000)
    wait_for_temp(home, 60_000)
    sigkill(first, conn, ftp)

    crash_servers("atomic", "second")
    record = crashed_record("/new.bin")
    assert record.size == 60_000
    wait_no_temps(home)
    assert os.listdir(home) == []


# --- concurrent uploads to one file


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_appe_loses_no_acknowledged_upload(
    ftp_server, make_account, recorder, mode
):
    """Two sessions append to one file (a log, say): both get 226, so both
    appends must be in the file, and so must what it held before."""
    account = make_account("alice")
    home = account.home_path
    target = os.path.join(home, "log.txt")
    original = b"".join(b"line %d\n" % i for i in range(1000))
    first = b"".join(b"first %d\n" % i for i in range(2000))
    second = b"second appended while the first was in progress\n"
    write(target, original)
    live = ftp_server(upload_mode=mode)
    slow, quick = login(live), login(live)
    conn = open_upload(slow, "APPE log.txt")
    try:
        conn.sendall(first[:5000])
        # Appends write in place in both modes.
        wait_for_size(target, len(original) + 5000)
        assert quick.storbinary("APPE log.txt", io.BytesIO(second)).startswith("226")
        conn.sendall(first[5000:])
    finally:
        conn.close()
    assert slow.voidresp().startswith("226")
    assert len(recorder.wait_for("ftp_file_received", count=2)) == 2
    final = read(target)
    assert final.startswith(original), final[:200]
    assert second in final
    assert final.replace(second, b"") == original + first
    slow.quit()
    quick.quit()


# --- guard(), hold(): what a DELE, RNTO or atomic replace acts on under a quota


def test_guard_yields_the_file_it_holds_and_refuses_a_held_one(tmp_path):
    from ftpserver_core.uploads import FileBusy, guard

    path = tmp_path / "f"
    path.write_bytes(b"x")
    st = path.stat()
    with guard(path) as seen:
        assert seen == (st.st_dev, st.st_ino)
        with pytest.raises(FileBusy), guard(path):
            pass  # a second holder (an upload's lock is the same flock)
    with guard(tmp_path / "missing") as seen:
        assert seen is None


def test_a_file_appearing_unheld_is_not_measured(tmp_path):
    """Found missing by the guard, then created (an upload of another
    session, which writes on): measured then, its removal would free less
    than the upload counts in the end (the #2066 churn drifted by +100 to
    +74,196 bytes on --workers 2)."""
    from ftpserver_core.quotas import AccountQuota, SessionQuota
    from ftpserver_core.uploads import AGAIN, guard, hold

    account = AccountQuota(1, (None, None))
    quota = SessionQuota(tracker=None, account=account, max_upload_size=None)
    path = tmp_path / "f"
    with guard(path) as seen:
        path.write_bytes(b"x" * 100)  # appeared after the guard looked
        assert quota.measure(path, seen=seen) is AGAIN
    with guard(path) as seen:  # the next try holds it
        assert quota.measure(path, seen=seen)[:2] == (100, 1)
    tries = []
    assert hold(path, lambda seen: tries.append(seen) or len(tries)) == 1
    # Appearing at every try: refused (450), never acted on unheld.
    with pytest.raises(Exception, match="another session"):
        hold(tmp_path / "g", lambda seen: AGAIN)
