"""The FTP process loads only what it serves: no admin, no web stack.

The suite's own settings and entry points, run as a user runs them; what a
process imported is read from ``python -X importtime`` (no test-only code in
the server).
"""

import io
import json
import re
import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from .conftest import PASSWORD
from .processes import REPO_ROOT, ServerProcess, command_env

# What the web side imports and the FTP process must not.
WEB_MODULES = (
    "import_export",
    "django_filters",
    "tablib",
    "openpyxl",
    "whitenoise",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ftpadmin.admin",
    "ftpadmin.views",
)
IMPORT_RE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)\s*$", re.M)


def imported(stderr):
    """Return the modules ``python -X importtime`` reported."""
    return set(IMPORT_RE.findall(stderr))


def web(modules):
    return sorted(
        name
        for name in modules
        if any(name == web or name.startswith(web + ".") for web in WEB_MODULES)
    )


def suite_env(tmp_path, **extra):
    """The suite's settings on the test database, as the entry points get them."""
    env = command_env(
        DJANGO_SETTINGS_MODULE="ftpadmin.settings",
        FTPADMIN_DATA_DIR=str(tmp_path / "data"),
        **extra,
    )
    if "FTPADMIN_ROLE" not in extra:
        env.pop("FTPADMIN_ROLE", None)
    return env


def pbkdf2(password):
    """A hash the suite's hashers take as it is (the tests' own are MD5).

    Django's own iterations and salt: a hash it would upgrade at login would
    count as a password change, which ends the session.
    """
    hasher = PBKDF2PasswordHasher()
    return hasher.encode(password, hasher.salt())


@pytest.fixture
def account(make_account):
    account = make_account()
    account.user.password = pbkdf2(PASSWORD)
    account.user.save()
    return account


@pytest.fixture
def suite_server(transactional_db, tmp_path):
    """Start ``ftpserver`` under ``-X importtime`` with the suite's settings."""
    started = []

    def start(*args, program=("manage.py",), **env):
        server = ServerProcess(
            ["127.0.0.1:0", *args],
            tmp_path / f"server{len(started)}",
            suite_env(tmp_path, **env),
            program=("-X", "importtime", *program),
        )
        started.append(server)
        return server.wait_started()

    yield start
    for server in started:
        server.kill()


def use(server, account):
    """Log in, list, upload and download: the modules a session loads lazily."""
    with server.client(account.user.username) as ftp:
        ftp.storbinary("STOR lean.txt", io.BytesIO(b"lean\n"))
        assert ftp.nlst() == ["lean.txt"]
        chunks = []
        ftp.retrbinary("RETR lean.txt", chunks.append)
        assert b"".join(chunks) == b"lean\n"


def test_ftpserver_imports_no_web_module(suite_server, account):
    server = suite_server()
    use(server, account)
    assert server.stop() == 0
    modules = imported(server.stderr)
    # The parse works: the server's own modules are there.
    assert {"pyftpdlib.handlers", "ftpserver_core.servers"} <= modules
    assert web(modules) == []


def test_the_same_check_sees_the_web_stack_with_every_app(suite_server, account):
    # FTPADMIN_ROLE=all, given by hand, keeps every app: the detection above
    # would have caught the admin's autodiscovery.
    server = suite_server(FTPADMIN_ROLE="all")
    use(server, account)
    assert server.stop() == 0
    found = web(imported(server.stderr))
    assert {"tablib", "openpyxl", "django.contrib.admin.options"} <= set(found)
    assert "import_export.resources" in found


def test_prefork_workers_import_no_web_module(suite_server, account):
    # The console script's entry point (python -m ftpadmin is the same main()).
    server = suite_server("--workers", "2", program=("-m", "ftpadmin"))
    assert "Worker processes: 2" in server.stdout
    # Several sessions, so that both workers are likely to serve one; each
    # writes its own lazy imports to the shared stderr.
    for _ in range(4):
        use(server, account)
    assert server.stop() == 0
    modules = imported(server.stderr)
    assert "pyftpdlib.handlers" in modules
    assert web(modules) == []


def test_login_cache_follows_a_password_change_made_elsewhere(suite_server, account):
    # The lean process keeps its signals and its cache validation: a change
    # made by another process (here the tests') ends cached logins.
    server = suite_server()
    with server.client(account.user.username):
        pass
    user = get_user_model().objects.get(pk=account.user.pk)
    user.password = pbkdf2("n3w-Passw0rd")
    user.save()
    deadline = time.monotonic() + 15
    while True:
        try:
            with server.client(account.user.username):
                pass
        except Exception as exc:
            assert "530" in str(exc)
            break
        assert time.monotonic() < deadline, "the old password still logs in"
        time.sleep(0.5)
    with server.client(account.user.username, password="n3w-Passw0rd"):
        pass


APPS = (
    "import json; from django.apps import apps; "
    "print(json.dumps([a.name for a in apps.get_app_configs()]))"
)


def run(args, tmp_path, **env):
    result = subprocess.run(
        [sys.executable, *args],
        env=suite_env(tmp_path, **env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


WEB_APPS = {"ftpadmin", "django.contrib.admin", "import_export", "django_filters"}


@pytest.mark.parametrize("role", [None, "ftp"])
def test_other_commands_get_every_app(tmp_path, role):
    # Even with FTPADMIN_ROLE=ftp meant for the FTP server in the
    # environment: migrate must create the admin's tables.
    env = {"FTPADMIN_ROLE": role} if role else {}
    shell = run(["-m", "ftpadmin", "shell", "-c", APPS], tmp_path, **env)
    assert set(json.loads(shell.stdout.splitlines()[-1])) >= WEB_APPS
    check = run(["manage.py", "check"], tmp_path, **env)
    assert "no issues" in check.stdout
    database = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    run(["-m", "ftpadmin", "migrate", "-v0"], tmp_path, DATABASE_URL=database, **env)
    tables = run(
        [
            "manage.py",
            "shell",
            "-c",
            "from django.db import connection; "
            "print(sorted(connection.introspection.table_names()))",
        ],
        tmp_path,
        DATABASE_URL=database,
        **env,
    )
    assert "django_admin_log" in tables.stdout
    assert "django_session" in tables.stdout


def test_the_web_application_gets_every_app(tmp_path):
    result = run(["-c", "import ftpadmin.wsgi; " + APPS], tmp_path)
    assert set(json.loads(result.stdout)) >= WEB_APPS


def test_ftp_role_loads_only_the_ftp_apps(tmp_path):
    result = run(
        ["-c", "import django; django.setup(); " + APPS], tmp_path, FTPADMIN_ROLE="ftp"
    )
    apps = set(json.loads(result.stdout))
    assert "ftpserver_core" in apps
    assert not apps & WEB_APPS


def test_an_unknown_role_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "ftpserver", "--help"],
        env=suite_env(tmp_path, FTPADMIN_ROLE="lean"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "FTPADMIN_ROLE = 'lean': expected 'ftp'" in result.stderr
