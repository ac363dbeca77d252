"""The apps in a Django developer's own project: a fresh ``startproject``,
a handler subclass, a missing optional driver, quickstart without the suite's
settings. Every project here is real and runs in its own process."""

import os
import subprocess
import sys
import textwrap

import pytest
from django.test import override_settings

from ftpserver_core.handlers import DjangoFTPHandler
from ftpserver_core.options import ServerOptions
from ftpserver_core.servers import build_handler_class

from .certs import make_certificate
from .processes import REPO_ROOT, ServerProcess, command_env
from .test_commands import ftpserver_cmd  # noqa: F401 (a fixture)

# A module that stands in for a package that is not installed.
MISSING_PACKAGE = (
    'raise ImportError("not installed (stub of tests/test_developer.py)")\n'
)
TLS_MISSING = (
    "FTPS needs pyOpenSSL, which is not installed. Install it with: "
    "pip install 'django-ftpserver-suite[tls]'"
)


def hide_packages(directory, *names):
    """Make ``names`` unimportable for a process with ``directory`` first on its path."""
    for name in names:
        package = directory / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(MISSING_PACKAGE)


# --- a fresh startproject


def start_project(tmp_path, *apps, extra=""):
    """Run ``django-admin startproject hostsite`` with ``apps`` added; return its runner."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "hostsite", str(root)],
        check=True,
        capture_output=True,
    )
    settings = root / "hostsite" / "settings.py"
    settings.write_text(
        settings.read_text()
        + f"\nINSTALLED_APPS += {list(apps)!r}\n"
        + textwrap.dedent(extra)
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "PYTHONUNBUFFERED")
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(root), str(REPO_ROOT)]),
        DJANGO_SETTINGS_MODULE="hostsite.settings",
    )

    def manage(*args, timeout=120):
        return subprocess.run(
            [sys.executable, str(root / "manage.py"), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=root,
            env=env,
            timeout=timeout,
        )

    manage.root = root
    manage.env = env
    return manage


def test_debug_is_warned_about_where_the_ftp_server_runs_only(tmp_path):
    manage = start_project(tmp_path, "ftpserver_core")
    migrate = manage("migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert "W001" not in migrate.stdout + migrate.stderr
    check = manage("check")
    assert check.returncode == 0, check.stderr
    assert "W001" not in check.stdout + check.stderr
    deploy = manage("check", "--deploy")
    assert "(ftpserver_core.W001) DEBUG is on" in deploy.stderr

    server = ServerProcess(
        ["127.0.0.1:0"],
        tmp_path / "server",
        manage.env,
        program=(str(manage.root / "manage.py"),),
    )
    try:
        server.wait_started()
        assert server.client().getwelcome() == "220 FTP server ready."
        assert server.stop() == 0
    finally:
        server.kill()
    assert "(ftpserver_core.W001) DEBUG is on" in server.stderr


# --- the FTPS handler, subclassed without pyOpenSSL

HANDLERS = """\
from ftpserver_core.handlers import DjangoFTPHandler, DjangoTLS_FTPHandler


class Mine(DjangoTLS_FTPHandler):
    pass


class Branded(DjangoFTPHandler):
    banner = "Example Corp FTP: authorised users only."
"""

APPS = """\
from django.apps import AppConfig


class MyAppConfig(AppConfig):
    name = "myapp"

    def ready(self):
        from . import handlers  # noqa: F401 (imported at every command)
"""


def project_module(tmp_path, hide=(), **settings):
    """A settings module extending tests.settings with the app ``myapp``."""
    directory = tmp_path / "extra"
    (directory / "myapp").mkdir(parents=True)
    (directory / "myapp" / "__init__.py").write_text("")
    (directory / "myapp" / "apps.py").write_text(APPS)
    (directory / "myapp" / "handlers.py").write_text(HANDLERS)
    hide_packages(directory, *hide)
    lines = [
        "from tests.settings import *  # noqa: F403",
        "INSTALLED_APPS = [*INSTALLED_APPS, 'myapp']  # noqa: F405",
    ]
    lines += [f"{name} = {value!r}" for name, value in settings.items()]
    (directory / "my_settings.py").write_text("\n".join(lines) + "\n")
    env = command_env(directory, DJANGO_SETTINGS_MODULE="my_settings")
    return env


def django(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )


@pytest.mark.django_db(transaction=True)
def test_subclassing_the_tls_handler_without_pyopenssl(tmp_path, ftpserver_cmd):  # noqa: F811
    env = project_module(tmp_path, hide=["OpenSSL"])
    probe = django(
        env, "shell", "-c", "from ftpserver_core import tls; print(tls.available)"
    )
    assert probe.stdout.splitlines()[-1] == "False", probe.stderr  # the stub works

    check = django(env, "check")
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues" in check.stdout

    server = ftpserver_cmd("127.0.0.1:0", env=env)
    assert server.client().getwelcome() == "220 FTP server ready."
    assert server.stop() == 0

    cert = make_certificate(tmp_path / "tls")
    refused = django(env, "ftpserver", "127.0.0.1:0", "--certfile", cert.combined)
    assert refused.returncode == 1
    assert f"CommandError: --certfile: {TLS_MISSING}" in refused.stderr

    # Serving with the subclass itself: refused by the checks, saying why.
    named = project_module(
        tmp_path / "named", hide=["OpenSSL"], FTPSERVER_HANDLER="myapp.handlers.Mine"
    )
    refused = django(named, "check")
    assert refused.returncode == 1
    assert (
        f"(ftpserver_core.E006) FTPSERVER_HANDLER: 'myapp.handlers.Mine' cannot be "
        f"used: {TLS_MISSING}"
    ) in refused.stderr
    built = django(
        named,
        "shell",
        "-c",
        "from myapp.handlers import Mine\n"
        "try:\n    Mine(None, None)\nexcept Exception as exc:\n"
        "    print(type(exc).__name__, exc)",
    )
    assert built.stdout.splitlines()[-1] == f"ImproperlyConfigured {TLS_MISSING}", (
        built.stderr
    )


# --- a handler's own banner


@pytest.mark.django_db(transaction=True)
def test_a_handler_subclass_keeps_its_banner_unless_a_setting_is_set(
    tmp_path,
    ftpserver_cmd,  # noqa: F811
):
    own = project_module(tmp_path, FTPSERVER_HANDLER="myapp.handlers.Branded")
    server = ftpserver_cmd("127.0.0.1:0", env=own)
    assert (
        server.client().getwelcome() == "220 Example Corp FTP: authorised users only."
    )
    assert server.stop() == 0

    server = ftpserver_cmd("127.0.0.1:0", "--banner", "From the command.", env=own)
    assert server.client().getwelcome() == "220 From the command."
    assert server.stop() == 0

    set_ = project_module(
        tmp_path / "set",
        FTPSERVER_HANDLER="myapp.handlers.Branded",
        FTPSERVER_BANNER="From the settings.",
    )
    server = ftpserver_cmd("127.0.0.1:0", env=set_)
    assert server.client().getwelcome() == "220 From the settings."
    assert server.stop() == 0


class Strict(DjangoFTPHandler):
    timeout = 42
    max_login_attempts = 1
    auth_failed_timeout = 0.5
    permit_foreign_addresses = True


def test_class_attributes_win_over_unset_settings_only():
    pool = object()  # only carried by the class
    with override_settings(FTPSERVER_HANDLER=Strict):
        built = build_handler_class(ServerOptions.from_settings(), pool)
    assert built.timeout == 42
    assert built.max_login_attempts == 1
    # tests/settings.py sets FTPSERVER_AUTH_FAILED_DELAY: a set setting wins.
    assert built.auth_failed_timeout == 0.05
    assert built.permit_foreign_addresses is True
    assert built.banner == "FTP server ready."  # ours, not pyftpdlib's
    with override_settings(
        FTPSERVER_HANDLER=Strict,
        FTPSERVER_TIMEOUT=300,
        FTPSERVER_MAX_LOGIN_ATTEMPTS=3,
    ):
        built = build_handler_class(ServerOptions.from_settings(banner="Hello."), pool)
    assert (built.timeout, built.max_login_attempts) == (300, 3)
    assert built.banner == "Hello."
    assert built.permit_foreign_addresses is True  # still unset


# --- DATABASE_URL without its driver


def test_a_postgres_url_without_the_driver_says_what_to_install(tmp_path):
    stubs = tmp_path / "stubs"
    hide_packages(stubs, "psycopg", "psycopg2")
    result = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join([str(stubs), str(REPO_ROOT)]),
            "DJANGO_SETTINGS_MODULE": "ftpadmin.settings",
            "FTPADMIN_DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": "postgres://ftp:s3cret-pw@127.0.0.1:5432/ftpsuite",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "django.core.exceptions.ImproperlyConfigured: DATABASE_URL (postgres://...) "
        "names a database whose driver is not installed (psycopg or psycopg2). "
        "PostgreSQL needs the psycopg driver: pip install "
        "'django-ftpserver-suite[postgres]'."
    )
    assert "s3cret-pw" not in result.stderr


# --- quickstart in a host project


def test_quickstart_in_a_fresh_startproject(tmp_path):
    apps = ("ftpserver_core", "ftpadmin", "import_export", "django_filters")
    manage = start_project(tmp_path, *apps)
    result = manage("quickstart", "--no-serve")
    assert result.returncode == 0, result.stderr
    assert "Admin: http://127.0.0.1:8000/admin/ user 'admin'" in result.stdout
    homes = manage.root / "var" / "ftp"
    assert f"(home under {homes})" in result.stdout

    elsewhere = tmp_path / "elsewhere"
    result = manage("quickstart", "--no-serve", "--data-dir", str(elsewhere))
    assert result.returncode == 0, result.stderr
    assert f"(home under {elsewhere / 'ftp'})" in result.stdout


def test_quickstart_without_a_data_directory_says_what_to_give(tmp_path):
    apps = ("ftpserver_core", "ftpadmin", "import_export", "django_filters")
    manage = start_project(tmp_path, *apps, extra="del BASE_DIR\n")
    result = manage("quickstart", "--no-serve")
    assert result.returncode == 1
    assert (
        "CommandError: quickstart needs a directory for the demo homes and this "
        "project's settings name none (no DATA_DIR nor BASE_DIR); give one with "
        "--data-dir, e.g. --data-dir /srv/ftpsuite."
    ) in result.stderr
    assert "Traceback" not in result.stderr
