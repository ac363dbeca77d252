"""System checks of the FTPSERVER_* settings: stable ids, the bad value quoted."""

import io
import os
from pathlib import Path

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from ftpserver_core.checks import ERROR_IDS


def ftp_issues(**settings):
    """Run the system checks under ``settings``; return the ftpserver_core ones."""
    with override_settings(**settings):
        issues = checks.run_checks(include_deployment_checks=False)
    return [i for i in issues if (i.id or "").startswith("ftpserver_core.")]


def only_error(**settings):
    errors = [i for i in ftp_issues(**settings) if i.level >= checks.ERROR]
    assert len(errors) == 1, errors
    return errors[0]


def test_good_settings_give_no_ftpserver_issue(tmp_path):
    assert ftp_issues() == []
    assert (
        ftp_issues(
            FTPSERVER_PASSIVE_PORTS="30000-30100",
            FTPSERVER_MASQUERADE_ADDRESS="203.0.113.10",
            FTPSERVER_TLS_MIN_VERSION="TLSv1.3",
            FTPSERVER_TIMEOUT=60,
            FTPSERVER_MAX_CONNECTIONS=None,
            FTPSERVER_MAX_CONNECTIONS_PER_IP=5,
            FTPSERVER_DEFAULT_PERMISSION="elradfmwMT",
            FTPSERVER_DEFAULT_HOME=str(tmp_path / "{group}" / "{username}"),
            FTPSERVER_HANDLER="ftpserver_core.handlers.DjangoFTPHandler",
        )
        == []
    )


def test_ids_are_stable():
    # Operators silence checks by id: these must never change.
    assert ERROR_IDS["PASSIVE_PORTS"] == "ftpserver_core.E002"
    assert ERROR_IDS["MASQUERADE_ADDRESS"] == "ftpserver_core.E003"
    assert ERROR_IDS["CERTFILE"] == ERROR_IDS["KEYFILE"] == "ftpserver_core.E004"
    assert ERROR_IDS["TLS_MIN_VERSION"] == "ftpserver_core.E005"
    assert ERROR_IDS["HANDLER"] == ERROR_IDS["TLSHANDLER"] == "ftpserver_core.E006"
    assert ERROR_IDS["TIMEOUT"] == ERROR_IDS["MAX_CONNECTIONS"] == "ftpserver_core.E007"
    assert ERROR_IDS["DEFAULT_PERMISSION"] == "ftpserver_core.E008"
    assert ERROR_IDS["DEFAULT_HOME"] == "ftpserver_core.E009"


@pytest.mark.parametrize(
    ("setting", "value", "check_id", "quoted"),
    [
        ("FTPSERVER_PORT", 70000, "ftpserver_core.E001", "70000"),
        (
            "FTPSERVER_PASSIVE_PORTS",
            "30100-30000",
            "ftpserver_core.E002",
            "'30100-30000'",
        ),
        ("FTPSERVER_PASSIVE_PORTS", "abc", "ftpserver_core.E002", "'abc'"),
        ("FTPSERVER_PASSIVE_PORTS", [0, 70000], "ftpserver_core.E002", "[0, 70000]"),
        (
            "FTPSERVER_MASQUERADE_ADDRESS",
            "ftp.example.com",
            "ftpserver_core.E003",
            "'ftp.example.com'",
        ),
        (
            "FTPSERVER_MASQUERADE_ADDRESS",
            "2001:db8::1",
            "ftpserver_core.E003",
            "'2001:db8::1'",
        ),
        (
            "FTPSERVER_CERTFILE",
            "/no/such/dir/cert.pem",
            "ftpserver_core.E004",
            "'/no/such/dir/cert.pem'",
        ),
        ("FTPSERVER_TLS_MIN_VERSION", "TLSv1.0", "ftpserver_core.E005", "'TLSv1.0'"),
        (
            "FTPSERVER_HANDLER",
            "no.such.Class",
            "ftpserver_core.E006",
            "'no.such.Class'",
        ),
        (
            "FTPSERVER_HANDLER",
            "collections.OrderedDict",
            "ftpserver_core.E006",
            "'collections.OrderedDict'",
        ),
        (
            "FTPSERVER_HANDLER",
            "pyftpdlib.handlers.DTPHandler",
            "ftpserver_core.E006",
            "'pyftpdlib.handlers.DTPHandler'",
        ),
        ("FTPSERVER_TIMEOUT", -1, "ftpserver_core.E007", "-1"),
        ("FTPSERVER_TIMEOUT", "abc", "ftpserver_core.E007", "'abc'"),
        ("FTPSERVER_TIMEOUT", 0, "ftpserver_core.E007", "0"),
        ("FTPSERVER_MAX_CONNECTIONS", 0, "ftpserver_core.E007", "0"),
        ("FTPSERVER_MAX_CONNECTIONS_PER_IP", -3, "ftpserver_core.E007", "-3"),
        ("FTPSERVER_AUTH_WORKERS", "two", "ftpserver_core.E007", "'two'"),
        ("FTPSERVER_MAX_LOGIN_ATTEMPTS", 0, "ftpserver_core.E007", "0"),
        ("FTPSERVER_DEFAULT_PERMISSION", "xyz", "ftpserver_core.E008", "'xyz'"),
        ("FTPSERVER_DEFAULT_PERMISSION", "ell", "ftpserver_core.E008", "'ell'"),
        (
            "FTPSERVER_DEFAULT_HOME",
            "relative/path",
            "ftpserver_core.E009",
            "'relative/path'",
        ),
        (
            "FTPSERVER_DEFAULT_HOME",
            "/srv/ftp/{user}",
            "ftpserver_core.E009",
            "'/srv/ftp/{user}'",
        ),
    ],
)
def test_bad_setting_is_an_error_with_its_id(setting, value, check_id, quoted):
    error = only_error(**{setting: value})
    assert isinstance(error, checks.Error)
    assert error.id == check_id
    assert setting in error.msg
    assert quoted in error.msg
    assert setting in error.hint


def test_missing_certfile_message():
    error = only_error(FTPSERVER_CERTFILE="/no/such/cert.pem")
    assert (
        error.msg == "FTPSERVER_CERTFILE: '/no/such/cert.pem' is not a readable file."
    )


def test_keyfile_without_certfile(tmp_path):
    key = tmp_path / "server.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    error = only_error(FTPSERVER_KEYFILE=str(key))
    assert error.id == "ftpserver_core.E004"
    assert "no certificate file" in error.msg
    assert error.msg.startswith("FTPSERVER_CERTFILE")


def test_missing_keyfile(tmp_path):
    error = only_error(FTPSERVER_KEYFILE=str(tmp_path / "nope.key"))
    assert error.id == "ftpserver_core.E004"
    assert repr(str(tmp_path / "nope.key")) in error.msg


def test_certfile_that_is_no_certificate(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("this is not PEM\n")
    error = only_error(FTPSERVER_CERTFILE=str(cert))
    assert error.id == "ftpserver_core.E004"
    assert repr(str(cert)) in error.msg
    assert "could not be loaded" in error.msg


def test_tls_min_version_lists_the_choices():
    error = only_error(FTPSERVER_TLS_MIN_VERSION="TLSv1.0")
    assert "TLSv1.2" in error.msg
    assert "TLSv1.3" in error.msg


def test_handler_that_is_not_a_handler():
    error = only_error(FTPSERVER_HANDLER="collections.OrderedDict")
    assert "not a pyftpdlib FTPHandler subclass" in error.msg


def test_every_bad_value_is_reported_at_once():
    issues = ftp_issues(
        FTPSERVER_PASSIVE_PORTS="bad",
        FTPSERVER_MASQUERADE_ADDRESS="bad",
        FTPSERVER_TIMEOUT="bad",
        FTPSERVER_DEFAULT_PERMISSION="bad",
        FTPSERVER_DEFAULT_HOME="bad",
    )
    assert sorted(i.id for i in issues) == [
        "ftpserver_core.E002",
        "ftpserver_core.E003",
        "ftpserver_core.E007",
        "ftpserver_core.E008",
        "ftpserver_core.E009",
    ]
    assert all(isinstance(i, checks.Error) for i in issues)


def test_default_home_none_is_fine():
    assert ftp_issues(FTPSERVER_DEFAULT_HOME=None) == []


def test_debug_gives_a_deployment_warning_not_an_error():
    # Not from every command (a fresh startproject has DEBUG on): from
    # ``check --deploy`` and the ftpserver command (tests/test_developer.py).
    assert ftp_issues(DEBUG=True) == []
    with override_settings(DEBUG=True):
        issues = checks.run_checks(
            tags=["ftpserver_deploy"], include_deployment_checks=True
        )
    issues = [i for i in issues if i.id == "ftpserver_core.W001"]
    assert len(issues) == 1
    warning = issues[0]
    assert isinstance(warning, checks.Warning)
    assert warning.level == checks.WARNING
    assert "DEBUG" in warning.msg
    assert "DEBUG = False" in warning.hint


def test_debug_off_gives_no_warning():
    assert ftp_issues(DEBUG=False) == []
    assert "ftpserver_core.W001" not in [i[0] for i in deploy_issues(DEBUG=False)]


def test_checks_are_tagged_ftpserver():
    assert checks.registry.registry.tag_exists("ftpserver")
    with override_settings(FTPSERVER_TIMEOUT=-1):
        issues = checks.run_checks(tags=["ftpserver"])
    assert [i.id for i in issues] == ["ftpserver_core.E007"]


def test_check_command_fails_on_bad_setting():
    stderr = io.StringIO()
    with (
        override_settings(FTPSERVER_PASSIVE_PORTS="30100-30000"),
        pytest.raises(SystemCheckError) as info,
    ):
        call_command("check", stderr=stderr)
    assert "ftpserver_core.E002" in str(info.value)
    assert "'30100-30000'" in str(info.value)


def test_check_deploy_passes_with_debug_warning():
    stdout, stderr = io.StringIO(), io.StringIO()
    with override_settings(DEBUG=True):
        call_command("check", stdout=stdout, stderr=stderr)
        assert "ftpserver_core.W001" not in stderr.getvalue()
        call_command("check", deploy=True, stdout=stdout, stderr=stderr)
    assert "ftpserver_core.W001" in stderr.getvalue()


def test_silenced_check():
    with override_settings(
        FTPSERVER_TIMEOUT=-1, SILENCED_SYSTEM_CHECKS=["ftpserver_core.E007"]
    ):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def deploy_issues(**settings):
    """The FTP server's deployment checks (as ``ftpserver`` and ``check --deploy``)."""
    with override_settings(SILENCED_SYSTEM_CHECKS=[], **settings):
        issues = checks.run_checks(
            tags=["ftpserver_deploy"], include_deployment_checks=True
        )
    return [(i.id, i.msg) for i in issues]


def test_a_journal_in_the_temp_directory_is_warned_about(tmp_path):
    import tempfile

    in_temp = tempfile.mkdtemp()
    [(check_id, message)] = deploy_issues(FTPSERVER_AUDIT_JOURNAL_DIR=in_temp)
    assert check_id == "ftpserver_core.W002"
    assert repr(os.path.realpath(in_temp)) in message
    # The old name points to the same place.
    [(check_id, _)] = deploy_issues(
        FTPSERVER_AUDIT_JOURNAL_DIR=None, FTPSERVER_AUDIT_SPOOL_DIR=in_temp
    )
    assert check_id == "ftpserver_core.W002"


def test_a_journal_in_the_project_is_fine_and_derived_from_base_dir(tmp_path):
    project = "/srv/project-of-the-test"
    assert deploy_issues(FTPSERVER_AUDIT_JOURNAL_DIR=project) == []
    with override_settings(
        FTPSERVER_AUDIT_JOURNAL_DIR=None,
        FTPSERVER_AUDIT_SPOOL_DIR=None,
        BASE_DIR="/srv/p",
    ):
        from ftpserver_core.audit import journal_dir

        assert journal_dir() == "/srv/p/var/audit-journal"
    assert (
        deploy_issues(
            FTPSERVER_AUDIT_JOURNAL_DIR=None,
            FTPSERVER_AUDIT_SPOOL_DIR=None,
            BASE_DIR="/srv/p",
        )
        == []
    )


def test_no_journal_location_at_all_is_an_error():
    [(check_id, message)] = deploy_issues(
        FTPSERVER_AUDIT_JOURNAL_DIR=None, FTPSERVER_AUDIT_SPOOL_DIR=None
    )
    assert check_id == "ftpserver_core.E012"
    assert "FTPSERVER_AUDIT_JOURNAL_DIR is not set" in message


def test_the_ftpserver_command_runs_the_deployment_checks():
    # Not every command: only ``check --deploy`` and ``ftpserver``.
    with override_settings(SILENCED_SYSTEM_CHECKS=[]):
        issues = checks.run_checks(include_deployment_checks=False)
    assert "ftpserver_core.W002" not in [i.id for i in issues]
    with (
        override_settings(
            SILENCED_SYSTEM_CHECKS=[],
            FTPSERVER_AUDIT_JOURNAL_DIR=None,
            FTPSERVER_AUDIT_SPOOL_DIR=None,
        ),
        pytest.raises(SystemCheckError, match="ftpserver_core.E012"),
    ):
        call_command("ftpserver", "127.0.0.1:0", stdout=io.StringIO())


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("FTPSERVER_DATA_TIMEOUT", -1, "ftpserver_core.E010"),
        ("FTPSERVER_LOGIN_TIMEOUT", 0, "ftpserver_core.E010"),
        ("FTPSERVER_SHUTDOWN_TIMEOUT", "soon", "ftpserver_core.E010"),
        ("FTPSERVER_DATABASE_TIMEOUT", "x", "ftpserver_core.E010"),
        ("FTPSERVER_UPLOAD_MODE", "hidden", "ftpserver_core.E011"),
    ],
)
def test_integrity_settings_are_checked(setting, value, check_id):
    error = only_error(**{setting: value})
    assert error.id == check_id
    assert repr(value) in error.msg


# --- FTPSERVER_HOME_ROOTS and the home template rules of DEFAULT_HOME


def test_home_roots_id_is_stable():
    assert ERROR_IDS["HOME_ROOTS"] == "ftpserver_core.E014"


@pytest.mark.parametrize(
    "roots",
    [
        None,
        ["/srv/ftp"],
        ("/srv/ftp", "/home/ftp", "/var/ftp"),
        [Path("/data/ftp")],
        # A service's own directory below /var, chosen by the operator.
        ["/var/lib/ftpadmin/homes"],
    ],
)
def test_good_home_roots(roots):
    assert ftp_issues(FTPSERVER_HOME_ROOTS=roots) == []


@pytest.mark.parametrize(
    ("roots", "message"),
    [
        (
            "/srv/ftp",
            "FTPSERVER_HOME_ROOTS: '/srv/ftp' is not a list; expected a list of "
            "directories such as ['/srv/ftp'], or None.",
        ),
        (
            [],
            "FTPSERVER_HOME_ROOTS: [] allows no home at all; expected directories "
            "such as ['/srv/ftp'], or None for no restriction.",
        ),
        (
            ["/"],
            "FTPSERVER_HOME_ROOTS: '/' is the whole file system; expected a "
            "directory for FTP homes, such as /srv/ftp.",
        ),
        (
            ["srv/ftp"],
            "FTPSERVER_HOME_ROOTS: 'srv/ftp' is not absolute; expected a path "
            "starting with /.",
        ),
        (
            ["/srv/ftp/"],
            "FTPSERVER_HOME_ROOTS: '/srv/ftp/' is not normalised; expected "
            "'/srv/ftp' (no '.', '..', '//' nor trailing /).",
        ),
        (["/srv/../etc"], "'/srv/../etc' is not normalised; expected '/etc'"),
        ([42], "FTPSERVER_HOME_ROOTS: 42 is not a path; expected a directory"),
        (
            ["/etc/ftp"],
            "FTPSERVER_HOME_ROOTS: '/etc/ftp' is the system directory '/etc' or "
            "inside it; expected a data directory such as /srv/ftp, or one of a "
            "service's own below /var such as /var/lib/ftpadmin/homes.",
        ),
        (["/var"], "'/var' is the system directory '/var' or inside it"),
        (["/var/lib"], "'/var/lib' is the system directory '/var' or inside it"),
        (["/usr/local/ftp"], "'/usr/local/ftp' is the system directory '/usr'"),
    ],
)
def test_bad_home_roots(roots, message):
    error = only_error(FTPSERVER_HOME_ROOTS=roots)
    assert error.id == "ftpserver_core.E014"
    assert message in error.msg
    assert "FTPSERVER_HOME_ROOTS" in error.hint


def test_every_bad_home_root_is_reported():
    issues = ftp_issues(FTPSERVER_HOME_ROOTS=["/srv/ftp", "/", "/etc/x"])
    assert [i.id for i in issues] == ["ftpserver_core.E014"] * 2
    assert "'/'" in issues[0].msg
    assert "'/etc/x'" in issues[1].msg


@pytest.mark.parametrize(
    ("home", "says"),
    [
        ("/", "is the root directory /"),
        ("/etc/{username}", "is inside the system directory '/etc'"),
        ("/{username}", "is directly under /"),
        ("/srv/{username}/..", "has a '..' component"),
        ("/srv/{username.__class__.__mro__}", "reads an attribute or an item"),
        ("/srv/{username:>300}", "with a format spec (:>300)"),
    ],
)
def test_default_home_uses_the_home_template_rules(home, says):
    error = only_error(FTPSERVER_DEFAULT_HOME=home)
    assert error.id == "ftpserver_core.E009"
    assert error.msg.startswith(f"FTPSERVER_DEFAULT_HOME = {home!r}: Path {home!r} ")
    assert says in error.msg


def test_default_home_must_be_inside_the_home_roots():
    error = only_error(
        FTPSERVER_DEFAULT_HOME="/home/{username}", FTPSERVER_HOME_ROOTS=["/srv/ftp"]
    )
    assert error.id == "ftpserver_core.E009"
    assert "is outside FTPSERVER_HOME_ROOTS ['/srv/ftp']" in error.msg
    assert (
        ftp_issues(
            FTPSERVER_DEFAULT_HOME="/srv/ftp/{username}",
            FTPSERVER_HOME_ROOTS=["/srv/ftp"],
        )
        == []
    )


# --- shared state, quotas, bandwidth (E021, E022, W003)


@pytest.mark.parametrize(
    ("settings", "check_id", "quoted"),
    [
        ({"FTPSERVER_STATE_BACKEND": "nowhere.Backend"}, "E021", "'nowhere.Backend'"),
        ({"FTPSERVER_STATE_BACKEND": "ftpserver_core.models.Ban"}, "E021", "Ban'"),
        ({"FTPSERVER_STATE_POLL_INTERVAL": 0}, "E021", "= 0"),
        ({"FTPSERVER_STATE_HEARTBEAT": "5"}, "E021", "= '5'"),
        ({"FTPSERVER_STATE_EXPIRY": 6.0}, "E021", "twice FTPSERVER_STATE_HEARTBEAT"),
        ({"FTPSERVER_QUOTA_LEASE_BYTES": 1.5}, "E022", "= 1.5"),
        ({"FTPSERVER_QUOTA_LEASE_FILES": -1}, "E022", "= -1"),
        ({"FTPSERVER_BANDWIDTH_BURST": 0}, "E022", "= 0"),
    ],
)
def test_bad_state_settings_are_reported(settings, check_id, quoted):
    error = only_error(**settings)
    assert error.id == f"ftpserver_core.{check_id}"
    assert quoted in error.msg


def test_bad_max_sessions_per_address_is_reported():
    error = only_error(FTPSERVER_MAX_SESSIONS_PER_ADDRESS=-2)
    assert error.id == "ftpserver_core.E007"
    assert "-2" in error.msg


def test_the_memory_backend_with_workers_warns():
    issues = ftp_issues(FTPSERVER_STATE_BACKEND="memory", FTPSERVER_WORKERS=2)
    assert [i.id for i in issues] == ["ftpserver_core.W003"]
    assert ftp_issues(FTPSERVER_STATE_BACKEND="memory") == []
