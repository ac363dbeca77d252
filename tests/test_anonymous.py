"""Anonymous FTP: off by default, read-only, audited, limited on every process."""

import ftplib
import io
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.core import checks
from django.utils import timezone

from ftpserver_core import anonymous
from ftpserver_core.models import AuditEvent, HomeDirectory, LiveSession
from ftpserver_core.policy import LoginRefused, Rule
from ftpserver_core.state.base import SessionInfo
from ftpserver_core.state.database import DatabaseBackend
from ftpserver_core.state.memory import MemoryBackend

from .conftest import PASSWORD
from .processes import command_env
from .test_commands import ftpserver_cmd, settings_module  # noqa: F401  (fixture)
from .test_prefork import children, connection_count
from .test_state import try_login, wait_for

README = b"Public files, read-only.\n"
GUIDE = os.urandom(300_000)


def login(server, username="anonymous", password="guest@example.org", source=None):  # noqa: S107
    """Return the logged-in client, or the reply of a refused login."""
    return try_login(server, username, source=source, password=password)


def failure_reason(username="anonymous"):
    """The reason of the latest failed login of ``username`` (from the audit)."""
    row = wait_for(
        lambda: (
            AuditEvent.objects.filter(event="login_failed", username=username)
            .order_by("-id")
            .first()
        )
    )
    return row.reason


@pytest.fixture
def pub(tmp_path):
    """The public directory: a file, and a sub-directory with another."""
    home = tmp_path / "pub"
    (home / "docs").mkdir(parents=True)
    (home / "readme.txt").write_bytes(README)
    (home / "docs" / "guide.bin").write_bytes(GUIDE)
    return home


@pytest.fixture
def anonymous_on(settings, pub):
    settings.FTPSERVER_ANONYMOUS_ENABLED = True
    settings.FTPSERVER_ANONYMOUS_HOME = str(pub)
    return pub


def snapshot(directory):
    """Every entry below ``directory`` with its type, size, mode and times."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in [".", *dirs, *files]:
            path = os.path.normpath(os.path.join(root, name))
            st = os.lstat(path)
            found[path] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return found


# --- off unless both settings say so


@pytest.mark.parametrize("username", ["anonymous", "ftp"])
def test_off_by_default_the_names_are_ordinary_unknown_users(live_ftp, username):
    reply = login(live_ftp, username)
    assert reply.startswith("530")
    assert failure_reason(username) == "bad_credentials"


@pytest.mark.parametrize(
    "enabled, with_home",
    [(True, False), (False, True), ("yes", True), (1, True)],
)
def test_on_only_with_true_and_a_home(settings, pub, ftp_server, enabled, with_home):
    settings.FTPSERVER_ANONYMOUS_ENABLED = enabled
    settings.FTPSERVER_ANONYMOUS_HOME = str(pub) if with_home else None
    assert not anonymous.enabled()
    live = ftp_server()
    assert login(live).startswith("530")
    assert failure_reason() == "bad_credentials"


def test_off_a_django_user_named_ftp_logs_in_as_itself(live_ftp, make_account):
    account = make_account("ftp")
    ftp = login(live_ftp, "ftp", PASSWORD)
    assert not isinstance(ftp, str), ftp
    # Registered within a round (an account without a session limit).
    row = wait_for(lambda: LiveSession.objects.first())
    assert (row.username, row.account_id) == ("ftp", account.pk)
    ftp.quit()


# --- on: any password, read-only


@pytest.mark.parametrize(
    "username, password",
    [
        ("anonymous", "guest@example.org"),
        ("ftp", "anything"),
        ("Anonymous", ""),
        ("FTP", "-"),
    ],
)
def test_any_password_logs_in_to_the_public_directory(
    anonymous_on, live_ftp, username, password
):
    ftp = login(live_ftp, username, password)
    assert not isinstance(ftp, str), ftp
    assert ftp.lastresp == "230"
    assert ftp.pwd() == "/"
    assert sorted(ftp.nlst()) == ["docs", "readme.txt"]
    data = io.BytesIO()
    ftp.retrbinary("RETR docs/guide.bin", data.write)
    assert data.getvalue() == GUIDE
    data = io.BytesIO()
    ftp.retrbinary("RETR /readme.txt", data.write)
    assert data.getvalue() == README
    ftp.cwd("docs")
    assert ftp.size("guide.bin") == len(GUIDE)
    # One user name for every anonymous session, without an account.
    row = LiveSession.objects.get()
    assert (row.username, row.account_id) == ("anonymous", None)
    ftp.quit()


def test_the_session_cannot_leave_its_home(anonymous_on, live_ftp, tmp_path):
    (tmp_path / "secret.txt").write_bytes(b"not public")
    ftp = login(live_ftp)
    ftp.cwd("..")
    assert ftp.pwd() == "/"
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.retrbinary("RETR ../secret.txt", io.BytesIO().write)
    ftp.quit()


def test_every_write_command_is_refused_and_nothing_changes(anonymous_on, live_ftp):
    before = snapshot(anonymous_on)
    ftp = login(live_ftp)
    ftp.voidcmd("TYPE I")
    commands = [
        "MKD new",
        "MKD docs/new",
        "RMD docs",
        "DELE readme.txt",
        "DELE docs/guide.bin",
        "RNFR readme.txt",
        "SITE CHMOD 777 readme.txt",
        "SITE CHMOD 777 docs",
        "MFMT 20000101000000 readme.txt",
    ]
    for command in commands:
        with pytest.raises(ftplib.error_perm, match="^550") as refused:
            ftp.sendcmd(command)
        assert "privileges" in str(refused.value), command
    uploads = ["STOR new.txt", "STOR readme.txt", "APPE readme.txt", "STOU", "STOU x"]
    for command in uploads:
        with pytest.raises(ftplib.error_perm, match="^550"):
            ftp.storbinary(command, io.BytesIO(b"uploaded"))
    ftp.cwd("docs")
    for command in ("STOU", "STOR guide.bin", "DELE guide.bin", "RMD ."):
        with pytest.raises(ftplib.error_perm, match="^550"):
            if command.startswith("STO"):
                ftp.storbinary(command, io.BytesIO(b"uploaded"))
            else:
                ftp.sendcmd(command)
    # Still a working session, and not a byte nor a time changed: STOU
    # created no file even for a moment (the directories' times say so).
    assert ftp.size("guide.bin") == len(GUIDE)
    ftp.quit()
    assert snapshot(anonymous_on) == before


def test_no_rule_can_add_a_write_letter(anonymous_on):
    policy = anonymous.build_policy("x@example.org")
    assert policy.get_perms("anonymous") == "elr"
    everything = Rule(
        path=policy.home, permission="elradfmwMT", recursive=True, source="account"
    )
    widened = type(policy)(
        **{
            **{f: getattr(policy, f) for f in policy.__dataclass_fields__},
            "rules": (everything,),
            "permission": "elradfmwMT",
        }
    )
    target = os.path.join(policy.home, "readme.txt")
    for letter in "adfmwMT":
        assert not widened.has_perm("anonymous", letter, target)
        assert not widened.has_perm("anonymous", letter)
    for letter in "elr":
        assert widened.has_perm("anonymous", letter, target)
    assert widened.get_perms("anonymous") == "elr"
    assert widened.permission_for(target) == "elr"


# --- the audit


def test_the_login_is_audited_with_the_e_mail_and_the_address(
    anonymous_on, live_ftp, recorder
):
    ftp = login(live_ftp, "ftp", "  guest\x07@example.org\x1b[0m" + "x" * 400)
    ftp.quit()
    email = "guest@example.org[0m" + "x" * (254 - len("guest@example.org[0m"))
    (sent,) = recorder.wait_for("ftp_login")
    assert sent["username"] == "anonymous"
    assert sent["anonymous_email"] == email
    assert "password" not in sent
    row = wait_for(lambda: AuditEvent.objects.filter(event="login").first())
    assert row.username == "anonymous"
    assert row.ftp_path == email
    assert row.remote_ip == "127.0.0.1"
    assert row.account_id is None
    assert row.success


def test_an_account_login_carries_no_e_mail(live_ftp, make_account, recorder):
    make_account("alice")
    live_ftp.client("alice").quit()
    (sent,) = recorder.wait_for("ftp_login")
    assert "anonymous_email" not in sent
    row = wait_for(lambda: AuditEvent.objects.filter(event="login").first())
    assert row.ftp_path == ""


# --- session limits


def test_the_third_session_from_one_address_is_refused(
    anonymous_on, settings, live_ftp, make_account
):
    settings.FTPSERVER_ANONYMOUS_MAX_SESSIONS_PER_ADDRESS = 2
    make_account("alice")
    first, second = login(live_ftp), login(live_ftp, "ftp")
    assert not isinstance(first, str) and not isinstance(second, str)
    refused = login(live_ftp)
    assert refused.startswith("530")
    assert "Too many sessions" in refused
    assert failure_reason() == "too_many_sessions_per_address"
    # Another address, and an account from this one, are not affected.
    other = login(live_ftp, source=("127.0.0.2", 0))
    assert not isinstance(other, str), other
    alice = live_ftp.client("alice")
    assert LiveSession.objects.filter(username="anonymous").count() == 3
    first.quit()
    # The end is written within a round of the state thread.
    again = wait_for(lambda: not isinstance(r := login(live_ftp), str) and r)
    for ftp in (second, other, alice, again):
        ftp.quit()


def test_all_anonymous_sessions_count_together(anonymous_on, settings, live_ftp):
    settings.FTPSERVER_ANONYMOUS_MAX_SESSIONS = 2
    settings.FTPSERVER_ANONYMOUS_MAX_SESSIONS_PER_ADDRESS = None
    first = login(live_ftp, source=("127.0.0.3", 0))
    second = login(live_ftp, "ftp", source=("127.0.0.4", 0))
    assert not isinstance(first, str) and not isinstance(second, str)
    assert login(live_ftp, source=("127.0.0.5", 0)).startswith("530")
    assert failure_reason() == "too_many_sessions"
    first.quit()
    second.quit()


@pytest.mark.parametrize("backend_class", [MemoryBackend, DatabaseBackend])
def test_backends_count_anonymous_sessions_by_user_name(
    transactional_db, make_account, backend_class
):
    account = make_account("alice")
    backend = backend_class()
    process = backend.register_process("node", os.getpid())

    def open_session(n, username, account_id=None, address="10.0.0.1", **limits):
        session = SessionInfo(
            session_id=f"s{n}",
            account_id=account_id,
            username=username,
            remote_ip=address,
            address_key=address,
            tls=False,
            connected_at=timezone.now(),
        )
        limits.setdefault("max_sessions", 2)
        limits.setdefault("max_per_address", 0)
        backend.open_session(process, session, **limits)

    # An account's sessions and another user name's do not count.
    open_session(1, "alice", account.pk)
    open_session(2, "alice", account.pk)
    open_session(3, "other")
    open_session(4, "anonymous", address="10.0.0.2")
    open_session(5, "anonymous", max_account_per_address=2)
    with pytest.raises(LoginRefused) as refused:
        open_session(6, "anonymous", address="10.0.0.3")
    assert refused.value.reason == "too_many_sessions"
    # Per address: only the same name's sessions from it.
    with pytest.raises(LoginRefused) as refused:
        open_session(7, "anonymous", max_sessions=9, max_account_per_address=1)
    assert refused.value.reason == "too_many_sessions_per_address"
    open_session(8, "anonymous", address="10.0.0.3", max_sessions=9)
    backend.close_sessions(process, ["s4"])
    open_session(9, "anonymous", address="10.0.0.3", max_sessions=4)
    backend.unregister_process(process)


def test_the_limits_hold_across_two_server_processes(
    ftpserver_cmd,  # noqa: F811
    tmp_path,
    pub,
):
    directory = settings_module(
        tmp_path,
        FTPSERVER_ANONYMOUS_ENABLED=True,
        FTPSERVER_ANONYMOUS_HOME=str(pub),
        FTPSERVER_ANONYMOUS_MAX_SESSIONS=3,
        FTPSERVER_ANONYMOUS_MAX_SESSIONS_PER_ADDRESS=None,
    )
    env = command_env(extra_path=directory, DJANGO_SETTINGS_MODULE="cmd_settings")
    first = ftpserver_cmd("127.0.0.1:0", env=env)
    second = ftpserver_cmd("127.0.0.1:0", env=env)
    assert f"Anonymous FTP: ON, read-only, in {pub} (3 sessions" in first.stdout
    clients = [login(first), login(second), login(first)]
    assert not any(isinstance(c, str) for c in clients), clients
    assert login(second).startswith("530")
    assert login(first).startswith("530")
    assert failure_reason() == "too_many_sessions"
    clients.pop().quit()
    again = wait_for(lambda: not isinstance(r := login(second), str) and r)
    for ftp in (*clients, again):
        ftp.quit()


@pytest.mark.parametrize(
    "limits, reason",
    [
        ({"MAX_SESSIONS": 3, "MAX_SESSIONS_PER_ADDRESS": None}, "too_many_sessions"),
        (
            {"MAX_SESSIONS": 50, "MAX_SESSIONS_PER_ADDRESS": 3},
            "too_many_sessions_per_address",
        ),
    ],
)
def test_logins_at_once_on_two_workers_never_pass_the_limit(
    ftpserver_cmd,  # noqa: F811
    tmp_path,
    pub,
    limits,
    reason,
):
    """20 anonymous logins at once, spread over two workers: exactly 3 get in."""
    directory = settings_module(
        tmp_path,
        FTPSERVER_ANONYMOUS_ENABLED=True,
        FTPSERVER_ANONYMOUS_HOME=str(pub),
        FTPSERVER_LOGINS_PER_ADDRESS=50,
        **{f"FTPSERVER_ANONYMOUS_{name}": value for name, value in limits.items()},
    )
    env = command_env(extra_path=directory, DJANGO_SETTINGS_MODULE="cmd_settings")
    server = ftpserver_cmd(
        "127.0.0.1:0", "--workers", "2", "--max-connections-per-ip", "100", env=env
    )
    workers = wait_for(lambda: len(children(server.pid)) == 2 and children(server.pid))

    def connect():
        clients = []
        for n in range(20):
            # The global limit from 20 addresses: no address lock serializes
            # their logins, only anonymous FTP's own.
            global_limit = reason == "too_many_sessions"
            source = (f"127.0.0.{10 + n}", 0) if global_limit else None
            ftp = ftplib.FTP(timeout=30, source_address=source)
            ftp.connect(server.host, server.port)
            clients.append(ftp)
        peers = {ftp.sock.getsockname()[1] for ftp in clients}
        held = {pid: connection_count(pid, server.port, peers) for pid in workers}
        if all(held.values()):  # both workers hold connections
            return clients
        # A worker still starting accepts nothing yet: again.
        for ftp in clients:
            ftp.close()
        return None

    clients = wait_for(connect)
    barrier = threading.Barrier(len(clients))

    def attempt(ftp):
        barrier.wait(10)
        try:
            return ftp.login("anonymous", "guest@example.org")
        except ftplib.error_perm as exc:
            return str(exc)

    with ThreadPoolExecutor(len(clients)) as pool:
        replies = list(pool.map(attempt, clients))
    assert sum(r.startswith("230") for r in replies) == 3, replies
    assert sum(r.startswith("530 Too many sessions") for r in replies) == 17, replies
    assert LiveSession.objects.filter(username="anonymous").count() == 3
    refusals = AuditEvent.objects.filter(event="login_failed", reason=reason)
    try:
        wait_for(lambda: refusals.count() >= 17, timeout=60)
    except AssertionError:
        # CI twice saw fewer than 17 records after 60 s on a loaded machine
        # (once none of the workers' records at all; cause not found). No
        # record may be lost: a graceful stop writes what is journaled.
        late = refusals.count()
        for ftp in clients:
            ftp.close()
        server.stop()
        recorded = list(AuditEvent.objects.values_list("event", "reason", "node"))
        audit_lines = [
            line
            for line in server.stderr.splitlines()
            if "audit" in line.lower() or "Traceback" in line or "Error" in line
        ]
        assert refusals.count() == 17, (
            f"{late} of 17 refusals recorded in 60 s, {refusals.count()} after "
            f"the stop: {recorded}\naudit lines of the server: {audit_lines}"
        )
        warnings.warn(
            f"{late} of 17 refusals were in the database after 60 s; all 17 "
            f"after the server's stop. Audit lines: {audit_lines[:20]}",
            stacklevel=1,
        )
        return
    assert refusals.count() == 17, list(refusals.values_list("remote_port", "node"))
    for ftp in clients:
        ftp.close()


def test_the_banner_says_nothing_when_it_is_off(ftpserver_cmd):  # noqa: F811
    server = ftpserver_cmd("127.0.0.1:0")
    assert "Anonymous FTP" not in server.stdout


# --- the home's safety


@pytest.mark.parametrize("where", ["/etc", "/usr/share", "missing", "link to /etc"])
def test_an_unsafe_home_refuses_the_login(settings, tmp_path, ftp_server, where):
    if where == "missing":
        home = str(tmp_path / "missing")
    elif where == "link to /etc":
        home = str(tmp_path / "pub")
        os.symlink("/etc", home)
    else:
        home = where
    settings.FTPSERVER_ANONYMOUS_ENABLED = True
    settings.FTPSERVER_ANONYMOUS_HOME = home
    with pytest.raises(LoginRefused) as refused:
        anonymous.build_policy("x")
    assert refused.value.reason == "home_unavailable"
    live = ftp_server()
    assert login(live).startswith("530")
    assert failure_reason() == "home_unavailable"


def test_a_home_outside_the_home_roots_or_holding_one_is_refused(
    settings, tmp_path, pub
):
    settings.FTPSERVER_ANONYMOUS_ENABLED = True
    settings.FTPSERVER_ANONYMOUS_HOME = str(pub)
    settings.FTPSERVER_HOME_ROOTS = [str(tmp_path / "homes")]
    with pytest.raises(LoginRefused, match="outside FTPSERVER_HOME_ROOTS"):
        anonymous.build_policy("x")
    settings.FTPSERVER_HOME_ROOTS = [str(pub)]
    with pytest.raises(LoginRefused, match="holds the home root"):
        anonymous.build_policy("x")
    (pub / "users").mkdir()
    settings.FTPSERVER_HOME_ROOTS = [str(tmp_path)]
    assert anonymous.build_policy("x").home == str(pub)


# --- the system checks (registered by checks.py)


def ids(issues):
    return sorted(issue.id for issue in issues)


def test_default_settings_pass_the_checks(db):
    assert anonymous.check_settings() == []
    assert anonymous.check_deploy() == []


@pytest.mark.parametrize(
    "values, check_id, quoted",
    [
        ({"ENABLED": True}, "ftpserver_core.E041", "without a home"),
        ({"ENABLED": "yes", "HOME": "/srv/ftp/pub"}, "ftpserver_core.E040", "'yes'"),
        ({"MAX_SESSIONS": 0}, "ftpserver_core.E040", "= 0"),
        ({"MAX_SESSIONS_PER_ADDRESS": "2"}, "ftpserver_core.E040", "'2'"),
        ({"DOWNLOAD_RATE": -1}, "ftpserver_core.E040", "-1"),
        ({"HOME": "pub"}, "ftpserver_core.E041", "not an absolute path"),
        ({"HOME": "/srv/ftp/../pub"}, "ftpserver_core.E041", "not normalised"),
        ({"HOME": "/etc/ftp"}, "ftpserver_core.E041", "system directory '/etc'"),
    ],
)
def test_bad_settings_are_errors(settings, values, check_id, quoted):
    for name, value in values.items():
        setattr(settings, f"FTPSERVER_ANONYMOUS_{name}", value)
    issues = anonymous.check_settings()
    assert ids(issues) == [check_id]
    assert issues[0].level == checks.ERROR
    assert quoted in issues[0].msg


def test_deploy_checks_of_the_home(settings, tmp_path, pub, transactional_db):
    settings.FTPSERVER_ANONYMOUS_ENABLED = True
    settings.FTPSERVER_ANONYMOUS_HOME = str(tmp_path / "missing")
    assert ids(anonymous.check_deploy()) == ["ftpserver_core.E042"]
    # The server's user (this root process) may write it: a warning.
    settings.FTPSERVER_ANONYMOUS_HOME = str(pub)
    assert ids(anonymous.check_deploy()) == ["ftpserver_core.W040"]
    if os.geteuid() == 0:
        # Dropped to nobody: a directory of root's, 755, is a second fence.
        settings.FTPSERVER_USER = "nobody"
        pub.chmod(0o755)
        assert ids(anonymous.check_deploy()) == []
        pub.chmod(0o777)
        assert ids(anonymous.check_deploy()) == ["ftpserver_core.W040"]
        pub.chmod(0o755)
    else:
        pub.chmod(0o555)
        assert ids(anonymous.check_deploy()) == []
        pub.chmod(0o755)
        settings.FTPSERVER_USER = None


def test_deploy_checks_of_user_homes_and_names(
    settings, tmp_path, pub, transactional_db
):
    settings.FTPSERVER_ANONYMOUS_ENABLED = True
    settings.FTPSERVER_ANONYMOUS_HOME = str(pub)
    pub.chmod(0o755)
    settings.FTPSERVER_USER = "nobody"

    def found():
        return ids(anonymous.check_deploy())

    assert found() == []
    # Every user's home would be public: an error.
    settings.FTPSERVER_DEFAULT_HOME = str(pub / "{username}")
    assert found() == ["ftpserver_core.E043"]
    settings.FTPSERVER_DEFAULT_HOME = str(tmp_path / "homes" / "{username}")
    assert found() == []
    HomeDirectory.objects.create(path=str(pub / "users" / "u-{username}"))
    assert found() == ["ftpserver_core.E043"]
    HomeDirectory.objects.all().delete()
    # One publishing account's home: a warning.
    HomeDirectory.objects.create(path=str(pub))
    assert found() == ["ftpserver_core.W041"]
    HomeDirectory.objects.all().delete()
    # A home root inside it: an error.
    settings.FTPSERVER_HOME_ROOTS = [str(tmp_path)]
    (pub / "homes").mkdir()
    assert found() == []
    settings.FTPSERVER_HOME_ROOTS = [str(tmp_path), str(pub / "homes")]
    assert found() == ["ftpserver_core.E043"]
    settings.FTPSERVER_HOME_ROOTS = None
    # A Django user the anonymous names shadow: a warning naming it.
    get_user_model().objects.create_user("FTP", password=PASSWORD)
    issues = anonymous.check_deploy()
    assert ids(issues) == ["ftpserver_core.W042"]
    assert "'FTP' cannot log in over FTP" in issues[0].msg


def test_on_a_django_user_named_ftp_gets_the_anonymous_session(
    anonymous_on, live_ftp, make_account
):
    make_account("ftp")
    ftp = login(live_ftp, "ftp", PASSWORD)
    assert not isinstance(ftp, str), ftp
    row = LiveSession.objects.get()
    assert (row.username, row.account_id) == ("anonymous", None)
    with pytest.raises(ftplib.error_perm, match="^550"):
        ftp.storbinary("STOR new.txt", io.BytesIO(b"x"))
    ftp.quit()


def test_the_download_rate_is_shared_by_every_anonymous_session(
    anonymous_on, settings, ftp_server
):
    from ftpserver_core import bandwidth

    settings.FTPSERVER_ANONYMOUS_DOWNLOAD_RATE = 100_000
    policy = anonymous.build_policy("x")
    assert policy.download_rate == 100_000
    assert policy.upload_rate is None
    assert bandwidth.key_for(policy) == "anonymous"
    live = ftp_server()
    clients = [login(live), login(live, "ftp", source=("127.0.0.2", 0))]
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        data = list(
            pool.map(
                lambda ftp: ftp.retrbinary("RETR docs/guide.bin", io.BytesIO().write),
                clients,
            )
        )
    # 600 kB at 100 kB/s for both together: 6 s less a burst, at least.
    assert time.monotonic() - started >= 4.5, data
    for ftp in clients:
        ftp.quit()
