"""Benchmark settings: the test settings with Django's default password hasher."""

import os

from tests.settings import *  # noqa: F403

del PASSWORD_HASHERS  # noqa: F821  (Django's default: PBKDF2, as in production)
FTPSERVER_AUTH_FAILED_DELAY = 3.0
# Every benchmark client connects from 127.0.0.1, standing for many users at
# many addresses (bare pyftpdlib has no per-address limits either); the
# flood probe sets its own.
FTPSERVER_MAX_CONNECTIONS_PER_IP = None
FTPSERVER_LOGINS_PER_ADDRESS = None
if os.environ.get("BENCH_DEFAULT_LIMITS") == "1":
    # The flood probe: the real per-address limits, the defender off.
    del FTPSERVER_MAX_CONNECTIONS_PER_IP, FTPSERVER_LOGINS_PER_ADDRESS
    FTPSERVER_DEFENDER_ENABLED = False

# The product's apps only: the test suite's recording receivers would keep
# every signal call in memory and add work to every FTP event.
INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "tests.receiver_app"]  # noqa: F405

# As the standalone suite (ftpadmin/settings.py) logs: the server's own
# messages, and pyftpdlib's warnings only, not a line per FTP command.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "ftpserver_core": {"handlers": ["console"], "level": "INFO"},
        "pyftpdlib": {"handlers": ["console"], "level": "WARNING"},
    },
}

# Benchmark variants, e.g. BENCH_AUDIT=0 to measure without the audit trail.
FTPSERVER_AUDIT_ENABLED = os.environ.get("BENCH_AUDIT", "1") == "1"
# run.py starts one server with FTPSERVER_CREDENTIAL_CACHE_TTL=0 (every login
# hashes) beside one with the default cache.
if "FTPSERVER_CREDENTIAL_CACHE_TTL" in os.environ:
    FTPSERVER_CREDENTIAL_CACHE_TTL = int(os.environ["FTPSERVER_CREDENTIAL_CACHE_TTL"])
if os.environ.get("BENCH_TMP"):
    FTPSERVER_AUDIT_JOURNAL_DIR = os.path.join(
        os.environ.get("BENCH_JOURNAL_DIR") or os.environ["BENCH_TMP"],
        f"audit-journal-{os.getpid()}",
    )
# BENCH_FSYNC=1: fsync the audit journal before each reply (power-loss safe).
FTPSERVER_AUDIT_FSYNC = os.environ.get("BENCH_FSYNC", "0") == "1"
# BENCH_DEFENDER=0: the defender off (the defender probe's variant).
if os.environ.get("BENCH_DEFENDER", "1") == "0":
    FTPSERVER_DEFENDER_ENABLED = False
# BENCH_CERTFILE / BENCH_KEYFILE: FTPS, TLS required (the ftps probe's variant).
if os.environ.get("BENCH_CERTFILE"):
    FTPSERVER_CERTFILE = os.environ["BENCH_CERTFILE"]
    FTPSERVER_KEYFILE = os.environ.get("BENCH_KEYFILE") or None
# BENCH_DIGESTS=1: SHA-256 of transfers (off by default).
FTPSERVER_DIGESTS = os.environ.get("BENCH_DIGESTS", "0") == "1"
# As the standalone suite (ftpadmin/settings.py): persistent connections.
DATABASES["default"].update(CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True)  # noqa: F405
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # As the standalone suite runs SQLite (ftpadmin/settings.py): WAL, so the
    # audit writer's commits append to the log instead of syncing the file.
    DATABASES["default"]["OPTIONS"].update(  # noqa: F405
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        transaction_mode="IMMEDIATE",
    )
# BENCH_UPLOAD_MODE=atomic: uploads renamed into place (default: direct).
FTPSERVER_UPLOAD_MODE = os.environ.get("BENCH_UPLOAD_MODE", "direct")
