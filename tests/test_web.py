"""``ftpadmin web``: the admin under waitress, run as an operator runs it."""

import http.cookiejar
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from .conftest import database_url
from .processes import REPO_ROOT, STARTUP_TIMEOUT
from .test_commands import free_port

BANNER_RE = re.compile(
    r"^Starting admin web server at http://(?P<host>[^:]+):(?P<port>\d+)/admin/$", re.M
)


def web_env(tmp_path, **extra):
    """The standalone suite's settings on the test database, DEBUG off."""
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "ftpadmin.settings",
        "FTPADMIN_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": database_url(),
        "SECRET_KEY": "tests-only-" + "x" * 50,
        "DEBUG": "0",
        **extra,
    }


class WebProcess:
    """``python -m ftpadmin web ARGS`` with its output in files."""

    def __init__(self, args, tmp_path, env):
        self.out_path = tmp_path / "web-stdout.txt"
        self.err_path = tmp_path / "web-stderr.txt"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ftpadmin", "web", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=tmp_path,
            )
        self.url = None

    @property
    def stdout(self):
        return self.out_path.read_text()

    @property
    def stderr(self):
        return self.err_path.read_text()

    def wait_started(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (match := BANNER_RE.search(self.stdout)):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"web exited with {self.proc.returncode} before its banner:\n"
                    f"stdout: {self.stdout}\nstderr: {self.stderr}"
                )
            assert time.monotonic() < deadline, f"no banner: {self.stdout}"
            time.sleep(0.05)
        self.url = f"http://{match['host']}:{match['port']}"
        return self

    def stop(self, signum=signal.SIGTERM):
        self.proc.send_signal(signum)
        return self.proc.wait(20)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def web(transactional_db, tmp_path):
    """Start ``ftpadmin web``: ``web(*args, env=None)``; killed at teardown."""
    started = []

    def start(*args, env=None, wait=True):
        process = WebProcess(args, tmp_path, env or web_env(tmp_path))
        started.append(process)
        return process.wait_started() if wait else process

    yield start
    for process in started:
        process.kill()


def run_web(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "ftpadmin", "web", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=web_env(tmp_path),
        cwd=tmp_path,
        timeout=STARTUP_TIMEOUT,
    )


def fetch(opener, url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310 (http)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_serves_the_admin_and_its_static_files_then_stops_on_sigterm(web, tmp_path):
    # Hashed for the suite's settings (the tests' MD5 hasher is not theirs).
    hashed = PBKDF2PasswordHasher().encode("s3cret-pass", "saltsalt", iterations=1000)
    get_user_model().objects.create_superuser("boss", password=None)
    get_user_model().objects.filter(username="boss").update(password=hashed)
    server = web(f"127.0.0.1:{free_port()}", "--threads", "2")
    assert "DEBUG: off" in server.stdout
    # Django's deployment checks are run and shown (HTTPS cookies here).
    assert "(security.W012)" in server.stderr
    # collectstatic ran into STATIC_ROOT, under the data directory.
    assert re.search(r"Static files: \d{2,} copied, 0 unchanged", server.stdout)
    assert (tmp_path / "data" / "static" / "admin" / "css" / "base.css").is_file()

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(jar), NoRedirect
    )
    status, _, body = fetch(opener, server.url + "/admin/login/")
    assert status == 200
    page = body.decode()
    assert 'href="/static/admin/css/base.css"' in page

    # The admin's CSS, from STATIC_ROOT through WhiteNoise (DEBUG is off:
    # Django itself would answer 404).
    status, headers, css = fetch(opener, server.url + "/static/admin/css/base.css")
    assert status == 200
    assert headers.get_content_type() == "text/css"
    assert (
        css
        == (tmp_path / "data" / "static" / "admin" / "css" / "base.css").read_bytes()
    )
    status, _, _ = fetch(opener, server.url + "/static/admin/css/no-such.css")
    assert status == 404

    # A login: the CSRF check, the database, the session.
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token,
            "username": "boss",
            "password": "s3cret-pass",
            "next": "/admin/",
        }
    ).encode()
    status, headers, _ = fetch(
        opener,
        server.url + "/admin/login/?next=/admin/",
        data=form,
        headers={"Referer": server.url + "/admin/login/"},
    )
    assert status == 302, "the login was refused"
    assert headers["Location"] == "/admin/"
    status, _, body = fetch(opener, server.url + "/admin/")
    assert status == 200
    assert b"Site administration" in body

    assert server.stop(signal.SIGTERM) == 0, server.stderr
    assert "Admin web server stopped." in server.stdout
    assert "Traceback" not in server.stderr


def test_ctrl_c_stops_it_cleanly(web, tmp_path):
    server = web(f"127.0.0.1:{free_port()}")
    status, _, _ = fetch(urllib.request.build_opener(), server.url + "/admin/login/")
    assert status == 200
    assert server.stop(signal.SIGINT) == 0, server.stderr
    assert "Traceback" not in server.stderr


@pytest.mark.django_db(transaction=True)
def test_a_port_in_use_is_refused_with_a_sentence(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_web(tmp_path, f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"CommandError: 127.0.0.1:{port}: That port is already in use." in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.django_db(transaction=True)
def test_uncollected_static_files_are_refused_with_the_command_to_run(tmp_path):
    result = run_web(tmp_path, f"127.0.0.1:{free_port()}", "--no-collectstatic")
    assert result.returncode == 1
    static = tmp_path / "data" / "static"
    assert f"STATIC_ROOT '{static}' has no collected static files" in result.stderr
    assert "run 'ftpadmin collectstatic'" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_bad_arguments_are_refused(tmp_path):
    result = run_web(tmp_path, "127.0.0.1:http")
    assert result.returncode == 1
    assert "CommandError:" in result.stderr
    result = run_web(tmp_path, "--threads", "0")
    assert result.returncode == 1
    assert "CommandError: --threads 0: expected 1 or more." in result.stderr
