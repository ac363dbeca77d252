"""Settings of the standalone suite, configured from the environment.

- ``FTPADMIN_DATA_DIR``: where the SQLite database, the generated secret key
  and the demo home directories live (default: ``./var``).
- ``DATABASE_URL``: e.g. ``postgres://user@host:5432/name`` (default: SQLite
  in the data directory).
- ``SECRET_KEY``: default: generated once and kept in the data directory.
- ``DEBUG``: ``1``/``true`` turns it on (default off).
- ``ALLOWED_HOSTS``: comma-separated (default ``localhost,127.0.0.1,[::1]``).
- ``STATIC_ROOT``: where the admin's static files are collected (default:
  ``static`` in the data directory).
- ``FTPADMIN_ROLE``: ``ftp`` loads only the FTP server's apps (no admin, no
  web stack); ``all`` (the default) every app. The ``ftpadmin`` script and
  manage.py set it: ``ftp`` for ``ftpserver``, ``all`` for other commands.
- ``FTPSERVER_*``: any FTP server setting, e.g. ``FTPSERVER_PORT=21``;
  ``FTPSERVER_PASSIVE_PORTS=30000-30100``.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from ftpserver_core.conf import DEFAULTS as FTP_DEFAULTS

BASE_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("FTPADMIN_DATA_DIR", Path.cwd() / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _flag(name, default=False):
    return os.environ.get(name, str(default)).strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
    )


def _secret_key():
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _flag("DEBUG")
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]

# Which apps this process loads (FTPADMIN_ROLE, see ftpadmin/__main__.py):
# "ftp" for the FTP server, which needs only its models and their relations;
# the admin's autodiscovery would import the whole web stack (import-export,
# tablib, openpyxl, django-filter: some 400 modules and 20 MB per process).
ROLE = os.environ.get("FTPADMIN_ROLE", "").strip().lower() or "all"
if ROLE not in ("all", "ftp"):
    raise ImproperlyConfigured(
        f"FTPADMIN_ROLE = {os.environ['FTPADMIN_ROLE']!r}: expected 'ftp' (the "
        "FTP server's apps only) or 'all' (every app: the admin, migrate)."
    )
FTP_APPS = [
    "ftpserver_core",
    "django.contrib.auth",
    "django.contrib.contenttypes",
]
INSTALLED_APPS = (
    FTP_APPS
    if ROLE == "ftp"
    else [
        "ftpadmin",
        "ftpserver_core",
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
        "import_export",
        "django_filters",
    ]
)

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves STATIC_ROOT (the admin's CSS and scripts) under ``ftpadmin web``
    # with DEBUG off, before sessions are loaded for them.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Not in the FTP role: the URL checks every command runs would import the
# URLconf, and with it the admin; the auth app's checks import every
# middleware (WhiteNoise, sessions, messages), none of which it serves.
ROOT_URLCONF = None if ROLE == "ftp" else "ftpadmin.urls"
if ROLE == "ftp":
    MIDDLEWARE = []
WSGI_APPLICATION = "ftpadmin.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{DATA_DIR / 'ftpsuite.sqlite3'}",
        # Persistent connections: the FTP server's login threads (and the
        # admin's) reuse theirs instead of connecting at every login, which
        # costs PostgreSQL a backend process each time (100 cached logins:
        # 0.85 s -> see docs/performance.rst). Checked before reuse.
        conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets the admin read while the FTP server's threads write.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"]["OPTIONS"]["timeout"] = 20

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where ``collectstatic`` (run by ``ftpadmin web`` at start) copies the static
# files. The Docker image keeps them in the image, outside the data volume.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or DATA_DIR / "static")
try:
    # WhiteNoise warns at every start of a missing one (quickstart serves the
    # static files without collecting them).
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
except OSError:
    pass  # a read-only one is collected already, or ``ftpadmin web`` says so

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "ftpserver_core": {
            "handlers": ["console"],
            "level": os.environ.get("FTPSERVER_LOG_LEVEL", "INFO"),
        },
        "pyftpdlib": {"handlers": ["console"], "level": "WARNING"},
    },
}

# Every FTP server setting can come from the environment. Lists are
# comma-separated (FTPSERVER_HOME_ROOTS=/srv/ftp,/data/ftp), the defender's
# scores kind=points pairs (FTPSERVER_DEFENDER_SCORES=no_login=0,abuse=5).
_LIST_SETTINGS = {"HOME_ROOTS", "DEFENDER_SAFELIST"}
_DICT_SETTINGS = {"DEFENDER_SCORES"}


def _pairs(text):
    result = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, number = item.partition("=")
        try:
            result[key.strip()] = int(number)
        except ValueError:
            result[key.strip()] = number  # the system check quotes it
    return result


for _name, _default in FTP_DEFAULTS.items():
    _value = os.environ.get("FTPSERVER_" + _name)
    if _value is None:
        continue
    if _value.strip().lower() == "none" or (not _value.strip() and _default is None):
        # "none" turns off a limit whose default is a number, too.
        _value = None
    elif _name in _LIST_SETTINGS:
        _value = [item.strip() for item in _value.split(",") if item.strip()]
    elif _name in _DICT_SETTINGS:
        _value = _pairs(_value)
    elif isinstance(_default, bool):
        _value = _value.strip().lower() in ("1", "true", "yes", "on")
    elif isinstance(_default, int):
        try:
            _value = int(_value, 0)
        except ValueError:
            pass  # the system check quotes the bad value
    elif isinstance(_default, float):
        _value = float(_value)
    elif _value.strip().lower() in ("", "none"):
        _value = None
    globals()["FTPSERVER_" + _name] = _value
