"""GET /health on the metrics address: the database answers, the audit keeps up."""

import ftplib
import json
import shutil
import urllib.error
import urllib.request

import pytest
from django.db import connection

from .conftest import PASSWORD, database_url
from .faults import database_proxy, proxied_database_url, server_env, start_server
from .processes import command_env
from .test_commands import ftpserver_cmd  # noqa: F401  (fixture)
from .test_metrics import METRICS_RE
from .test_state import wait_for

pytest.importorskip("prometheus_client")


def health_url(server):
    return METRICS_RE.search(server.stdout)["url"].replace("/metrics", "/health")


def health(url):
    """Return (status, JSON body) of GET /health."""
    try:
        with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, json.loads(body)


def answers(url, status, failed=()):
    """Wait until /health answers ``status`` with ``failed``; return the body."""
    last = []

    def check():
        last[:] = [health(url)]
        got, body = last[0]
        return got == status and body["failed"] == sorted(failed) and body

    try:
        return wait_for(check, timeout=30)
    except AssertionError:
        raise AssertionError(f"/health still answers {last[0]!r}") from None


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_healthy(ftpserver_cmd, make_account, workers):  # noqa: F811
    server = ftpserver_cmd(
        "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--workers", workers
    )
    try:
        # Ready once every worker runs (a 503 while the second one starts:
        # seen once in CI, PostgreSQL).
        body = answers(health_url(server), 200)
    except ValueError:
        raise AssertionError(server.stderr) from None
    assert body["status"] == "ok" and body["failed"] == []
    assert body["checks"]["database"]["ok"] is True
    lag = body["checks"]["audit_lag"]
    assert lag["ok"] is True and lag["max"] == 60.0 and 0 <= lag["seconds"] < 60
    if workers == "2":
        assert body["checks"]["workers"] == {"ok": True, "running": 2, "expected": 2}
    else:
        assert "workers" not in body["checks"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sqlite_database_gone(ftpserver_cmd, make_account, tmp_path, workers):  # noqa: F811
    if connection.vendor != "sqlite":
        pytest.skip("moves the SQLite database file away")
    # A copy of the test database, in a directory the test moves away.
    directory = tmp_path / "db"
    directory.mkdir()
    copy = directory / "copy.sqlite3"
    shutil.copy(connection.settings_dict["NAME"], copy)
    env = command_env(DATABASE_URL=f"sqlite:///{copy}")
    server = ftpserver_cmd(
        "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--workers", workers, env=env
    )
    url = health_url(server)
    answers(url, 200)
    directory.rename(tmp_path / "elsewhere")
    body = answers(url, 503, failed=["database"])
    assert body["status"] == "fail"
    assert "does not exist" in body["checks"]["database"]["error"]
    (tmp_path / "elsewhere").rename(directory)
    answers(url, 200)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_database_unreachable_and_audit_lag(make_account, tmp_path, workers):
    """PostgreSQL through a proxy that refuses: the database check fails at
    once; the audit lag once a record has waited longer than the bound."""
    make_account("alice")
    with database_proxy() as proxy:
        env = server_env(
            proxied_database_url(proxy),
            HEALTH_MAX_AUDIT_LAG=1,
            CREDENTIAL_CACHE_TTL=0,
            LOGIN_TIMEOUT=3,
        )
        server = start_server(
            tmp_path / "server",
            env,
            args=("127.0.0.1:0", "--metrics", "127.0.0.1:0", "--workers", workers),
        )
        try:
            url = health_url(server)
            answers(url, 200)
            proxy.refuse(cut_existing=True)
            answers(url, 503, failed=["database"])
            # A login the database cannot check: its audit record waits.
            ftp = ftplib.FTP(timeout=30)
            ftp.connect(server.host, server.port)
            with pytest.raises(ftplib.error_temp, match="^421"):
                ftp.login("alice", PASSWORD)
            ftp.close()
            body = answers(url, 503, failed=["audit_lag", "database"])
            assert body["checks"]["audit_lag"]["seconds"] > 1
            proxy.forward()
            # The writer probes each second and writes the journal.
            try:
                answers(url, 200)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{server.stderr[-6000:]}") from None
        finally:
            server.kill()
    assert database_url()  # the test database itself was never touched
