"""System checks for the FTP server's settings."""

import math
import os
from collections.abc import Iterable

from django.conf import settings as django_settings
from django.core import checks

from . import anonymous, scaleout
from .conf import settings
from .models import validate_path_template, validate_permission
from .models.accounts import home_root_problem
from .options import ServerOptions

# Stable check ids, one per setting.
ERROR_IDS = {
    "HOST": "ftpserver_core.E001",
    "PORT": "ftpserver_core.E001",
    "PASSIVE_PORTS": "ftpserver_core.E002",
    "MASQUERADE_ADDRESS": "ftpserver_core.E003",
    "CERTFILE": "ftpserver_core.E004",
    "KEYFILE": "ftpserver_core.E004",
    "TLS_MIN_VERSION": "ftpserver_core.E005",
    "HANDLER": "ftpserver_core.E006",
    "TLSHANDLER": "ftpserver_core.E006",
    "TIMEOUT": "ftpserver_core.E007",
    "MAX_CONNECTIONS": "ftpserver_core.E007",
    "MAX_CONNECTIONS_PER_IP": "ftpserver_core.E007",
    "AUTH_WORKERS": "ftpserver_core.E007",
    "WORKERS": "ftpserver_core.E007",
    "AUTH_FAILED_DELAY": "ftpserver_core.E007",
    "MAX_LOGIN_ATTEMPTS": "ftpserver_core.E007",
    "LOGINS_PER_ADDRESS": "ftpserver_core.E007",
    "LOGIN_QUEUE": "ftpserver_core.E007",
    "LOGIN_GRACE": "ftpserver_core.E007",
    "MAX_SESSIONS_PER_ADDRESS": "ftpserver_core.E007",
    "DEFAULT_PERMISSION": "ftpserver_core.E008",
    "DEFAULT_HOME": "ftpserver_core.E009",
    "DATA_TIMEOUT": "ftpserver_core.E010",
    "LOGIN_TIMEOUT": "ftpserver_core.E010",
    "SHUTDOWN_TIMEOUT": "ftpserver_core.E010",
    "DATABASE_TIMEOUT": "ftpserver_core.E010",
    "UPLOAD_MODE": "ftpserver_core.E011",
    "TLS_REQUIRE_SESSION_REUSE": "ftpserver_core.E013",
    "HOME_ROOTS": "ftpserver_core.E014",
    "USER": "ftpserver_core.E015",
    "GROUP": "ftpserver_core.E015",
    "LISTENERS": "ftpserver_core.E065",
    "PROXY_TRUSTED": "ftpserver_core.E066",
    "PROXY_TIMEOUT": "ftpserver_core.E067",
    "METRICS_ADDRESS": "ftpserver_core.E055",
    "LOG_FORMAT": "ftpserver_core.E057",
    "HEALTH_MAX_AUDIT_LAG": "ftpserver_core.E058",
    "PIDFILE": "ftpserver_core.E072",
}


# Every id these checks report, with what it means: the system checks
# reference of the documentation is rendered from this, and a test makes
# sure that no id is reported without an entry. "Deployment" ids are
# checked where the FTP server runs (``ftpserver``, ``check --deploy``).
CHECKS = {
    "ftpserver_core.E000": "A setting's value is invalid (a setting without an id of "
    "its own).",
    "ftpserver_core.E001": "FTPSERVER_HOST is not a host name or address, or "
    "FTPSERVER_PORT is not a port (0 to 65535).",
    "ftpserver_core.E002": "FTPSERVER_PASSIVE_PORTS is not ports or ranges such as "
    "'30000-30100' within 1 to 65535.",
    "ftpserver_core.E003": "FTPSERVER_MASQUERADE_ADDRESS is not an IPv4 address.",
    "ftpserver_core.E004": "FTPSERVER_CERTFILE or FTPSERVER_KEYFILE is not a readable "
    "PEM certificate and matching key, a key is set without a certificate, or "
    "pyOpenSSL (the tls extra) is missing.",
    "ftpserver_core.E005": "FTPSERVER_TLS_MIN_VERSION is not 'TLSv1.2' or 'TLSv1.3'.",
    "ftpserver_core.E006": "FTPSERVER_HANDLER or FTPSERVER_TLSHANDLER cannot be "
    "imported, is not a pyftpdlib FTPHandler subclass, or is the FTPS handler "
    "without pyOpenSSL.",
    "ftpserver_core.E007": "A connection or login limit (FTPSERVER_TIMEOUT, "
    "MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, MAX_SESSIONS_PER_ADDRESS, "
    "LOGINS_PER_ADDRESS, LOGIN_QUEUE, LOGIN_GRACE, WORKERS, AUTH_WORKERS, "
    "AUTH_FAILED_DELAY, MAX_LOGIN_ATTEMPTS) is not a positive number, or None "
    "where no limit is allowed.",
    "ftpserver_core.E008": "FTPSERVER_DEFAULT_PERMISSION is not pyftpdlib permission "
    "letters (elradfmwMT), each once.",
    "ftpserver_core.E009": "FTPSERVER_DEFAULT_HOME is not a valid home directory "
    "template.",
    "ftpserver_core.E010": "FTPSERVER_DATA_TIMEOUT, LOGIN_TIMEOUT, SHUTDOWN_TIMEOUT "
    "or DATABASE_TIMEOUT is not a positive number of seconds (0 turns the data "
    "and database timeouts off).",
    "ftpserver_core.E011": "FTPSERVER_UPLOAD_MODE is not 'direct' or 'atomic'.",
    "ftpserver_core.E012": "Deployment: no audit journal directory "
    "(FTPSERVER_AUDIT_JOURNAL_DIR unset and no DATA_DIR or BASE_DIR setting).",
    "ftpserver_core.E013": "FTPSERVER_TLS_REQUIRE_SESSION_REUSE is not True or False, "
    "or is True with FTPSERVER_TLS_MIN_VERSION 'TLSv1.3'.",
    "ftpserver_core.E014": "FTPSERVER_HOME_ROOTS is not None or a list of absolute "
    "directories that may hold homes.",
    "ftpserver_core.E015": "Deployment: FTPSERVER_USER or FTPSERVER_GROUP does not "
    "exist on this host, or a group is set without a user.",
    "ftpserver_core.E020": "A FTPSERVER_DEFENDER_* number is out of range, "
    "DEFENDER_SCORES names an unknown misdeed or bad points, or a "
    "DEFENDER_SAFELIST entry is not an address or network.",
    "ftpserver_core.E021": "FTPSERVER_STATE_BACKEND cannot be used, a "
    "FTPSERVER_STATE_* interval is not a positive number, or STATE_EXPIRY is "
    "below twice STATE_HEARTBEAT.",
    "ftpserver_core.E022": "FTPSERVER_QUOTA_LEASE_BYTES or QUOTA_LEASE_FILES is not "
    "a positive whole number, or BANDWIDTH_BURST not a positive number.",
    "ftpserver_core.E040": "FTPSERVER_ANONYMOUS_ENABLED is not True or False, or an "
    "ANONYMOUS_* limit is not a positive whole number or None.",
    "ftpserver_core.E041": "Anonymous FTP is on without FTPSERVER_ANONYMOUS_HOME, or "
    "the home is not a normalised absolute path in an allowed place.",
    "ftpserver_core.E042": "Deployment: FTPSERVER_ANONYMOUS_HOME is not an existing "
    "directory, or its real path is in a forbidden place.",
    "ftpserver_core.E043": "Deployment: FTPSERVER_ANONYMOUS_HOME holds users' homes "
    "(a home root, or where a home template puts homes).",
    "ftpserver_core.E055": "FTPSERVER_METRICS_ADDRESS is not HOST:PORT, PORT, "
    "[IPv6]:PORT or None.",
    "ftpserver_core.E056": "FTPSERVER_METRICS_ADDRESS is set but prometheus-client "
    "(the metrics extra) is not installed.",
    "ftpserver_core.E057": "FTPSERVER_LOG_FORMAT is not 'text' or 'json'.",
    "ftpserver_core.E058": "FTPSERVER_HEALTH_MAX_AUDIT_LAG is not a positive number "
    "of seconds.",
    "ftpserver_core.E060": "Deployment (with the database): this node's passive "
    "ports overlap those of a live node sharing the database.",
    "ftpserver_core.E065": "A FTPSERVER_LISTENERS entry (or --listen) is not "
    "HOST:PORT with valid tls= and proxy= modes, or two listeners share an "
    "address.",
    "ftpserver_core.E066": "FTPSERVER_PROXY_TRUSTED is not addresses or networks.",
    "ftpserver_core.E067": "FTPSERVER_PROXY_TIMEOUT is not a positive number of "
    "seconds.",
    "ftpserver_core.E070": "A True/False setting (FTPSERVER_TLS_REQUIRED, "
    "PASSIVE_PORTS_FALLBACK, DEFENDER_ENABLED, END_SESSIONS_ON_ACCOUNT_CHANGE, "
    "USE_SENDFILE, PERMIT_FOREIGN_ADDRESSES, AUDIT_ENABLED, AUDIT_FSYNC, "
    "DIGESTS) has another value.",
    "ftpserver_core.E071": "FTPSERVER_BANNER is not one line of text (a line "
    "break or NUL character would break the 220 reply).",
    "ftpserver_core.E072": "FTPSERVER_PIDFILE is not None or a file path.",
    "ftpserver_core.E073": "FTPSERVER_HOME_DIR_MODE is not a permission mode from "
    "0o000 to 0o777.",
    "ftpserver_core.E074": "FTPSERVER_CREDENTIAL_CACHE_TTL is not a non-negative "
    "number of seconds.",
    "ftpserver_core.E075": "FTPSERVER_NODE_NAME is not None or a name of 1 to 255 "
    "characters.",
    "ftpserver_core.E076": "FTPSERVER_AUDIT_EVENTS is not None or a list of audit "
    "event names.",
    "ftpserver_core.E077": "FTPSERVER_AUDIT_INTERVAL is not a positive number of "
    "seconds.",
    "ftpserver_core.E078": "FTPSERVER_AUDIT_BATCH_SIZE is not a positive whole number.",
    "ftpserver_core.E079": "FTPSERVER_AUDIT_MAX_QUEUE is not a positive whole number.",
    "ftpserver_core.E080": "FTPSERVER_AUDIT_RETRIES is not a non-negative whole "
    "number.",
    "ftpserver_core.E081": "FTPSERVER_AUDIT_JOURNAL_DIR or AUDIT_SPOOL_DIR is not "
    "None or a directory path.",
    "ftpserver_core.W001": "Deployment: DEBUG is on, so a long-running FTP server "
    "keeps every SQL query in memory.",
    "ftpserver_core.W002": "Deployment: the audit journal is in the temporary "
    "directory, which a reboot may clean.",
    "ftpserver_core.W003": "FTPSERVER_STATE_BACKEND 'memory' with several "
    "FTPSERVER_WORKERS: each counts alone, and the admin sees none.",
    "ftpserver_core.W040": "Deployment: FTPSERVER_ANONYMOUS_HOME is writable by the "
    "FTP server's own user.",
    "ftpserver_core.W041": "Deployment: FTPSERVER_ANONYMOUS_HOME holds an account's "
    "home: what it uploads is public.",
    "ftpserver_core.W042": "Deployment: a Django user is named like anonymous FTP "
    "(anonymous, ftp) and cannot log in with a password.",
    "ftpserver_core.W060": "Deployment (with the database): this node has no "
    "passive port range while other nodes share the database.",
    "ftpserver_core.W070": "FTPSERVER_HOME_DIR_MODE leaves out the owner's read, "
    "write or search permission: the server could not use the homes it creates.",
}


# Looked up in this host's user database: checked where the FTP server runs
# (``ftpserver`` and ``check --deploy``), not by every command, so that
# settings shared with a web host without that user still migrate there.
PRIVILEGE_SETTINGS = ("USER", "GROUP")


def _option_error(exc):
    return checks.Error(
        f"FTPSERVER_{exc.name}: {exc.message}",
        hint=f"Fix FTPSERVER_{exc.name} in your settings.",
        # LISTENERS[2] is reported under LISTENERS' id.
        id=ERROR_IDS.get(exc.name.partition("[")[0], "ftpserver_core.E000"),
    )


@checks.register("ftpserver")
def check_settings(app_configs, **kwargs):
    """Report every bad FTPSERVER_* value, quoting it."""
    errors = [
        _option_error(exc)
        for exc in ServerOptions.errors()
        if exc.name not in PRIVILEGE_SETTINGS
    ]
    for name, validator in (
        ("DEFAULT_PERMISSION", validate_permission),
        ("DEFAULT_HOME", validate_path_template),
    ):
        value = getattr(settings, name)
        if value is None and name == "DEFAULT_HOME":
            continue
        try:
            validator(value)
        except Exception as exc:
            message = " ".join(getattr(exc, "messages", [str(exc)]))
            errors.append(
                checks.Error(
                    f"FTPSERVER_{name} = {value!r}: {message}",
                    hint=f"Fix FTPSERVER_{name} in your settings.",
                    id=ERROR_IDS[name],
                )
            )
    return errors


@checks.register("ftpserver")
def check_home_roots(app_configs, **kwargs):
    """FTPSERVER_HOME_ROOTS: None, or a list of directories homes may be in."""
    roots = settings.HOME_ROOTS
    if roots is None:
        return []
    if isinstance(roots, (str, bytes)) or not isinstance(roots, Iterable):
        problems = [
            f"{roots!r} is not a list; expected a list of directories such as "
            "['/srv/ftp'], or None"
        ]
    elif not list(roots):
        problems = [
            "[] allows no home at all; expected directories such as ['/srv/ftp'], "
            "or None for no restriction"
        ]
    else:
        problems = [p for p in map(home_root_problem, roots) if p is not None]
    return [
        checks.Error(
            f"FTPSERVER_HOME_ROOTS: {problem}.",
            hint="Fix FTPSERVER_HOME_ROOTS in your settings.",
            id=ERROR_IDS["HOME_ROOTS"],
        )
        for problem in problems
    ]


@checks.register("ftpserver")
def check_defender(app_configs, **kwargs):
    """Report every bad FTPSERVER_DEFENDER_* value, quoting it (E020)."""
    from .defender import DEFAULT_SCORES
    from .models import normalize_network

    errors = []

    def error(name, message):
        errors.append(
            checks.Error(
                f"FTPSERVER_{name} = {getattr(settings, name)!r}: {message}",
                hint=f"Fix FTPSERVER_{name} in your settings.",
                id="ftpserver_core.E020",
            )
        )

    for name, zero_ok in (
        ("DEFENDER_THRESHOLD", False),
        ("DEFENDER_WINDOW", False),
        ("DEFENDER_BAN_TIME", False),
        ("DEFENDER_MAX_BAN_TIME", False),
        ("DEFENDER_BAN_GROWTH", True),
        ("DEFENDER_USERNAME_THRESHOLD", False),
        ("DEFENDER_USERNAME_MAX_DELAY", True),
        ("DEFENDER_POLL_INTERVAL", False),
        ("DEFENDER_REFUSED_LOG_INTERVAL", True),
    ):
        value = getattr(settings, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
            or (value == 0 and not zero_ok)
        ):
            error(
                name, f"expected a {'non-negative' if zero_ok else 'positive'} number."
            )
    scores = settings.DEFENDER_SCORES
    if scores is not None:
        if not isinstance(scores, dict):
            error("DEFENDER_SCORES", "expected a dict of points per misdeed.")
        else:
            for kind, points in scores.items():
                if kind not in DEFAULT_SCORES:
                    error(
                        "DEFENDER_SCORES",
                        f"unknown misdeed {kind!r}; expected some of "
                        f"{', '.join(DEFAULT_SCORES)}.",
                    )
                elif (
                    isinstance(points, bool)
                    or not isinstance(points, int)
                    or points < 0
                ):
                    error(
                        "DEFENDER_SCORES",
                        f"{kind!r}: {points!r} is not a non-negative whole number.",
                    )
    safelist = settings.DEFENDER_SAFELIST
    if isinstance(safelist, str) or not hasattr(safelist, "__iter__"):
        error("DEFENDER_SAFELIST", "expected a list of addresses or networks.")
    else:
        for network in safelist:
            try:
                normalize_network(network)
            except Exception:
                error(
                    "DEFENDER_SAFELIST",
                    f"{network!r} is not an IP address or network; expected e.g. "
                    "'10.0.0.0/8'.",
                )
    return errors


def _number_problem(value, zero_ok=False, whole=False):
    """Return what is wrong with a number setting, or None."""
    kinds = int if whole else int | float
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not math.isfinite(value)
        or value < 0
    ):
        pass
    elif value > 0 or zero_ok:
        return None
    sign = "non-negative" if zero_ok else "positive"
    return f"expected a {sign} {'whole number' if whole else 'number'}."


@checks.register("ftpserver")
def check_state(app_configs, **kwargs):
    """Report bad FTPSERVER_STATE_*, QUOTA_* and BANDWIDTH_* values (E021, E022).

    Also warn (W003) when the memory backend meets several worker processes:
    each then counts alone.
    """
    from .state import get_backend

    errors = []

    def error(name, message, code="ftpserver_core.E021"):
        errors.append(
            checks.Error(
                f"FTPSERVER_{name} = {getattr(settings, name)!r}: {message}",
                hint=f"Fix FTPSERVER_{name} in your settings.",
                id=code,
            )
        )

    name = settings.STATE_BACKEND
    try:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"FTPSERVER_STATE_BACKEND {name!r} is not valid; expected "
                "'database', 'memory' or the dotted path of a StateBackend subclass."
            )
        backend = get_backend()
    except ValueError as exc:
        errors.append(
            checks.Error(
                str(exc),
                hint="Fix FTPSERVER_STATE_BACKEND in your settings.",
                id="ftpserver_core.E021",
            )
        )
        backend = None
    for name in ("STATE_POLL_INTERVAL", "STATE_HEARTBEAT", "STATE_EXPIRY"):
        problem = _number_problem(getattr(settings, name))
        if problem:
            error(name, problem)
    heartbeat, expiry = settings.STATE_HEARTBEAT, settings.STATE_EXPIRY
    numbers = not _number_problem(heartbeat) and not _number_problem(expiry)
    if numbers and expiry < 2 * heartbeat:
        error(
            "STATE_EXPIRY",
            f"expected at least twice FTPSERVER_STATE_HEARTBEAT "
            f"({heartbeat!r}): a live process missing one heartbeat would "
            "lose its sessions.",
        )
    for name in ("QUOTA_LEASE_BYTES", "QUOTA_LEASE_FILES"):
        problem = _number_problem(getattr(settings, name), whole=True)
        if problem:
            error(name, problem, "ftpserver_core.E022")
    problem = _number_problem(settings.BANDWIDTH_BURST)
    if problem:
        error("BANDWIDTH_BURST", problem, "ftpserver_core.E022")
    workers = settings.WORKERS
    if backend is not None and not backend.shared and workers != 1:
        errors.append(
            checks.Warning(
                f"FTPSERVER_STATE_BACKEND = {settings.STATE_BACKEND!r} with "
                f"FTPSERVER_WORKERS = {workers!r}: each worker counts sessions, "
                "quotas and bandwidth on its own, and the admin sees none of them.",
                hint='Use FTPSERVER_STATE_BACKEND = "database".',
                id="ftpserver_core.W003",
            )
        )
    return errors


# Deployment checks of the FTP server: run by ``manage.py check --deploy`` and
# by the ``ftpserver`` command before it starts, not by every command.
DEPLOY_TAG = "ftpserver_deploy"


# A deployment check: a fresh ``startproject`` has DEBUG on, and a warning
# printed by migrate, shell and every other command teaches people to
# silence it, and so to lose it where it matters.
@checks.register(DEPLOY_TAG, deploy=True)
def check_debug(app_configs, **kwargs):
    """Warn that DEBUG keeps every SQL query in memory in a long-running server."""
    if django_settings.DEBUG:
        return [
            checks.Warning(
                "DEBUG is on: Django keeps every SQL query in memory, so a long-running "
                "FTP server's memory grows until the OS kills it.",
                hint="Set DEBUG = False for the FTP server in production.",
                id="ftpserver_core.W001",
            )
        ]
    return []


@checks.register(DEPLOY_TAG, deploy=True)
def check_privileges(app_configs, **kwargs):
    """Report an FTPSERVER_USER/GROUP this host does not have (E015)."""
    return [
        _option_error(exc)
        for exc in ServerOptions.errors()
        if exc.name in PRIVILEGE_SETTINGS
    ]


@checks.register(DEPLOY_TAG, deploy=True)
def check_journal(app_configs, **kwargs):
    """The audit journal needs a directory of this project, not a shared temp one."""
    import tempfile
    from pathlib import Path

    from django.core.exceptions import ImproperlyConfigured

    from .audit import journal_dir

    if any(
        _path_problem(getattr(settings, name))
        for name in ("AUDIT_JOURNAL_DIR", "AUDIT_SPOOL_DIR")
    ):
        return []  # check_values() reports it (E081)
    try:
        directory = Path(journal_dir()).resolve()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="Set FTPSERVER_AUDIT_JOURNAL_DIR, e.g. BASE_DIR / 'var' / "
                "'audit-journal'.",
                id="ftpserver_core.E012",
            )
        ]
    temp = Path(tempfile.gettempdir()).resolve()
    if directory == temp or temp in directory.parents:
        return [
            checks.Warning(
                f"The audit journal directory {str(directory)!r} is in the "
                f"temporary directory {str(temp)!r}: it may be cleaned at a "
                "reboot, losing audit records the database has not taken yet.",
                hint="Set FTPSERVER_AUDIT_JOURNAL_DIR to a directory of this project.",
                id="ftpserver_core.W002",
            )
        ]
    return []


# Anonymous FTP (E040-E043, W040-W042): the settings everywhere; the disk and
# the database where the FTP server runs.
checks.register("ftpserver")(anonymous.check_settings)
checks.register(DEPLOY_TAG, deploy=True)(anonymous.check_deploy)

# Other nodes' passive ports (E060, W060): a database check, run by the
# ``ftpserver`` command with its own options, or by ``check --deploy
# --database default``.
checks.register(DEPLOY_TAG, scaleout.TAG, deploy=True)(scaleout.check_passive_ports)


@checks.register("ftpserver")
def check_metrics_client(app_configs, **kwargs):
    """FTPSERVER_METRICS_ADDRESS needs prometheus-client installed."""
    from . import metrics

    if not settings.METRICS_ADDRESS or metrics.available():
        return []
    return [
        checks.Error(
            f"FTPSERVER_METRICS_ADDRESS = {settings.METRICS_ADDRESS!r}: "
            f"{metrics.MISSING}",
            hint="Install the extra, or set FTPSERVER_METRICS_ADDRESS = None.",
            id="ftpserver_core.E056",
        )
    ]


# The True/False settings without a check of their own (E070).
BOOLEAN_SETTINGS = (
    "TLS_REQUIRED",
    "PASSIVE_PORTS_FALLBACK",
    "DEFENDER_ENABLED",
    "END_SESSIONS_ON_ACCOUNT_CHANGE",
    "USE_SENDFILE",
    "PERMIT_FOREIGN_ADDRESSES",
    "AUDIT_ENABLED",
    "AUDIT_FSYNC",
    "DIGESTS",
)

# Numbers without a check elsewhere: (setting, id, 0 allowed, whole only).
NUMBER_SETTINGS = (
    ("CREDENTIAL_CACHE_TTL", "ftpserver_core.E074", True, False),
    ("AUDIT_INTERVAL", "ftpserver_core.E077", False, False),
    ("AUDIT_BATCH_SIZE", "ftpserver_core.E078", False, True),
    ("AUDIT_MAX_QUEUE", "ftpserver_core.E079", False, True),
    ("AUDIT_RETRIES", "ftpserver_core.E080", True, True),
)


def _path_problem(value):
    """Return what is wrong with an optional path setting, or None."""
    if value is None:
        return None
    try:
        path = os.fspath(value)
    except TypeError:
        path = None
    if not isinstance(path, str) or not path or "\x00" in path:
        return "expected a path (text), or None."
    return None


@checks.register("ftpserver")
def check_values(app_configs, **kwargs):
    """Report the other FTPSERVER_* values of the wrong type or range (E070-E081).

    A value from the environment that did not cast (ftpadmin.settings keeps
    its text) is reported here, quoted.
    """
    from .models import AuditEvent

    issues = []

    def error(name, message, check_id):
        issues.append(
            checks.Error(
                f"FTPSERVER_{name} = {getattr(settings, name)!r}: {message}",
                hint=f"Fix FTPSERVER_{name} in your settings.",
                id=check_id,
            )
        )

    for name in BOOLEAN_SETTINGS:
        if not isinstance(getattr(settings, name), bool):
            error(name, "expected True or False.", "ftpserver_core.E070")
    for name, check_id, zero_ok, whole in NUMBER_SETTINGS:
        problem = _number_problem(getattr(settings, name), zero_ok, whole)
        if problem:
            error(name, problem, check_id)

    banner = settings.BANNER
    if not isinstance(banner, str):
        error("BANNER", "expected text.", "ftpserver_core.E071")
    elif any(char in banner for char in "\r\n\x00"):
        error(
            "BANNER",
            "a line break or NUL character would break the 220 reply (clients "
            "read the next line as another reply); expected one line of text.",
            "ftpserver_core.E071",
        )

    for name in ("AUDIT_JOURNAL_DIR", "AUDIT_SPOOL_DIR"):
        problem = _path_problem(getattr(settings, name))
        if problem:
            error(name, problem, "ftpserver_core.E081")

    mode = settings.HOME_DIR_MODE
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        error(
            "HOME_DIR_MODE",
            "expected a permission mode from 0o000 to 0o777, such as 0o750 (in "
            "the environment: octal digits, 750).",
            "ftpserver_core.E073",
        )
    elif mode & 0o700 != 0o700:
        issues.append(
            checks.Warning(
                f"FTPSERVER_HOME_DIR_MODE = {oct(mode)}: the owner (the FTP "
                "server's user) lacks read, write or search permission, so the "
                "homes created at first login cannot be used.",
                hint="Give the owner rwx, e.g. 0o750.",
                id="ftpserver_core.W070",
            )
        )

    node = settings.NODE_NAME
    if node is not None and (not isinstance(node, str) or not 1 <= len(node) <= 255):
        error(
            "NODE_NAME",
            "expected a name of 1 to 255 characters, or None (the host name).",
            "ftpserver_core.E075",
        )

    events = settings.AUDIT_EVENTS
    if events is not None:
        known = AuditEvent.Event.values
        if isinstance(events, str) or not isinstance(events, Iterable):
            error(
                "AUDIT_EVENTS",
                "expected a list of event names such as ['login', 'upload'], or "
                "None (all of them).",
                "ftpserver_core.E076",
            )
        else:
            unknown = [event for event in events if event not in known]
            if unknown:
                error(
                    "AUDIT_EVENTS",
                    f"unknown event{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(map(repr, unknown))}; expected some of "
                    f"{', '.join(known)}.",
                    "ftpserver_core.E076",
                )
    return issues
