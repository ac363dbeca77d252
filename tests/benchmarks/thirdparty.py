"""Third-party code the benchmark fetches at run time, never kept in the repo.

- django-ftpserver 1.0.0 (the original project), installed from PyPI into a
  virtualenv of its own in the run's temp dir, with a minimal Django project
  (SQLite, Django's default PBKDF2 hasher) whose accounts are created with its
  own management commands;
- pyftpdlib's ``scripts/ftpbench``, copied out of the pyftpdlib 2.2.0 source
  distribution into the temp dir, with one fix for current psutil.
"""

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

DJANGO_FTPSERVER = "django-ftpserver==1.0.0"
# The same Django and pyftpdlib as ours, so only the server code differs.
DJANGO = "Django>=5.2,<5.3"
PYFTPDLIB = "pyftpdlib==2.2.0"

SETTINGS = '''\
"""Minimal project for django-ftpserver 1.0.0 (written by the benchmark)."""

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = []
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_ftpserver",
]
DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": {database!r},
        "OPTIONS": {{"timeout": 20}},
    }}
}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
# PASSWORD_HASHERS left out: Django's default, PBKDF2.
'''

MANAGE = """\
#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

# Run with ``manage.py shell -c``: users from the benchmark's password hashes,
# then their FTP accounts with the project's own createftpuseraccount.
CREATE_USERS = """\
import json
from django.contrib.auth import get_user_model
from django.core.management import call_command
User = get_user_model()
for name, hashed in json.load(open({hashes!r})).items():
    User.objects.create(username=name, password=hashed)
    call_command("createftpuseraccount", name, "bench", stdout=open("/dev/null", "w"))
print(User.objects.count(), "users")
"""


def run(argv, timeout, **kwargs):
    """Run a setup command; on failure raise with its output."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if done.returncode:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} failed ({done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


class DjangoFtpserverProject:
    """A virtualenv with django-ftpserver 1.0.0 and a project using it."""

    def __init__(self, tmp, homes):
        self.root = Path(tmp) / "django-ftpserver"
        self.venv = self.root / "venv"
        self.path = self.root / "project"
        self.homes = Path(homes)
        self.python = self.venv / "bin" / "python"

    def install(self):
        run([sys.executable, "-m", "venv", str(self.venv)], timeout=300)
        run(
            [
                str(self.python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                DJANGO_FTPSERVER,
                DJANGO,
                PYFTPDLIB,
            ],
            timeout=900,
        )
        return run(
            [
                str(self.python),
                "-c",
                "import django, pyftpdlib; from importlib.metadata import version; "
                "print(version('django-ftpserver'), django.get_version(), "
                "pyftpdlib.__ver__)",
            ],
            timeout=60,
        ).split()

    def create(self, hashes_file, names):
        """Write the project, migrate, and create the group and the accounts."""
        package = self.path / "benchproject"
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        (package / "settings.py").write_text(
            SETTINGS.format(database=str(self.root / "db.sqlite3"))
        )
        (self.path / "manage.py").write_text(MANAGE)
        for name in names:  # it serves existing homes only
            (self.homes / name).mkdir(parents=True, exist_ok=True)

        def manage(*args, timeout=300):
            return run(
                [str(self.python), "manage.py", *args], timeout=timeout, cwd=self.path
            )

        manage("migrate", "-v", "0")
        # Its permission field holds 8 letters: its default, "elradfmw".
        manage(
            "createftpusergroup",
            "bench",
            str(self.homes / "{username}"),
            "--permission",
            "elradfmw",
        )
        manage("shell", "-c", CREATE_USERS.format(hashes=str(hashes_file)))


def fetch_ftpbench(tmp):
    """Copy pyftpdlib 2.2.0's scripts/ftpbench into ``tmp``; return its path.

    The script calls ``memory_info_ex()`` / ``get_memory_info()``, which
    psutil no longer has; both become ``memory_info()`` (its ``shared``
    field is still there on Linux, so the figure is the same rss - shared).
    """
    tmp = Path(tmp)
    download = tmp / "pyftpdlib-sdist"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--no-binary",
            ":all:",
            "--no-deps",
            PYFTPDLIB,
            "-d",
            str(download),
        ],
        timeout=300,
    )
    (archive,) = download.glob("pyftpdlib-*.tar.gz")
    with tarfile.open(archive) as tar:
        member = next(
            m for m in tar.getmembers() if m.name.endswith("scripts/ftpbench")
        )
        source = tar.extractfile(member).read().decode()
    fixed = re.sub(r"\b(?:get_memory_info|memory_info_ex)\(\)", "memory_info()", source)
    if fixed == source:
        raise RuntimeError("ftpbench: the psutil call to fix was not found")
    script = tmp / "ftpbench.py"
    script.write_text(fixed)
    return script


def write_hashes(path, hashes):
    Path(path).write_text(json.dumps(hashes))
