"""Settings for the test suite: SQLite by default, PostgreSQL via DATABASE_URL."""

import os
import tempfile

import dj_database_url

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "ftpadmin",
    # Its own FTP signal receivers, connected before the built-in audit ones.
    "tests.receiver_app",
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

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "ftpadmin.urls"
# The standalone suite's site-level templates/ and static/, as in
# ftpadmin/settings.py (tests/test_admin_polish.py drops them to be a host
# project).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [os.path.join(_REPO, "templates")],
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

_TMP = os.environ.get("FTPSUITE_TEST_TMP") or tempfile.gettempdir()
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{os.path.join(_TMP, 'ftpsuite-tests.sqlite3')}"
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not :memory:, so the FTP server's threads and the subprocesses
    # that tests start see the same database.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(_TMP, f"ftpsuite-test-{os.getpid()}.sqlite3")
    }
    # As the suite's own settings (ftpadmin/settings.py): a write
    # transaction takes the lock at BEGIN. A deferred one that read first
    # gets "database is locked" at once, without waiting, when the server's
    # threads (a heartbeat, the audit writer) write meanwhile: an admin POST
    # failed so in CI.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
STATICFILES_DIRS = [os.path.join(_REPO, "static")]

# Django's own fast hasher for tests; the benchmarks use the default PBKDF2.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

FTPSERVER_AUTH_FAILED_DELAY = 0.05

# The audit journal of this test process (its database's); tests that look
# into a journal use their tmp_path.
FTPSERVER_AUDIT_JOURNAL_DIR = os.path.join(
    _TMP, f"ftpsuite-audit-journal-{os.getpid()}"
)
# ... which is in the temporary directory, as everything of a test run.
SILENCED_SYSTEM_CHECKS = ["ftpserver_core.W002"]

# Transfer digests are off by default (their cost: docs/performance.rst); the
# suite checks them on, and off where a test says so.
FTPSERVER_DIGESTS = True

# The suite's clients connect from 127.0.0.1, many of them with wrong
# passwords on purpose: that address is never scored. The defender's own
# tests use 127.0.0.2 and up.
FTPSERVER_DEFENDER_SAFELIST = ["127.0.0.1"]
