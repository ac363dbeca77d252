"""Timeouts for the server's database connections, so a hung database hangs nothing.

Without them a PostgreSQL server that accepts but never answers (a network
partition, a stuck server) holds a login thread, and the audit writer, for
as long as TCP lets it. The server sets, for each database whose OPTIONS do
not already say otherwise: PostgreSQL ``connect_timeout``,
``statement_timeout`` and ``tcp_user_timeout``; SQLite's busy ``timeout``.
"""

from django.db import connections


def apply_timeouts(seconds):
    """Give every configured database connect and statement timeouts."""
    if not seconds:
        return
    for alias in connections:
        settings_dict = connections.settings[alias]
        options = settings_dict.setdefault("OPTIONS", {})
        engine = settings_dict.get("ENGINE", "")
        if engine.endswith("sqlite3"):
            options.setdefault("timeout", seconds)
        elif "postgresql" in engine:
            options.setdefault("connect_timeout", max(2, round(seconds)))
            milliseconds = round(seconds * 1000)
            options.setdefault("tcp_user_timeout", milliseconds)
            extra = options.get("options", "")
            if "statement_timeout" not in extra:
                options["options"] = (
                    f"{extra} -c statement_timeout={milliseconds}".strip()
                )
