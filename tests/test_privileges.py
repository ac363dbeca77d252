"""``ftpserver --user/--group``: a server started as root becomes an unprivileged
user once its port is bound, for good, in every process it runs.

The servers are real processes started as root (this suite runs as root in
CI); they really become ``nobody``, and /proc says what they are. Tests that
need root skip, saying so, when the suite runs as another user.
"""

# The fixtures of test_commands are imported, and named as parameters.
# ruff: noqa: F811

import ftplib
import grp
import io
import os
import pwd
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.db import connection

from ftpserver_core import privileges
from ftpserver_core.audit import journal as journals

from .audit_tools import abandon, uids_in_database, wait_until
from .certs import make_certificate
from .conftest import PASSWORD
from .processes import REPO_ROOT, ServerProcess, command_env
from .test_commands import (  # noqa: F401  (fixtures)
    banner_lines,
    ftpserver_cmd,
    run_ftpserver,
    settings_module,
)
from .test_prefork import children

TARGET = "nobody"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="dropping privileges needs a server started as root; the suite runs "
    f"as uid {os.geteuid()}",
)


def _has_user(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def target():
    """The user the servers drop to."""
    if not _has_user(TARGET):
        pytest.skip(f"no user {TARGET!r} on this system to drop privileges to")
    return privileges.identity(TARGET)


@pytest.fixture
def shared_dir(target):
    """A directory ``target`` can reach and write (pytest's tmp_path is root's
    alone): homes and the audit journal go here. Tests list it before the
    fixtures that start servers, so that it is removed after they stopped."""
    path = Path(tempfile.mkdtemp(prefix="ftpsuite-privileges-"))
    path.chmod(0o755)
    os.chown(path, target.uid, target.gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def database_of(transactional_db, target):
    """The test database, writable by ``target`` while the test runs (SQLite:
    the file is given to it, then back)."""
    if connection.vendor != "sqlite":
        yield None
        return
    path = connection.settings_dict["NAME"]
    before = os.stat(path)
    os.chown(path, target.uid, target.gid)
    try:
        yield path
    finally:
        os.chown(path, before.st_uid, before.st_gid)


def server_env(tmp_path, journal, **values):
    """The subprocess environment: tests.settings with the journal in ``journal``."""
    env = command_env(
        settings_module(tmp_path, FTPSERVER_AUDIT_JOURNAL_DIR=str(journal), **values)
    )
    env["DJANGO_SETTINGS_MODULE"] = "cmd_settings"
    return env


def proc_status(pid, task=None):
    """The ids and capabilities of a process (or one of its threads), from /proc."""
    path = f"/proc/{pid}/task/{task}/status" if task else f"/proc/{pid}/status"
    with open(path) as fh:
        fields = dict(line.split(":", 1) for line in fh if ":" in line)
    return {
        "uid": [int(v) for v in fields["Uid"].split()],
        "gid": [int(v) for v in fields["Gid"].split()],
        "groups": sorted(int(v) for v in fields["Groups"].split()),
        "cap_prm": int(fields["CapPrm"], 16),
        "cap_eff": int(fields["CapEff"], 16),
    }


def assert_runs_as(pid, identity):
    """Every thread of ``pid`` runs as ``identity``: real, effective, saved and
    filesystem ids, its own groups only, no capability left to get root back."""
    for task in os.listdir(f"/proc/{pid}/task"):
        status = proc_status(pid, task)
        assert status["uid"] == [identity.uid] * 4, (task, status)
        assert status["gid"] == [identity.gid] * 4, (task, status)
        assert set(status["groups"]) <= identity.groups, (task, status)
        assert 0 not in status["groups"], (task, status)
        assert status["cap_prm"] == status["cap_eff"] == 0, (task, status)


def others_can_read(path):
    """True when any user can read ``path`` (and get to it)."""
    path = Path(path).resolve()
    if not path.stat().st_mode & 0o004:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in [path, *path.parents])


def give(path, identity):
    for item in [path, *path.parents]:
        if item == Path(tempfile.gettempdir()):
            break
        os.chown(item, identity.uid, identity.gid)


def upload_and_download(server, name, payload):
    ftp = server.client("alice")
    ftp.storbinary(f"STOR {name}", io.BytesIO(payload))
    ftp.mkd(f"dir-{name}")
    data = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", data.write)
    ftp.quit()
    assert data.getvalue() == payload


# --- dropping for real


@needs_root
def test_the_server_drops_to_the_user_once_bound_and_serves_as_it(
    shared_dir, database_of, ftpserver_cmd, make_account, target, tmp_path
):
    account = make_account("alice", home=str(shared_dir / "homes" / "{username}"))
    give(Path(account.home_path), target)
    journal = shared_dir / "journal"  # created by the server, as root
    server = ftpserver_cmd(
        "127.0.0.1:0", "--user", TARGET, env=server_env(tmp_path, journal)
    )
    assert f"Running as: {target}" in banner_lines(server)
    assert "runs as root" not in server.stderr
    assert_runs_as(server.pid, target)
    # Python under /root (pyenv) is said to be out of the user's reach.
    stdlib = os.path.dirname(os.__file__)
    warning = f"Warning: the user '{TARGET}' cannot read {stdlib!r}: a Python module"
    assert (warning in server.stderr) is not others_can_read(stdlib)

    upload_and_download(server, "up.bin", b"\x00dropped\xff" * 1000)
    home = Path(account.home_path)
    for made in (home / "up.bin", home / "dir-up.bin"):
        assert (made.stat().st_uid, made.stat().st_gid) == (target.uid, target.gid)
    # The journal was made for the user; its records reach the database, which
    # the server writes as that user.
    assert (journal.stat().st_uid, journal.stat().st_mode & 0o777) == (
        target.uid,
        0o700,
    )
    for path in journal.iterdir():
        assert path.stat().st_uid == target.uid, path
    from ftpserver_core.models import AuditEvent

    wait_until(lambda: AuditEvent.objects.filter(event="upload").exists())
    assert server.stop() == 0
    assert "FTP server stopped." in server.stdout
    assert "Traceback" not in server.stderr


@needs_root
def test_every_prefork_process_drops_before_serving(
    shared_dir, database_of, ftpserver_cmd, make_account, target, tmp_path
):
    account = make_account("alice", home=str(shared_dir / "homes" / "{username}"))
    give(Path(account.home_path), target)
    server = ftpserver_cmd(
        "127.0.0.1:0",
        "--user",
        TARGET,
        "--workers",
        "2",
        env=server_env(tmp_path, shared_dir / "journal"),
    )
    workers = wait_until(
        lambda: len(children(server.pid)) == 2 and children(server.pid)
    )
    # No process of the server stays root: not the supervisor either.
    for pid in [server.pid, *workers]:
        assert_runs_as(pid, target)
    for i in range(6):  # spread over both workers
        upload_and_download(server, f"f{i}.txt", b"x" * (i + 1))
    for i in range(6):
        assert Path(account.home_path, f"f{i}.txt").stat().st_uid == target.uid
    assert server.stop() == 0
    assert "Traceback" not in server.stderr


@needs_root
def test_user_and_group_from_the_settings(
    shared_dir, database_of, ftpserver_cmd, make_account, target, tmp_path
):
    try:
        other = grp.getgrnam("daemon")
    except KeyError:
        pytest.skip("no group 'daemon' on this system")
    account = make_account("alice", home=str(shared_dir / "homes" / "{username}"))
    give(Path(account.home_path), target)
    env = server_env(
        tmp_path,
        shared_dir / "journal",
        FTPSERVER_USER=TARGET,
        FTPSERVER_GROUP="daemon",
    )
    server = ftpserver_cmd("127.0.0.1:0", env=env)
    expected = privileges.identity(TARGET, "daemon")
    assert expected.gid == other.gr_gid != target.gid
    assert f"Running as: {expected}" in banner_lines(server)
    assert_runs_as(server.pid, expected)
    upload_and_download(server, "g.txt", b"group")
    made = Path(account.home_path, "g.txt").stat()
    assert (made.st_uid, made.st_gid) == (target.uid, other.gr_gid)


@needs_root
def test_ftps_with_a_key_only_root_can_read(
    shared_dir, database_of, ftpserver_cmd, make_account, target, tmp_path
):
    # One process loads the key before the drop: it may stay root's alone.
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(mode=0o700)
    cert = make_certificate(tls_dir)
    os.chmod(cert.keyfile, 0o600)
    account = make_account("alice", home=str(shared_dir / "homes" / "{username}"))
    give(Path(account.home_path), target)
    server = ftpserver_cmd(
        "127.0.0.1:0",
        "--user",
        TARGET,
        "--certfile",
        cert.certfile,
        "--keyfile",
        cert.keyfile,
        env=server_env(tmp_path, shared_dir / "journal"),
    )
    assert_runs_as(server.pid, target)
    ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=cert.certfile))
    ftp.connect(server.host, server.port, timeout=10)
    ftp.auth()
    ftp.login("alice", PASSWORD)
    ftp.prot_p()
    ftp.storbinary("STOR tls.txt", io.BytesIO(b"over TLS"))
    ftp.quit()
    assert Path(account.home_path, "tls.txt").stat().st_uid == target.uid


@needs_root
def test_a_journal_left_by_a_run_as_root_is_recovered_by_the_user(
    shared_dir, database_of, ftpserver_cmd, target, tmp_path
):
    # A server that ran as root and was killed left a segment only root can
    # read; the next server, dropping to the user, takes it over and writes it.
    journal_dir = shared_dir / "journal"
    left = journals.Journal(
        str(journal_dir), journals.database_id(connection.settings_dict)
    )
    record = {
        "time": 1_800_000_000,
        "event": "mkdir",
        "username": "alice",
        "session_id": "left-by-root",
        "ftp_path": "/left-by-root",
        "node": "privileges-test",
    }
    left.add(record)
    abandon(left)
    (segment,) = journal_dir.glob("journal-*.jsonl")
    assert segment.stat().st_uid == 0 and segment.stat().st_mode & 0o077 == 0
    server = ftpserver_cmd(
        "127.0.0.1:0", "--user", TARGET, env=server_env(tmp_path, journal_dir)
    )
    wait_until(lambda: record["uid"] in uids_in_database(), timeout=20)
    wait_until(lambda: not segment.exists())
    assert "Cannot" not in server.stderr


@needs_root
def test_the_drop_cannot_be_undone(target):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "from ftpserver_core import privileges\n"
            "privileges.drop(privileges.identity(sys.argv[1]))\n"
            "print(os.getresuid(), os.getresgid(), os.getgroups())\n"
            "os.setuid(0)\n",
            TARGET,
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=30,
    )
    ids = (target.uid,) * 3, (target.gid,) * 3
    assert result.stdout.startswith(f"{ids[0]} {ids[1]} ")
    assert result.returncode == 1
    assert "PermissionError: [Errno 1] Operation not permitted" in result.stderr


@needs_root
def test_a_drop_that_keeps_a_way_back_to_root_is_refused(target):
    # Only the effective uid changed: the saved uid 0 would let seteuid(0)
    # undo it. verify() must not take that for a drop.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "from ftpserver_core import privileges\n"
            "target = privileges.identity(sys.argv[1])\n"
            "os.setgroups([])\n"
            "os.setresgid(target.gid, target.gid, target.gid)\n"
            "os.setresuid(target.uid, target.uid, 0)\n"
            "try:\n"
            "    privileges.verify(target)\n"
            "except privileges.PrivilegeError as exc:\n"
            "    print(exc.message)\n"
            "else:\n"
            "    print('accepted')\n",
            TARGET,
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"The server should run as {target} with no way back, but its (real, "
        f"effective, saved) uids are ({target.uid}, {target.uid}, 0) and gids "
        f"({target.gid}, {target.gid}, {target.gid})."
    )


# --- what the user cannot use is said before anyone is served


@needs_root
def test_a_database_the_user_cannot_write_is_a_command_error(
    shared_dir, run_ftpserver, target, tmp_path
):
    if connection.vendor != "sqlite":
        pytest.skip("only a SQLite database is a file the user must be able to write")
    path = connection.settings_dict["NAME"]
    before = os.stat(path)
    os.chmod(path, 0o644)  # root's, as pytest-django made it
    try:
        result = run_ftpserver(
            "127.0.0.1:0",
            "--user",
            TARGET,
            env=server_env(tmp_path, shared_dir / "journal"),
        )
    finally:
        os.chmod(path, before.st_mode & 0o7777)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"CommandError: The SQLite database {path!r} is not writable by the user "
        f"'{TARGET}' (uid {target.uid}), which the server runs as after the drop: "
        "give that user the database file and its directory, where SQLite writes "
        f"its journal (chown {TARGET} {path} {os.path.dirname(path)}), or run the "
        "server without --user."
    )
    assert "Starting FTP server" not in result.stdout


@needs_root
def test_a_journal_directory_the_user_cannot_reach_is_a_command_error(
    shared_dir, database_of, run_ftpserver, target, tmp_path
):
    private = shared_dir / "root-only"
    private.mkdir(mode=0o700)
    os.chown(private, 0, 0)
    journal = private / "journal"
    result = run_ftpserver(
        "127.0.0.1:0", "--user", TARGET, env=server_env(tmp_path, journal)
    )
    assert result.returncode == 1
    assert (
        f"CommandError: The audit journal directory {str(journal)!r} is not usable "
        f"by the user '{TARGET}' (uid {target.uid}), which the server runs as after "
        "the drop: that user must be able to reach it"
    ) in result.stderr
    assert "Starting FTP server" not in result.stdout


@needs_root
def test_prefork_workers_that_cannot_read_the_key_are_a_command_error(
    shared_dir, database_of, run_ftpserver, target, tmp_path
):
    # Prefork workers build their TLS contexts after the drop.
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(mode=0o700)
    cert = make_certificate(tls_dir)
    result = run_ftpserver(
        "127.0.0.1:0",
        "--user",
        TARGET,
        "--workers",
        "2",
        "--certfile",
        cert.certfile,
        "--keyfile",
        cert.keyfile,
        env=server_env(tmp_path, shared_dir / "journal"),
    )
    assert result.returncode == 1
    assert (
        f"The TLS file {cert.keyfile!r} is not readable by the user '{TARGET}' "
        f"(uid {target.uid}): with prefork each worker loads it after the drop."
    ) in result.stderr
    assert "Starting FTP server" not in result.stdout


# --- running as root, and not


@needs_root
def test_root_without_a_user_is_warned_about(ftpserver_cmd):
    server = ftpserver_cmd("127.0.0.1:0")
    assert (
        "Warning: the FTP server runs as root. Give it --user (or FTPSERVER_USER) "
        "to drop privileges once the port is bound."
    ) in server.stderr
    assert "Running as: root (uid 0), group root (gid 0)" in banner_lines(server)
    assert server.client().getwelcome() == "220 FTP server ready."


# As root: Django and the command loaded, then the process becomes TARGET
# (the interpreter itself may be where TARGET cannot exec it, e.g. /root,
# and what it imports later where TARGET cannot read it).
AS_ANOTHER_USER = """
import os, sys
import encodings.idna  # bind() needs it, and TARGET may not reach the stdlib
import django
django.setup()
from django.core.management import execute_from_command_line
from ftpserver_core.management.commands import ftpserver
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setresgid(gid, gid, gid)
os.setresuid(uid, uid, uid)
execute_from_command_line(["manage.py", *sys.argv[3:]])
"""


def test_user_without_root_is_a_command_error(run_ftpserver, target):
    other = "daemon" if os.geteuid() == 0 else TARGET
    if not _has_user(other):
        pytest.skip(f"no user {other!r} on this system")
    args = ["127.0.0.1:0", "--user", other]
    if os.geteuid() == 0:
        me = target
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                AS_ANOTHER_USER,
                str(me.uid),
                str(me.gid),
                "ftpserver",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=command_env(),
            cwd=REPO_ROOT,
            timeout=60,
        )
    else:
        me = privileges.current()
        if me.uid == target.uid:
            pytest.skip(f"the suite runs as {TARGET!r} itself")
        result = run_ftpserver(*args)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"CommandError: --user {other!r}: privileges can only be dropped by root, "
        f"and this process runs as {me}; start the server as root, or without "
        "--user."
    )
    assert "Starting FTP server" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--user", "no-such-user-ftpsuite"],
            "--user: 'no-such-user-ftpsuite' is not a user on this system; expected "
            "the name (or uid) of the unprivileged user to run as once the port is "
            "bound.",
        ),
        (
            ["--user", TARGET, "--group", "no-such-group-ftpsuite"],
            "--group: 'no-such-group-ftpsuite' is not a group on this system; "
            "expected the name (or gid) of the group to run as once the port is "
            "bound.",
        ),
        (
            ["--user", "root"],
            "--user: 'root' is root (uid 0); expected an unprivileged user to run as "
            "once the port is bound.",
        ),
        (
            ["--group", "daemon"],
            "--group: 'daemon' is set without a user; expected a user too (--user, "
            "FTPSERVER_USER): the group is taken along with the user.",
        ),
    ],
)
def test_bad_user_or_group(run_ftpserver, target, args, message):
    result = run_ftpserver("127.0.0.1:0", *args)
    assert result.returncode == 1
    assert result.stderr.strip() == f"CommandError: {message}"
    assert "Starting FTP server" not in result.stdout


def test_an_unknown_user_in_the_settings_is_a_system_check_error(
    run_ftpserver, tmp_path
):
    env = command_env(settings_module(tmp_path, FTPSERVER_USER="no-such-user-ftpsuite"))
    env["DJANGO_SETTINGS_MODULE"] = "cmd_settings"
    result = run_ftpserver("127.0.0.1:0", env=env)
    assert result.returncode == 1
    assert (
        "(ftpserver_core.E015) FTPSERVER_USER: 'no-such-user-ftpsuite' is not a user "
        "on this system"
    ) in result.stderr
    assert "Starting FTP server" not in result.stdout


def test_an_unknown_user_is_checked_only_where_the_server_runs(tmp_path):
    """Settings shared with a web host that has no such user still migrate."""
    env = command_env(settings_module(tmp_path, FTPSERVER_USER="no-such-user-ftpsuite"))
    env["DJANGO_SETTINGS_MODULE"] = "cmd_settings"

    def check(*args):
        return subprocess.run(
            [sys.executable, "-m", "django", "check", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    plain = check()
    assert plain.returncode == 0, plain.stderr
    deploy = check("--deploy", "--tag", "ftpserver_deploy")
    assert deploy.returncode == 1
    assert (
        "(ftpserver_core.E015) FTPSERVER_USER: 'no-such-user-ftpsuite'" in deploy.stderr
    )


@needs_root
def test_a_server_started_as_the_user_itself_has_nothing_to_drop(
    shared_dir, database_of, make_account, target, tmp_path
):
    # FTPSERVER_USER in settings shared with a server that a process manager
    # starts as that user (systemd's User=): no root needed, nothing dropped.
    account = make_account("alice", home=str(shared_dir / "homes" / "{username}"))
    give(Path(account.home_path), target)
    env = server_env(tmp_path, shared_dir / "journal", FTPSERVER_USER=TARGET)
    server = ServerProcess(
        ["127.0.0.1:0"],
        tmp_path / "as-user",
        env,
        program=("-c", AS_ANOTHER_USER, str(target.uid), str(target.gid)),
    )
    try:
        server.wait_started()
        assert f"Running as: {target}" in banner_lines(server)
        assert_runs_as(server.pid, target)
        upload_and_download(server, "self.txt", b"as the user")
        assert Path(account.home_path, "self.txt").stat().st_uid == target.uid
        assert server.stop() == 0
    finally:
        server.kill()
