"""JSON log lines: the formatter, and ``ftpserver --log-format json``."""

import ftplib
import json
import logging
import sys

import pytest

from ftpserver_core import logs

from .conftest import PASSWORD
from .processes import command_env
from .test_commands import ftpserver_cmd, run_ftpserver, settings_module  # noqa: F401
from .test_state import wait_for


def _record(msg, *args, exc_info=None, **extra):
    record = logging.getLogger("ftpserver_core.handlers").makeRecord(
        "ftpserver_core.handlers",
        logging.WARNING,
        __file__,
        1,
        msg,
        args,
        exc_info,
        extra=extra,
    )
    record.created = 1767225600.25  # 2026-01-01T00:00:00.250Z
    return record


def test_formatter_fields():
    line = logs.JSONFormatter().format(
        _record(
            "Login of %r failed.",
            "alice",
            remote_ip="192.0.2.7",
            username="alice",
            password=PASSWORD,
            ftp_password=PASSWORD,
        )
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["time"] == "2026-01-01T00:00:00.250Z"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "ftpserver_core.handlers"
    assert entry["message"] == "Login of 'alice' failed."
    assert entry["remote_ip"] == "192.0.2.7" and entry["username"] == "alice"
    assert PASSWORD not in line and "password" not in entry


def test_formatter_exception_and_pass_line():
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        record = _record("<- PASS %s", PASSWORD, exc_info=sys.exc_info())
    line = logs.JSONFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "<- PASS ****"
    assert PASSWORD not in line
    assert entry["exception"].startswith("Traceback")
    assert "ValueError: broken\nacross lines" in entry["exception"]


def _lines(text):
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{text}") from None
    return entries


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "ftpserver_core": {"handlers": ["console"], "level": "INFO"},
        "pyftpdlib": {"handlers": ["console"], "level": "INFO"},
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["option", "setting"])
def test_command_logs_json(ftpserver_cmd, make_account, tmp_path, how):  # noqa: F811
    make_account("alice")
    extra = {"LOGGING": LOGGING}
    args = ["127.0.0.1:0", "--workers", "2"]
    if how == "option":
        args += ["--log-format", "json"]
    else:
        extra["FTPSERVER_LOG_FORMAT"] = "json"
    env = command_env(
        settings_module(tmp_path, **extra), DJANGO_SETTINGS_MODULE="cmd_settings"
    )
    server = ftpserver_cmd(*args, env=env)
    ftp = ftplib.FTP(timeout=20)
    ftp.connect(server.host, server.port)
    with pytest.raises(ftplib.error_perm, match="^530"):
        ftp.login("alice", "wrong-" + PASSWORD)
    ftp.close()
    ftp = server.client("alice")
    ftp.quit()
    wait_for(lambda: "failed login" in server.stderr, timeout=10)
    assert server.stop() == 0
    text = server.stderr
    entries = _lines(text)
    assert {"time", "level", "logger", "message", "process"} <= set(entries[0])
    failed = [e for e in entries if "failed login" in e["message"]]
    assert failed and failed[0]["level"] == "INFO"
    assert PASSWORD not in text
    # Both workers' lines and the parent's, each a whole line.
    assert len({e["process"] for e in entries}) >= 2


@pytest.mark.slow
def test_command_warnings_without_logging(ftpserver_cmd, tmp_path):  # noqa: F811
    """No LOGGING: pyftpdlib's lines, the last resort's, the command's own are JSON."""
    env = command_env(
        settings_module(tmp_path, FTPSERVER_MAX_CONNECTIONS=1),
        DJANGO_SETTINGS_MODULE="cmd_settings",
    )
    server = ftpserver_cmd("127.0.0.1:0", "--log-format", "json", env=env)
    first = server.client()
    second = ftplib.FTP(timeout=20)
    with pytest.raises(ftplib.error_temp, match="^421"):
        second.connect(server.host, server.port)
        second.login("alice", PASSWORD)
    second.close()
    first.close()
    assert server.stop() == 0
    entries = _lines(server.stderr)
    # pyftpdlib's own lines (it logs at INFO when nothing is configured).
    assert any(
        e["logger"] == "pyftpdlib"
        and e["level"] == "WARNING"
        and "Too many connections" in e["message"]
        for e in entries
    ), entries


def test_bad_log_format(run_ftpserver):  # noqa: F811
    result = run_ftpserver("127.0.0.1:0", "--log-format", "xml")
    assert result.returncode != 0
    assert (
        "--log-format: 'xml' is not a log format; expected one of 'text', 'json'."
        in (result.stderr)
    )
