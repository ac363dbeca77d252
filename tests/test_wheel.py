"""The wheel, as a user gets it: built, installed in a fresh venv, quickstarted.

Proves that the templates, static files and migrations are in the wheel and
found from site-packages (APP_DIRS and the app-directories static finder),
that the standalone suite's site-level templates/ and static/ (the admin
index override, the branding, the favicon) are in it too, as
``ftpsuite_site/`` beside the packages, found by ftpadmin/settings.py and by
no host project, and that ``ftpadmin quickstart`` serves the admin with its
CSS and the FTP server, then stops cleanly on Ctrl-C and on SIGTERM.
"""

import ftplib
import http.cookiejar
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ftpadmin", "ftpserver_core")
#: The suite's site-level folders and where the wheel puts them.
SITE = {"templates": "ftpsuite_site/templates", "static": "ftpsuite_site/static"}

pytestmark = pytest.mark.slow


def run(*args, timeout=600, **kwargs):
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert done.returncode == 0, (
        f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the project's wheel (PEP 517, with hatchling) and return its path."""
    out = tmp_path_factory.mktemp("wheelhouse")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, REPO_ROOT)
    (built,) = out.glob("django_ftpserver_suite-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh venv with the wheel installed (dependencies from the index)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    run(sys.executable, "-m", "venv", root)
    python = root / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", wheel)
    return root


def package_files(package):
    """Every file of a package's source tree that the wheel must carry."""
    base = REPO_ROOT / package
    for path in base.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path.relative_to(REPO_ROOT).as_posix()


def test_the_wheel_carries_templates_static_files_and_migrations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGES:
        missing = sorted(set(package_files(package)) - names)
        assert not missing, f"not in {wheel.name}: {missing}"
    for folder, target in SITE.items():
        expected = {
            target + name.removeprefix(folder) for name in package_files(folder)
        }
        assert expected, folder
        missing = sorted(expected - names)
        assert not missing, f"not in {wheel.name}: {missing}"
    # The files that make the admin look like itself, by name.
    for name in (
        "ftpsuite_site/templates/admin/index.html",
        "ftpsuite_site/templates/admin/base_site.html",
        "ftpsuite_site/static/favicon.svg",
        "ftpadmin/templates/ftpadmin/admin_index.html",
        "ftpadmin/templates/ftpadmin/transfers.html",
        "ftpadmin/static/ftpadmin/report.css",
        "ftpserver_core/migrations/0001_initial.py",
        "ftpadmin/management/commands/quickstart.py",
    ):
        assert name in names, name
    # The app overrides no admin template of its own accord.
    assert "ftpadmin/templates/admin/index.html" not in names
    assert "ftpadmin/templates/admin/base_site.html" not in names
    # Nothing else: no tests, no docs, no caches.
    top = {name.split("/", 1)[0] for name in names}
    distribution, version = wheel.name.split("-")[:2]
    assert top == {*PACKAGES, "ftpsuite_site", f"{distribution}-{version}.dist-info"}, (
        top
    )
    assert not any(
        name.startswith("ftpsuite_site/") for name in names if name.endswith(".py")
    )
    assert not any(name.endswith(".pyc") for name in names)
    dist_info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(dist_info).decode()
    assert "ftpadmin = ftpadmin.__main__:main" in entry_points


# --- quickstart from the installed wheel ------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "quickstart exited early"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


class Quickstart:
    """``ftpadmin quickstart`` from the venv, its output read in a thread."""

    PASSWORDS = re.compile(
        r"Admin: (?P<url>http://\S+) user '(?P<admin>[^']+)', password "
        r"'(?P<admin_password>[^']+)'\s+Demo FTP account: user '(?P<demo>[^']+)', "
        r"password '(?P<demo_password>[^']+)'"
    )

    def __init__(self, venv, workdir, data_dir):
        self.ftp_port, self.admin_port = free_port(), free_port()
        # Only what a user's shell would have: not this test run's settings
        # module, database or virtualenv.
        env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", str(workdir)),
            "LANG": "C.UTF-8",
            "FTPADMIN_DATA_DIR": str(data_dir),
            # Print the passwords before the servers block.
            "PYTHONUNBUFFERED": "1",
        }
        self.process = subprocess.Popen(
            [
                venv / "bin" / "ftpadmin",
                "quickstart",
                "--ftp",
                f"127.0.0.1:{self.ftp_port}",
                "--admin",
                f"127.0.0.1:{self.admin_port}",
            ],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = io.StringIO()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            with self._lock:
                self.output.write(line)

    def text(self):
        with self._lock:
            return self.output.getvalue()

    def passwords(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = self.PASSWORDS.search(self.text())
            if match:
                return match.groupdict()
            assert self.process.poll() is None, f"quickstart exited:\n{self.text()}"
            time.sleep(0.1)
        raise AssertionError(f"no passwords printed:\n{self.text()}")

    def ready(self):
        wait_for_port(self.admin_port, self.process)
        wait_for_port(self.ftp_port, self.process)

    def stop(self, signum, timeout=30):
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"quickstart did not stop on {signum!r}:\n{self.text()}"
            ) from None
        self._reader.join(5)
        return code

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Links(HTMLParser):
    """The stylesheets and the form fields of a page."""

    def __init__(self):
        super().__init__()
        self.stylesheets, self.inputs = [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.stylesheets.append(attrs["href"])
        elif tag == "input" and attrs.get("name"):
            self.inputs[attrs["name"]] = attrs.get("value", "")


def parse(html):
    links = Links()
    links.feed(html)
    return links


class Web:
    """A cookie-keeping HTTP client of the admin."""

    def __init__(self, base):
        self.base = base
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar)
        )

    def get(self, path, data=None):
        url = urllib.parse.urljoin(self.base, path)
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        # http://127.0.0.1:PORT/..., built by the test.
        request = urllib.request.Request(url, data=body)  # noqa: S310
        if data is not None:
            request.add_header("Referer", url)
        with self.opener.open(request, timeout=20) as response:
            return response.status, response.headers, response.read(), response.url

    def page(self, path, data=None):
        status, headers, body, url = self.get(path, data)
        assert status == 200, (path, status)
        assert headers.get_content_type() == "text/html", headers
        return body.decode(), url

    def assert_stylesheets(self, html, expected):
        """Every stylesheet the page links loads as CSS; return their paths."""
        sheets = parse(html).stylesheets
        for path in expected:
            assert any(href.endswith(path) for href in sheets), (path, sheets)
        for href in sheets:
            status, headers, body, _ = self.get(href)
            assert status == 200, href
            assert headers.get_content_type() == "text/css", (href, headers)
            assert len(body) > 100 and b"{" in body, href
        return sheets


def test_quickstart_from_the_installed_wheel(venv, tmp_path):
    data_dir, workdir = tmp_path / "data", tmp_path / "work"
    workdir.mkdir()
    quickstart = Quickstart(venv, workdir, data_dir)
    try:
        found = quickstart.passwords()
        quickstart.ready()
        web = Web(f"http://127.0.0.1:{quickstart.admin_port}/")
        assert found["url"] == f"http://127.0.0.1:{quickstart.admin_port}/admin/"

        # The login page, in the admin's look: its CSS is served.
        html, _ = web.page("/admin/login/?next=/admin/")
        assert "<title>Log in | FTP server admin</title>" in html
        web.assert_stylesheets(
            html, ["admin/css/base.css", "admin/css/login.css", "branding.css"]
        )
        # The favicon, from the wheel's ftpsuite_site/static/.
        favicon = re.search(r'<link rel="icon" href="([^"]+)"', html)
        assert favicon and favicon[1] == "/static/favicon.svg", html[:1500]
        status, headers, body, _ = web.get(favicon[1])
        assert status == 200 and headers.get_content_type() == "image/svg+xml"
        assert body.lstrip().startswith(b"<svg")
        # A file that is not there is a 404, not a page: the check can fail.
        with pytest.raises(urllib.error.HTTPError) as missing:
            web.get("/static/ftpadmin/no-such.css")
        assert missing.value.code == 404

        # Logging in shows ftpadmin's own index template (the reports link).
        form = parse(html).inputs
        html, url = web.page(
            "/admin/login/?next=/admin/",
            {
                "csrfmiddlewaretoken": form["csrfmiddlewaretoken"],
                "username": found["admin"],
                "password": found["admin_password"],
                "next": "/admin/",
            },
        )
        assert url.endswith("/admin/"), url
        assert "Site administration" in html
        # The suite's index override, from the wheel's ftpsuite_site/templates/.
        assert 'id="ftpadmin-reports"' in html, "the suite's admin/index.html not found"
        assert 'id="ftpadmin-dashboard"' in html
        assert "View site" not in html
        # ftpadmin's own template and static file.
        html, _ = web.page("/admin/ftp-reports/transfers/")
        assert 'id="transfer-totals"' in html
        web.assert_stylesheets(html, ["admin/css/base.css", "ftpadmin/report.css"])

        # The demo account logs in over FTP, in the data directory's home.
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", quickstart.ftp_port, timeout=10)
        assert ftp.login(found["demo"], found["demo_password"]).startswith("230")
        assert ftp.storbinary("STOR hello.txt", io.BytesIO(b"hello")).startswith("226")
        assert ftp.nlst() == ["hello.txt"]
        ftp.quit()
        assert (data_dir / "ftp" / found["demo"] / "hello.txt").read_bytes() == b"hello"
        assert (data_dir / "ftpsuite.sqlite3").is_file()

        code = quickstart.stop(signal.SIGINT)
        assert code == 0, quickstart.text()
        assert "Traceback" not in quickstart.text(), quickstart.text()
    finally:
        quickstart.kill()

    # Again, with the same data: new passwords, the old ones no longer work;
    # SIGTERM stops it cleanly too.
    again = Quickstart(venv, workdir, data_dir)
    try:
        renewed = again.passwords()
        again.ready()
        assert renewed["demo_password"] != found["demo_password"]
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", again.ftp_port, timeout=10)
        with pytest.raises(ftplib.error_perm, match="^530"):
            ftp.login(found["demo"], found["demo_password"])
        ftp.close()
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", again.ftp_port, timeout=10)
        ftp.login(renewed["demo"], renewed["demo_password"])
        assert ftp.nlst() == ["hello.txt"]
        ftp.quit()
        code = again.stop(signal.SIGTERM)
        assert code == 0, again.text()
        assert "Traceback" not in again.text(), again.text()
    finally:
        again.kill()


# --- the site-level files: the suite's, not a host project's --------------------

SITE_PROBE = """
import json, os, sys
from pathlib import Path
import django
from django.conf import settings
if sys.argv[1] == "host":
    # A project that installs the apps, as the README says: no DIRS.
    settings.configure(
        INSTALLED_APPS=[
            "ftpadmin", "ftpserver_core", "django.contrib.admin",
            "django.contrib.auth", "django.contrib.contenttypes",
            "django.contrib.sessions", "django.contrib.messages",
            "django.contrib.staticfiles", "import_export", "django_filters",
        ],
        TEMPLATES=[{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
        }],
        STATIC_URL="static/",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": ":memory:"}},
    )
django.setup()
from django.contrib.staticfiles import finders
from django.template.loader import get_template
import ftpadmin
favicon = finders.find("favicon.svg")
print(json.dumps({
    "index": get_template("admin/index.html").origin.name,
    "base_site": get_template("admin/base_site.html").origin.name,
    "opt_in": get_template("ftpadmin/admin_index.html").origin.name,
    "favicon": favicon,
    "package": str(Path(ftpadmin.__file__).parent),
}))
"""


def probe(venv, tmp_path, kind):
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "FTPADMIN_DATA_DIR": str(tmp_path / "data"),
    }
    if kind == "suite":
        env["DJANGO_SETTINGS_MODULE"] = "ftpadmin.settings"
    done = run(venv / "bin" / "python", "-c", SITE_PROBE, kind, cwd=tmp_path, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_site_files_come_from_the_wheel_and_only_to_the_suite(venv, tmp_path):
    suite = probe(venv, tmp_path, "suite")
    site_packages = Path(suite["package"]).parent
    assert str(site_packages).startswith(str(venv)), suite
    site = site_packages / "ftpsuite_site"
    # The standalone suite: the index override, the branding and the favicon
    # from the installed ftpsuite_site/, never from the checkout.
    assert suite["index"] == str(site / "templates" / "admin" / "index.html"), suite
    assert suite["base_site"] == str(site / "templates" / "admin" / "base_site.html")
    assert suite["favicon"] == str(site / "static" / "favicon.svg"), suite
    assert (site / "static" / "favicon.svg").read_bytes() == (
        REPO_ROOT / "static" / "favicon.svg"
    ).read_bytes()

    # A host project with the same wheel: Django's own index and branding, no
    # favicon of ours; the dashboard is there to opt in to.
    host = probe(venv, tmp_path, "host")
    admin_templates = "django/contrib/admin/templates/admin/"
    assert host["index"].endswith(admin_templates + "index.html"), host
    assert host["base_site"].endswith(admin_templates + "base_site.html"), host
    assert host["favicon"] is None, host
    assert host["opt_in"] == str(
        Path(host["package"]) / "templates" / "ftpadmin" / "admin_index.html"
    )
