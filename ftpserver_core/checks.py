"""System checks for the FTP server's settings."""

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
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
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

    try:
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


@checks.register("ftpserver", deploy=False)
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


# Deployment checks of the FTP server: run by ``manage.py check --deploy`` and
# by the ``ftpserver`` command before it starts, not by every command.
DEPLOY_TAG = "ftpserver_deploy"


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
