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
  ``FTPSERVER_PASSIVE_PORTS=30000-30100`` (cast as below; a bad value is
  reported by the system checks, quoted).

The environment is read with django-environ.
"""

import os
import re
import secrets
from importlib import import_module
from pathlib import Path

import dj_database_url
import environ
from django.core.exceptions import ImproperlyConfigured

from ftpserver_core.conf import DEFAULTS as FTP_DEFAULTS

# django-environ: typed reads of the environment (bools, lists, numbers).
env = environ.Env()

BASE_DIR = Path(__file__).resolve().parent
# The standalone suite's site-level templates and static files (the admin
# index with the FTP dashboard, the branding, the favicon): templates/ and
# static/ at the top of a checkout; from the wheel, ftpsuite_site/ beside this
# package (pyproject.toml maps them there). No app's: a project that installs
# ftpadmin does not get them.
SITE_DIR = next(
    (
        root
        for root in (BASE_DIR.parent / "ftpsuite_site", BASE_DIR.parent)
        if (root / "templates" / "admin").is_dir()
    ),
    BASE_DIR.parent,
)
DATA_DIR = Path(env.str("FTPADMIN_DATA_DIR", default=str(Path.cwd() / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key():
    # Read as written: django-environ would take a key starting with "$" for
    # the name of another variable.
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = [
    host.strip()
    for host in env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
    if host.strip()
]

# Which apps this process loads (FTPADMIN_ROLE, see ftpadmin/__main__.py):
# "ftp" for the FTP server, which needs only its models and their relations;
# the admin's autodiscovery would import the whole web stack (import-export,
# tablib, openpyxl, django-filter: some 400 modules and 20 MB per process).
ROLE = env.str("FTPADMIN_ROLE", default="").strip().lower() or "all"
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
        "DIRS": [SITE_DIR / "templates"],
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

# The database driver each engine needs, and how to install it: without it
# Django's own error is a traceback from deep in the backend's import.
DRIVERS = {
    "django.db.backends.postgresql": (
        ("psycopg", "psycopg2"),
        "PostgreSQL needs the psycopg driver: pip install "
        "'django-ftpserver-suite[postgres]'",
    ),
    "django.contrib.gis.db.backends.postgis": (
        ("psycopg", "psycopg2"),
        "PostGIS needs the psycopg driver: pip install "
        "'django-ftpserver-suite[postgres]'",
    ),
    "django.db.backends.mysql": (
        ("MySQLdb",),
        "MySQL needs the mysqlclient driver: pip install mysqlclient",
    ),
}


def _require_driver(database):
    modules, install = DRIVERS.get(database["ENGINE"], ((), ""))
    for module in modules:
        try:
            import_module(module)
            return
        except ImportError:
            continue
    if modules:
        scheme = env.str("DATABASE_URL", default="").partition(":")[0]
        raise ImproperlyConfigured(
            f"DATABASE_URL ({scheme}://...) names a database whose driver is not "
            f"installed ({' or '.join(modules)}). {install}."
        )


_require_driver(DATABASES["default"])

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [SITE_DIR / "static"]
# Where ``collectstatic`` (run by ``ftpadmin web`` at start) copies the static
# files. The Docker image keeps them in the image, outside the data volume.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default="") or DATA_DIR / "static")
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
            "level": env.str("FTPSERVER_LOG_LEVEL", default="INFO"),
        },
        "pyftpdlib": {"handlers": ["console"], "level": "WARNING"},
    },
}

# Every FTP server setting can come from the environment, cast by
# django-environ after its default's type. Lists are comma-separated
# (FTPSERVER_HOME_ROOTS=/srv/ftp,/data/ftp), the defender's scores kind=points
# pairs (FTPSERVER_DEFENDER_SCORES=no_login=0,abuse=5), "none" turns a
# setting off (a limit too: FTPSERVER_MAX_CONNECTIONS_PER_IP=none),
# FTPSERVER_HOME_DIR_MODE is octal (750). A value that does not cast is kept
# as its text: the system checks then quote it (manage.py check), rather
# than a traceback here.
_LIST_SETTINGS = {"HOME_ROOTS", "DEFENDER_SAFELIST", "AUDIT_EVENTS"}
_DICT_SETTINGS = {"DEFENDER_SCORES"}
_OCTAL_SETTINGS = {"HOME_DIR_MODE"}
# Numbers whose default is None (the others are known by their default).
_NUMBER_SETTINGS = {
    "MAX_SESSIONS_PER_ADDRESS",
    "AUTH_WORKERS",
    "ANONYMOUS_DOWNLOAD_RATE",
}
_FALSE_WORDS = ("false", "off", "no", "n", "0")
# The casts of django-environ, without its "$OTHER_VARIABLE" references: a
# value is taken as written.
parse = environ.Env.parse_value
# Plain decimal numbers only: django-environ's float cast drops every other
# character ("5 minutes" would be 5.0).
_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")


def _ftpserver_setting(name, default):
    """Return FTPSERVER_<name> from the environment, cast after ``default``."""
    text = os.environ["FTPSERVER_" + name].strip()
    if text.lower() == "none" or (not text and default is None):
        return None
    if name in _LIST_SETTINGS:
        return [item.strip() for item in parse(text, list) if item.strip()]
    if name in _DICT_SETTINGS:
        try:
            pairs = parse(text, dict)
        except ValueError:
            return text  # an item without "=": the check quotes it
        return {
            kind.strip(): int(points) if _INTEGER.match(points.strip()) else points
            for kind, points in pairs.items()
            if kind.strip()
        }
    if isinstance(default, bool):
        word = text.lower()
        if word in environ.Env.BOOLEAN_TRUE_STRINGS or word in _FALSE_WORDS:
            return parse(word, bool)
        return text
    if name in _OCTAL_SETTINGS:
        try:
            return int(text, 8)
        except ValueError:
            return text
    if name in _NUMBER_SETTINGS or isinstance(default, int | float):
        if _INTEGER.match(text):
            return parse(text, int)
        if _DECIMAL.match(text):
            return parse(text, float)
    return text


for _name, _default in FTP_DEFAULTS.items():
    if "FTPSERVER_" + _name in os.environ:
        globals()["FTPSERVER_" + _name] = _ftpserver_setting(_name, _default)
