"""Prometheus metrics of a real ``ftpserver`` process, one and two workers."""

import ftplib
import io
import re
import urllib.request

import pytest
from django.core import checks
from django.test import override_settings

from ftpserver_core import metrics
from ftpserver_core.options import OptionError, parse_metrics_address

from .conftest import PASSWORD
from .test_commands import free_port, ftpserver_cmd  # noqa: F401  (fixture)
from .test_state import wait_for

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

METRICS_RE = re.compile(r"^Metrics: (?P<url>http://\S+/metrics)$", re.M)
BAD_USER = "mallory-nobody"


def metrics_url(server):
    match = METRICS_RE.search(server.stdout)
    assert match, f"no metrics line in the banner:\n{server.stdout}"
    return match["url"]


def scrape(url):
    """Return (text, {(sample name, sorted labels): value}) of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            values[key] = values.get(key, 0.0) + sample.value
    return text, values


def value(values, name, **labels):
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def histogram_count(values, name, **labels):
    return value(values, f"{name}_count", **labels)


def failed_login(server):
    ftp = ftplib.FTP(timeout=20)
    ftp.connect(server.host, server.port)
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp.login(BAD_USER, "not-the-password")
    ftp.close()


@pytest.fixture
def metered(ftpserver_cmd, make_account):  # noqa: F811
    """Start ``ftpserver --metrics`` with ``--workers N``: (server, url)."""

    def start(workers, *extra):
        make_account("alice")
        args = ["127.0.0.1:0", "--metrics", "127.0.0.1:0", *extra]
        if workers > 1:
            args += ["--workers", str(workers)]
        server = ftpserver_cmd(*args)
        return server, metrics_url(server)

    return start


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_counts_logins_transfers_and_commands(metered, workers):
    server, url = metered(workers)
    for _ in range(3):
        failed_login(server)
    payload = bytes(range(256)) * 1000 + b"tail"  # 256004 bytes
    ftp = server.client("alice")
    ftp.storbinary("STOR data.bin", io.BytesIO(payload))
    with pytest.raises(ftplib.error_perm, match="^500"):
        ftp.sendcmd("FROBNICATE now")
    ftp.quit()
    ftp = server.client("alice")
    received = io.BytesIO()
    ftp.retrbinary("RETR data.bin", received.write)
    assert received.getvalue() == payload
    ftp.quit()

    expected = {
        (
            "ftpserver_logins_total",
            (("reason", "bad_credentials"), ("result", "failed")),
        ): 3,
        ("ftpserver_logins_total", (("reason", "none"), ("result", "success"))): 2,
        ("ftpserver_connections_total", ()): 5,
        ("ftpserver_transfer_bytes_total", (("direction", "upload"),)): len(payload),
        ("ftpserver_transfer_bytes_total", (("direction", "download"),)): len(payload),
        ("ftpserver_files_total", (("direction", "upload"),)): 1,
        ("ftpserver_files_total", (("direction", "download"),)): 1,
        (
            "ftpserver_transfers_total",
            (("direction", "upload"), ("result", "completed")),
        ): 1,
        (
            "ftpserver_transfers_total",
            (("direction", "download"), ("result", "completed")),
        ): 1,
        ("ftpserver_login_duration_seconds_count", (("result", "failed"),)): 3,
        ("ftpserver_login_duration_seconds_count", (("result", "success"),)): 2,
        ("ftpserver_command_duration_seconds_count", (("command", "PASS"),)): 5,
        ("ftpserver_command_duration_seconds_count", (("command", "STOR"),)): 1,
        ("ftpserver_command_duration_seconds_count", (("command", "RETR"),)): 1,
        ("ftpserver_command_duration_seconds_count", (("command", "other"),)): 1,
        ("ftpserver_connections_open", ()): 0,
    }

    def settled():
        text, values = scrape(url)
        got = {key: values.get(key, 0.0) for key in expected}
        return (text, values) if got == expected else None

    try:
        text, values = wait_for(settled, timeout=20)
    except AssertionError:
        _, values = scrape(url)
        got = {key: values.get(key, 0.0) for key in expected}
        raise AssertionError(
            f"metrics differ: {[(k, got[k], v) for k, v in expected.items() if got[k] != v]}"
        ) from None
    # Only the counted verbs and "other": FROBNICATE is no label.
    commands = {
        dict(labels).get("command")
        for (name, labels) in values
        if name.startswith("ftpserver_command_duration_seconds")
    }
    assert "FROBNICATE" not in commands and "other" in commands
    # Never a user name, a password nor a client address.
    for secret in ("alice", BAD_USER, PASSWORD, "not-the-password", "127.0.0.1"):
        assert secret not in text
    assert value(values, "ftpserver_login_duration_seconds_sum", result="failed") < 30


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_gauges_follow_the_server(metered, workers):
    server, url = metered(workers)
    ftp = server.client("alice")
    # Workers sample each second; one process answers at scrape time.
    wait_for(
        lambda: value(scrape(url)[1], "ftpserver_connections_open") == 1, timeout=10
    )
    _, values = scrape(url)
    assert value(values, "ftpserver_audit_write_lag_seconds") < 10
    assert value(values, "ftpserver_bans_active") == 0
    ftp.quit()
    wait_for(
        lambda: value(scrape(url)[1], "ftpserver_connections_open") == 0, timeout=10
    )


@pytest.mark.slow
def test_passive_ports_in_use(metered):
    from .test_commands import passive_range

    low, high = passive_range()
    server, url = metered(1, "--passive-ports", f"{low}-{high}")
    _, values = scrape(url)
    assert value(values, "ftpserver_passive_ports") == high - low + 1
    assert value(values, "ftpserver_passive_ports_in_use") == 0
    ftp = server.client("alice")
    ftp.sendcmd("TYPE I")
    ftp.makepasv()  # the listener waits for a data connection
    wait_for(
        lambda: value(scrape(url)[1], "ftpserver_passive_ports_in_use") == 1,
        timeout=10,
    )
    ftp.quit()
    wait_for(
        lambda: value(scrape(url)[1], "ftpserver_passive_ports_in_use") == 0,
        timeout=10,
    )


@pytest.mark.slow
def test_workers_share_one_private_directory_removed_at_exit(metered):
    import glob
    import os
    import tempfile

    from .test_prefork import children

    server, url = metered(2)
    workers = wait_for(lambda: len(children(server.pid)) == 2 and children(server.pid))
    pattern = os.path.join(tempfile.gettempdir(), "ftpserver-metrics-*", "*_{}.db")
    # Each worker writes its own files, in the parent's one directory.
    files = wait_for(
        lambda: (
            all(glob.glob(pattern.format(pid)) for pid in workers)
            and [glob.glob(pattern.format(pid)) for pid in workers]
        )
    )
    directories = {os.path.dirname(path) for paths in files for path in paths}
    assert len(directories) == 1
    (directory,) = directories
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert server.stop() == 0
    assert not os.path.exists(directory)


def test_metrics_address_in_use(ftpserver_cmd, make_account):  # noqa: F811
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ftpserver_cmd(
            "127.0.0.1:0", "--metrics", f"127.0.0.1:{port}", wait=False
        )
        assert server.proc.wait(30) != 0
    assert f"--metrics 127.0.0.1:{port}: That port is already in use." in server.stderr


def test_metrics_off_by_default(ftpserver_cmd, make_account):  # noqa: F811
    server = ftpserver_cmd("127.0.0.1:0")
    assert "Metrics:" not in server.stdout
    assert metrics.active() is None  # nor in this process


# --- settings and checks


@pytest.mark.parametrize(
    "raw, parsed",
    [
        (None, None),
        ("", None),
        ("127.0.0.1:9101", ("127.0.0.1", 9101)),
        ("9101", ("127.0.0.1", 9101)),
        ("[::1]:9101", ("::1", 9101)),
    ],
)
def test_metrics_address_values(raw, parsed):
    assert parse_metrics_address(raw) == parsed


@pytest.mark.parametrize("raw", ["localhost", "1.2.3.4:99999", "a:b:c"])
def test_bad_metrics_address(raw):
    with pytest.raises(OptionError) as info:
        parse_metrics_address(raw)
    assert info.value.name == "METRICS_ADDRESS"
    assert repr(raw) in info.value.message or "99999" in info.value.message


def _ids(**settings):
    with override_settings(**settings):
        return {e.id for e in checks.run_checks(tags=["ftpserver"])}


def test_checks():
    assert "ftpserver_core.E055" in _ids(FTPSERVER_METRICS_ADDRESS="nowhere")
    assert "ftpserver_core.E057" in _ids(FTPSERVER_LOG_FORMAT="xml")
    assert "ftpserver_core.E058" in _ids(FTPSERVER_HEALTH_MAX_AUDIT_LAG=0)
    fine = _ids(
        FTPSERVER_METRICS_ADDRESS="127.0.0.1:9101",
        FTPSERVER_LOG_FORMAT="json",
        FTPSERVER_HEALTH_MAX_AUDIT_LAG=5,
    )
    assert not fine & {f"ftpserver_core.E05{n}" for n in range(5, 10)}


def test_check_missing_client(monkeypatch):
    monkeypatch.setattr(metrics, "available", lambda: False)
    with override_settings(FTPSERVER_METRICS_ADDRESS="127.0.0.1:9101"):
        errors = [
            e for e in checks.run_checks(tags=["ftpserver"]) if e.id.endswith("E056")
        ]
    assert len(errors) == 1
    assert "django-ftpserver-suite[metrics]" in errors[0].msg
    assert "ftpserver_core.E056" not in _ids()


def test_a_file_a_worker_is_creating_does_not_fail_the_scrape(metered):
    """A worker's file read between its creation and its sizing is skipped."""
    import glob
    import os
    import tempfile

    from .test_health import health

    server, url = metered(2)
    pattern = os.path.join(tempfile.gettempdir(), "ftpserver-metrics-*", "*.db")
    directory = os.path.dirname(wait_for(lambda: glob.glob(pattern))[0])
    # As a worker leaves it for an instant: created, still empty.
    open(os.path.join(directory, "gauge_livemax_999999.db"), "wb").close()
    text, values = scrape(url)
    assert value(values, "ftpserver_connections_total") >= 0
    assert "ftpserver_audit_write_lag_seconds" in text
    status, body = health(url.replace("/metrics", "/health"))
    assert status == 200, body
