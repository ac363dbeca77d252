"""Anonymous FTP: ``anonymous`` and ``ftp`` read one public directory.

Off unless ``FTPSERVER_ANONYMOUS_ENABLED`` is True (the boolean, not a
truthy string) and ``FTPSERVER_ANONYMOUS_HOME`` names the directory. Then the
user names ``anonymous`` and ``ftp`` (any case) log in with any password,
which is recorded as the client's e-mail address, as classic servers do.
Such a session has no account and no Django user; it lists and downloads,
and nothing else: its permission is fixed to ``elr`` whatever a rule says.
A Django user of either name cannot log in over FTP while it is on.

Its sessions count together, on every process and node, against
``FTPSERVER_ANONYMOUS_MAX_SESSIONS`` and, per client address,
``FTPSERVER_ANONYMOUS_MAX_SESSIONS_PER_ADDRESS``. The check functions at the
end are the system checks of these settings.
"""

import os
import string
import unicodedata
from dataclasses import dataclass

from django.core import checks

from .conf import settings
from .models.accounts import (
    home_location_problem,
    home_roots,
    is_inside,
)
from .policy import LoginRefused, SessionPolicy, _check_home

# The user names that log in anonymously (compared case-insensitively).
NAMES = frozenset({"anonymous", "ftp"})
# The one user name every anonymous session has (audit, live sessions).
USERNAME = "anonymous"
# What an anonymous session may do: change directory, list, download.
PERMISSION = "elr"
# An e-mail address is at most 254 characters (RFC 5321 with its erratum).
EMAIL_LENGTH = 254
# The key whose download rate every anonymous session shares (bandwidth.py).
BANDWIDTH_KEY = "anonymous"

MESSAGE_LOGIN = "Anonymous access granted, restrictions apply."


@dataclass(frozen=True, slots=True)
class AnonymousPolicy(SessionPolicy):
    """The policy of an anonymous session: read-only, whatever else says."""

    max_sessions_per_address: int | None = None
    anonymous_email: str = ""
    bandwidth_key: str = BANDWIDTH_KEY

    def permission_for(self, path, entry=False):
        # Even a rule (there is none) cannot add a letter.
        granted = SessionPolicy.permission_for(self, path, entry)
        return "".join(letter for letter in granted if letter in PERMISSION)

    def has_perm(self, username, perm, path=None):
        if not perm or not set(perm) <= set(PERMISSION):
            return False
        return SessionPolicy.has_perm(self, username, perm, path)

    def get_perms(self, username):
        return "".join(letter for letter in self.permission if letter in PERMISSION)


def enabled():
    """True when anonymous FTP is on: ENABLED is True and a home is set."""
    return settings.ANONYMOUS_ENABLED is True and bool(settings.ANONYMOUS_HOME)


def claims(username):
    """True when ``username`` logs in anonymously (only while it is on)."""
    return enabled() and username.lower() in NAMES


def clean_email(password):
    """Return the "password" as it is recorded: stripped, no control character."""
    kept = "".join(
        c for c in password if unicodedata.category(c) not in ("Cc", "Cf", "Cs")
    )
    return kept.strip()[:EMAIL_LENGTH]


def resolve_home():
    """Return the real path of the anonymous home; refuse the login if unsafe."""
    try:
        configured = os.fspath(settings.ANONYMOUS_HOME)
    except TypeError:
        configured = None
    if not isinstance(configured, str) or not os.path.isabs(configured):
        raise LoginRefused(
            "home_unavailable",
            f"FTPSERVER_ANONYMOUS_HOME {settings.ANONYMOUS_HOME!r} is not an "
            "absolute path",
        )
    home = os.path.realpath(configured)
    # The same places as an account's home: no system directory, inside
    # FTPSERVER_HOME_ROOTS when set.
    _check_home(home)
    shared = _exposed_roots(home)
    if shared:
        raise LoginRefused(
            "home_unavailable",
            f"FTPSERVER_ANONYMOUS_HOME {home!r} holds the home root {shared[0]!r}",
        )
    return home


def build_policy(password):
    """Return the policy of an anonymous login whose password was ``password``."""
    home = resolve_home()
    policy = AnonymousPolicy(
        username=USERNAME,
        account_id=None,
        user_id=None,
        group=None,
        home=home,
        home_template=os.fspath(settings.ANONYMOUS_HOME),
        create_home=False,
        permission=PERMISSION,
        max_sessions=settings.ANONYMOUS_MAX_SESSIONS,
        max_sessions_per_address=settings.ANONYMOUS_MAX_SESSIONS_PER_ADDRESS or None,
        download_rate=settings.ANONYMOUS_DOWNLOAD_RATE,
        msg_login=MESSAGE_LOGIN,
        anonymous_email=clean_email(password),
    )
    # A missing directory is refused, never created.
    policy.ensure_home()
    return policy


# --- where user homes are, seen from the anonymous home


def _exposed_roots(home):
    """Return the FTPSERVER_HOME_ROOTS that are ``home`` or inside it."""
    roots = home_roots() or ()
    found = []
    for root in roots:
        if any(is_inside(p, home) for p in {root, os.path.realpath(root)}):
            found.append(root)
    return found


def template_directory(template):
    """Return ``(directory, exact)``: where the homes of ``template`` lie.

    ``exact``: the template has no placeholder and its one home is
    ``directory``; otherwise every home it renders is below ``directory``.
    None for a template that cannot be parsed.
    """
    literal = ""
    try:
        for text, name, _spec, _conversion in string.Formatter().parse(template):
            literal += text
            if name is not None:
                head = literal if literal.endswith("/") else os.path.dirname(literal)
                return os.path.normpath(head or "/"), False
    except ValueError:
        return None
    return os.path.normpath(literal), True


def _home_templates():
    """Yield every home template: FTPSERVER_DEFAULT_HOME and the HomeDirectory rows."""
    from .models import HomeDirectory

    if settings.DEFAULT_HOME:
        yield "FTPSERVER_DEFAULT_HOME", os.fspath(settings.DEFAULT_HOME)
    for path in HomeDirectory.objects.values_list("path", flat=True):
        yield "home directory", path


# --- system checks (registered in checks.py)


def _error(name, message, check_id, hint=None):
    return checks.Error(
        f"FTPSERVER_{name} = {getattr(settings, name)!r}: {message}",
        hint=hint or f"Fix FTPSERVER_{name} in your settings.",
        id=check_id,
    )


def _positive_or_none(name):
    value = getattr(settings, name)
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return [
            _error(
                name,
                "expected a positive whole number, or None for no limit.",
                "ftpserver_core.E040",
            )
        ]
    return []


def check_settings(app_configs=None, **kwargs):
    """The ANONYMOUS_* values, from their text alone (every command runs it)."""
    errors = []
    value = settings.ANONYMOUS_ENABLED
    if not isinstance(value, bool):
        errors.append(
            _error(
                "ANONYMOUS_ENABLED",
                "expected True or False (anonymous FTP turns on only with True).",
                "ftpserver_core.E040",
            )
        )
    for name in (
        "ANONYMOUS_MAX_SESSIONS",
        "ANONYMOUS_MAX_SESSIONS_PER_ADDRESS",
        "ANONYMOUS_DOWNLOAD_RATE",
    ):
        errors += _positive_or_none(name)
    home = settings.ANONYMOUS_HOME
    if value is True and not home:
        errors.append(
            _error(
                "ANONYMOUS_HOME",
                "anonymous FTP is enabled (FTPSERVER_ANONYMOUS_ENABLED) without a "
                "home; expected the directory anonymous sessions may read, such as "
                "/srv/ftp/pub.",
                "ftpserver_core.E041",
                hint="Set FTPSERVER_ANONYMOUS_HOME, or FTPSERVER_ANONYMOUS_ENABLED "
                "= False.",
            )
        )
    if home:
        problem = _home_text_problem(home)
        if problem:
            errors.append(_error("ANONYMOUS_HOME", problem, "ftpserver_core.E041"))
    return errors


def _home_text_problem(home):
    try:
        path = os.fspath(home)
    except TypeError:
        path = None
    if not isinstance(path, str):
        return "not a path; expected a directory such as /srv/ftp/pub."
    if "\x00" in path or not path.startswith("/"):
        return "not an absolute path; expected a directory such as /srv/ftp/pub."
    if os.path.normpath(path) != path or "//" in path:
        return f"not normalised; expected {os.path.normpath(path)!r}."
    problem = home_location_problem(path, home_roots())
    if problem is not None:
        _code, reason, expected = problem
        return f"{reason}; expected {expected}."
    return None


def check_deploy(app_configs=None, **kwargs):
    """The anonymous home on this host (the ``ftpserver`` command and ``check --deploy``).

    The directory exists where the FTP server runs, which need not be
    where every management command runs: these checks are deployment ones.
    """
    if not enabled() or _home_text_problem(settings.ANONYMOUS_HOME):
        return []  # nothing is on, or check_settings() reports it
    configured = os.fspath(settings.ANONYMOUS_HOME)
    issues = []
    if not os.path.isdir(configured):
        return [
            _error(
                "ANONYMOUS_HOME",
                "is not an existing directory; expected the directory anonymous "
                "sessions may read (it is never created).",
                "ftpserver_core.E042",
            )
        ]
    home = os.path.realpath(configured)
    if home != configured:
        problem = home_location_problem(home, home_roots())
        if problem is not None:
            _code, reason, expected = problem
            issues.append(
                _error(
                    "ANONYMOUS_HOME",
                    f"its real path {home!r} {reason}; expected {expected}.",
                    "ftpserver_core.E042",
                )
            )
    issues += _exposure_issues(home)
    issues += _writable_issues(home)
    issues += _user_issues()
    return issues


def _exposure_issues(home):
    """User homes the anonymous home would show: an error (all) or a warning (one)."""
    issues = []
    for root in _exposed_roots(home):
        issues.append(
            _error(
                "ANONYMOUS_HOME",
                f"holds the home root {root!r} (FTPSERVER_HOME_ROOTS): anonymous "
                "sessions would read every user's home; expected a directory of "
                "its own, such as /srv/ftp/pub.",
                "ftpserver_core.E043",
            )
        )
    try:
        templates = list(_home_templates())
    except Exception:
        templates = []  # no table yet (before migrate): nothing to compare
    for what, template in templates:
        found = template_directory(template)
        if found is None:
            continue
        directory, exact = found
        inside = any(
            is_inside(d, home) for d in {directory, os.path.realpath(directory)}
        )
        if not inside:
            continue
        if exact:
            issues.append(
                checks.Warning(
                    f"FTPSERVER_ANONYMOUS_HOME {home!r} holds the {what} "
                    f"{template!r}: what its accounts upload is public.",
                    hint="Intended for a publishing account; otherwise give those "
                    "accounts another home.",
                    id="ftpserver_core.W041",
                )
            )
        else:
            issues.append(
                _error(
                    "ANONYMOUS_HOME",
                    f"holds the homes of the {what} {template!r}: anonymous "
                    "sessions would read every such user's home; expected a "
                    "directory outside them, such as /srv/ftp/pub.",
                    "ftpserver_core.E043",
                )
            )
    return issues


def _server_identity():
    """Return ``(uid, gids, user)`` the server runs as, or None if unknown."""
    from . import privileges

    try:
        if settings.USER is not None:
            target = privileges.identity(settings.USER, settings.GROUP)
            return target.uid, target.groups, target.user
        current = privileges.current()
    except (LookupError, OSError):
        return None
    if current is None:
        return None
    return current.uid, set(os.getgroups()) | {current.gid}, current.user


def _writable(path, uid, gids):
    if uid == os.geteuid():
        return os.access(path, os.W_OK)  # counts ACLs too
    if uid == 0:
        return True
    st = os.stat(path)
    if st.st_uid == uid:
        return bool(st.st_mode & 0o200)
    if st.st_gid in gids:
        return bool(st.st_mode & 0o020)
    return bool(st.st_mode & 0o002)


def _writable_issues(home):
    found = _server_identity()
    if found is None:
        return []
    uid, gids, user = found
    if not _writable(home, uid, gids):
        return []
    return [
        checks.Warning(
            f"FTPSERVER_ANONYMOUS_HOME {home!r} is writable by {user!r}, the user "
            "the FTP server runs as: anonymous sessions cannot write through FTP, "
            "but a directory the server cannot write is a second fence.",
            hint=f"Make it owned by another user and not writable by {user!r} "
            f"(e.g. chown root: {home} && chmod 755 {home}).",
            id="ftpserver_core.W040",
        )
    ]


def _user_issues():
    """Django users named like anonymous FTP cannot log in over FTP while it is on."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    field = user_model.USERNAME_FIELD
    try:
        taken = [
            name
            for name in user_model._default_manager.values_list(field, flat=True)
            .filter(**{f"{field}__iregex": r"^(anonymous|ftp)$"})
            .order_by(field)
        ]
    except Exception:
        return []  # no table yet (before migrate)
    return [
        checks.Warning(
            f"The user {name!r} cannot log in over FTP while anonymous FTP is on: "
            "that name logs in anonymously (read-only, any password).",
            hint="Rename the user, or set FTPSERVER_ANONYMOUS_ENABLED = False.",
            id="ftpserver_core.W042",
        )
        for name in taken
    ]
