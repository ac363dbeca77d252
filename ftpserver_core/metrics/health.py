"""The health check a load balancer asks: the database answers, the audit keeps up.

Run in the HTTP thread, never on the IO loop. The database is asked on a
connection of its own, opened and closed for each check, with short
timeouts: a check never holds a connection a fork could copy.
"""

import copy
import os
import threading
import time

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import load_backend

# Seconds the database may take to connect and answer SELECT 1.
DATABASE_TIMEOUT = 2.0

# Held during a check; a fork waits for it (os.register_at_fork in observer.py).
lock = threading.Lock()


def database(alias=DEFAULT_DB_ALIAS, timeout=DATABASE_TIMEOUT):
    """Return None when the database answers SELECT 1, else what went wrong."""
    settings_dict = copy.deepcopy(connections.settings[alias])
    engine = settings_dict.get("ENGINE", "")
    options = settings_dict.setdefault("OPTIONS", {})
    if engine.endswith("sqlite3"):
        name = os.fspath(settings_dict.get("NAME") or "")
        local = name and name != ":memory:" and not name.startswith("file:")
        if local and not os.path.isfile(name):
            # SQLite would create an empty database and answer.
            return f"the SQLite database {name!r} does not exist"
        options["timeout"] = timeout
    elif "postgresql" in engine:
        # libpq's connect_timeout: whole seconds, at least 2.
        options["connect_timeout"] = max(2, round(timeout))
        milliseconds = round(timeout * 1000)
        options["tcp_user_timeout"] = milliseconds
        extra = options.get("options", "")
        options["options"] = f"{extra} -c statement_timeout={milliseconds}".strip()
    wrapper = load_backend(engine).DatabaseWrapper(settings_dict, alias)
    try:
        wrapper.ensure_connection()
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return _describe(exc)
    finally:
        try:
            wrapper.close()
        except Exception:  # noqa: S110  (a broken connection may fail to close)
            pass
    return None


def _describe(exc):
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else 'no message'}"[:300]


def report(*, audit_lag, max_audit_lag, workers=None):
    """Return (healthy, body) for the checks; ``audit_lag`` in seconds.

    ``workers``: (running, expected) with prefork, else None.
    """
    with lock:
        started = time.monotonic()
        problem = database()
        elapsed = time.monotonic() - started
    checks = {
        "database": {"ok": problem is None, "seconds": round(elapsed, 4)},
        "audit_lag": {
            "ok": audit_lag <= max_audit_lag,
            "seconds": round(audit_lag, 3),
            "max": max_audit_lag,
        },
    }
    if problem is not None:
        checks["database"]["error"] = problem
    if workers is not None:
        running, expected = workers
        checks["workers"] = {
            "ok": running > 0,
            "running": running,
            "expected": expected,
        }
    failed = sorted(name for name, check in checks.items() if not check["ok"])
    body = {"status": "fail" if failed else "ok", "failed": failed, "checks": checks}
    return not failed, body
