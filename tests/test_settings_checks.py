"""Every FTPSERVER_* setting is validated by a system check with a documented id,
and a bad value from the environment becomes that check's error, not a
traceback."""

import json
import math
import re

import pytest
from django.core import checks
from django.test import override_settings

from ftpserver_core.checks import CHECKS, ERROR_IDS
from ftpserver_core.conf import DEFAULTS

from .processes import REPO_ROOT
from .test_standalone import run

ID_RE = re.compile(r"ftpserver_core\.[EW]\d{3}")


def all_issues(**settings):
    """The ftpserver_core issues of every check, deployment ones included."""
    with override_settings(SILENCED_SYSTEM_CHECKS=[], **settings):
        issues = checks.run_checks(include_deployment_checks=False)
        issues += checks.run_checks(
            tags=["ftpserver_deploy"], include_deployment_checks=True
        )
    return [i for i in issues if (i.id or "").startswith("ftpserver_core.")]


def test_every_id_the_code_reports_is_documented():
    sources = {
        path: path.read_text()
        for root in ("ftpserver_core", "ftpadmin")
        for path in (REPO_ROOT / root).rglob("*.py")
        if "migrations" not in path.parts
    }
    used = set(ERROR_IDS.values())
    for text in sources.values():
        used.update(ID_RE.findall(text))
    assert used - set(CHECKS) == set()
    # And no entry for an id nothing reports: each is used outside CHECKS.
    everything = "\n".join(sources.values())
    for check_id in CHECKS:
        assert everything.count(f'"{check_id}"') >= 2 or check_id in set(
            ERROR_IDS.values()
        ), check_id
    for check_id, meaning in CHECKS.items():
        assert meaning.endswith("."), check_id
        assert "\n" not in meaning


class Nonsense:
    """A value no setting accepts."""

    def __repr__(self):
        return "<nonsense>"


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_setting_has_a_check(name):
    errors = [
        i
        for i in all_issues(**{f"FTPSERVER_{name}": Nonsense()})
        if i.level >= checks.ERROR and f"FTPSERVER_{name}" in i.msg
    ]
    assert errors, f"FTPSERVER_{name} = <nonsense> passes every check"
    for error in errors:
        assert error.id in CHECKS
        assert "<nonsense>" in error.msg


@pytest.mark.parametrize(
    "setting, value, check_id",
    [
        ("HOST", "", "ftpserver_core.E001"),
        ("PORT", True, "ftpserver_core.E001"),
        ("PORT", 21.5, "ftpserver_core.E001"),
        ("WORKERS", 2.5, "ftpserver_core.E007"),
        ("TIMEOUT", True, "ftpserver_core.E007"),
        ("LISTENERS", 5, "ftpserver_core.E065"),
        ("PROXY_TRUSTED", 5, "ftpserver_core.E066"),
        ("CERTFILE", 5, "ftpserver_core.E004"),
        ("STATE_BACKEND", 5, "ftpserver_core.E021"),
        ("TLSHANDLER", "nowhere.Handler", "ftpserver_core.E006"),
        ("TLS_REQUIRED", "yes", "ftpserver_core.E070"),
        ("DIGESTS", 1, "ftpserver_core.E070"),
        ("AUDIT_ENABLED", "false", "ftpserver_core.E070"),
        ("BANNER", 220, "ftpserver_core.E071"),
        ("BANNER", "Hello\r\n230 Logged in.", "ftpserver_core.E071"),
        ("PIDFILE", 5, "ftpserver_core.E072"),
        ("HOME_DIR_MODE", 0o1777, "ftpserver_core.E073"),
        ("HOME_DIR_MODE", "750", "ftpserver_core.E073"),
        ("CREDENTIAL_CACHE_TTL", -1, "ftpserver_core.E074"),
        ("NODE_NAME", "n" * 256, "ftpserver_core.E075"),
        ("AUDIT_EVENTS", "login", "ftpserver_core.E076"),
        ("AUDIT_EVENTS", ["login", "logn"], "ftpserver_core.E076"),
        ("AUDIT_INTERVAL", "abc", "ftpserver_core.E077"),
        ("AUDIT_INTERVAL", 0, "ftpserver_core.E077"),
        ("AUDIT_INTERVAL", math.nan, "ftpserver_core.E077"),
        ("AUDIT_BATCH_SIZE", "abc", "ftpserver_core.E078"),
        ("AUDIT_BATCH_SIZE", 2.5, "ftpserver_core.E078"),
        ("AUDIT_MAX_QUEUE", 0, "ftpserver_core.E079"),
        ("AUDIT_RETRIES", -1, "ftpserver_core.E080"),
        ("AUDIT_JOURNAL_DIR", 5, "ftpserver_core.E081"),
        ("AUDIT_SPOOL_DIR", b"/var/spool", "ftpserver_core.E081"),
    ],
)
def test_a_bad_value_is_an_error_with_its_id(setting, value, check_id):
    errors = [
        i
        for i in all_issues(**{f"FTPSERVER_{setting}": value})
        if i.level >= checks.ERROR
    ]
    assert [e.id for e in errors] == [check_id], errors
    assert f"FTPSERVER_{setting}" in errors[0].msg
    assert repr(value) in errors[0].msg
    assert "expected" in errors[0].msg
    assert f"FTPSERVER_{setting}" in errors[0].hint


def test_the_good_values_pass():
    assert [
        i.id
        for i in all_issues(
            FTPSERVER_TLS_REQUIRED=False,
            FTPSERVER_BANNER="Example FTP: authorised users only.",
            FTPSERVER_PIDFILE="/run/ftpserver.pid",
            FTPSERVER_HOME_DIR_MODE=0o700,
            FTPSERVER_CREDENTIAL_CACHE_TTL=0,
            FTPSERVER_NODE_NAME="ftp-1",
            FTPSERVER_AUDIT_EVENTS=["login", "upload", "download"],
            FTPSERVER_AUDIT_INTERVAL=0.5,
            FTPSERVER_AUDIT_BATCH_SIZE=1000,
            FTPSERVER_AUDIT_MAX_QUEUE=10_000,
            FTPSERVER_AUDIT_RETRIES=0,
            FTPSERVER_TLSHANDLER="ftpserver_core.handlers.DjangoTLS_FTPHandler",
        )
        if i.level >= checks.WARNING and i.id != "ftpserver_core.W002"
    ] == []


def test_a_home_mode_the_owner_cannot_use_is_warned_about():
    issues = all_issues(FTPSERVER_HOME_DIR_MODE=0o070)
    assert [(i.id, i.level) for i in issues if i.id != "ftpserver_core.W002"] == [
        ("ftpserver_core.W070", checks.WARNING)
    ]
    assert "0o70" in issues[-1].msg or "0o70" in issues[0].msg


# --- from the environment (the standalone suite's settings)

CHECK = ["-m", "django", "check"]


def test_bad_values_from_the_environment_are_check_errors_not_tracebacks(tmp_path):
    result = run(
        CHECK,
        tmp_path,
        FTPSERVER_AUDIT_INTERVAL="abc",
        FTPSERVER_AUDIT_BATCH_SIZE="abc",
        FTPSERVER_TLS_REQUIRED="maybe",
        FTPSERVER_HOME_DIR_MODE="999",
        FTPSERVER_TIMEOUT="5 minutes",
        FTPSERVER_AUDIT_EVENTS="login,logn",
        FTPSERVER_DEFENDER_SCORES="no_login",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for line in (
        "(ftpserver_core.E077) FTPSERVER_AUDIT_INTERVAL = 'abc': expected a "
        "positive number.",
        "(ftpserver_core.E078) FTPSERVER_AUDIT_BATCH_SIZE = 'abc': expected a "
        "positive whole number.",
        "(ftpserver_core.E070) FTPSERVER_TLS_REQUIRED = 'maybe': expected True or "
        "False.",
        "(ftpserver_core.E073) FTPSERVER_HOME_DIR_MODE = '999': expected a "
        "permission mode",
        "(ftpserver_core.E007) FTPSERVER_TIMEOUT: '5 minutes' is not valid",
        "(ftpserver_core.E076) FTPSERVER_AUDIT_EVENTS = ['login', 'logn']: "
        "unknown event 'logn'",
        "(ftpserver_core.E020) FTPSERVER_DEFENDER_SCORES = 'no_login': expected a dict",
    ):
        assert line in result.stderr


READ = (
    "import json, django; django.setup(); "
    "from ftpserver_core.conf import settings as s; "
    "print(json.dumps([s.AUDIT_INTERVAL, s.AUDIT_BATCH_SIZE, s.TLS_REQUIRED, "
    "s.DIGESTS, s.HOME_DIR_MODE, s.AUDIT_EVENTS, s.DATA_TIMEOUT, s.PORT, "
    "s.BANNER, s.PROXY_TRUSTED, s.DEFENDER_SCORES]))"
)


def test_good_values_from_the_environment_are_cast(tmp_path):
    result = run(
        ["-c", READ],
        tmp_path,
        FTPSERVER_AUDIT_INTERVAL="0.5",
        FTPSERVER_AUDIT_BATCH_SIZE="1000",
        FTPSERVER_TLS_REQUIRED="off",
        FTPSERVER_DIGESTS="yes",
        FTPSERVER_HOME_DIR_MODE="750",
        FTPSERVER_AUDIT_EVENTS="login, upload",
        FTPSERVER_DATA_TIMEOUT="0",
        FTPSERVER_PORT="21",
        FTPSERVER_BANNER="  Example FTP $HOME  ",
        FTPSERVER_PROXY_TRUSTED="10.0.0.0/8;192.0.2.7",
        FTPSERVER_DEFENDER_SCORES=" no_login = 0 , abuse=5",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        0.5,
        1000,
        False,
        True,
        0o750,
        ["login", "upload"],
        0,
        21,
        "Example FTP $HOME",
        "10.0.0.0/8;192.0.2.7",
        {"no_login": 0, "abuse": 5},
    ]
    check = run(
        CHECK,
        tmp_path,
        FTPSERVER_AUDIT_INTERVAL="0.5",
        FTPSERVER_TLS_REQUIRED="off",
        FTPSERVER_HOME_DIR_MODE="750",
        FTPSERVER_AUDIT_EVENTS="login, upload",
    )
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues" in check.stdout
